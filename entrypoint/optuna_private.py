"""Every use of Optuna's private API, in one place, for the Optuna versions it was tested on.

Optuna has no public hook for what a job needs on every trial: the storage's trial id, one read
of the study per trial, a tell without reading the trial back, a batch write of a trial's values,
and a stale-trial sweep that also sees trials which never beat. So these few private names are
used, here only. Importing this module checks ``optuna.__version__`` against
:data:`TESTED_OPTUNA` (the range pyproject.toml pins; a test checks they agree) and refuses an
untested Optuna at start-up, before any trial. tests/test_optuna_private.py pins each symbol
(that it exists, its signature, the behaviour relied on), so an upgrade fails there first.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState
from packaging.specifiers import SpecifierSet  # packaging: a dependency of Optuna itself
from packaging.version import Version

TESTED_OPTUNA = ">=5.0,<5.1"  # pyproject.toml's optuna range must be this one


class UntestedOptuna(RuntimeError):
    """The installed Optuna is outside the range whose private API this image was tested on."""


def check_version(version: str) -> None:
    """Raise :class:`UntestedOptuna` unless ``version`` is in :data:`TESTED_OPTUNA`."""
    if Version(version) not in SpecifierSet(TESTED_OPTUNA):
        raise UntestedOptuna(
            f"Optuna {version} is installed, but this image uses Optuna's private API as tested on "
            f"Optuna {TESTED_OPTUNA} (entrypoint/optuna_private.py): install a tested Optuna, or "
            "run tests/test_optuna_private.py on this one and widen TESTED_OPTUNA and pyproject.toml"
        )


check_version(optuna.__version__)  # at import: before anything below is used


# --- ids and reads ---------------------------------------------------------------------------


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (Optuna exposes only its number)."""
    return trial._trial_id


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study."""
    return study._study_id


def read_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study, running ones included, read now (not from the per-trial cache);
    not deep-copied: callers must not change them."""
    return study._get_trials(deepcopy=False, use_cache=False)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (Optuna's cache around an RDB storage)."""
    return study._storage


def rdb_of(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage (Optuna wraps it in a private cache), or None for other storages."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def engine(rdb: optuna.storages.RDBStorage) -> sqlalchemy.Engine:
    """The SQLAlchemy engine an RDB storage connects with."""
    return rdb.engine


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None, state: TrialState) -> TrialState:
    """End a trial as ``study.optimize`` does, without reading it back; return the state the
    study holds: the one given, or the one another job ended the trial with first."""
    told, _, _ = _tell_with_warning(
        study, trial, value, state=state, skip_if_finished=True, suppress_warning=True
    )
    return told


# --- Optuna's tables (trialdb.py writes and reads them directly; storage.py checks them) -------

TRIALS = models.TrialModel.__table__
INTERMEDIATE_VALUES = models.TrialIntermediateValueModel.__table__
USER_ATTRS = models.TrialUserAttributeModel.__table__
HEARTBEATS = models.TrialHeartbeatModel.__table__
SCHEMA_TABLES = ("version_info", "alembic_version")  # Optuna stamps both when its schema is complete


def stored_value(value: float) -> tuple[float | None, Any]:
    """An intermediate value as Optuna stores it: (column value, its type marker)."""
    return models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)


def value_from_stored(stored: float | None, kind: Any) -> float:
    """An intermediate value read from Optuna's table (NaN and infinities included)."""
    return models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(stored, kind)


def schema_complete(conn: sqlalchemy.Connection) -> bool:
    """True once Optuna's schema is complete: its last step stamps ``alembic_version``."""
    inspector = sqlalchemy.inspect(conn)
    if not all(inspector.has_table(t) for t in SCHEMA_TABLES):
        return False
    count = "SELECT (SELECT COUNT(*) FROM version_info) * (SELECT COUNT(*) FROM alembic_version)"
    return bool(conn.execute(sqlalchemy.text(count)).scalar())


def running_heartbeats(conn: sqlalchemy.Connection, study: int) -> list[tuple[int, Any]]:
    """(trial id, last heartbeat or None) of the study's RUNNING trials."""
    query = (
        sqlalchemy.select(TRIALS.c.trial_id, HEARTBEATS.c.heartbeat)
        .select_from(TRIALS.outerjoin(HEARTBEATS, HEARTBEATS.c.trial_id == TRIALS.c.trial_id))
        .where(TRIALS.c.study_id == study, TRIALS.c.state == TrialState.RUNNING)
    )
    return [(tid, beat) for tid, beat in conn.execute(query).all()]


# --- overrides of private methods --------------------------------------------------------------


class StaleSweepStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose stale-trial sweep (``optuna.storages.fail_stale_trials``) also
    fails the trials :meth:`more_stale_trial_ids` names: a public hook for subclasses over the
    private method the sweep calls."""

    def more_stale_trial_ids(self, study: int, stale: list[int]) -> list[int]:
        """Trials to fail besides ``stale`` (Optuna's own: RUNNING with a lapsed heartbeat)."""
        return []

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        return stale + [tid for tid in self.more_stale_trial_ids(study_id, stale) if tid not in stale]


class _TrialSnapshot:
    """A study whose trial list is read once per trial (stands in for it inside the sampler)."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._study, self._trials = study, trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._trials if states is None else [t for t in self._trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


class LiarTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE with ``constant_liar``, reading the study once per trial.

    With ``constant_liar`` Optuna bypasses its per-trial cache of the study and re-reads every
    unfinished trial (six queries each) for each parameter it samples: profiled on MariaDB, a
    third of a short trial's time. Here the trials, running ones included, are read at the
    trial's first sampled parameter and reused for its others; trials that start meanwhile in
    other jobs count from the next trial on. Overrides Optuna's private ``_sample`` and stands in
    for ``Study._get_trials`` (tests/test_pruning.py compares the parameters with Optuna's own).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._snapshot: tuple[int, int, list[FrozenTrial]] | None = None

    def _sample(self, study, trial, search_space):
        key = (study_id(study), trial.number)
        if self._snapshot is None or self._snapshot[:2] != key:
            self._snapshot = (*key, read_trials(study))
        return super()._sample(_TrialSnapshot(study, self._snapshot[2]), trial, search_space)


# --- Optuna's gRPC storage proxy (entrypoint/proxy.py: several hosts in one job) --------------


def grpc_server(storage: optuna.storages.BaseStorage, host: str, port: int, thread_pool: Any) -> Any:
    """Optuna's gRPC proxy server for ``storage``, not yet started (``run_grpc_proxy_server``
    would block until the process ends, and could not be stopped with the job)."""
    from optuna.storages._grpc.server import make_server

    return make_server(storage, host, port, thread_pool)


class GrpcClient(optuna.storages.GrpcStorageProxy):
    """Optuna's gRPC storage proxy client on a channel with :meth:`channel_options`, whose every
    call goes through :meth:`wrap_stub`'s object (a deadline per call, errors that name the
    server): Optuna passes neither options nor a timeout."""

    def channel_options(self) -> list[tuple[str, Any]]:
        return []

    def wrap_stub(self, stub: Any) -> Any:
        return stub

    def _setup(self) -> None:
        import grpc
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.client import GrpcClientCache

        options = [("grpc.max_receive_message_length", -1), *self.channel_options()]  # as Optuna's
        self._channel = grpc.insecure_channel(f"{self._host}:{self._port}", options=options)
        self._stub = self.wrap_stub(api_pb2_grpc.StorageServiceStub(self._channel))
        self._cache = GrpcClientCache(self._stub)
