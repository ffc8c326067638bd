"""Command-line options -> the study the jobs share, opened read-only.

The options are the jobs' own hyperparameters (``db-secret``, ``host``...), validated by the
same parser, and the password comes from the same Secrets Manager secret. It lives only in
the driver's connect arguments: never in a URL, an argument list, or an error message.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import optuna
import sqlalchemy

from core.errors import UserError
from hpo_study import optuna_private
from hpo_study import settings as settings_mod
from hpo_study.database import credentials, locate
from hpo_study.database.dberrors import describe, is_auth_failure
from hpo_study.database.redact import redacting
from hpo_study.settings import Settings
from launcher import aws
from launcher.constants import HP_STUDY_NAME, STUDY_OPTION_HPS

OPTUNA_TABLE = "studies"  # present in every database that holds Optuna studies
MAX_LISTED_STUDIES = 20


def hyperparameters(study_name: str, options: Mapping[str, object]) -> dict[str, str]:
    """The study and database hyperparameters given on the command line (options by dest).

    The secret's region is the command's region, as a job's is the job's region.
    """
    hps = {HP_STUDY_NAME: study_name}
    hps.update({hp: str(options[dest]) for dest, hp in STUDY_OPTION_HPS.items() if options.get(dest)})
    return hps


def settings(study_name: str, options: Mapping[str, object]) -> Settings:
    """Validate the options exactly as a job validates its hyperparameters."""
    return settings_mod.parse(hyperparameters(study_name, options))


def read_secret(session: aws.Session, secret_id: str, stage: str | None = None) -> credentials.DbCredentials:
    """The secret (its version with staging label ``stage``: None for the current one), read with
    the command's session (its --profile and --region).

    hpo_study.database.credentials blames "the training role" for a denial; here it is the caller.
    """
    missing = f"has no version {stage}" if stage else "does not exist"
    answer = aws.call(
        aws.client(session, "secretsmanager"),
        "get_secret_value",
        errors={"ResourceNotFoundException": f"Secret '{secret_id}' {missing} in this region"},
        SecretId=secret_id,
        **({"VersionStage": stage} if stage else {}),
    )
    return credentials.parse_secret(secret_id, answer.get("SecretString"))


def _where(db: locate.Database) -> str:
    return db.shown


def _has_optuna_tables(db: locate.Database) -> bool:
    if db.kind == "sqlite" and not Path(db.url.database or "").is_file():
        return False  # connecting would create an empty file
    engine = db.create_engine(poolclass=sqlalchemy.pool.NullPool)
    try:
        return sqlalchemy.inspect(engine).has_table(OPTUNA_TABLE)
    finally:
        engine.dispose()


def _unknown_study(name: str, names: list[str], where: str) -> UserError:
    listed = ", ".join(sorted(names)[:MAX_LISTED_STUDIES]) or "none"
    more = len(names) - MAX_LISTED_STUDIES
    return UserError(
        f"No study '{name}' in {where}; studies there: {listed}" + (f" and {more} more" if more > 0 else "")
    )


@contextlib.contextmanager
def rdb_storage(settings: Settings, session: aws.Session) -> Iterator[optuna.storages.RDBStorage]:
    """The jobs' database as an Optuna storage that creates no tables (for `status`, dashboards)."""
    if not settings.uses_shared_storage:
        raise UserError(
            "Which database? Pass --db-secret (and --host etc. unless the secret has them) or --storage"
        )
    secret_id = settings.db_secret
    creds = read_secret(session, secret_id) if secret_id else None
    # The folder is only used for embedded storage, which was ruled out above. A password the
    # database refuses sends the secret to be read again, as in a job (a rotation).
    db = locate.resolve(
        settings, tempfile.gettempdir(), creds, read=lambda stage: read_secret(session, secret_id, stage)
    )
    where = _where(db)
    with redacting(db.password):
        rdb = None
        try:
            if not _has_optuna_tables(db):
                raise UserError(f"{where} holds no Optuna studies (wrong database or --db-name?)")
            # Optuna's storage with its trial reads done without the ORM (4-5x faster).
            rdb = optuna_private.LeanReadStorage(
                db.url.render_as_string(hide_password=False),  # no password: it is in connect_args
                engine_kwargs=db.engine_kwargs(pre_ping=True),  # no retries here (dashboards idle)
                skip_table_creation=True,
            )
            locate.bind(rdb.engine, db)
            yield rdb
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            if is_auth_failure(exc):
                raise locate.refused(db, exc) from None
            raise UserError(f"Cannot read the study database {where}: {describe(exc)}") from None
        finally:
            if rdb is not None:
                rdb.engine.dispose()


@contextlib.contextmanager
def opened(settings: Settings, session: aws.Session) -> Iterator[optuna.Study]:
    """The study named in ``settings``, loaded without creating tables or studies."""
    with rdb_storage(settings, session) as rdb:
        names = optuna.study.get_all_study_names(rdb)
        if settings.study_name not in names:
            raise _unknown_study(settings.study_name, names, locate.shown(rdb.url))
        yield optuna.load_study(study_name=settings.study_name, storage=rdb)
