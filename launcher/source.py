"""Where ``status``, ``best`` and ``deploy`` read the study from: its database, or its jobs.

The study database is the source of truth, and is read whenever it can be: with ``--host`` or
``--storage`` (a path the user opened, e.g. ``sagemaker-optuna tunnel``), with ``--source
study``, or when the database the secret names answers within a few seconds (from inside the
VPC). Otherwise (a laptop: the database has no public address) the commands read what the
study's training jobs left in SageMaker and S3 (launcher/jobresults.py), and say so.
"""

from __future__ import annotations

import dataclasses
import tempfile

import sqlalchemy

from core.engines import ENGINES
from core.errors import UserError
from hpo_study.database import locate
from hpo_study.database.dberrors import describe, is_cert_failure, is_stall
from hpo_study.database.redact import redacting
from hpo_study.settings import Settings
from launcher import aws, jobresults
from launcher import study as study_mod

AUTO, STUDY, JOBS = "auto", "study", "jobs"
CHOICES = (AUTO, STUDY, JOBS)
PROBE_CONNECT_S = 5  # a database that does not answer this fast is not reachable from here


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # STUDY or JOBS
    why: str  # one line for the output: which source, and why

    @property
    def is_study(self) -> bool:
        return self.kind == STUDY


def _probe(settings: Settings, session: aws.Session) -> str | None:
    """None when the study's database answers; else why not (one line, no secret in it)."""
    try:
        creds = study_mod.read_secret(session, settings.db_secret) if settings.db_secret else None
        db = locate.resolve(settings, tempfile.gettempdir(), creds)
    except UserError as exc:
        return str(exc)
    if db.kind == "sqlite":
        return None
    args = {**db.driver_args, ENGINES[db.kind].timeout_arg: PROBE_CONNECT_S}
    engine = sqlalchemy.create_engine(db.url, poolclass=sqlalchemy.pool.NullPool, connect_args=args)
    with redacting(db.password):
        try:
            engine.connect().close()
        except sqlalchemy.exc.DBAPIError as exc:
            if not _unreachable(db.kind, exc):
                return None  # the server answered (wrong database, refused login...): reading it says so
            return f"the study database {db.shown} does not answer from here ({describe(exc)})"
        finally:
            engine.dispose()
    return None


# MySQL client errors of a server that never answered: no socket, no connection, unknown host,
# lost while connecting, connect time-out.
MYSQL_UNREACHABLE = frozenset({2002, 2003, 2005, 2013, 2055})


def _unreachable(kind: str, exc: sqlalchemy.exc.DBAPIError) -> bool:
    """True when no server answered; False when one did and refused (its error then stands)."""
    if is_cert_failure(exc):  # a server answered, and failed verification: its error stands
        return False
    if is_stall(exc):  # a connect that timed out (PostgreSQL's bounded waits: pgwait.py)
        return True
    errno = getattr(exc.orig, ENGINES[kind].error_code_attr, None)
    if kind == "mysql":
        return errno in MYSQL_UNREACHABLE
    # libpq reports a failed connect (refused, unknown host, time-out) with no SQLSTATE; a server
    # that answered and refused gives one (e.g. 28P01 bad password, 3D000 unknown database).
    return errno is None and isinstance(exc, sqlalchemy.exc.OperationalError)


def choose(kind: str, settings: Settings, session: aws.Session) -> Source:
    """The source for ``--source kind`` (auto, study or jobs) and the study options given."""
    if kind == JOBS:
        return Source(JOBS, f"{jobresults.SOURCE_NAME} (--source jobs)")
    if kind == STUDY or settings.host or settings.storage:
        return Source(STUDY, "the study database")
    if not settings.uses_shared_storage:
        return Source(JOBS, f"{jobresults.SOURCE_NAME}: no --db-secret, --host or --storage given")
    why = _probe(settings, session)
    if why is None:
        return Source(STUDY, "the study database")
    return Source(JOBS, f"{jobresults.SOURCE_NAME}, since {why}")
