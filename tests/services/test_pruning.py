"""Lean trial writes of the per-epoch path on the real MariaDB and PostgreSQL."""

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo_study import pruners, trialdb


def storages(tmp_path, mysql_db=None):
    yield "memory", None
    yield "sqlite", f"sqlite:///{tmp_path}/s.db"
    if mysql_db is not None:
        yield "mariadb", mariadb(mysql_db)


def mariadb(db):
    return optuna.storages.RDBStorage(
        f"mysql+mysqlconnector://{db.user}@127.0.0.1:3306/{db.name}",
        engine_kwargs={"connect_args": {"password": db.password}},
    )


def curve(rng, n_steps, nan_at=None):
    values = {s: float(v) for s, v in enumerate(np.cumsum(rng.normal(0.1, 0.3, n_steps)))}
    if nan_at is not None and nan_at in values:
        values[nan_at] = float("nan")
    return values


@pytest.mark.services
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_median_pruner_decides_as_optunas_with_trials_finishing_out_of_order(tmp_path, mysql_db, direction):
    rng = np.random.default_rng(0)
    theirs = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    for kind, url in storages(tmp_path, mysql_db):
        ours = pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        study = optuna.create_study(
            storage=url, direction=direction, pruner=ours, study_name=f"s-{direction}"
        )
        slow = study.ask()  # runs while later trials complete, then completes itself
        decisions = 0
        for i in range(25):
            trial = study.ask()
            values = curve(rng, int(rng.integers(1, 8)), nan_at=3 if i % 7 == 0 else None)
            for step, value in values.items():
                trial.report(value, step)
                frozen = study._storage.get_trial(trial._trial_id)
                assert ours.prune(study, frozen) == theirs.prune(study, frozen), (kind, i, step)
                decisions += theirs.prune(study, frozen)
            if i % 5:
                study.tell(trial, float(np.nanmax(list(values.values()))))
            else:
                study.tell(trial, state=TrialState.PRUNED)
            if i == 15:
                for step, value in curve(rng, 8).items():
                    slow.report(value, step)
                study.tell(slow, 0.0)
        assert 0 < decisions < 120, kind  # both prune some and keep some: the comparison means something


@pytest.mark.services
def test_refresh_reads_each_finished_trial_once(mysql_db):
    study = optuna.create_study(storage=mariadb(mysql_db), direction="maximize")
    for _ in range(30):
        trial = study.ask()
        trial.report(0.5, 1)
        study.tell(trial, 0.5)
    running = study.ask()
    rows = []
    engine = trialdb.rdb_of(study).engine
    sqlalchemy.event.listen(engine, "after_cursor_execute", lambda c, cur, *a: rows.append(cur.rowcount))
    completed = trialdb.CompletedValues()
    completed.refresh(study)
    assert completed.n_complete == 30
    rows.clear()
    completed.refresh(study)
    assert rows == [1]  # only the running trial is looked at again
    running.report(0.7, 1)
    study.tell(running, 0.7)
    completed.refresh(study)
    assert completed.n_complete == 31 and completed.count(1) == 31


@pytest.mark.services
def test_a_trial_is_recorded_in_one_transaction_and_never_once_finished(tmp_path, mysql_db, postgres_db):
    postgres = optuna.storages.RDBStorage(
        f"postgresql+psycopg2://{postgres_db.user}@127.0.0.1:5432/{postgres_db.name}",
        engine_kwargs={"connect_args": {"password": postgres_db.password}},
    )
    for kind, url in [*storages(tmp_path, mysql_db), ("postgresql", postgres)]:
        study = optuna.create_study(storage=url, study_name="w")
        trial = study.ask()
        trial.set_user_attr("loss", 9.0)
        commits = []
        if kind != "memory":
            sqlalchemy.event.listen(
                trialdb.rdb_of(study).engine, "commit", lambda conn, c=commits: c.append(1)
            )
        trialdb.record(trial, {1: 0.25, 2: float("inf")}, {"loss": 0.5, "accuracy": 0.75, "epochs_run": 2})
        assert len(commits) == (0 if kind == "memory" else 1)
        study.tell(trial, 0.75)
        frozen = study.trials[0]
        assert frozen.intermediate_values == {1: 0.25, 2: float("inf")}, kind
        assert frozen.user_attrs == {"loss": 0.5, "accuracy": 0.75, "epochs_run": 2}, kind
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            trialdb.record(trial, {3: 0.5}, {})
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            trialdb.record(trial, {}, {"loss": 1.0})
