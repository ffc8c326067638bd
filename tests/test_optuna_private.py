"""Contract tests: one per private Optuna symbol entrypoint/optuna_private.py uses, so that an
Optuna upgrade fails here, naming the symbol, before it fails a job."""

from __future__ import annotations

import datetime
import inspect
import math
import tomllib
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from entrypoint import optuna_private
from entrypoint.optuna_private import TESTED_OPTUNA, UntestedOptuna

ROOT = Path(__file__).parents[1]
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


# --- Optuna's gRPC storage proxy (entrypoint/proxy.py) ------------------------------------------


def test_storage_of_is_the_storage_the_study_uses(rdb):
    study = optuna.create_study(storage=rdb)
    assert optuna_private.rdb_of(study) is rdb
    assert optuna_private.storage_of(study) is study._storage


def test_grpc_server_is_optunas_proxy_server_not_started(monkeypatch):
    from optuna.storages._grpc import server

    assert parameters(server.make_server) == ["storage", "host", "port", "thread_pool"]
    calls = []
    monkeypatch.setattr(server, "make_server", lambda *args: calls.append(args) or "server")
    storage = optuna.storages.InMemoryStorage()
    assert optuna_private.grpc_server(storage, "10.0.0.1", 13000, None) == "server"
    assert calls == [(storage, "10.0.0.1", 13000, None)]


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
