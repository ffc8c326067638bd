"""Contract tests: one per private Optuna symbol hpo_study/optuna_private.py uses, so that an
Optuna upgrade fails here, naming the symbol, before it fails a job."""

from __future__ import annotations

import datetime
import inspect
import math
import random
import tomllib
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from hpo_study import optuna_private
from hpo_study.optuna_private import TESTED_OPTUNA, UntestedOptuna

ROOT = Path(__file__).parents[3]
pytestmark = pytest.mark.unit  # the layer (tests/conftest.py on the layers branch)


@pytest.fixture
def rdb(tmp_path):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'contract.db'}")


def parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# --- the version check --------------------------------------------------------------------------


def test_pyproject_pins_the_tested_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    optuna_deps = [Requirement(d) for d in deps if Requirement(d).name == "optuna"]
    assert len(optuna_deps) == 1
    assert optuna_deps[0].specifier == SpecifierSet(TESTED_OPTUNA)


def test_the_installed_optuna_is_tested_and_others_are_refused():
    optuna_private.check_version(optuna.__version__)  # what the import did
    optuna_private.check_version("5.0.9")
    for version in ("4.5.0", "5.1.0", "6.0.0"):
        with pytest.raises(UntestedOptuna, match=f"Optuna {version} is installed.*{TESTED_OPTUNA}"):
            optuna_private.check_version(version)


# --- ids and reads ------------------------------------------------------------------------------


def test_trial_id_is_the_storages_id(rdb):
    """``Trial._trial_id`` and ``FrozenTrial._trial_id``."""
    study = optuna.create_study(storage=rdb)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    trial = study.ask()
    sid = rdb.get_study_id_from_name(study.study_name)
    assert optuna_private.trial_id(trial) == rdb.get_trial_id_from_study_id_trial_number(sid, 2)
    for frozen in study.trials[:2]:
        assert optuna_private.trial_id(frozen) == rdb.get_trial_id_from_study_id_trial_number(
            sid, frozen.number
        )


def test_study_id_is_the_storages_id(rdb):
    """``Study._study_id``."""
    optuna.create_study(storage=rdb, study_name="first")
    study = optuna.create_study(storage=rdb, study_name="second")
    assert optuna_private.study_id(study) == rdb.get_study_id_from_name("second")


def test_read_trials_sees_running_trials_and_other_jobs_without_cache(rdb):
    """``Study._get_trials(deepcopy, states, use_cache)``."""
    assert parameters(optuna.Study._get_trials) == ["self", "deepcopy", "states", "use_cache"]
    study = optuna.create_study(storage=rdb, study_name="s")
    running = study.ask()
    other = optuna.load_study(study_name="s", storage=rdb)  # another job's view of the study
    other.optimize(lambda t: 1.0, n_trials=1)
    trials = optuna_private.read_trials(study)
    assert [(t.number, t.state) for t in trials] == [
        (running.number, TrialState.RUNNING),
        (1, TrialState.COMPLETE),
    ]


def test_rdb_of_finds_the_storage_behind_optunas_cache(rdb):
    """``Study._storage`` (a ``_CachedStorage``) and its ``_backend``."""
    assert optuna_private.rdb_of(optuna.create_study(storage=rdb)) is rdb
    assert optuna_private.rdb_of(optuna.create_study()) is None  # in memory


def test_engine_is_the_storages_sqlalchemy_engine(rdb):
    """``RDBStorage.engine``."""
    engine = optuna_private.engine(rdb)
    assert isinstance(engine, sqlalchemy.Engine) and str(engine.url) == rdb.url


def test_tell_returns_the_state_held_and_skips_a_finished_trial(rdb):
    """``optuna.study._tell._tell_with_warning(study, trial, value_or_values, state,
    skip_if_finished, suppress_warning) -> (state, values, message)``."""
    from optuna.study._tell import _tell_with_warning

    assert parameters(_tell_with_warning) == [
        "study",
        "trial",
        "value_or_values",
        "state",
        "skip_if_finished",
        "suppress_warning",
    ]
    study = optuna.create_study(storage=rdb)
    done, ended = study.ask(), study.ask()
    assert optuna_private.tell(study, done, 0.5, TrialState.COMPLETE) == TrialState.COMPLETE
    rdb.set_trial_state_values(optuna_private.trial_id(ended), TrialState.FAIL)  # another job ended it
    assert optuna_private.tell(study, ended, 0.7, TrialState.COMPLETE) == TrialState.FAIL
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 0.5), (TrialState.FAIL, None)]


# --- Optuna's tables ----------------------------------------------------------------------------


def test_the_tables_and_columns_we_read_and_write_exist(rdb):
    """``optuna.storages._rdb.models``: TrialModel, TrialIntermediateValueModel,
    TrialUserAttributeModel, TrialHeartbeatModel, as created in a real database."""
    inspector = sqlalchemy.inspect(optuna_private.engine(rdb))
    used = {
        optuna_private.TRIALS: {"trial_id", "study_id", "number", "state"},
        optuna_private.INTERMEDIATE_VALUES: {
            "trial_id",
            "step",
            "intermediate_value",
            "intermediate_value_type",
        },
        optuna_private.USER_ATTRS: {"trial_id", "key", "value_json"},
        optuna_private.HEARTBEATS: {"trial_id", "heartbeat"},
    }
    for table, columns in used.items():
        assert columns <= set(table.c.keys()), table.name
        assert columns <= {c["name"] for c in inspector.get_columns(table.name)}, table.name


@pytest.mark.parametrize("value", [0.5, -3.0, math.inf, -math.inf, math.nan])
def test_intermediate_values_round_trip_through_optunas_representation(rdb, value):
    """``TrialIntermediateValueModel.intermediate_value_to_stored_repr`` and
    ``stored_repr_to_intermediate_value``: what we write, Optuna reads back."""
    stored, kind = optuna_private.stored_value(value)
    back = optuna_private.value_from_stored(stored, kind)
    assert (math.isnan(back) and math.isnan(value)) or back == value
    study = optuna.create_study(storage=rdb)
    trial = study.ask()
    row = {"trial_id": optuna_private.trial_id(trial), "step": 1}
    row.update(intermediate_value=stored, intermediate_value_type=kind)
    with optuna_private.engine(rdb).begin() as conn:
        conn.execute(optuna_private.INTERMEDIATE_VALUES.insert(), [row])
    read = rdb.get_trial(optuna_private.trial_id(trial)).intermediate_values[1]
    assert (math.isnan(read) and math.isnan(value)) or read == value


def test_schema_complete_only_once_optuna_stamped_it(tmp_path):
    """The ``version_info`` and ``alembic_version`` tables Optuna fills last."""
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        assert not optuna_private.schema_complete(conn)
    optuna.storages.RDBStorage(url)
    with engine.connect() as conn:
        assert optuna_private.schema_complete(conn)
    engine.dispose()


def test_running_heartbeats_of_running_trials_only(rdb):
    study = optuna.create_study(storage=rdb)
    silent, beating, done = study.ask(), study.ask(), study.ask()
    study.tell(done, 1.0)
    rdb.record_heartbeat(optuna_private.trial_id(beating))
    with optuna_private.engine(rdb).connect() as conn:
        rows = dict(optuna_private.running_heartbeats(conn, optuna_private.study_id(study)))
    assert set(rows) == {optuna_private.trial_id(silent), optuna_private.trial_id(beating)}
    assert rows[optuna_private.trial_id(silent)] is None
    assert isinstance(rows[optuna_private.trial_id(beating)], datetime.datetime)


# --- overrides of private methods ---------------------------------------------------------------


def test_the_stale_sweep_asks_the_hook(tmp_path):
    """``RDBStorage._get_stale_trial_ids(study_id)``, called by ``optuna.storages.fail_stale_trials``."""
    assert parameters(optuna.storages.RDBStorage._get_stale_trial_ids) == ["self", "study_id"]

    class FailsTrialZero(optuna_private.StaleSweepStorage):
        def more_stale_trial_ids(self, study, stale):
            return [optuna_private.trial_id(first)]

    storage = FailsTrialZero(f"sqlite:///{tmp_path / 'sweep.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage)
    first, second = study.ask(), study.ask()
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]
    assert second.number == 1


def test_tpe_samples_through_sample_and_reads_the_study_through_get_trials(rdb, monkeypatch):
    """``TPESampler._sample(study, trial, search_space)``, which reads trials with
    ``study._get_trials``: LiarTPESampler reads them once per trial and serves them from there."""
    assert parameters(optuna.samplers.TPESampler._sample) == ["self", "study", "trial", "search_space"]
    reads = []
    served = []
    real_read = optuna_private.read_trials
    real_serve = optuna_private._TrialSnapshot._get_trials
    monkeypatch.setattr(optuna_private, "read_trials", lambda study: reads.append(1) or real_read(study))
    monkeypatch.setattr(
        optuna_private._TrialSnapshot, "_get_trials", lambda *a, **k: served.append(1) or real_serve(*a, **k)
    )
    sampler = optuna_private.LiarTPESampler(seed=0, constant_liar=True, n_startup_trials=2)
    study = optuna.create_study(storage=rdb, sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=5)
    sampled_by_tpe = 3  # after 2 start-up trials, each trial samples x and y once
    assert len(reads) == sampled_by_tpe  # one read per trial, not one per parameter
    assert len(served) >= sampled_by_tpe  # TPE read them from the snapshot, not the storage


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_kept_ranking_splits_the_trials_as_optunas_split_trials(direction):
    """``_split_trials(study, trials, n_below)``, its helpers ``_get_pruned_trial_score`` and
    ``_get_infeasible_trial_score``: LiarTPESampler's kept ranking gives Optuna's split (the
    same trials, in the same order) at every size of a growing study full of ties: equal
    values, pruned trials at equal steps with equal values, NaN and infinite intermediate
    values, pruned trials without any, infeasible trials (equal violations included) and
    running ones, for every n_below up to past the number of trials."""
    from optuna.samplers._tpe.sampler import _split_trials

    assert parameters(_split_trials) == ["study", "trials", "n_below"]
    rng = random.Random(3)
    study = optuna.create_study(direction=direction)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    ranked = optuna_private._RankedTrials(study.direction)
    ids = lambda trials: [optuna_private.trial_id(t) for t in trials]  # noqa: E731
    for n in range(160):
        kind = rng.choice(["complete", "complete", "pruned", "pruned", "running", "infeasible"])
        value = rng.choice([0.5, 0.5, -1.0, 2.0, math.inf, -math.inf, rng.random()])
        attrs = {"constraints": [rng.choice([0.0, -1.0, 1.5, 1.5, 0.2])]} if rng.random() < 0.3 else {}
        steps = {}
        if kind == "pruned" and rng.random() < 0.9:
            steps = {
                s: rng.choice([0.5, 0.5, math.nan, math.inf, rng.random()]) for s in range(rng.randint(1, 3))
            }
        state = {"complete": TrialState.COMPLETE, "running": TrialState.RUNNING}.get(kind, TrialState.PRUNED)
        if kind == "infeasible":
            state, attrs = TrialState.COMPLETE, {"constraints": [rng.choice([1.0, 1.0, 0.3])]}
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                params={"x": rng.random()},
                distributions=dist,
                intermediate_values=steps,
                system_attrs=attrs,
            )
        )
        trials = study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
        for n_below in sorted({0, 1, 2, n // 10, n // 3, n, n + 5}):
            theirs = _split_trials(study, trials, n_below)
            ours = ranked.split(study, trials, n_below)
            assert ours is not None
            assert (ids(ours[0]), ids(ours[1])) == (ids(theirs[0]), ids(theirs[1])), (n, n_below)
    # Not covered: trials out of number order (Optuna's sorts would keep that order).
    assert ranked.split(study, trials[::-1], 3) is None
    # A ranked trial missing from the trials given: ranked again from those given.
    fewer = [t for t in trials if t.number != 5]
    assert ids(ranked.split(study, fewer, 7)[0]) == ids(_split_trials(study, fewer, 7)[0])


def test_the_kept_log_ndtr_is_optunas_to_the_last_bit(monkeypatch):
    """``_truncnorm._log_ndtr`` (a module function TPE's log-density looks up at each call) and
    ``_truncnorm._log_ndtr_single``: LiarTPESampler's kept results are Optuna's, bit for bit,
    on every branch (right tail, log of the CDF, the asymptotic series below -20), repeated
    values, signed zeros and NaN, also after its memory was forgotten at the limit; and the
    sampler puts Optuna's function back after sampling."""
    import numpy as np
    from optuna.samplers._tpe import _truncnorm

    assert parameters(_truncnorm._log_ndtr) == ["a"] and parameters(_truncnorm._log_ndtr_single) == ["a"]
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0, 10, 3000), rng.uniform(-60, 10, 2000), [0.0, -0.0, 6.0, -20.0, -20.5, 1e10, -1e10]]
    )
    memo = optuna_private._LogNdtrMemo()
    monkeypatch.setattr(optuna_private._LogNdtrMemo, "LIMIT", 3000)
    for batch in (values, values[::-1], values[:4000], values):  # from the second on, past the limit
        ours, theirs = memo(batch), _truncnorm._log_ndtr(batch)
        assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes()
    assert np.isnan(memo(np.array([math.nan]))).all()
    original = _truncnorm._log_ndtr
    study = optuna.create_study(sampler=optuna_private.LiarTPESampler(seed=0, n_startup_trials=2))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    assert _truncnorm._log_ndtr is original


def test_the_kept_internal_values_are_optunas_arrays():
    """``TPESampler._get_internal_repr(trials, search_space, study)`` and ``_get_params``:
    LiarTPESampler's kept rows give Optuna's arrays (values, dtypes, order) for subsets of the
    trials in number order, with running trials (never kept), trials lacking a parameter, a
    categorical column, and no trial at all; called again as trials finish."""
    assert parameters(optuna.samplers.TPESampler._get_internal_repr) == [
        "self",
        "trials",
        "search_space",
        "study",
    ]
    dists = {
        "x": optuna.distributions.FloatDistribution(0, 1),
        "n": optuna.distributions.IntDistribution(1, 9),
        "c": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
    }
    rng = random.Random(1)
    study = optuna.create_study()
    ours = optuna_private.LiarTPESampler(seed=0)
    theirs = optuna.samplers.TPESampler(seed=0)
    spaces = [dists, {"c": dists["c"]}, {"x": dists["x"], "n": dists["n"]}]

    def same(trials, space):
        a = ours._get_internal_repr(trials, space, study)
        b = theirs._get_internal_repr(trials, space, study)
        assert list(a) == list(b)
        for name in b:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name

    for _ in range(40):
        names = [k for k in dists if rng.random() < 0.85]
        params = {"x": rng.random(), "n": rng.randint(1, 9), "c": rng.choice("abc")}
        state = rng.choice([TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED])
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=1.0 if state == TrialState.COMPLETE else None,
                params={k: params[k] for k in names},
                distributions={k: dists[k] for k in names},
            )
        )
        trials = study.get_trials(deepcopy=False)
        for space in spaces:
            same(trials, space)
            same([t for t in trials if t.number % 3], space)
            same([t for t in trials if t.state == TrialState.RUNNING], space)
            same([], space)


def test_one_sampler_shared_by_two_studies_draws_what_optunas_draws():
    """The state LiarTPESampler keeps is one study's: two in-memory studies have the same study
    and trial ids, and asked in turn through one sampler they draw what one TPESampler draws."""

    def run(sampler):
        studies = [optuna.create_study(sampler=sampler, direction=d) for d in ("minimize", "maximize")]
        drawn = []
        for _ in range(15):
            for study in studies:
                trial = study.ask()
                x, n = trial.suggest_float("x", -5, 5), trial.suggest_int("n", 0, 10)
                study.tell(trial, x * x + n)
                drawn.append(trial.params)
        return drawn

    ours = run(optuna_private.LiarTPESampler(seed=3, constant_liar=True, n_startup_trials=4))
    theirs = run(optuna.samplers.TPESampler(seed=3, constant_liar=True, n_startup_trials=4))
    assert ours == theirs


def test_a_range_that_changes_every_trial_keeps_few_search_spaces_and_optunas_draws():
    """A range depending on another parameter is a new search space every trial: the sampler
    keeps the internal values of the last few only, and still draws Optuna's parameters."""

    def run(sampler):
        study = optuna.create_study(sampler=sampler)
        for _ in range(40):
            trial = study.ask()
            x = trial.suggest_float("x", 0, 1)
            y = trial.suggest_float("y", 0, 1 + x)
            study.tell(trial, (x - 0.3) ** 2 + y)
        return [t.params for t in study.trials]

    ours = optuna_private.LiarTPESampler(seed=2, constant_liar=True, n_startup_trials=4)
    theirs = optuna.samplers.TPESampler(seed=2, constant_liar=True, n_startup_trials=4)
    assert run(ours) == run(theirs)
    assert len(ours._internal) <= optuna_private.LiarTPESampler.INTERNAL_SPACES


def test_threads_sharing_the_sampler_leave_optunas_log_ndtr_in_place():
    """study.optimize(n_jobs=2) samples from two threads: one sampling at a time, and Optuna's
    module function is Optuna's again afterwards."""
    from optuna.samplers._tpe import _truncnorm

    original = _truncnorm._log_ndtr
    study = optuna.create_study(sampler=optuna_private.LiarTPESampler(seed=0, n_startup_trials=2))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=40, n_jobs=2)
    assert _truncnorm._log_ndtr is original
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 40


# --- Optuna's gRPC storage proxy (entrypoint/multihost/proxy.py) ------------------------------------------


def test_storage_of_is_the_storage_the_study_uses(rdb):
    study = optuna.create_study(storage=rdb)
    assert optuna_private.rdb_of(study) is rdb
    assert optuna_private.storage_of(study) is study._storage


def test_grpc_server_is_built_as_optunas_make_server_not_started():
    # optuna_private.grpc_server repeats make_server's body with server options: the pieces it
    # uses must still be the ones make_server uses.
    from optuna.storages._grpc import server, servicer
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    assert parameters(server.make_server) == ["storage", "host", "port", "thread_pool"]
    source = inspect.getsource(server.make_server)
    for piece in ("add_StorageServiceServicer_to_server", "OptunaStorageProxyService", "add_insecure_port"):
        assert piece in source
    assert callable(api_pb2_grpc.add_StorageServiceServicer_to_server)
    assert callable(servicer.OptunaStorageProxyService)
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.services import free_port

    built = optuna_private.grpc_server(
        optuna.storages.InMemoryStorage(), "127.0.0.1", free_port(), ThreadPoolExecutor(1)
    )
    built.stop(None)  # never started: stopping it is all there is to do


def test_grpc_client_builds_its_channel_stub_and_cache_through_the_hooks():
    from optuna.storages._grpc.client import GrpcClientCache

    seen = []

    class Client(optuna_private.GrpcClient):
        def channel_options(self):
            return [("grpc.max_reconnect_backoff_ms", 1000)]

        def wrap_stub(self, stub):
            seen.append(stub)
            return stub

    client = Client(host="127.0.0.1", port=1)  # a channel connects on the first call only
    try:
        assert seen == [client._stub] and isinstance(client._cache, GrpcClientCache)
        assert client._cache.grpc_client is client._stub
        assert (client._host, client._port) == ("127.0.0.1", 1)
    finally:
        client.close()


# --- the lean trial read ------------------------------------------------------------------------


def _varied_study(storage: optuna.storages.RDBStorage, directions=("maximize",)) -> optuna.Study:
    """Trials in every state, with every kind of value, parameter and attribute Optuna stores."""
    study = optuna.create_study(storage=storage, directions=list(directions))
    for i in range(6):
        trial = study.ask()
        trial.suggest_int("n", 1, 128, log=True)
        trial.suggest_categorical("opt", ["Adam", "SGD", None])
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        if i % 2:
            trial.suggest_float("x", -1, 1, step=0.25)
        trial.set_user_attr("job_name", f"job-{i}")
        trial.set_user_attr("nested", {"a": [1, 2.5, None]})
        storage.set_trial_system_attr(optuna_private.trial_id(trial), "sys", i)
        for step, value in enumerate([0.1, math.nan, math.inf, -math.inf][: i % 4 + 1]):
            if len(directions) == 1:
                trial.report(value, step)
        ends = [
            (TrialState.COMPLETE, [0.5 + i] * len(directions)),
            (TrialState.PRUNED, None),
            (TrialState.FAIL, None),
            (TrialState.COMPLETE, [math.inf] * len(directions)),
        ]
        if i < 4:
            state, values = ends[i]
            study.tell(trial, values, state=state)
    study.enqueue_trial({"n": 4})  # WAITING
    return study


def check_lean_read(url: str, directions: tuple[str, ...], engine_kwargs=None) -> None:
    """``RDBStorage._get_trials`` (and ``_build_frozen_trial_from_trial_model``'s output): the
    lean read gives equal FrozenTrials for every filter the cache and get_all_trials use."""
    kwargs = {"engine_kwargs": engine_kwargs} if engine_kwargs else {}
    theirs = optuna.storages.RDBStorage(url, **kwargs)
    study = _varied_study(theirs, directions)
    ours = optuna_private.LeanReadStorage(url, skip_table_creation=True, **kwargs)
    sid = optuna_private.study_id(study)
    ids = [optuna_private.trial_id(t) for t in study.trials]
    # On MySQL the trials come packed in JSON (and row by row where that is not possible).
    for packs in (True, False) if ours.engine.dialect.name == "mysql" else (True,):
        ours._packs = packs
        compare_reads(theirs, ours, sid, ids)
    ours._packs = True
    with pytest.raises(KeyError):
        ours._get_trials(sid + 100, None, set(), -1)
    assert ours._get_trials(optuna.create_study(storage=ours)._study_id, None, set(), -1) == []
    theirs.engine.dispose()
    ours.engine.dispose()


def compare_reads(theirs, ours, sid: int, ids: list[int]) -> None:
    cases = [
        (None, set(), -1),
        ((TrialState.COMPLETE,), set(), -1),
        ((TrialState.RUNNING, TrialState.WAITING), set(), -1),
        (None, {ids[1], ids[4], ids[-1]}, ids[3]),  # the cache's refresh: unfinished ones + newer
        (None, set(), ids[2]),
    ]
    for states, included, newer in cases:
        expected = theirs._get_trials(sid, states, included, newer)
        got = ours._get_trials(sid, states, included, newer)
        # repr: NaN values compare unequal to themselves; repr shows every field.
        assert [repr(t) for t in got] == [repr(t) for t in expected], (states, included, newer)
        assert [t._trial_id for t in got] == [t._trial_id for t in expected]
        assert [t.system_attrs for t in got] == [t.system_attrs for t in expected]
    assert repr(ours.get_all_trials(sid)) == repr(theirs.get_all_trials(sid))


@pytest.mark.parametrize("directions", [("maximize",), ("minimize", "maximize")])
def test_the_lean_read_returns_optunas_trials(tmp_path, directions):
    check_lean_read(f"sqlite:///{tmp_path / 'lean.db'}", directions)


def test_schema_head_is_optunas_and_other_revisions_get_optunas_check(tmp_path):
    """``optuna.storages._rdb.storage._VersionManager`` (and its ``_init_alembic``): the lean
    storage skips alembic for a schema at SCHEMA_HEAD, creates a fresh one as Optuna does, and
    leaves any other revision to Optuna's check, which refuses it."""
    url = f"sqlite:///{tmp_path / 'v.db'}"
    fresh = optuna_private.LeanReadStorage(url)  # creates the schema, stamps alembic
    assert fresh._version_manager.get_head_version() == optuna_private.SCHEMA_HEAD
    assert optuna_private.current_revision(fresh.engine) == optuna_private.SCHEMA_HEAD
    assert isinstance(
        optuna.storages.RDBStorage(url)._version_manager, type(fresh._version_manager).__mro__[1]
    )
    assert type(optuna.storages.RDBStorage(url)._version_manager) is not type(fresh._version_manager)
    with fresh.engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v3.0.0.a'"))
    with pytest.raises(RuntimeError, match="optuna storage upgrade"):
        optuna_private.LeanReadStorage(url, skip_table_creation=True)
    assert (
        optuna_private.current_revision(sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'none.db'}")) is None
    )
