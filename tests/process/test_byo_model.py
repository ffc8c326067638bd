"""Bring your own model: the example conv net trained through the real `train` command, with
its code from a local folder and from a sourcedir.tar.gz on (moto) S3 as the SageMaker SDK
uploads it."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from core import artifact, usercode
from entrypoint.trials import usermodule
from tests.support import services
from tests.support.jobs import finish, start_job

EXAMPLE = Path(__file__).parents[2] / "examples" / "conv_digits"


def with_code(base: Path, files: dict[str, str] | None = None) -> Path:
    code = base / "code"
    code.mkdir(exist_ok=True)
    shutil.copy2(EXAMPLE / "conv_digits.py", code / "conv_digits.py")
    for name, text in (files or {}).items():
        (code / name).write_text(text)
    return base


@pytest.mark.process
def test_example_conv_net_trains_and_is_packed_with_the_model(job_dir, moto_endpoint):
    base = with_code(job_dir({"model-module": "conv_digits", "n-trials": "2", "epochs": "3", "seed": "2"}))
    rc, out, err = finish(start_job(base, "byo", moto_endpoint))
    assert rc == 0, err[-3000:]
    meta = json.loads((base / "model" / "model.json").read_text())
    assert meta["model_module"] == "conv_digits"
    assert set(meta["params"]) == {"channels", "hidden", "dropout", "lr"}
    assert meta["value"] > 0.5
    assert (base / "model" / "code" / "conv_digits.py").read_text() == (
        EXAMPLE / "conv_digits.py"
    ).read_text()
    build = usercode.network_builder(artifact.read(base / "model"), base / "model")
    import chainer
    import numpy as np

    net = build(meta["params"], meta["n_features"], meta["n_classes"])
    chainer.serializers.load_npz(base / "model" / meta["weights_file"], net)
    with chainer.using_config("train", False):
        assert net(np.zeros((2, 64), dtype=np.float32)).shape == (2, 10)


@pytest.mark.process
def test_source_dir_from_s3_as_the_sdk_uploads_it(job_dir, aws, moto_endpoint):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(EXAMPLE / "conv_digits.py", arcname="conv_digits.py")
    s3 = boto3.client("s3", region_name=services.REGION)
    s3.create_bucket(Bucket="sources")
    s3.put_object(Bucket="sources", Key="job/source/sourcedir.tar.gz", Body=buffer.getvalue())
    base = job_dir(
        {
            "model-module": "conv_digits",
            "n-trials": "1",
            "epochs": "1",
            "sagemaker_submit_directory": json.dumps("s3://sources/job/source/sourcedir.tar.gz"),
            "sagemaker_program": json.dumps("conv_digits.py"),
        }
    )
    rc, _, err = finish(start_job(base, "byo-s3", moto_endpoint))
    assert rc == 0, err[-3000:]
    assert (base / "code" / "conv_digits.py").is_file()
    assert json.loads((base / "model" / "model.json").read_text())["model_module"] == "conv_digits"


@pytest.mark.process
@pytest.mark.parametrize(
    "module, files, fragment",
    [
        ("nope", {}, "Cannot import model-module 'nope': no nope.py or package nope/ in"),
        (
            "half",
            {"half.py": "def suggest_params(trial):\n    return {}\n"},
            "model-module 'half' lacks build_network()",
        ),
        (
            "broken",
            {"broken.py": "import torch_that_is_not_here\n"},
            "needs 'torch_that_is_not_here', which the image lacks",
        ),
        ("typo", {"typo.py": "def f(:\n"}, "Cannot import model-module 'typo': SyntaxError"),
    ],
)
def test_bad_user_modules_fail_clearly(job_dir, moto_endpoint, module, files, fragment):
    base = with_code(job_dir({"model-module": module, "n-trials": "1", "epochs": "1"}), files)
    rc, _, _ = finish(start_job(base, "byo-bad", moto_endpoint))
    assert rc == 1
    failure = (base / "output" / "failure").read_text()
    assert fragment in failure and "Traceback" not in failure


@pytest.mark.process
def test_requirements_are_installed_only_when_asked(job_dir, moto_endpoint):
    unavailable = "--no-index\nthis-package-does-not-exist-anywhere==0.0.0\n"
    base = with_code(
        job_dir({"model-module": "conv_digits", "n-trials": "1", "epochs": "1"}),
        {"requirements.txt": unavailable},
    )
    rc, _, err = finish(start_job(base, "byo-req", moto_endpoint))
    assert rc == 0, err[-2000:]  # not asked: the file is ignored
    shutil.rmtree(base / "model")
    (base / "model").mkdir()
    hps = json.loads((base / "input" / "config" / "hyperparameters.json").read_text())
    hps["install-requirements"] = "true"
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    rc, _, _ = finish(start_job(base, "byo-req2", moto_endpoint))
    assert rc == 1
    assert "pip install -r requirements.txt failed" in (base / "output" / "failure").read_text()


@pytest.mark.process
def test_example_is_served_by_the_real_serve_command(job_dir, moto_endpoint, digits, tmp_path):
    """Train the conv net with `train`, then serve model_dir with `serve`: no extra code."""
    from devtools.localserver import LocalServer

    base = with_code(job_dir({"model-module": "conv_digits", "n-trials": "2", "epochs": "8", "seed": "4"}))
    rc, _, err = finish(start_job(base, "byo-serve", moto_endpoint))
    assert rc == 0, err[-3000:]
    x, y = digits["test"]
    with LocalServer(
        base / "model", tmp_path / "serve.log", env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    ) as server:
        status, _, body = server.request(
            "POST",
            "/invocations",
            json.dumps({"instances": x[:50].tolist()}).encode(),
            Content_Type="application/json",
        )
    assert status == 200, body
    labels = [p["label"] for p in json.loads(body)["predictions"]]
    accuracy = sum(int(a == b) for a, b in zip(labels, y[:50], strict=True)) / 50
    assert accuracy > 0.6, accuracy


@pytest.mark.process
def test_a_module_inside_a_package_is_served_with_its_package_and_helpers(tmp_path):
    src, model_dir = tmp_path / "src", tmp_path / "model"
    (src / "byo_pkg").mkdir(parents=True)
    (src / "byo_pkg" / "__init__.py").write_text("")
    (src / "byo_helpers.py").write_text(
        "import chainer.links as L\n\ndef head(n):\n    return L.Linear(None, n)\n"
    )
    (src / "byo_pkg" / "net.py").write_text(
        "from byo_helpers import head\n\n"
        "def suggest_params(trial):\n    return {}\n\n"
        "def build_network(params, n_features, n_classes):\n    return head(n_classes)\n"
    )
    spec = usermodule.load("byo_pkg.net", src)
    model_dir.mkdir()
    assert usermodule.pack(spec, model_dir) == "byo_pkg.net"
    assert {p.name for p in (model_dir / "code").iterdir()} == {"byo_pkg", "byo_helpers.py"}
    check = (
        "import sys, numpy as np\n"
        "from core import usercode\n"
        "from core.artifact import ModelRecord\n"
        "record = ModelRecord('trial-0.npz', {}, 4, 3, model_module='byo_pkg.net')\n"
        f"net = usercode.network_builder(record, {str(model_dir)!r})({{}}, 4, 3)\n"
        "assert net(np.zeros((2, 4), dtype=np.float32)).shape == (2, 3)\n"
        "assert 'model/code' in sys.modules['byo_helpers'].__file__\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=Path(__file__).parents[2], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
