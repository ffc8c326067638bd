import json

import optuna
import pytest

from core.engines import ENGINES
from core.errors import UserError
from entrypoint.job import hyperparameters
from entrypoint.trials import search
from hpo_study import pruners, samplers, settings

pytestmark = pytest.mark.unit


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
    assert hyperparameters.load(path).n_trials == 2
    assert hyperparameters.load(tmp_path / "missing.json") == settings.Settings()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "is not valid JSON: Expecting property name enclosed in double quotes"),
        (b"", "is empty: it must hold a JSON object ({} for none)"),
        (b" \n", "is empty"),
        (b"[1, 2]", "must hold a JSON object of strings, not an array"),
        (b'"n-trials=3"', "not a string"),
        (b"null", "not null"),
        (b'{"study-name": "caf\xe9"}', "is not UTF-8 text (byte 0xe9 at offset 19)"),
    ],
)
def test_a_bad_hyperparameters_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "hyperparameters.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        hyperparameters.load(path)
    text = str(info.value)
    assert message in text and str(path) in text
    assert "\n" not in text and len(text) < 300


def test_a_long_unknown_key_is_cut_short():
    key = "k" * 10_000
    with pytest.raises(UserError) as info:
        settings.parse({key: "1", "n-trails": "2"})
    text = str(info.value)
    assert f"unknown hyperparameters '{'k' * 40}... (10000 characters)', 'n-trails'" in text
    assert len(text) < 1024, len(text)  # SageMaker's FailureReason keeps 1024 characters


def test_many_unknown_keys_are_counted_not_listed():
    with pytest.raises(UserError) as info:
        settings.parse({f"bogus-{i}": "1" for i in range(100)})
    text = str(info.value)
    assert "'bogus-4' and 95 more;" in text and "bogus-5'" not in text
    assert len(text) < 1024


def test_control_characters_in_a_key_are_shown_escaped():
    with pytest.raises(UserError) as info:
        settings.parse({"bad\nkey\x1b": "1"})
    assert "'bad\\nkey\\x1b'" in str(info.value)


# SDK v2 in script mode (source_dir / entry_point): json.dumps of every value.
SCRIPT_MODE = {
    "study-name": '"digits-v1"',
    "n-trials": '"20"',
    "timeout": "3600.5",
    "seed": "1",
    "model-module": '"conv_digits"',
    "install-requirements": "false",
    "sampler": '"random"',
}


def test_json_encoded_values_are_decoded_as_the_toolkit_does():
    s = settings.parse(SCRIPT_MODE)
    assert (s.study_name, s.n_trials, s.timeout, s.seed) == ("digits-v1", 20, 3600.5, 1)
    assert (s.model_module, s.install_requirements, s.sampler) == ("conv_digits", False, "random")


@pytest.mark.parametrize(
    "raw, decoded",
    [
        ('"20"', "20"),  # a JSON string holding a number: still a number for a numeric key
        ("20", "20"),
        ("plain text", "plain text"),  # not JSON: stays as it is
        ("123", "123"),  # a JSON number stays its text: a study name "123" is not an int
        ("true", "true"),
        ('"with \\"quotes\\""', 'with "quotes"'),
        ("[1, 2]", "[1, 2]"),
        (7, "7"),  # a hand-made dict with numbers
        (False, "false"),
    ],
)
def test_decode(raw, decoded):
    assert settings.decode(raw) == decoded


def test_a_bad_json_encoded_value_is_still_refused_without_echo():
    with pytest.raises(UserError) as info:
        settings.parse({"n-trials": '"many"', "study-name": '""'})
    text = str(info.value)
    assert "'n-trials' must be an integer" in text and "'study-name' must not be empty" in text
    assert "many" not in text


def test_describe_lists_every_key():
    text = settings.describe()
    for key in settings.accepted_keys():
        assert f"{key}:" in text


# --- the names settings accepts are the tables' names, and each builds its object --------------


@pytest.mark.parametrize(
    "key, table, built",
    [
        ("sampler", samplers.SAMPLERS, lambda s: search.make_sampler(s, 1)),
        ("pruner", pruners.PRUNERS, search.make_pruner),
    ],
)
def test_every_sampler_and_pruner_name_builds_one_and_no_other_is_accepted(key, table, built):
    for name in table:
        made = built(settings.parse({key: name.upper()}))
        assert isinstance(
            made, optuna.samplers.BaseSampler if key == "sampler" else optuna.pruners.BasePruner
        )
    with pytest.raises(UserError) as info:
        settings.parse({key: "no-such-name"})
    message = str(info.value)
    assert "\n" not in message
    assert f"hyperparameter '{key}' must be one of {', '.join(table)}" in message


def test_the_db_engines_accepted_are_the_engine_table():
    for name in ENGINES:
        assert settings.parse({"storage": f"{name}://u@h/db", "db-engine": name}).db_engine == name
    with pytest.raises(UserError, match=f"'db-engine' must be one of {', '.join(ENGINES)}"):
        settings.parse({"storage": "oracle://u@h/db", "db-engine": "oracle"})
