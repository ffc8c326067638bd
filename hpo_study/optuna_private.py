"""Every use of Optuna's private API, in one place, for the Optuna versions it was tested on.

Optuna has no public hook for what a job needs on every trial: the storage's trial id, one read
of the study per trial, a tell without reading the trial back, a batch write of a trial's values,
and a stale-trial sweep that also sees trials which never beat. So these few private names are
used, here only. Importing this module checks ``optuna.__version__`` against
:data:`TESTED_OPTUNA` (the range pyproject.toml pins; a test checks they agree) and refuses an
untested Optuna at start-up, before any trial. tests/unit/hpo_study/test_optuna_private.py pins each symbol
(that it exists, its signature, the behaviour relied on), so an upgrade fails there first.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe import _truncnorm
from optuna.samplers._tpe.sampler import (
    _get_infeasible_trial_score,
    _get_pruned_trial_score,
    _split_trials,
    default_gamma,
    default_gamma_multiobjective,
)
from optuna.storages._rdb import models
from optuna.storages._rdb import storage as rdb_storage
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
            f"Optuna {TESTED_OPTUNA} (hpo_study/optuna_private.py): install a tested Optuna, or "
            "run tests/unit/hpo_study/test_optuna_private.py on this one and widen TESTED_OPTUNA and pyproject.toml"
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


# --- Optuna's tables (trialdb.py writes and reads them directly; entrypoint/study/join.py checks them) -------

TRIALS = models.TrialModel.__table__
INTERMEDIATE_VALUES = models.TrialIntermediateValueModel.__table__
USER_ATTRS = models.TrialUserAttributeModel.__table__
SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
PARAMS = models.TrialParamModel.__table__
VALUES = models.TrialValueModel.__table__
HEARTBEATS = models.TrialHeartbeatModel.__table__
STUDIES = models.StudyModel.__table__
SCHEMA_TABLES = ("version_info", "alembic_version")  # Optuna stamps both when its schema is complete


def stored_value(value: float) -> tuple[float | None, Any]:
    """An intermediate value as Optuna stores it: (column value, its type marker)."""
    return models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)


def value_of_stored(stored: float | None, kind: Any) -> float:
    """A trial's objective value read from Optuna's table (infinities included)."""
    return models.TrialValueModel.stored_repr_to_value(stored, kind)


def read_trial(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """One trial of the study, read in full (from Optuna's cache once it is finished)."""
    return study._storage.get_trial(trial_id)


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


# Optuna's schema revision (alembic) for the tested Optuna versions; a test checks it is the
# head of the installed Optuna's migration scripts.
SCHEMA_HEAD = "v3.2.0.a"


class _QuickVersionManager(rdb_storage._VersionManager):
    """Optuna's version manager, which loads alembic (0.4-0.7 s of a job's start) only when the
    schema has no alembic revision yet: Optuna's own ``_init_alembic`` returns at once when
    ``alembic_version`` holds a row, and reading that row needs no alembic."""

    def _init_alembic(self) -> None:
        if current_revision(self.engine) is None:
            super()._init_alembic()


def current_revision(engine: sqlalchemy.Engine) -> str | None:
    """The schema's alembic revision, None if there is none (no table, or no row)."""
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    except sqlalchemy.exc.ProgrammingError:  # no such table (MySQL, PostgreSQL)
        return None
    except sqlalchemy.exc.OperationalError as exc:  # SQLite's "no such table"; others propagate
        if "no such table" in str(exc):
            return None
        raise


class LeanReadStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose trial reads skip the ORM, and whose start skips alembic when
    the schema is Optuna's current one.

    Every read of a study's trials (the cache's first fill when a job joins, its refreshes,
    ``get_trials`` in ``status`` and ``report``) goes through the private ``_get_trials``, which
    Optuna implements with ORM objects and five select-in loads: 7.1 s for 5,000 trials on
    MariaDB, four fifths of it building ORM objects (benchmarks/large_study.py, profiled). Here
    the same six tables are read with plain selects in one transaction and the FrozenTrials are
    built straight from the rows, each distribution parsed once per distinct JSON text. The
    trials are equal to Optuna's own (tests/unit/hpo_study/test_optuna_private.py compares them).

    At start, Optuna's schema check parses its alembic migration scripts (with the alembic
    import, 0.5-0.9 s under load): here the schema's revision is read with one query, and only
    a schema at another revision than :data:`SCHEMA_HEAD` gets Optuna's own check (and its
    message to upgrade).
    """

    def __init__(
        self,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        skip_compatibility_check: bool = False,
        **kwargs: Any,
    ) -> None:
        # RDBStorage.__init__ builds its version manager from this module global; ours differs
        # only in reading the revision without alembic first (the same outcome).
        original, rdb_storage._VersionManager = rdb_storage._VersionManager, _QuickVersionManager
        try:
            super().__init__(url, engine_kwargs, skip_compatibility_check=True, **kwargs)
        finally:
            rdb_storage._VersionManager = original
        if not skip_compatibility_check and current_revision(self.engine) != SCHEMA_HEAD:
            self._version_manager.check_table_schema_compatibility()  # Optuna's check and message
        self._packs = True  # MySQL: read packed trials (until the server turns out too old)

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        # Optuna's own conditions: trials newer than trial_id_greater_than, plus those listed
        # (the cache's unfinished ones) that are not newer.
        included = sorted(t for t in included_trial_ids if t <= trial_id_greater_than)
        where = [TRIALS.c.study_id == study_id]
        if states is not None:
            assert isinstance(states, Iterable)
            where.append(TRIALS.c.state.in_(list(states)))
        if trial_id_greater_than > -1:
            newer = TRIALS.c.trial_id > trial_id_greater_than
            where.append(sqlalchemy.or_(newer, TRIALS.c.trial_id.in_(included)) if included else newer)
        with _collector_paused():
            return self._read(study_id, where)

    def _read(self, study_id: int, where: list[Any]) -> list[FrozenTrial]:
        if self.engine.dialect.name == "mysql" and self._packs:
            try:
                return self._read_packed(study_id, where)
            except _CutArray:  # a trial too large to pack: this read row by row
                pass
            except sqlalchemy.exc.ProgrammingError as exc:
                # MySQL before 5.7.22 and MariaDB before 10.5 have no JSON_ARRAYAGG (1305: no such
                # function, 1064: syntax): read row by row from now on.
                if getattr(exc.orig, "errno", None) not in (1064, 1305):
                    raise
                self._packs = False
        return self._read_rows(study_id, where)

    def _read_rows(self, study_id: int, where: list[Any]) -> list[FrozenTrial]:
        """The six tables, a row per stored item (SQLite, PostgreSQL: their drivers are C)."""
        with self.engine.connect() as conn, conn.begin():  # one snapshot of the six tables
            rows = conn.execute(_trial_rows(where)).all()
            if not rows:
                _check_study(conn, study_id)
                return []

            def children(table: sqlalchemy.Table, *columns: str) -> list[Any]:
                # No ORDER BY: sorting rows with a TEXT column makes MariaDB build an on-disk
                # temporary table; the few orders that matter are restored here.
                query = sqlalchemy.select(table.c.trial_id, *(table.c[c] for c in columns))
                query = query.join(TRIALS, TRIALS.c.trial_id == table.c.trial_id).where(*where)
                return conn.execute(query).all()

            # Optuna orders a trial's parameters by their row id (the order they were suggested).
            rows_by_id = sorted(
                children(PARAMS, "param_id", "param_name", "param_value", "distribution_json"),
                key=lambda row: row[1],
            )
            params = [(tid, name, value, dist) for tid, _, name, value, dist in rows_by_id]
            values = children(VALUES, "objective", "value", "value_type")
            steps = children(INTERMEDIATE_VALUES, "step", "intermediate_value", "intermediate_value_type")
            user = children(USER_ATTRS, "key", "value_json")
            system = children(SYSTEM_ATTRS, "key", "value_json")
        return _frozen_trials(rows, params, values, steps, user, system)

    def _read_packed(self, study_id: int, where: list[Any]) -> list[FrozenTrial]:
        """The same read on MySQL and MariaDB, one row per trial: each trial's parameters,
        values, intermediate values and attributes packed by the server into JSON arrays.

        The pure-Python MySQL driver spends about 8 us on each row it receives (its C extension
        is not in the image): a 5,000-trial study has about 100,000 rows in the five child
        tables but 5,000 trials, and the arrays are decoded by the C JSON decoder: 0.3 s of the
        client's CPU instead of 0.8 s (benchmarks/read_trials.py); the server packs them in
        about 0.3 s, during which the client's thread waits and lets others run. JSON carries
        each double as the server's shortest round-trip text, the same text its row protocol
        sends (tests/unit/hpo_study/test_optuna_private.py compares the trials with Optuna's, and 40,000 random
        doubles); integral doubles come back as JSON integers and are made floats again.

        Each array is packed with its item count: when the server cut or dropped a trial's array
        (MariaDB cuts at ``group_concat_max_len``, 1 MB by default, MySQL drops one longer than
        ``max_allowed_packet``), the read is done again row by row, never with fewer items. The
        limit is not raised with a SET: RDS Proxy pins a client's session to one database
        connection after a SET (a trial's rows are about 1 kB in the built-in search space).
        """
        with self.engine.connect() as conn, conn.begin():  # one snapshot of the six tables
            rows = conn.execute(_trial_rows(where, *(_packed(*table) for table in _PACKED))).all()
            if not rows:
                _check_study(conn, study_id)
                return []
        # One JSON text per table for all trials: one call of the C decoder, not one per trial.
        tids = [row[0] for row in rows]
        packs = [_unpack([row[5 + k] for row in rows]) for k in range(len(_PACKED))]
        # The type markers come as the names SQLAlchemy stores for Optuna's enums.
        value_kind = models.TrialValueModel.TrialValueType.__members__
        step_kind = models.TrialIntermediateValueModel.TrialIntermediateValueType.__members__
        params, values, steps, user, system = [], [], [], [], []
        for tid, p, v, i, u, s in zip(tids, *packs, strict=True):
            if p:
                p.sort()  # Optuna's order of a trial's parameters: their row ids
                params += [(tid, name, float(value), dist) for _, name, value, dist in p]
            if v:
                values += [(tid, o, _float(value), value_kind[kind]) for o, value, kind in v]
            if i:
                steps += [(tid, step, _float(value), step_kind[kind]) for step, value, kind in i]
            if u:
                user += [(tid, key, text) for key, text in u]
            if s:
                system += [(tid, key, text) for key, text in s]
        return _frozen_trials([row[:5] for row in rows], params, values, steps, user, system)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a read builds its many small objects: each
    collection walks every object the job holds (Chainer's, Optuna's, the trials'), and a large
    read triggers dozens (a third of a 5,000-trial read's time, measured). A read creates no
    cycles to collect; the collector runs again as usual afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _trial_rows(where: list[Any], *more: Any) -> sqlalchemy.Select:
    """The trials' own columns (and ``more``), in the order of their ids."""
    columns = (TRIALS.c.trial_id, TRIALS.c.number, TRIALS.c.state)
    columns += (TRIALS.c.datetime_start, TRIALS.c.datetime_complete)
    return sqlalchemy.select(*columns, *more).where(*where).order_by(TRIALS.c.trial_id)


def _check_study(conn: sqlalchemy.Connection, study_id: int) -> None:
    """As Optuna's ``find_or_raise_by_id``: a study that does not exist is a KeyError."""
    exists = sqlalchemy.select(STUDIES.c.study_id).where(STUDIES.c.study_id == study_id)
    if conn.execute(exists).first() is None:
        raise KeyError(f"No study with study_id {study_id} exists.")


# The child tables a trial's JSON arrays come from, with the columns of each item.
_PACKED = (
    (PARAMS, "param_id", "param_name", "param_value", "distribution_json"),
    (VALUES, "objective", "value", "value_type"),
    (INTERMEDIATE_VALUES, "step", "intermediate_value", "intermediate_value_type"),
    (USER_ATTRS, "key", "value_json"),
    (SYSTEM_ATTRS, "key", "value_json"),
)


def _packed(table: sqlalchemy.Table, *columns: str) -> sqlalchemy.ScalarSelect:
    """[item count, [[column, ...], ...]] of the trial's rows in ``table`` (a correlated
    subquery of the trial's row; the array is NULL when there are none)."""
    fn = sqlalchemy.func
    items = fn.json_arrayagg(fn.json_array(*(table.c[c] for c in columns)))
    query = sqlalchemy.select(fn.json_array(fn.count(), items)).where(table.c.trial_id == TRIALS.c.trial_id)
    return query.scalar_subquery()


def _float(value: float | None) -> float | None:
    """A double read from JSON: integral ones come as JSON integers."""
    return None if value is None else float(value)


class _CutArray(Exception):
    """The server cut or dropped a trial's packed array (longer than max_allowed_packet)."""


def _unpack(texts: list[str | bytes | None]) -> list[list[Any]]:
    """Each trial's items, from its packed array."""
    if any(text is None for text in texts):  # dropped by the server
        raise _CutArray
    joined = ",".join(t if isinstance(t, str) else t.decode() for t in texts)
    try:
        packs = json.loads(f"[{joined}]")
    except ValueError:  # one array was cut: no JSON
        raise _CutArray from None
    if any(count != len(items or ()) for count, items in packs):
        raise _CutArray
    return [items or [] for _, items in packs]


def _frozen_trials(
    rows: list[Any],
    params: list[Any],
    values: list[Any],
    steps: list[Any],
    user: list[Any],
    system: list[Any],
) -> list[FrozenTrial]:
    """FrozenTrials as Optuna's ``_build_frozen_trial_from_trial_model`` builds them, from rows."""
    by_id: dict[int, dict[str, Any]] = {
        tid: {"params": {}, "dists": {}, "values": {}, "steps": {}, "user": {}, "system": {}}
        for tid, *_ in rows
    }
    parsed: dict[str, optuna.distributions.BaseDistribution] = {}
    for tid, name, internal, dist_json in params:
        dist = parsed.get(dist_json)
        if dist is None:
            dist = parsed[dist_json] = optuna.distributions.json_to_distribution(dist_json)
        by_id[tid]["dists"][name] = dist
        by_id[tid]["params"][name] = dist.to_external_repr(internal)
    to_value = models.TrialValueModel.stored_repr_to_value
    for tid, objective, value, kind in values:
        by_id[tid]["values"][objective] = to_value(value, kind)
    to_step = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    for tid, step, value, kind in steps:
        by_id[tid]["steps"][step] = to_step(value, kind)
    # Every attribute's JSON in one call of the decoder (the texts joined as one JSON array).
    for kind, attrs in (("user", user), ("system", system)):
        decoded = json.loads(f"[{','.join(text for _, _, text in attrs)}]") if attrs else []
        for (tid, key, _), value in zip(attrs, decoded, strict=True):
            by_id[tid][kind][key] = value
    trials = []
    for tid, number, state, start, complete in rows:
        got = by_id[tid]
        objectives = got["values"]
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[objectives[i] for i in range(len(objectives))] if objectives else None,
                datetime_start=start,
                datetime_complete=complete,
                params=got["params"],
                distributions=got["dists"],
                user_attrs=got["user"],
                system_attrs=got["system"],
                intermediate_values=got["steps"],
                trial_id=tid,
            )
        )
    return trials


class StaleSweepStorage(LeanReadStorage):
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
    """Optuna's TPE with ``constant_liar``, reading the study once per trial, and its work per
    trial flat in what earlier trials already did.

    With ``constant_liar`` Optuna bypasses its per-trial cache of the study and re-reads every
    unfinished trial (six queries each) for each parameter it samples: profiled on MariaDB, a
    third of a short trial's time. Here the trials, running ones included, are read at the
    trial's first sampled parameter and reused for its others; trials that start meanwhile in
    other jobs count from the next trial on.

    On a large study the rest of a trial's sampling is Optuna's own work, done again for each
    parameter sampled (three times per trial for the built-in network: the multivariate group,
    then each conditional parameter): splitting every trial into good and bad ones, and each
    trial's parameters in the sampler's internal form. Both are deterministic: the split is done
    once per trial (it depends only on the trials and on the number of good ones), and a
    finished trial's internal form once per job (a finished trial never changes). The draws
    are Optuna's own: the same trials in the same order reach the same estimators, with the
    same random generator (tests/unit/entrypoint/test_pruning.py compares the parameters with Optuna's own).

    Overrides Optuna's private ``_sample`` (a copy of Optuna 5.0's, which calls the private
    ``_split_trials``) and ``_get_internal_repr``, and stands in for ``Study._get_trials``.
    """

    # Search spaces whose finished trials' internal values are kept: a range that depends on
    # another parameter makes a new space every trial, and each kept space holds every trial.
    INTERNAL_SPACES = 16

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._study_key: tuple[object, int] | None = None  # the storage and study the state describes
        self._forget()
        self._log_ndtr = _LogNdtrMemo()

    def _forget(self) -> None:
        self._snapshot: tuple[int, int, list[FrozenTrial]] | None = None
        self._splits: dict[int, tuple[list[FrozenTrial], list[FrozenTrial]]] = {}  # n_below -> split
        self._ranked: dict[int, _RankedTrials] = {}  # study id -> its finished trials, ranked
        # search space's items -> its finished trials' internal representations, least recent first
        self._internal: OrderedDict[tuple[tuple[str, BaseDistribution], ...], _InternalRows] = OrderedDict()

    def _sample(self, study, trial, search_space):
        # One sampling at a time in a process: Optuna's module function is swapped below, and the
        # state kept here is one trial's (study.optimize(n_jobs=2) shares the sampler).
        with _SAMPLING:
            # Ids are the storage's: another study (or the same ids in another storage) starts over.
            # The storage itself is held, not its id(), which a new object could take over.
            if (
                self._study_key is None
                or self._study_key[0] is not study._storage
                or (self._study_key[1] != study_id(study))
            ):
                self._forget()
                self._study_key = (study._storage, study_id(study))
            key = (study_id(study), trial.number)
            if self._snapshot is None or self._snapshot[:2] != key:
                self._snapshot = (*key, read_trials(study))
                self._splits = {}
            # Optuna's module function, for the time of this sampling: the same results, kept.
            original, _truncnorm._log_ndtr = _truncnorm._log_ndtr, self._log_ndtr
            try:
                return self._sample_snapshot(_TrialSnapshot(study, self._snapshot[2]), trial, search_space)
            finally:
                _truncnorm._log_ndtr = original

    def _split(self, study, trials: list[FrozenTrial], n_below: int):
        if n_below not in self._splits:
            split = None
            if len(study.directions) == 1:
                ranked = self._ranked.setdefault(study_id(study), _RankedTrials(study.direction))
                split = ranked.split(study, trials, n_below)
            self._splits[n_below] = split or _split_trials(study, trials, n_below)
        return self._splits[n_below]

    def _sample_snapshot(self, study, trial, search_space):
        """Optuna 5.0's ``TPESampler._sample``, with the split of the trials kept per trial."""
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
        trials = study._get_trials(deepcopy=False, states=states, use_cache=not self._constant_liar)
        if self._constant_liar:
            trials = [t for t in trials if trial.number != t.number]
        if self._gamma is None:
            self._gamma = default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective
        n = sum(t.state != TrialState.RUNNING for t in trials)
        below_trials, above_trials = self._split(study, trials, self._gamma(n))
        mpe_below = self._build_parzen_estimator(study, search_space, below_trials, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above_trials, handle_below=False)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _get_internal_repr(self, trials, search_space, study):
        """Optuna's, with each finished trial's values converted once: per search space, the
        finished trials' internal values are kept as one array per parameter (a row per trial,
        found by the trial's id), and a call picks its trials' rows out of them with one index
        array. The same values, of the same types, in the same order as Optuna's."""
        space = tuple(search_space.items())
        kept = self._internal.get(space)
        if kept is None:
            kept = self._internal[space] = _InternalRows()
            while len(self._internal) > self.INTERNAL_SPACES:
                self._internal.popitem(last=False)
        self._internal.move_to_end(space)
        positions, running = [], []
        for t in trials:
            at = kept.position.get(t._trial_id)
            if at is None:
                row = self._internal_row(t, search_space, study)
                if row is _LACKS_PARAMETER:
                    at = -1
                elif t.state.is_finished():
                    at = len(kept.rows)
                    kept.rows.append(row)
                else:  # a running trial: this call's row only, numbered below -1 until placed
                    at = -2 - len(running)
                    running.append(row)
                if t.state.is_finished():
                    kept.position[t._trial_id] = at
            positions.append(at)
        index = np.asarray(positions, dtype=np.intp)
        index = index[index != -1]  # trials that lack a parameter (Optuna skips them)
        if not index.size:
            return {name: np.asarray(()) for name in search_space}
        index[index < -1] = len(kept.rows) - 2 - index[index < -1]
        columns = kept.columns(len(search_space))
        if running:
            more = [np.asarray(m) for m in zip(*running, strict=True)]
            columns = (
                [np.concatenate([c, m]) for c, m in zip(columns, more, strict=True)] if kept.rows else more
            )
        return {name: column[index] for name, column in zip(search_space, columns, strict=True)}

    def _internal_row(self, trial, search_space, study) -> tuple[Any, ...] | object:
        """The trial's parameters in the sampler's internal form, as Optuna's loop converts them."""
        params = self._get_params(trial, study)
        if not search_space.keys() <= params.keys():
            return _LACKS_PARAMETER
        return tuple(dist.to_internal_repr(params[name]) for name, dist in search_space.items())


_LACKS_PARAMETER = object()  # a trial Optuna's _get_internal_repr skips
_SAMPLING = threading.RLock()  # see LiarTPESampler._sample


class _InternalRows:
    """One search space's finished trials in TPE's internal form: a row per trial."""

    def __init__(self) -> None:
        self.position: dict[int, int] = {}  # trial id -> its row, -1: lacks a parameter
        self.rows: list[tuple[Any, ...]] = []
        self._columns: list[np.ndarray] = []
        self._built = -1  # how many rows _columns holds

    def columns(self, n: int) -> list[np.ndarray]:
        """One array per parameter, as Optuna makes them (``np.asarray`` of its list)."""
        if self._built != len(self.rows):
            self._columns = [np.asarray(c) for c in zip(*self.rows, strict=True)] if self.rows else []
            self._built = len(self.rows)
        return self._columns or [np.asarray(()) for _ in range(n)]


class _LogNdtrMemo:
    """Optuna's ``_truncnorm._log_ndtr`` (the log of the normal CDF, element by element), with
    a larger memory of its results than Optuna's.

    TPE's log-density needs it at both ends of every kernel's truncation, for the "above"
    estimator one kernel per earlier trial: at 5,000 trials about 50,000 values per trial,
    through a scalar Python function (Optuna's ``_log_ndtr_single``, whose own memory keeps
    1,000 results and so misses at every value). From one trial to the next the kernels stay
    the same but for the neighbours of the trials added, so most values come again: here the
    results of Optuna's own scalar function are kept (up to :attr:`LIMIT`, then forgotten all
    at once), so every value is Optuna's to the last bit (tests/unit/hpo_study/test_optuna_private.py).
    """

    LIMIT = 250_000  # checked before each call, which adds up to ~120,000 more: ~40 MB at most

    def __init__(self) -> None:
        self._memo: dict[float, float] = {}
        self._ufunc = np.frompyfunc(self._single, 1, 1)

    def _single(self, a: float) -> float:
        result = self._memo.get(a)
        if result is None:
            result = self._memo[a] = _truncnorm._log_ndtr_single(a)
        return result

    def __call__(self, a: np.ndarray) -> np.ndarray:
        if len(self._memo) > self.LIMIT:
            self._memo.clear()
        return self._ufunc(a).astype(float)


class _RankedTrials:
    """Optuna's ``_split_trials`` for a single-objective study, with the finished trials' ranks
    kept from trial to trial.

    Optuna sorts every trial of the study for each split (the complete ones by value, the pruned
    ones by their last intermediate value, the infeasible ones by how far they miss their
    constraints: 0.03-0.05 s at 5,000 trials). A finished trial never changes, so here each one
    is ranked once, into three lists kept sorted; a split takes the first ``n_below`` of them,
    in Optuna's order, and hands out the trials it was given, below and above, by number.

    Optuna's sorts are stable: equal keys keep the order of the trials given, which is the
    order of their numbers (Optuna's cache sorts them so; checked here, else ``None``), so each
    key here ends with the trial's number. Optuna's keys, computed by Optuna's own functions;
    the value's order reversed by negation when the study maximizes (``sorted(reverse=True)``
    keeps equal keys in their order too). A case it does not cover (a NaN value, another state,
    trials that are not in number order, or fewer finished trials than ranked) gives ``None``:
    the caller then splits with Optuna's own function. tests/unit/hpo_study/test_optuna_private.py compares
    the splits with Optuna's on studies full of ties.
    """

    def __init__(self, direction: optuna.study.StudyDirection) -> None:
        self._sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        self._reset()

    def _reset(self) -> None:
        self._ranked: set[int] = set()  # trial ids in the lists
        self._complete: list[tuple[Any, ...]] = []  # (key, number), ascending
        self._pruned: list[tuple[Any, ...]] = []
        self._infeasible: list[tuple[Any, ...]] = []

    def split(
        self, study: optuna.Study, trials: list[FrozenTrial], n_below: int
    ) -> tuple[list[FrozenTrial], list[FrozenTrial]] | None:
        new: list[FrozenTrial] = []
        finished, last = 0, -1
        for t in trials:
            if t.number <= last:
                return None
            last = t.number
            if t.state == TrialState.RUNNING:
                continue
            finished += 1
            if t._trial_id not in self._ranked:
                new.append(t)
        if finished != len(self._ranked) + len(new):  # a ranked trial is missing: start again
            self._reset()
            return self.split(study, trials, n_below)
        if new and not self._rank(new, study):
            self._reset()
            return None
        below: set[int] = set()
        for ranked in (self._complete, self._pruned, self._infeasible):
            take = min(n_below, len(ranked))
            below.update(number for _, number in ranked[:take])
            n_below = max(0, n_below - take)
        below_trials, above_trials = [], []
        for t in trials:
            (below_trials if t.number in below else above_trials).append(t)
        return below_trials, above_trials

    def _rank(self, trials: list[FrozenTrial], study: optuna.Study) -> bool:
        """Put finished trials into the lists, in Optuna's categories (False: not covered)."""
        for t in trials:
            infeasible = _get_infeasible_trial_score(t)
            if infeasible > 0:
                self._infeasible.append((infeasible, t.number))
            elif t.state == TrialState.COMPLETE:
                if t.value is None or math.isnan(t.value):
                    return False
                self._complete.append((self._sign * t.value, t.number))
            elif t.state == TrialState.PRUNED:
                self._pruned.append((_get_pruned_trial_score(t, study), t.number))
            else:
                return False
            self._ranked.add(t._trial_id)
        for ranked in (self._complete, self._pruned, self._infeasible):
            ranked.sort()  # timsort: a few new items on a sorted list cost one pass
        return True


# --- Optuna's gRPC storage proxy (entrypoint/multihost/proxy.py: several hosts in one job) --------------


def grpc_server(storage: optuna.storages.BaseStorage, host: str, port: int, thread_pool: Any) -> Any:
    """Optuna's gRPC proxy server for ``storage``, not yet started (``run_grpc_proxy_server``
    would block until the process ends, and could not be stopped with the job). Built as
    Optuna 5.0's ``optuna.storages._grpc.server.make_server`` builds it, which takes no server
    options: ours accept messages of any size from the hosts (as Optuna's client does) and
    refuse to share the port with another server (gRPC sets SO_REUSEPORT by default)."""
    import grpc
    from optuna.storages._grpc import servicer
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    options = [("grpc.max_receive_message_length", -1), ("grpc.so_reuseport", 0)]
    server = grpc.server(thread_pool, options=options)
    api_pb2_grpc.add_StorageServiceServicer_to_server(servicer.OptunaStorageProxyService(storage), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:  # older gRPC reports a failed bind this way
        raise OSError(f"Cannot serve the study on {host}:{port}: the address or port is taken")
    return server


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
