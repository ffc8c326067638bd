import json

import chainer
import numpy as np
import optuna
import pytest

from core import artifact
from core.artifact import ModelSource
from core.network import build_network
from entrypoint.model.keeper import BestModelKeeper

pytestmark = pytest.mark.unit

MAX, MIN = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
PARAMS = {"n_layers": 1, "n_units_l0": 8}
SOURCE = ModelSource("s", "j", n_features=4, n_classes=3, objective_metric="accuracy", direction="maximize")


def finished(study, value, state=optuna.trial.TrialState.COMPLETE):
    complete = state == optuna.trial.TrialState.COMPLETE
    study.add_trial(optuna.trial.create_trial(state=state, value=value if complete else None))
    return study.trials[-1]


def net(fill):
    model = build_network(PARAMS, 4, 3)
    for p in model.params():
        p.array[...] = fill
    return model


def weights_of(model_dir):
    record = artifact.read(model_dir)
    target = build_network(PARAMS, 4, 3)
    chainer.serializers.load_npz(model_dir / record.weights_file, target)
    return float(next(target.params()).array.flat[0])


@pytest.fixture
def keeper_for(tmp_path):
    def make(direction=MAX):
        models = {}
        keeper = BestModelKeeper(tmp_path / "model", direction, models, SOURCE)
        return keeper, models

    return make


def offer(keeper, models, study, value, fill):
    trial = finished(study, value)
    models[trial.number] = net(fill)
    keeper(study, trial)
    assert trial.number not in models  # never held longer than the callback


def test_keeps_only_the_best_and_one_weights_file(keeper_for, tmp_path):
    keeper, models = keeper_for(MAX)
    study = optuna.create_study(direction="maximize")
    offer(keeper, models, study, 0.5, 1.0)
    offer(keeper, models, study, 0.9, 2.0)
    offer(keeper, models, study, 0.7, 3.0)  # worse: must not replace
    offer(keeper, models, study, 0.9, 4.0)  # a tie keeps the first
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["model.json", "trial-1.npz"]
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert (meta["trial_number"], meta["value"], meta["n_features"], meta["n_classes"]) == (1, 0.9, 4, 3)
    assert weights_of(tmp_path / "model") == 2.0


def test_minimize_direction(keeper_for, tmp_path):
    keeper, models = keeper_for(MIN)
    study = optuna.create_study(direction="minimize")
    offer(keeper, models, study, 0.5, 1.0)
    offer(keeper, models, study, 0.2, 2.0)
    offer(keeper, models, study, 0.3, 3.0)
    assert artifact.read(tmp_path / "model").trial_number == 1


def test_failed_pruned_and_nan_trials_are_never_kept(keeper_for, tmp_path):
    keeper, models = keeper_for(MAX)
    study = optuna.create_study(direction="maximize")
    for state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED):
        trial = finished(study, None, state)
        models[trial.number] = net(1.0)
        keeper(study, trial)
        assert trial.number not in models
    assert keeper.is_better(float("nan")) is False
    assert artifact.read(tmp_path / "model") is None


def test_crash_while_writing_weights_keeps_the_previous_model(keeper_for, tmp_path, monkeypatch):
    keeper, models = keeper_for(MAX)
    study = optuna.create_study(direction="maximize")
    offer(keeper, models, study, 0.5, 1.0)

    def half_write(f, model):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(chainer.serializers, "save_npz", half_write)
    with pytest.raises(OSError, match="disk full"):
        offer(keeper, models, study, 0.9, 2.0)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json", "trial-0.npz"]
    assert weights_of(tmp_path / "model") == 1.0


def test_crash_between_weights_and_commit_is_cleaned_on_restart(keeper_for, tmp_path, monkeypatch):
    keeper, models = keeper_for(MAX)
    study = optuna.create_study(direction="maximize")
    offer(keeper, models, study, 0.5, 1.0)
    real_replace = __import__("os").replace

    def crash_on_commit(src, dst):
        if str(dst).endswith("model.json"):
            raise KeyboardInterrupt  # the process dies between the two renames
        real_replace(src, dst)

    monkeypatch.setattr("core.artifact.os.replace", crash_on_commit)
    with pytest.raises(KeyboardInterrupt):
        offer(keeper, models, study, 0.9, 2.0)
    monkeypatch.undo()
    assert artifact.read(tmp_path / "model").trial_number == 0 and weights_of(tmp_path / "model") == 1.0
    restarted, _ = keeper_for(MAX)
    assert restarted.best_value == 0.5
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json", "trial-0.npz"]


def test_weights_round_trip_through_the_shared_network(keeper_for, tmp_path):
    keeper, models = keeper_for(MAX)
    study = optuna.create_study(direction="maximize")
    offer(keeper, models, study, 0.5, 0.25)
    x = np.ones((2, 4), dtype=np.float32)
    loaded = build_network(PARAMS, 4, 3)
    chainer.serializers.load_npz(tmp_path / "model" / "trial-0.npz", loaded)
    np.testing.assert_allclose(loaded(x).array, net(0.25)(x).array)
