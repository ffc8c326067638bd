"""The shared core: the model artifact's record and files, the ranking rule, the user's module."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import chainer
import numpy as np
import pytest

from core import artifact, network, ranking, usercode
from core.artifact import ArtifactError, ModelRecord, ModelSource

pytestmark = pytest.mark.unit

CORE = Path(__file__).parents[3] / "core"
SOURCE = ModelSource(
    study_name="s",
    job_name="j",
    n_features=4,
    n_classes=3,
    objective_metric="accuracy",
    direction="maximize",
)
PARAMS = {"n_layers": 1, "n_units_l0": 5, "optimizer": "Adam", "adam_alpha": 0.001}

# model.json exactly as the keeper of format version 1 wrote it (json.dumps, indent 2, sorted keys).
V1_MODEL_JSON = """{
  "direction": "maximize",
  "format_version": 1,
  "job_name": "chainer-mlp-20261201-101500-0",
  "model_module": null,
  "n_classes": 3,
  "n_features": 4,
  "objective_metric": "accuracy",
  "params": {
    "adam_alpha": 0.001,
    "n_layers": 1,
    "n_units_l0": 5,
    "optimizer": "Adam"
  },
  "study_name": "chainer-mlp",
  "trial_number": 7,
  "value": 0.9375,
  "weights_file": "trial-7.npz"
}"""


def test_a_record_survives_json_and_the_folder(tmp_path):
    record = SOURCE.record(3, 0.75, PARAMS)
    assert record.weights_file == "trial-3.npz" and record.format_version == artifact.FORMAT_VERSION
    assert ModelRecord.from_json(record.to_json()) == record
    assert artifact.read(tmp_path) is None
    artifact.write(tmp_path, record)
    assert artifact.read(tmp_path) == record
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temp file left


def test_a_v1_model_written_by_the_old_keeper_loads_and_serves(tmp_path):
    """A model.tar.gz of format version 1, as images before the shared core wrote it, still serves."""
    from serving.model import load_model, predict_probabilities

    (tmp_path / "model.json").write_text(V1_MODEL_JSON)
    original = network.build_network(PARAMS, 4, 3)
    chainer.serializers.save_npz(tmp_path / "trial-7.npz", original)  # how the keeper wrote weights
    record = artifact.read(tmp_path)
    assert (record.trial_number, record.value, record.study_name) == (7, 0.9375, "chainer-mlp")
    assert json.loads(record.to_json()) == json.loads(V1_MODEL_JSON)  # rewritten byte-compatible
    model = load_model(tmp_path)
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    with chainer.using_config("train", False):
        expected = chainer.functions.softmax(original(x)).array
    np.testing.assert_allclose(predict_probabilities(model, x), expected, rtol=1e-5, atol=1e-7)


def test_unknown_keys_are_kept_not_refused(tmp_path):
    doc = {**json.loads(V1_MODEL_JSON), "added_later": {"x": 1}}
    record = ModelRecord.from_dict(doc)
    assert record.extra == {"added_later": {"x": 1}}
    assert record.to_dict() == doc


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"format_version": 2}, "format_version 2, this image reads 1"),
        ({"weights_file": "../../outside.npz"}, "weights_file '../../outside.npz' is not a file name"),
        ({"weights_file": "/etc/hostname"}, "weights_file '/etc/hostname' is not a file name"),
        ({"weights_file": ".."}, "weights_file '..' is not a file name"),
        ({"weights_file": ""}, "weights_file '' is not a file name"),
        ({"weights_file": 7}, "weights_file 7 is not a file name"),
        ({"params": [1, 2]}, "params is list, not an object"),
        ({"n_features": "4"}, "n_features '4' is not a positive integer"),
        ({"n_classes": 0}, "n_classes 0 is not a positive integer"),
        ({"trial_number": "7"}, "trial_number '7' is not an integer"),
        ({"value": True}, "value True is not a number"),
        ({"model_module": 3}, "model_module 3 is not a string"),
    ],
)
def test_invalid_records_are_refused_naming_the_file_and_the_problem(tmp_path, change, problem):
    (tmp_path / "model.json").write_text(json.dumps({**json.loads(V1_MODEL_JSON), **change}))
    with pytest.raises(ArtifactError) as caught:
        artifact.read(tmp_path)
    assert caught.value.path == str(tmp_path / "model.json") and caught.value.problem.startswith(problem)
    assert str(caught.value) == f"{tmp_path / 'model.json'}: {caught.value.problem}"


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"weights_file": ', "not valid JSON (Expecting value"),
        (b"\xff\xfe{}", "not valid JSON ("),
        ("[1, 2]", "not a JSON object"),
        ('{"weights_file": "trial-0.npz", "params": {}}', "lacks format_version, n_features, n_classes"),
    ],
)
def test_unparsable_or_incomplete_model_json(text, problem):
    with pytest.raises(ArtifactError, match="^s3://b/k/model.tar.gz: model.json: ") as caught:
        ModelRecord.from_json(text, "s3://b/k/model.tar.gz: model.json")
    assert caught.value.problem.startswith(problem)


def test_the_weights_name_is_checked_before_anything_else():
    """A checkpoint's partial model.json with a path for weights_file is refused for the path."""
    with pytest.raises(ArtifactError, match="weights_file '../x.npz' is not a file name"):
        ModelRecord.from_dict({"weights_file": "../x.npz", "job_name": "j"})


def test_an_unreadable_model_json_is_an_artifact_error(tmp_path):
    (tmp_path / "model.json").mkdir()
    with pytest.raises(ArtifactError, match="unreadable"):
        artifact.read(tmp_path)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.json"
    path.write_text("old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        artifact.write_atomically(path, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"] and path.read_text() == "old"


def test_weights_are_loaded_without_pickle(tmp_path):
    net = network.build_network(PARAMS, 4, 3)
    network.save_weights(tmp_path / "w.npz", net)
    with np.load(tmp_path / "w.npz") as npz:
        arrays = {name: np.array([object()], dtype=object) for name in npz.files}  # savez pickles these
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        network.load_weights(tmp_path / "w.npz", net)


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "direction, a, b, better",
    [
        ("maximize", 0.9, 0.5, True),
        ("maximize", 0.5, 0.9, False),
        ("maximize", 0.9, 0.9, False),  # a tie keeps the incumbent
        ("minimize", 0.2, 0.5, True),
        ("minimize", 0.5, 0.2, False),
        ("minimize", 0.2, 0.2, False),
        ("maximize", 0.1, None, True),  # anything finite beats no model
        ("minimize", 0.1, None, True),
        ("maximize", NAN, None, False),  # non-finite never wins
        ("maximize", INF, 0.5, False),
        ("minimize", -INF, 0.5, False),
        ("minimize", NAN, 0.5, False),
        ("maximize", None, None, False),
        ("maximize", 0.1, NAN, True),  # a non-finite incumbent loses to any finite value
        ("minimize", 0.1, INF, True),
        ("MAXIMIZE", 0.9, 0.5, True),  # Optuna's StudyDirection.name
        ("MINIMIZE", 0.9, 0.5, False),
    ],
)
def test_is_better(direction, a, b, better):
    assert ranking.is_better(direction, a, b) is better


def test_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="'up' is not one of maximize, minimize"):
        ranking.is_better("up", 1.0, 0.0)


def test_best_is_the_first_of_equals_and_skips_non_finite():
    trials = [("t0", NAN), ("t1", 0.5), ("t2", INF), ("t3", 0.9), ("t4", 0.9), ("t5", None)]
    assert ranking.best("maximize", trials, lambda t: t[1]) == ("t3", 0.9)
    assert ranking.best("minimize", trials, lambda t: t[1]) == ("t1", 0.5)
    assert ranking.best("maximize", [("x", NAN)], lambda t: t[1]) is None


def test_the_network_builder_of_a_record(tmp_path):
    assert usercode.network_builder(SOURCE.record(0, 0.5, PARAMS), tmp_path) is network.build_network
    record = ModelRecord("trial-0.npz", {}, 4, 3, model_module="not_packed_here")
    with pytest.raises(usercode.UserCodeError, match="Cannot import model-module 'not_packed_here': no "):
        usercode.network_builder(record, tmp_path)
    packed = tmp_path / "packed"
    (packed / "code").mkdir(parents=True)
    (packed / "code" / "half_module.py").write_text("def build_network(p, f, c):\n    return None\n")
    record = ModelRecord("trial-0.npz", {}, 4, 3, model_module="half_module")
    with pytest.raises(usercode.UserCodeError, match=r"'half_module' lacks suggest_params\(\)"):
        usercode.network_builder(record, packed)


def test_core_depends_on_no_training_serving_or_launcher_code():
    """core/ is what the others share: it imports none of them, nor Optuna or the training toolkit."""
    forbidden = {"optuna", "sagemaker_training", "entrypoint", "hpo_study", "serving", "launcher", "devtools"}
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").partition(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"


def test_the_keeper_status_best_and_report_agree_on_ties_and_infinities(tmp_path):
    """One rule everywhere: of equal values the earliest trial, never an infinite one."""
    import optuna

    from entrypoint.model.keeper import BestModelKeeper
    from hpo_study import report, standings
    from launcher import best, status

    study = optuna.create_study(direction="maximize")
    models: dict[int, chainer.Link] = {}
    keeper = BestModelKeeper(tmp_path, study.direction, models, SOURCE)
    for value, job in [(0.5, "a"), (math.inf, "a"), (0.9, "a"), (0.9, "b"), (0.7, "b")]:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"job_name": job}))
        trial = study.trials[-1]
        models[trial.number] = network.build_network(PARAMS, 4, 3)
        keeper(study, trial)
    assert artifact.read(tmp_path).trial_number == 2
    assert best.require_best_trial(study).number == 2
    assert standings.best_trial(study).number == 2
    assert report.write(study, tmp_path / "report").number == 2
    assert json.loads((tmp_path / "report" / "best_trial.json").read_text())["number"] == 2
    summary = status.summary(study)
    assert summary["best"]["trial"] == 2
    assert [(job["job"], job["best"]) for job in summary["jobs"]] == [("a", 0.9), ("b", 0.9)]
