import json

import pytest

from entrypoint import settings
from entrypoint.errors import UserError


def test_defaults_when_nothing_given():
    s = settings.parse({})
    assert s == settings.Settings()
    assert s.direction == "maximize" and not s.uses_shared_storage


def test_sample_spellings_and_types():
    s = settings.parse(
        {
            "host": "db.example.com",
            "db-name": "optuna",
            "db-secret": "demo/optuna/db",
            "study-name": "chainer-study",
            "n-trials": "25",
            "region-name": "eu-west-1",
            "sampler": "RANDOM",
            "seed": "7",
            "pruner": "hyperband",
            "epochs": "3",
            "batch_size": "64",
            "timeout": "90.5",
        }
    )
    assert (s.host, s.db_name, s.db_secret, s.study_name) == (
        "db.example.com",
        "optuna",
        "demo/optuna/db",
        "chainer-study",
    )
    assert (s.n_trials, s.seed, s.epochs, s.batch_size, s.timeout) == (25, 7, 3, 64, 90.5)
    assert (s.sampler, s.pruner, s.region_name) == ("random", "hyperband", "eu-west-1")
    assert s.uses_shared_storage


def test_sdk_and_tuner_keys_are_ignored():
    s = settings.parse(
        {"sagemaker_program": "x.py", "sagemaker_region": '"us-east-1"', "_tuning_objective_metric": "a"}
    )
    assert s == settings.Settings()


def test_values_decoded_by_a_tool_are_accepted():
    assert settings.parse({"n_trials": 3, "timeout": 2.5}).n_trials == 3


def test_loss_metric_minimises_by_default():
    s = settings.parse({"objective-metric": "loss"})
    assert (s.direction, s.metric_key) == ("minimize", "validation/main/loss")


@pytest.mark.parametrize(
    "hps, fragment",
    [
        ({"n-trails": "5"}, "unknown hyperparameter 'n-trails'; accepted: study-name, n-trials"),
        ({"n-trials": "five"}, "'n-trials' must be an integer from 1 to 100000"),
        ({"n-trials": "0"}, "'n-trials' must be an integer from 1 to 100000"),
        ({"epochs": "2.5"}, "'epochs' must be an integer"),
        ({"timeout": "-1"}, "'timeout' must be a number of seconds greater than 0"),
        ({"timeout": "nan"}, "'timeout' must be a number of seconds"),
        ({"sampler": "grid"}, "'sampler' must be one of tpe, random, qmc"),
        ({"pruner": "asha"}, "'pruner' must be one of none, median, hyperband"),
        ({"study-name": "  "}, "'study-name' must not be empty"),
        ({"study-name": "x" * 300}, "'study-name' must be at most 256 characters"),
        ({"n-trials": "3", "n_trials": "4"}, "given twice"),
        ({"direction": "minimize"}, "objective-metric accuracy must be maximized"),
        ({"host": "db"}, "'host' needs 'db-secret'"),
        ({"storage": "mysql://u@h/db", "host": "h", "db-secret": "s"}, "not both"),
        (
            {"heartbeat-interval": "60", "heartbeat-grace-period": "60"},
            "must be longer than 'heartbeat-interval'",
        ),
        ({"max-trials": "0"}, "'max-trials' must be an integer from 1"),
        ({"db-name": "optuna"}, "'db-name' need 'db-secret' or 'storage'"),
        ({"db-port": "70000"}, "'db-port' must be an integer from 1 to 65535"),
    ],
)
def test_bad_input_names_the_key_and_accepted_values(hps, fragment):
    with pytest.raises(UserError) as info:
        settings.parse(hps)
    assert fragment in str(info.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(UserError) as info:
        settings.parse({"epochs": "0", "sampler": "x", "bogus": "1"})
    message = str(info.value)
    assert "'epochs'" in message and "'sampler'" in message and "'bogus'" in message


def test_bad_values_are_not_echoed():
    with pytest.raises(UserError) as info:
        settings.parse({"seed": "hunter2-password"})
    assert "hunter2" not in str(info.value)


def test_load_reads_the_file(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"n-trials": "2"}))
    assert settings.load(path).n_trials == 2
    assert settings.load(tmp_path / "missing.json") == settings.Settings()
    path.write_text("{not json")
    with pytest.raises(UserError, match="Cannot read hyperparameters file"):
        settings.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="must hold a JSON object"):
        settings.load(path)


def test_describe_lists_every_key():
    text = settings.describe()
    for key in settings.accepted_keys():
        assert f"{key}:" in text
