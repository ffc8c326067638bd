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


@pytest.mark.unit
def test_a_codeless_postgresql_connect_failure_may_be_a_refused_login_and_nothing_else_is():
    import mysql.connector
    import psycopg2

    from hpo_study.database import dberrors, pgwait

    codeless = psycopg2.OperationalError('FATAL:  password authentication failed for user "u"')
    assert dberrors.may_be_refused_login(codeless)
    wrapped = sqlalchemy.exc.OperationalError("connect", {}, codeless)
    wrapped.__cause__ = codeless  # as SQLAlchemy raises it
    assert dberrors.may_be_refused_login(wrapped)
    assert not dberrors.may_be_refused_login(pgwait.Stalled("no answer"))  # coded: a stall
    assert not dberrors.may_be_refused_login(psycopg2.ProgrammingError("not operational"))
    mysql_lost = mysql.connector.errors.OperationalError(msg="lost", errno=2013)
    assert not dberrors.may_be_refused_login(mysql_lost)  # MySQL's refusals have a code (1045)
    assert not dberrors.may_be_refused_login(OSError("no driver error"))
