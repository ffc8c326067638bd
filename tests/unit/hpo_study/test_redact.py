"""The secret mask over logs, exceptions and stored text."""

import io
import logging

import pytest

from hpo_study.database.redact import MASK, redacting, scrub

pytestmark = pytest.mark.unit

SECRET = "p@ss w0rd/with:odd%chars"


@pytest.fixture
def streams():
    """A root handler and a non-propagating library logger with a handler of its own (as Optuna's)."""
    root_out, lib_out = io.StringIO(), io.StringIO()
    root_handler, lib_handler = logging.StreamHandler(root_out), logging.StreamHandler(lib_out)
    lib = logging.getLogger("test_redact.library")
    lib.propagate = False
    logging.getLogger().addHandler(root_handler)
    lib.addHandler(lib_handler)
    yield root_out, lib_out, lib
    logging.getLogger().removeHandler(root_handler)
    lib.removeHandler(lib_handler)


def test_log_records_are_masked_on_every_handler(streams):
    root_out, lib_out, lib = streams
    with redacting(SECRET):
        logging.getLogger("anything").warning("connect failed for %s", SECRET)
        lib.warning("library says %s", SECRET)
        try:
            raise ValueError(f"driver echoed {SECRET}")
        except ValueError:
            logging.getLogger("anything").exception("with traceback")
    logging.getLogger("anything").warning("after the block: %s", "plain")
    text = root_out.getvalue() + lib_out.getvalue()
    assert SECRET not in text
    assert text.count(MASK) == 3 and "library says " + MASK in text and "after the block: plain" in text


def test_an_exception_naming_the_secret_is_replaced_without_its_chain():
    with pytest.raises(ValueError) as info:
        with redacting(SECRET):
            try:
                raise KeyError(SECRET)
            except KeyError:
                raise ValueError(f"bad login {SECRET}") from None
    assert str(info.value) == f"bad login {MASK}"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_exception_type_without_a_message_argument_becomes_a_runtime_error():
    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a} {b}")

    with pytest.raises(RuntimeError, match=f"Odd: x {MASK.replace('*', '[*]')}"):
        with redacting(SECRET):
            raise Odd("x", SECRET)


def test_other_exceptions_pass_unchanged_and_scrub_works_only_inside():
    error = OSError("disk full")
    with pytest.raises(OSError) as info:
        with redacting(SECRET):
            assert scrub(f"reason: {SECRET}") == f"reason: {MASK}"
            raise error
    assert info.value is error
    assert scrub(SECRET) == SECRET
    with redacting(None):
        assert scrub(SECRET) == SECRET
