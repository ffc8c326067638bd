"""The per-epoch path: our median pruner against Optuna's, lean trial writes on real databases,
and the exact validation accuracy."""

import chainer
import chainer.links as L
import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from entrypoint import loop, pruning, trialdb
from entrypoint.data import Split


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
        ours = pruning.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
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


@pytest.mark.unit
def test_percentile_is_numpys_nanpercentile():
    rng = np.random.default_rng(1)
    for n in range(1, 60):
        completed = trialdb.CompletedValues()
        values = rng.normal(size=n)
        for v in values:
            completed.add({0: float(v)})
        completed.add({0: float("nan")})
        for q in (0.0, 10.0, 50.0, 73.0, 100.0):
            assert completed.percentile(0, q) == np.nanpercentile(np.append(values, np.nan), q)
        assert completed.count(0) == n + 1


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


@pytest.mark.unit
def test_validation_accuracy_is_the_fraction_of_correct_examples(monkeypatch):
    rng = np.random.default_rng(2)
    # 4101 examples: the last chunk of 5 is all wrong, so a mean of chunk means would be far off.
    monkeypatch.setattr(loop, "EVAL_CHUNK", 1024)
    x = rng.normal(size=(4101, 6)).astype(np.float32)
    predictor = L.Linear(6, 3)
    with chainer.no_backprop_mode():
        predicted = predictor(x).array.argmax(axis=1)
    y = predicted.astype(np.int32)
    y[::3] = (y[::3] + 1) % 3  # every third example wrong
    y[-5:] = (predicted[-5:] + 1) % 3
    _, accuracy = loop.evaluate(predictor, Split(x, y))
    assert accuracy == int((predicted == y).sum()) / len(y)
    chunk_means = [float((predicted[i : i + 1024] == y[i : i + 1024]).mean()) for i in range(0, len(y), 1024)]
    assert abs(np.mean(chunk_means) - accuracy) > 0.1


@pytest.mark.unit
def test_liar_tpe_samples_what_optunas_samples_reading_once_per_trial(tmp_path):
    from entrypoint import objective, search

    def run(sampler, url):
        study = optuna.create_study(storage=url, sampler=sampler, direction="maximize")
        running = study.ask()  # another job's running trial: a constant liar
        objective.suggest_params(running)
        for _ in range(14):
            trial = study.ask()
            params = objective.suggest_params(trial)
            study.tell(trial, params.get("adam_alpha", 0.0) + params["n_layers"] / 10)
        return [t.params for t in study.trials]

    ours = run(
        search.LiarTPESampler(seed=4, constant_liar=True, n_startup_trials=3), f"sqlite:///{tmp_path}/a.db"
    )
    theirs = run(
        optuna.samplers.TPESampler(seed=4, constant_liar=True, n_startup_trials=3),
        f"sqlite:///{tmp_path}/b.db",
    )
    assert ours == theirs


@pytest.mark.unit
def test_liar_tpe_samples_what_optunas_samples_on_a_larger_study_with_pruned_trials(tmp_path):
    """The split kept per trial and the internal values kept per finished trial change no draw:
    60 trials, a third pruned (TPE ranks them by their last intermediate value), one failed,
    two running elsewhere, read through the lean storage."""
    from entrypoint import objective, optuna_private, search

    def run(sampler, storage):
        study = optuna.create_study(storage=storage, sampler=sampler, direction="maximize")
        for _ in range(2):
            objective.suggest_params(study.ask())  # other jobs' running trials: constant liars
        for i in range(60):
            trial = study.ask()
            params = objective.suggest_params(trial)
            score = (
                params.get("adam_alpha", params.get("momentum_sgd_lr", 0.0)) * 10 + params["n_layers"] / 10
            )
            if i % 3 == 1:
                trial.report(score / 2, 1)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif i == 7:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, score)
        return [t.params for t in study.trials]

    ours = run(
        search.LiarTPESampler(seed=5, constant_liar=True, n_startup_trials=5),
        optuna_private.LeanReadStorage(f"sqlite:///{tmp_path}/a.db"),
    )
    theirs = run(
        optuna.samplers.TPESampler(seed=5, constant_liar=True, n_startup_trials=5),
        optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/b.db"),
    )
    assert ours == theirs
