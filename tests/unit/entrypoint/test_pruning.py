"""The per-epoch path in process: our median pruner and constant-liar TPE against Optuna's on
SQLite, and the exact validation accuracy."""

import chainer
import chainer.links as L
import numpy as np
import optuna
import pytest

from entrypoint.trials import loop
from entrypoint.trials.data import Split
from hpo_study import trialdb


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
    from entrypoint.trials import builtin
    from hpo_study import optuna_private

    def run(sampler, url):
        study = optuna.create_study(storage=url, sampler=sampler, direction="maximize")
        running = study.ask()  # another job's running trial: a constant liar
        builtin.suggest_params(running)
        for _ in range(14):
            trial = study.ask()
            params = builtin.suggest_params(trial)
            study.tell(trial, params.get("adam_alpha", 0.0) + params["n_layers"] / 10)
        return [t.params for t in study.trials]

    ours = run(
        optuna_private.LiarTPESampler(seed=4, constant_liar=True, n_startup_trials=3),
        f"sqlite:///{tmp_path}/a.db",
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
    from entrypoint.trials import builtin
    from hpo_study import optuna_private

    def run(sampler, storage):
        study = optuna.create_study(storage=storage, sampler=sampler, direction="maximize")
        for _ in range(2):
            builtin.suggest_params(study.ask())  # other jobs' running trials: constant liars
        for i in range(60):
            trial = study.ask()
            params = builtin.suggest_params(trial)
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
        optuna_private.LiarTPESampler(seed=5, constant_liar=True, n_startup_trials=5),
        optuna_private.LeanReadStorage(f"sqlite:///{tmp_path}/a.db"),
    )
    theirs = run(
        optuna.samplers.TPESampler(seed=5, constant_liar=True, n_startup_trials=5),
        optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/b.db"),
    )
    assert ours == theirs
