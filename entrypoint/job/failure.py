"""How a failed job ends: one line in ``/opt/ml/output/failure`` and exit code 1.

The one path for every failure of a training job: the image's ``train`` (entrypoint/cli.py) and
:func:`entrypoint.train.main` both end here. A user's mistake (:class:`~core.errors.UserError`)
or a folder that cannot be written gives a short line; a bug gives its message, and its
traceback goes to the log. When the failure file cannot be written the reason goes to stderr
and the exit code is 1 all the same. The image runs its own ``train``, not the training
toolkit's: the toolkit's exits from a ``finally`` that turns any exit of ours into code 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from core.errors import UserError
from entrypoint.constants import FAILURE_FILE
from hpo_study.database.dberrors import describe

logger = logging.getLogger(__name__)

EXIT_FAILED = 1
PROBE_BYTES = 4096  # one page: enough to meet a full disk, not enough to fill one
MAX_REASON_CHARS = 1024  # SageMaker's FailureReason: the failure file's first 1,024 characters
QUOTE_KEPT_CHARS = 80  # of each quoted value (user data: a name, a header, a value) in a long line
# A quote opens after a non-word character and closes before one: the apostrophes of "the job's"
# and "the server's" do not make a quoted value of the advice between them.
_QUOTED = re.compile(r"(?<!\w)'[^']*'(?!\w)|(?<!\w)\"[^\"]*\"(?!\w)")
ELLIPSIS = "..."


def fit(message: str, limit: int = MAX_REASON_CHARS) -> str:
    """``message`` cut to ``limit`` characters: first each quoted value in it (user data, which
    can be of any length), keeping its start; then, if still too long, the line's end. The one
    place where failure lines are cut, so every reason is whole up to its quoted values."""
    if len(message) <= limit:
        return message

    def shorten(match: re.Match[str]) -> str:
        quoted = match.group()
        if len(quoted) <= QUOTE_KEPT_CHARS:
            return quoted
        return quoted[: QUOTE_KEPT_CHARS - len(ELLIPSIS) - 1] + ELLIPSIS + quoted[-1]

    message = _QUOTED.sub(shorten, message)
    return message if len(message) <= limit else message[: limit - len(ELLIPSIS)] + ELLIPSIS


def one_line(text: str) -> str:
    return " ".join(text.split())


def folder_error(label: str, folder: Path, exc: OSError) -> UserError:
    return UserError(f"Cannot write to the {label} {folder}: {exc.strerror or exc}")


def check_writable(folders: dict[str, Path | None]) -> None:
    """Create each folder and write a page in it, so a full or read-only folder stops the job
    before any trial runs, with the folder and the cause named."""
    for label, folder in folders.items():
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-") as f:
                f.write(bytes(PROBE_BYTES))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise folder_error(label, folder, exc) from None


def reason(exc: BaseException, folders: dict[str, Path | None]) -> tuple[str, bool]:
    """The failure's one line, and whether it was expected: the user's mistake or a folder that
    could not be written (True), or a bug's exception with its message (False)."""
    if isinstance(exc, UserError):
        return one_line(str(exc)), True
    if isinstance(exc, OSError) and exc.filename:
        path = Path(os.fsdecode(exc.filename)).absolute()
        for label, folder in folders.items():
            if folder is not None and path.is_relative_to(folder.absolute()):
                return one_line(str(folder_error(label, folder, exc))), True
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted (SIGINT)", True
    if isinstance(exc, SystemExit):
        return (
            f"sys.exit({exc.code!r}) was called before the job finished (the traceback is in the log)",
            False,
        )
    return one_line(f"{describe(exc)} (an unexpected error: the traceback is in the log)"), False


def write(message: str, output_dir: Path) -> None:
    """Write the failure file; when it cannot be written, say why (and the reason) on stderr."""
    path = output_dir / FAILURE_FILE
    message = fit(message)
    try:  # one line, no newline: what SageMaker shows as the FailureReason
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(message, encoding="utf-8")
    except OSError as exc:
        # A full folder leaves the file empty: no file is better than an empty reason.
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size < len(message.encode("utf-8")):
                path.unlink()
        print(
            f"Could not write the failure file {path} ({exc.strerror or exc}): the job fails with "
            f"exit code {EXIT_FAILED} and this reason: {message}",
            file=sys.stderr,
            flush=True,
        )


def fail(exc: BaseException, output_dir: Path, folders: dict[str, Path | None]) -> NoReturn:
    """End the job as failed: the failure file (or stderr) holds ``exc``'s line; exit code 1."""
    message, expected = reason(exc, folders)
    message = fit(message)
    if not expected:
        logger.error("Unexpected error", exc_info=exc)
    write(message, output_dir)
    logger.error("Reporting training FAILURE: %s", message)
    raise SystemExit(EXIT_FAILED)
