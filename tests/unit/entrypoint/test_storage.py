"""Storage URLs and studies on SQLite (hpo_study/database/locate.py), in process: passwords never in a
URL's query, values masked when shown, the baseline enqueued once."""

from __future__ import annotations

import json

import mysql.connector
import optuna
import psycopg2
import pytest

from core.engines import ENGINES
from core.errors import UserError
from entrypoint.study import join
from entrypoint.trials import builtin, search
from entrypoint.trials.builtin import suggest_params as objective_params
from hpo_study import settings
from hpo_study import settings as settings_mod
from hpo_study.database import credentials, dberrors, locate
from tests.support.errors import one_line


@pytest.mark.unit
def test_storage_url_with_password_is_refused_without_echo():
    with pytest.raises(UserError) as info:
        locate.resolve(settings.parse({"storage": "mysql://u:s3cr3t@h/db"}), "/x")
    assert "must not contain a password" in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.unit
def test_missing_ca_file_is_named():
    with pytest.raises(UserError, match="'db-ssl-ca': no CA bundle at /no/such/ca.pem"):
        locate.resolve(settings.parse({"storage": "mysql://u@h/db", "db-ssl-ca": "/no/such/ca.pem"}), "/x")


# One transient and one other error of each engine's driver (a new engine adds its pair here).
DRIVER_ERRORS = {
    "mysql": (
        lambda: mysql.connector.errors.OperationalError(msg="Lost connection", errno=2013),
        lambda: mysql.connector.errors.ProgrammingError(msg="Access denied", errno=1045),
    ),
    "postgresql": (
        lambda: psycopg2.OperationalError("server closed the connection unexpectedly"),
        lambda: psycopg2.ProgrammingError("syntax error"),
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("record", ENGINES.values(), ids=list(ENGINES))
def test_each_engine_record_drives_storage_credentials_and_retries(record):
    """What storage, credentials and dberrors take from core/engines.py, for every engine."""
    db = locate.resolve(settings.parse({"storage": f"{record.name}://u@h/db"}), "/x")
    assert db.url.drivername == record.driver and db.kind == record.name
    assert db.connect_args[record.timeout_arg] == locate.CONNECT_TIMEOUT_S
    assert record.connect_args.items() <= db.connect_args.items()
    for alias in record.secret_engines:
        secret = json.dumps({"username": "u", "password": "p", "engine": alias.upper()})
        assert credentials.parse_secret("s", secret).engine == record.name
    transient, other = DRIVER_ERRORS[record.name]
    assert dberrors.is_transient(transient()) and not dberrors.is_transient(other())
    assert "Access denied" in dberrors.describe(other()) or "syntax error" in dberrors.describe(other())


@pytest.mark.unit
def test_an_engine_outside_the_table_is_refused():
    with pytest.raises(UserError, match="unsupported database 'oracle' \\(use mysql or postgresql\\)"):
        locate.resolve(settings.parse({"storage": "oracle://u@h/db"}), "/x")


def join_with_baseline(s, db):
    sampler, pruner = search.make_sampler(s, 0), search.make_pruner(s)
    return join.join_study(s, db, sampler, pruner, first_params=builtin.BASELINE_PARAMS)[0]


@pytest.mark.unit
def test_the_job_that_creates_a_study_enqueues_the_baseline_and_joiners_do_not(tmp_path):
    s = settings.parse({})
    db = locate.resolve(s, str(tmp_path))  # the embedded SQLite study
    created = join_with_baseline(s, db)
    (waiting,) = created.get_trials(states=(optuna.trial.TrialState.WAITING,))
    trial = created.ask()
    assert trial.number == waiting.number == 0
    assert objective_params(trial) == builtin.BASELINE_PARAMS  # inside the built-in search space
    joined = join_with_baseline(s, db)
    assert len(joined.trials) == 1 and not joined.get_trials(states=(optuna.trial.TrialState.WAITING,))


@pytest.mark.unit
def test_the_baseline_survives_a_retried_creation_and_a_retried_enqueue(tmp_path):
    """The creation is retried after its commit (the first attempt created the study, then
    failed), and the enqueue is run twice (a commit whose answer was lost): one baseline."""

    def twice(step, what):
        step()
        return step()

    s = settings.parse({})
    db = locate.resolve(s, str(tmp_path))
    sampler, pruner = search.make_sampler(s, 0), search.make_pruner(s)
    study = join.join_study(s, db, sampler, pruner, retry=twice, first_params=builtin.BASELINE_PARAMS)[0]
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == builtin.BASELINE_PARAMS  # a queued trial's params


@pytest.mark.unit
def test_mysql_errors_without_a_code_are_mistakes_not_stalls():
    """mysql-connector gives -1 to every error it raises without a code: only its
    OperationalError ("MySQL Connection not available" after a timed-out ping) is a lost link;
    an unknown charset or auth plugin fails at once, with the driver's own words."""
    from mysql.connector import errors

    lost = errors.OperationalError("MySQL Connection not available")
    assert lost.errno == -1 and dberrors.is_transient(lost) and dberrors.is_stall(lost)
    for mistake in (
        errors.ProgrammingError("Character set 'utf8mb3x' unsupported"),
        errors.NotSupportedError("Authentication plugin 'bogus' is not supported"),
        errors.InternalError("Unread result found"),
    ):
        assert mistake.errno == -1
        assert not dberrors.is_transient(mistake) and not dberrors.is_stall(mistake)
        assert dberrors.describe(mistake) == str(mistake)


# --- a password in the storage URL's query string -----------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("key", ["password", "PASSWORD", "passwd", "PassWd", "pwd"])
def test_a_password_in_the_query_string_is_refused_without_echo(key):
    url = f"mysql://u@h/db?charset=utf8&{key}=s3cr3t"
    with pytest.raises(UserError) as info:
        locate.resolve(settings_mod.parse({"storage": url}), "/x")
    assert "must not contain a password" in one_line(info) and "s3cr3t" not in str(info.value)


@pytest.mark.unit
def test_query_values_are_masked_when_a_url_is_shown():
    db = locate.resolve(settings_mod.parse({"storage": "mysql://u@h/db?ssl_key=/k/secret.pem"}), "/x")
    assert "secret.pem" not in db.shown and "ssl_key=" in db.shown and "u@h" in db.shown


# --- a storage URL whose port is not a number ---------------------------------------------------


@pytest.mark.unit
def test_a_storage_url_with_a_port_that_is_not_a_number_is_one_line():
    from hpo_study.database import locate
    from tests.support.cli import run_cli

    s = settings_mod.parse({"storage": "mysql://root@127.0.0.1:notaport/x"})
    with pytest.raises(UserError, match=r"is not a database URL .*\(its port is not a number\)"):
        locate.resolve(s, "/nonexistent")
    result = run_cli("status", "--study", "s", "--storage", "mysql://root@127.0.0.1:notaport/x")
    assert result.code == 1 and "its port is not a number" in result.err and "Traceback" not in result.err
