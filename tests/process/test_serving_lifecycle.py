"""`serve` start-up, settings, user hooks, timeouts and SIGTERM, each on a real server."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from devtools.localjob import digits_channels, write_job_folder
from devtools.localmodel import write_model
from devtools.localserver import LocalServer, request
from entrypoint.trials import usermodule
from serving import constants as C
from serving.errors import StartupError
from serving.model import load_model, predict_probabilities
from tests.support import services
from tests.support.jobs import run_train

N_FEATURES, N_CLASSES = 64, 10
PARAMS = {"n_layers": 1, "n_units_l0": 16, "optimizer": "Adam", "adam_alpha": 1e-3, "weight_decay": 1e-6}
JSON, NPY = "application/json", "application/x-npy"
EXIT_SECONDS = 30
EXAMPLES = Path(__file__).parents[2] / "examples"


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def rows(first_value: float, n: int = 2) -> bytes:
    x = np.zeros((n, N_FEATURES), dtype=np.float32)
    x[0, 0] = first_value
    return npy(x)


@pytest.fixture(scope="module")
def nginx_installed():
    """`serve` runs nginx: skipped on a machine without it, failed in CI (`make engine` installs it)."""
    from serving.nginx import nginx_binary

    try:
        nginx_binary()
    except StartupError as e:
        services.unavailable(str(e))


@pytest.fixture
def model_dir(tmp_path, nginx_installed):
    path = tmp_path / "model"
    write_model(path, N_FEATURES, N_CLASSES, PARAMS)
    return path


def start_and_fail(model_dir, log_path, env=None) -> tuple[int, str]:
    """Run serve and expect it to stop by itself; its exit code and log."""
    server = LocalServer(model_dir, log_path, env=env).start()
    try:
        code = server.proc.wait(EXIT_SECONDS)
    finally:
        server.stop()
    return code, server.log()


def add_code(model_dir, name: str, source: str, **extra: str):
    code = model_dir / "code"
    code.mkdir(exist_ok=True)
    (code / name).write_text(textwrap.dedent(source))
    for file_name, text in extra.items():
        (code / file_name).write_text(text)


@pytest.mark.process
def test_bad_setting_stops_serve(model_dir, tmp_path):
    code, log = start_and_fail(model_dir, tmp_path / "log", {C.ENV_WORKERS: "many"})
    assert code != 0 and "SAGEMAKER_MODEL_SERVER_WORKERS='many' is not an integer" in log


# --- a model that cannot be served stops the server at start ----------------------------------


def _missing_folder(model_dir):
    shutil.rmtree(model_dir)
    return {}, model_dir / "model.json", "missing"


def _bad_json(model_dir):
    (model_dir / "model.json").write_text('{"weights_file": ')
    return {}, model_dir / "model.json", "not valid JSON"


def _no_weights(model_dir):
    (model_dir / "trial-0.npz").unlink()
    return {}, model_dir / "trial-0.npz", "missing"


def _truncated_weights(model_dir):
    path = model_dir / "trial-0.npz"
    path.write_bytes(path.read_bytes()[:100])
    return {}, path, "corrupt"


def _other_network(model_dir):
    meta = json.loads((model_dir / "model.json").read_text())
    meta["params"]["n_units_l0"] = 17
    (model_dir / "model.json").write_text(json.dumps(meta))
    return {}, model_dir / "trial-0.npz", "does not match"


def _pickled_weights(model_dir):
    path = model_dir / "trial-0.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays[next(iter(arrays))] = np.array([object()], dtype=object)  # savez pickles object arrays
    np.savez(path.with_suffix(""), **arrays)
    return {}, path, "corrupt"


def _missing_program(model_dir):
    return {C.ENV_PROGRAM: "nope.py"}, model_dir / "code" / "nope.py", "names no Python file"


def _broken_program(model_dir):
    add_code(model_dir, "inference.py", "import does_not_exist\n")
    return {}, model_dir / "code" / "inference.py", "import failed (ModuleNotFoundError"


def _model_module_not_packed(model_dir):
    meta = json.loads((model_dir / "model.json").read_text())
    meta["model_module"] = "conv_digits"
    (model_dir / "model.json").write_text(json.dumps(meta))
    return {}, model_dir / "code", "Cannot import model-module 'conv_digits'"


@pytest.mark.process
def test_unservable_model_or_user_code_stops_serve_naming_the_file(tmp_path, nginx_installed):
    """Each case on its own server, all started at once (each start imports Chainer: ~1.5 s)."""
    cases = [_missing_folder, _bad_json, _no_weights, _truncated_weights, _other_network, _pickled_weights]
    cases += [_model_module_not_packed, _missing_program, _broken_program]
    runs = []
    for damage in cases:
        model_dir = tmp_path / damage.__name__ / "model"
        write_model(model_dir, N_FEATURES, N_CLASSES, PARAMS)
        env, path, problem = damage(model_dir)
        server = LocalServer(model_dir, tmp_path / f"{damage.__name__}.log", env=env).start()
        runs.append((damage.__name__, server, path, problem))
    try:
        for name, server, path, problem in runs:
            code = server.proc.wait(EXIT_SECONDS)
            log = server.log()
            assert code == 1, f"{name}: {log}"
            line = next((line for line in log.splitlines() if "serve cannot start" in line), "")
            assert str(path) in line and problem in line, f"{name}: {log}"
            assert "Listening at" not in log, name
    finally:
        for _, server, _, _ in runs:
            server.stop()


# --- user hooks (SAGEMAKER_PROGRAM in <model_dir>/code) -----------------------------------------

# Overrides input_fn and output_fn; model_fn and predict_fn stay ours. Imports a sibling module.
CUSTOM_IO = """
import json
import numpy as np
from serving.handlers import input_fn as default_input_fn
from helpers import TEXT_TYPE

def input_fn(body, content_type):
    if content_type == TEXT_TYPE:
        return np.array([[float(v) for v in line.split()] for line in body.decode().splitlines()], np.float32)
    return default_input_fn(body, content_type)

def output_fn(prediction, accept):
    return json.dumps({"labels": prediction.argmax(axis=1).tolist()}), "application/vnd.labels+json"
"""

# Overrides model_fn and predict_fn; input_fn and output_fn stay ours.
CUSTOM_MODEL = """
import os, time
from pathlib import Path
from serving.handlers import model_fn as default_model_fn, predict_fn as default_predict_fn

def model_fn(model_dir):
    model = default_model_fn(model_dir)
    Path(model_dir, "loaded-by-" + str(os.getpid())).touch()
    return model

def predict_fn(data, model):
    marker = float(data[0, 0])
    if marker == -1:
        raise RuntimeError("secret internal detail")
    if marker in (-2, -3):
        Path(os.environ["TEST_STARTED_FILE"]).touch()
        Path(os.environ["TEST_STARTED_FILE"] + "." + str(os.getpid())).touch()  # which worker
    if marker == -2:  # in flight until the test creates the release file (at most 30 s)
        release, deadline = Path(os.environ["TEST_RELEASE_FILE"]), time.monotonic() + 30
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if marker == -3:  # the scenario: slower than SAGEMAKER_MODEL_SERVER_TIMEOUT (3 s)
        time.sleep(30)
    return default_predict_fn(data, model)
"""


@pytest.mark.process
def test_user_input_and_output_fns_with_our_model_and_predict(model_dir, tmp_path):
    add_code(model_dir, "custom.py", CUSTOM_IO, **{"helpers.py": 'TEXT_TYPE = "text/plain"\n'})
    env = {C.ENV_PROGRAM: "custom.py", C.ENV_WORKERS: "3", C.ENV_MAX_PAYLOAD_MB: "1"}
    with LocalServer(model_dir, tmp_path / "log", env=env) as server:
        text = "\n".join(" ".join(["0.5"] * N_FEATURES) for _ in range(3)).encode()
        status, headers, body = server.request("POST", C.ROUTE_INVOCATIONS, text, Content_Type="text/plain")
        assert status == 200 and headers["content-type"] == "application/vnd.labels+json"
        assert len(json.loads(body)["labels"]) == 3
        # our input_fn, reached through the user's, and our predict_fn's width check
        status, _, body = server.request("POST", C.ROUTE_INVOCATIONS, rows(0.0), Content_Type=NPY)
        assert status == 200 and len(json.loads(body)["labels"]) == 2
        status, _, body = server.request("POST", C.ROUTE_INVOCATIONS, b"[[1, 2]]", Content_Type=JSON)
        assert status == 400 and b"expected 64 features" in body
        # settings: three workers, a 1 MB limit (batch transform's SAGEMAKER_MAX_PAYLOAD_IN_MB)
        assert len(server.worker_pids()) == 3
        status, _, _ = server.request(
            "POST", C.ROUTE_INVOCATIONS, b"\0" * (2 * 1024 * 1024), Content_Type=NPY
        )
        assert status == 413
        params = json.loads(server.request("GET", C.ROUTE_EXECUTION_PARAMETERS)[2])
        assert params["MaxPayloadInMB"] == 1 and params["MaxConcurrentTransforms"] == 3
    assert "user hooks from" in server.log() and "input_fn, output_fn" in server.log()


@pytest.fixture
def custom_model_server(model_dir, tmp_path):
    add_code(model_dir, "inference.py", CUSTOM_MODEL)  # the default name: no SAGEMAKER_PROGRAM needed
    env = {
        C.ENV_WORKERS: "2",
        C.ENV_TIMEOUT: "3",
        C.ENV_DEFAULT_ACCEPT: "text/csv",
        "TEST_STARTED_FILE": str(tmp_path / "started"),
        "TEST_RELEASE_FILE": str(tmp_path / "release"),
    }
    server = LocalServer(model_dir, tmp_path / "log", env=env)
    with server:
        yield server


@pytest.mark.process
def test_user_model_and_predict_fns_with_our_input_and_output(custom_model_server, model_dir):
    server = custom_model_server
    assert len(list(model_dir.glob("loaded-by-*"))) == 2  # model_fn ran once in each worker
    status, headers, body = server.request("POST", C.ROUTE_INVOCATIONS, rows(0.0), Content_Type=NPY)
    assert status == 200 and headers["content-type"] == "text/csv"  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    assert len(body.decode().splitlines()) == 2


@pytest.mark.process
def test_a_bug_is_500_with_the_traceback_in_the_log_only(custom_model_server):
    server = custom_model_server
    status, _, body = server.request("POST", C.ROUTE_INVOCATIONS, rows(-1.0), Content_Type=NPY)
    assert status == 500 and b"secret" not in body and b"Traceback" not in body
    log = server.log()
    assert "Traceback" in log and "RuntimeError: secret internal detail" in log
    assert server.request("POST", C.ROUTE_INVOCATIONS, rows(0.0), Content_Type=NPY)[0] == 200


@pytest.mark.process
def test_a_request_over_the_timeout_loses_its_worker_not_the_server(custom_model_server, tmp_path):
    server = custom_model_server
    t0 = time.monotonic()
    status, _, body = request(server.port, "POST", C.ROUTE_INVOCATIONS, rows(-3.0), {"Content-Type": NPY})
    assert status == 504 and b"SAGEMAKER_MODEL_SERVER_TIMEOUT" in body  # nginx's answer at the timeout
    assert time.monotonic() - t0 < 15  # SAGEMAKER_MODEL_SERVER_TIMEOUT=3, not the request's 30 s
    services.wait_for(lambda: "WORKER TIMEOUT" in server.log(), 30, "the watchdog's restart of the worker")
    services.wait_for(lambda: server.ready_workers() >= 3, 30, "a fresh worker replacing it")
    assert server.ready_workers() == 3
    for _ in range(4):
        assert server.request("POST", C.ROUTE_INVOCATIONS, rows(0.0), Content_Type=NPY)[0] == 200


@pytest.mark.process
def test_sigterm_drains_the_request_in_flight_and_exits_0(custom_model_server, tmp_path):
    server = custom_model_server
    answer = {}

    def slow_request():
        answer["result"] = request(
            server.port, "POST", C.ROUTE_INVOCATIONS, rows(-2.0), {"Content-Type": NPY}
        )

    thread = threading.Thread(target=slow_request)
    thread.start()
    services.wait_for((tmp_path / "started").exists, 10, "the request reaching predict_fn")
    server.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            request(server.port, "GET", C.ROUTE_PING, timeout=2)
        except OSError:
            return True
        return False

    # No new connections while draining: the request stays in flight until the release file.
    services.wait_for(refused, 10, "serve refusing new connections after SIGTERM")
    assert thread.is_alive()
    (tmp_path / "release").touch()
    thread.join(10)
    assert answer["result"][0] == 200
    assert server.proc.wait(EXIT_SECONDS) == 0


@pytest.mark.process
def test_ping_answers_while_every_worker_is_busy(model_dir, tmp_path):
    """One request at a time per worker, but /ping has a thread of its own: with both workers
    held by requests in predict_fn (and more queued behind them), pings still answer at once."""
    add_code(model_dir, "inference.py", CUSTOM_MODEL)
    started, release = tmp_path / "started", tmp_path / "release"
    env = {C.ENV_WORKERS: "2", "TEST_STARTED_FILE": str(started), "TEST_RELEASE_FILE": str(release)}
    answers: list[int] = []

    def held_request() -> None:
        answers.append(
            request(server.port, "POST", C.ROUTE_INVOCATIONS, rows(-2.0), {"Content-Type": NPY})[0]
        )

    with LocalServer(model_dir, tmp_path / "log", env=env) as server:
        threads = [threading.Thread(target=held_request) for _ in range(4)]  # 2 running, 2 queued
        for thread in threads:
            thread.start()
        try:
            services.wait_for(
                lambda: len(list(tmp_path.glob("started.*"))) == 2, 10, "both workers in predict_fn"
            )
            for _ in range(5):
                t0 = time.monotonic()
                status, headers, body = request(server.port, "GET", C.ROUTE_PING, timeout=5)
                assert (status, body) == (200, b"") and time.monotonic() - t0 < 1.0
                assert headers["content-type"].startswith("text/plain")
            assert answers == []  # still held: the pings did not wait for them
            for _ in range(30):  # nginx hangs up once it has the headers: no error in the log for that
                assert request(server.port, "GET", C.ROUTE_PING, timeout=5)[0] == 200
            assert "Exception occurred" not in server.log() and "BrokenPipe" not in server.log()
            status, headers, body = request(server.port, "POST", C.ROUTE_PING, b"x", timeout=5)
            assert status == 405 and headers["allow"] == "GET, HEAD" and body == b"Method Not Allowed\n"
        finally:
            release.touch()
            for thread in threads:
                thread.join(30)
        assert answers == [200] * 4


@pytest.mark.process
def test_ping_skips_a_worker_that_does_not_answer_within_2_s(model_dir, tmp_path):
    """A stopped worker (or one stuck in a C call that holds the GIL): nginx gives its ping
    thread under a second, then asks the other worker, inside SageMaker's 2 s."""
    with LocalServer(model_dir, tmp_path / "log", env={C.ENV_WORKERS: "2"}) as server:
        stuck = min(server.worker_pids())
        os.kill(stuck, signal.SIGSTOP)
        try:
            for _ in range(4):  # nginx alternates: every other ping meets the stopped worker first
                t0 = time.monotonic()
                assert request(server.port, "GET", C.ROUTE_PING, timeout=5)[0] == 200
                assert time.monotonic() - t0 < 2.0
        finally:
            os.kill(stuck, signal.SIGCONT)


# Loads until the test creates the release file (at most 60 s). With TEST_FIRST_FILE set, the
# first worker to load skips the wait (it creates that file); every later one waits.
SLOW_MODEL = """
import os, time
from pathlib import Path
from serving.handlers import model_fn as default_model_fn

def model_fn(model_dir):
    first = os.environ.get("TEST_FIRST_FILE")
    try:
        if first:
            os.close(os.open(first, os.O_CREAT | os.O_EXCL))
            return default_model_fn(model_dir)
    except FileExistsError:
        pass
    Path(os.environ["TEST_LOADING_FILE"]).touch()
    release, deadline = Path(os.environ["TEST_RELEASE_FILE"]), time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return default_model_fn(model_dir)
"""


@pytest.mark.process
def test_requests_go_only_to_workers_that_have_loaded_their_model(model_dir, tmp_path):
    """While one worker still loads (at start, or a replacement), nginx sends every request and
    ping to the loaded one: the loading worker's socket is not under nginx's name yet."""
    add_code(model_dir, "inference.py", SLOW_MODEL)
    loading, release = tmp_path / "loading", tmp_path / "release"
    env = {
        C.ENV_WORKERS: "2",
        "TEST_FIRST_FILE": str(tmp_path / "first"),
        "TEST_LOADING_FILE": str(loading),
        "TEST_RELEASE_FILE": str(release),
    }
    server = LocalServer(model_dir, tmp_path / "log", env=env).start()
    try:
        services.wait_for(lambda: server.ready_workers() == 1 and loading.exists(), 60, "one worker loaded")
        for _ in range(6):  # least_conn alternates: half would wait on the loading worker
            t0 = time.monotonic()
            status = request(
                server.port, "POST", C.ROUTE_INVOCATIONS, rows(0.0), {"Content-Type": NPY}, timeout=5
            )[0]
            assert status == 200 and time.monotonic() - t0 < 2
            assert request(server.port, "GET", C.ROUTE_PING, timeout=5)[0] == 200
        master = server.master_pid()
        os.kill(master, signal.SIGTTIN)  # a third worker would have no socket of its own
        services.wait_for(lambda: "SIGTTIN/SIGTTOU ignored" in server.log(), 10, "the refusal in the log")
        release.touch()
        services.wait_for(lambda: server.ready_workers() == 2, 30, "the second worker loaded")
        time.sleep(1)
        assert len(server.worker_pids()) == 2
        assert "Traceback" not in server.log() and "Exception occurred" not in server.log()
    finally:
        release.touch()
        assert server.stop() == 0


@pytest.mark.process
def test_ping_is_not_200_while_the_model_loads(model_dir, tmp_path):
    add_code(model_dir, "inference.py", SLOW_MODEL)
    loading, release = tmp_path / "loading", tmp_path / "release"
    env = {C.ENV_WORKERS: "1", "TEST_LOADING_FILE": str(loading), "TEST_RELEASE_FILE": str(release)}
    server = LocalServer(model_dir, tmp_path / "log", env=env).start()

    def ping() -> int | None:
        try:
            return request(server.port, "GET", C.ROUTE_PING, timeout=0.3)[0]
        except OSError:  # refused before gunicorn binds, timed out while the worker loads
            return None

    try:
        services.wait_for(loading.exists, 60, "the worker starting to load the model")
        not_ready = [ping() for _ in range(3)]  # nginx answers 503 at once while the worker loads
        assert not_ready == [503] * 3, not_ready
        assert "[crit]" not in server.log()  # no "connect() failed" line for each early ping
        release.touch()
        services.wait_for(lambda: ping() == 200, 30, "/ping answering 200 once the model is loaded")
        assert server.ready_workers() == 1  # the worker had logged its model as loaded
    finally:
        assert server.stop() == 0


@pytest.mark.process
def test_a_model_fn_that_fails_in_the_workers_stops_serve(model_dir, tmp_path):
    add_code(model_dir, "inference.py", "def model_fn(model_dir):\n    raise OSError('no GPU here')\n")
    code, log = start_and_fail(model_dir, tmp_path / "log")
    assert code != 0 and "OSError: no GPU here" in log


@pytest.mark.process
def test_serves_a_model_module_network_with_chainers_forward(tmp_path, nginx_installed):
    """Bring your own model: training packed conv_digits.py into code/; serve builds that network."""
    spec = usermodule.load("conv_digits", EXAMPLES / "conv_digits")
    model_dir = tmp_path / "model"
    write_model(model_dir, N_FEATURES, N_CLASSES, spec=spec)
    x = digits_channels()["test"][0][:6]
    model = load_model(model_dir)  # in this process, as a reference
    with LocalServer(model_dir, tmp_path / "log", env={C.ENV_WORKERS: "1"}) as server:
        status, _, body = server.request(
            "POST", C.ROUTE_INVOCATIONS, npy(x.reshape(-1, 8, 8)), Content_Type=NPY, Accept=NPY
        )
    assert status == 200
    probs = np.load(io.BytesIO(body), allow_pickle=False)
    np.testing.assert_allclose(probs, predict_probabilities(model, x), rtol=1e-5, atol=1e-7)


# --- end to end: the model the `train` command wrote ----------------------------------------


@pytest.mark.process
def test_serves_the_model_the_train_command_wrote(tmp_path, nginx_installed):
    (x_train, y_train), (x_test, y_test) = digits_channels()["train"], digits_channels()["test"]
    channels = {"train": (x_train[:400], y_train[:400]), "test": (x_test[:200], y_test[:200])}
    base = write_job_folder(tmp_path / "opt_ml", {"n-trials": "1", "epochs": "3", "seed": "1"}, channels)
    train = run_train(base)
    assert train.returncode == 0, train.stderr[-2000:]
    meta = json.loads((base / "model" / "model.json").read_text())
    x, y = channels["test"]
    with LocalServer(base / "model", tmp_path / "log", env={C.ENV_WORKERS: "1"}) as server:
        status, _, body = server.request(
            "POST", C.ROUTE_INVOCATIONS, npy(x), Content_Type=NPY, Accept="text/csv"
        )
    assert status == 200
    labels = np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2)[:, 0]
    # the job's own validation accuracy on this very split (Chainer averages per batch: allow a little)
    assert abs((labels == y).mean() - meta["value"]) < 0.02


# --- supervision: nginx and gunicorn live and die together ----------------------------------------


@pytest.mark.process
@pytest.mark.parametrize("victim", ["nginx", "gunicorn"])
def test_serve_exits_1_when_nginx_or_gunicorn_dies(model_dir, tmp_path, victim):
    from devtools.localserver import _children, _command

    server = LocalServer(model_dir, tmp_path / "log", env={C.ENV_WORKERS: "1"})
    with server:
        children = {
            ("nginx" if _command(pid).startswith("nginx") else "gunicorn"): pid
            for pid in _children(server.proc.pid)
        }
        assert set(children) == {"nginx", "gunicorn"}
        os.kill(children[victim], signal.SIGKILL)
        assert server.proc.wait(EXIT_SECONDS) == 1
        for pid in children.values():  # the survivor was stopped too
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert f"{victim} exited with -9: stopping serve" in server.log()
