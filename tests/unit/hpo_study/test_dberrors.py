"""Database errors described with their cause (hpo_study/database/dberrors.py)."""

from __future__ import annotations

import pytest
import sqlalchemy

from hpo_study.database.dberrors import describe

# --- messages carry the cause, not only an exception class -------------------------------


@pytest.mark.unit
def test_describe_carries_the_cause_of_sqlite_and_os_errors(tmp_path):
    (tmp_path / "ro").mkdir()
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as info:
        engine.connect()
    assert "unable to open database file" in describe(info.value)
    assert describe(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"
