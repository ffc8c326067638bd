import optuna
import pytest

from entrypoint.job.context import JobContext
from entrypoint.trials import data
from entrypoint.trials.objective import Objective
from hpo_study import settings
from tests.support.jobs import npz

pytestmark = pytest.mark.unit


class PruneFromEpoch(optuna.pruners.BasePruner):
    """A real pruner with a fixed rule, so the test knows when pruning must happen."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def prune(self, study, trial) -> bool:
        return (trial.last_step or 0) >= self.epoch


@pytest.fixture
def dataset(tmp_path, small_digits):
    for name, (x, y) in small_digits.items():
        npz(tmp_path / name / "d.npz", x=x, y=y)
    return data.load({name: str(tmp_path / name) for name in small_digits})


def test_objective_learns_reports_each_epoch_and_records_metrics(dataset, capsys):
    s = settings.parse({"epochs": "4", "seed": "1"})
    objective = Objective(JobContext(s, "job-a"), dataset)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(
        {"n_layers": 1, "n_units_l0": 64, "optimizer": "Adam", "adam_alpha": 0.01, "weight_decay": 1e-8}
    )
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.value > 0.8  # a sane network learns the digits
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
    assert trial.user_attrs["job_name"] == "job-a"
    assert trial.user_attrs["epochs_run"] == 4
    assert trial.user_attrs["validation_accuracy"] == pytest.approx(trial.value)
    assert {"loss", "accuracy", "validation_loss"} <= set(trial.user_attrs)
    assert set(objective.trained) == {0}
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial=0 epoch=")]
    assert len(lines) == 4 and "validation_accuracy=" in lines[-1]


def test_search_space_matches_the_sample(dataset):
    objective = Objective(JobContext(settings.parse({"epochs": "1", "seed": "3"}), "job"), dataset)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=8)
    for trial in study.trials:
        p = trial.params
        assert 1 <= p["n_layers"] <= 3
        assert all(4 <= p[f"n_units_l{i}"] <= 128 for i in range(p["n_layers"]))
        rate = p.get("adam_alpha", p.get("momentum_sgd_lr"))
        assert p["optimizer"] in ("Adam", "MomentumSGD") and 1e-5 <= rate <= 1e-1
        assert 1e-10 <= p["weight_decay"] <= 1e-3


def test_pruning_extension_stops_a_trial_at_the_epoch_boundary(dataset):
    objective = Objective(JobContext(settings.parse({"epochs": "5", "seed": "0"}), "job"), dataset)
    study = optuna.create_study(direction="maximize", pruner=PruneFromEpoch(2))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2]
    assert trial.user_attrs["epochs_run"] == 2
    assert objective.trained == {}  # a pruned trial never offers its weights
