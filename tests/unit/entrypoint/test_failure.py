"""The failure file (entrypoint/job/failure.py): every failure becomes one line and exit 1, cut to
what SageMaker keeps."""

from __future__ import annotations

import pytest

from core.errors import UserError
from entrypoint.job import failure

# --- every failure ends the same way --------------------------------------------------------


@pytest.mark.unit
def test_every_failure_becomes_one_line_and_exit_1(tmp_path):
    """Whatever the exception (OSError() has errno None, SystemExit(0) a code of 0), the failure
    file holds one line and the job exits 1."""
    folders = {"model folder": tmp_path / "model"}
    cases = [
        (OSError(), "OSError (an unexpected error: the traceback is in the log)"),
        (OSError(28, "No space left on device", str(tmp_path / "model" / "x.tmp")), None),
        (RuntimeError("boom\nsecond line"), "RuntimeError: boom second line (an unexpected error"),
        (UserError("bad\n  value"), "bad value"),
        (SystemExit(0), "sys.exit(0) was called before the job finished"),
    ]
    for exc, expected in cases:
        (tmp_path / "failure").unlink(missing_ok=True)
        with pytest.raises(SystemExit) as info:
            failure.fail(exc, tmp_path, folders)
        written = (tmp_path / "failure").read_text()
        assert info.value.code == 1 and "\n" not in written
        if expected is None:
            assert (
                written == f"Cannot write to the model folder {tmp_path / 'model'}: No space left on device"
            )
        else:
            assert written.startswith(expected)


@pytest.mark.unit
def test_every_failure_line_is_cut_to_1024_characters_quoted_values_first(tmp_path):
    long_value = "v" * 5000
    message = f"Hyperparameter 'study-name' is {long_value!r}: too long (keep it under 64 characters)"
    fitted = failure.fit(message)
    assert len(fitted) < 1024 and fitted.endswith(": too long (keep it under 64 characters)")
    assert "'vvvvv" in fitted and "...'" in fitted
    unquoted = failure.fit("x" * 5000)
    assert len(unquoted) == 1024 and unquoted.endswith("...")
    failure.write(message, tmp_path)
    assert (tmp_path / "failure").read_text() == fitted
    # Apostrophes are no quotes: the advice between "job's" and "server's" is kept whole.
    prose = failure.fit(f"The job's database refused: {'x' * 1100} (check the server's log) final advice")
    assert prose.startswith("The job's database refused: xxx") and prose.endswith("...")
    quoted_after_apostrophe = failure.fit(f"The job's value {long_value!r} is refused (see the server's log)")
    assert quoted_after_apostrophe.endswith("...' is refused (see the server's log)")
