"""The real `serve` (nginx in front of gunicorn) on a free port: what only a real server shows.

Content types, shapes and refusals are tested in process (tests/unit/serving/test_app.py); here: the proxy's
limits and its answers, chunked bodies, a client closing early, workers that survive bad input,
batch transform's assembly over HTTP, and /ping while slow and heavy clients hold the server.
"""

from __future__ import annotations

import http.client
import io
import json
import socket

import numpy as np
import pytest

from devtools.localjob import digits_channels
from devtools.localmodel import write_model
from devtools.localserver import LOCALHOST, LocalServer
from devtools.stress import BatchLoad, SlowClients, ping_latencies
from serving import constants as C
from serving.errors import StartupError
from serving.model import load_model, predict_probabilities
from serving.nginx import nginx_binary
from tests.support import services

pytestmark = pytest.mark.process

N_FEATURES, N_CLASSES = 64, 10
PARAMS = {"n_layers": 1, "n_units_l0": 32, "optimizer": "Adam", "adam_alpha": 1e-3, "weight_decay": 1e-6}
JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"
MB = 1024 * 1024
PING_LIMIT_SECONDS = 2.0  # SageMaker's health check timeout


@pytest.fixture(scope="module", autouse=True)
def needs_nginx():
    try:
        nginx_binary()
    except StartupError as e:  # skipped on a machine without it, failed in CI
        services.unavailable(str(e))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "model"
    write_model(path, N_FEATURES, N_CLASSES, PARAMS, seed=1)
    return path


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with LocalServer(model_dir, log, env={C.ENV_WORKERS: "2"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def batch():
    return digits_channels()["test"][0][:7]


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_ping_and_a_prediction_through_nginx(server, model_dir, batch):
    status, headers, body = server.request("GET", C.ROUTE_PING)
    assert status == 200 and body == b""
    status, headers, body = server.request(
        "POST", C.ROUTE_INVOCATIONS, npy(batch), Content_Type=NPY, Accept=NPY
    )
    assert status == 200 and headers["content-type"] == NPY
    probs = np.load(io.BytesIO(body), allow_pickle=False)
    np.testing.assert_allclose(
        probs, predict_probabilities(load_model(model_dir), batch), rtol=1e-5, atol=1e-7
    )
    assert server.ready_workers() == 2 and len(server.worker_pids()) == 2
    assert "Listening at: unix:" in server.log() and "Using worker: gthread" in server.log()


def test_body_over_6_mb_is_413_from_nginx_in_our_format(server):
    status, headers, answer = server.request("POST", C.ROUTE_INVOCATIONS, b"\0" * (7 * MB), Content_Type=NPY)
    assert status == 413 and headers["content-type"] == "text/plain"
    assert answer == b"body is over the 6291456 byte limit\n"
    assert server.request("GET", C.ROUTE_PING)[0] == 200


def test_a_batch_just_under_6_mb_passes_nginx(server):
    x = np.zeros(((6 * MB - 128) // (N_FEATURES * 4), N_FEATURES), dtype=np.float32)
    body = npy(x)
    assert 6 * MB - 256 < len(body) <= 6 * MB
    status, _, answer = server.request("POST", C.ROUTE_INVOCATIONS, body, Content_Type=NPY, Accept=NPY)
    assert status == 200 and np.load(io.BytesIO(answer)).shape == (len(x), N_CLASSES)


def test_chunked_bodies_over_and_under_the_limit(server, batch):
    conn = http.client.HTTPConnection(LOCALHOST, server.port, timeout=30)
    chunks = (b"\0" * MB for _ in range(7))
    conn.request("POST", C.ROUTE_INVOCATIONS, body=chunks, headers={"Content-Type": NPY}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and b"limit" in resp.read()
    conn.close()
    conn = http.client.HTTPConnection(LOCALHOST, server.port, timeout=30)
    body = npy(batch)
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))
    conn.request("POST", C.ROUTE_INVOCATIONS, body=chunks, headers={"Content-Type": NPY}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200 and len(json.loads(resp.read())["predictions"]) == len(batch)
    conn.close()


def send_short_body_and_half_close(port: int) -> bytes:
    """A request whose body ends 10 bytes before its Content-Length, then shutdown(SHUT_WR);
    whatever the server answers before closing."""
    body = json.dumps([[0.5] * N_FEATURES]).encode()
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        head = f"POST {C.ROUTE_INVOCATIONS} HTTP/1.1\r\nHost: t\r\nContent-Type: {JSON}\r\n"
        sock.sendall(f"{head}Content-Length: {len(body) + 10}\r\n\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_body_shorter_than_its_content_length_is_never_scored(server, model_dir, tmp_path):
    # nginx waits for the whole body; on the early close it drops the request (nothing reaches
    # a worker) and closes the connection without an answer.
    answer = send_short_body_and_half_close(server.port)
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
    assert server.request("GET", C.ROUTE_PING)[0] == 200
    # Without nginx, gunicorn hands the short body to the app, which answers 400.
    env = {C.ENV_WORKERS: "1", C.ENV_PROXY: C.PROXY_NONE}
    with LocalServer(model_dir, tmp_path / "direct.log", env=env) as direct:
        answer = send_short_body_and_half_close(direct.port)
    assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length declares" in answer, answer


def test_workers_survive_bad_requests(server, batch):
    before = server.worker_pids()
    bad = [(b"[[1, 2", JSON), (b"", CSV), (b"\x93NUMPY\x01\x00\xff\x7f", NPY), (b"\x00" * 1000, "image/png")]
    for i in range(200):
        body, content_type = bad[i % len(bad)]
        assert server.request("POST", C.ROUTE_INVOCATIONS, body, Content_Type=content_type)[0] in (400, 415)
    assert server.worker_pids() == before  # no worker died or was replaced
    status, _, answer = server.request("POST", C.ROUTE_INVOCATIONS, npy(batch), Content_Type=NPY)
    assert status == 200 and len(json.loads(answer)["predictions"]) == len(batch)


def test_batch_transform_line_assembly_over_http(server, batch):
    """SplitType=Line, MultiRecord (3 records a request), AssembleWith=Line, CSV in and out."""
    records = [",".join(repr(float(v)) for v in row) for row in batch]
    output = ""
    for start in range(0, len(records), 3):
        body = "\n".join(records[start : start + 3]).encode() + b"\n"
        status, _, answer = server.request("POST", C.ROUTE_INVOCATIONS, body, Content_Type=CSV, Accept=CSV)
        assert status == 200
        output += answer.decode() + "\n"  # what AssembleWith=Line adds after each answer
    assert output.endswith("\n") and "\n\n" not in output
    assert len(output.splitlines()) == len(batch)


# --- /ping while slow and heavy clients hold the server ----------------------------------------


def csv_batch(rows: int) -> bytes:
    x = np.random.default_rng(0).random((rows, N_FEATURES)).round(4)
    return "\n".join(",".join(map(str, row)) for row in x.tolist()).encode()


def test_ping_answers_within_2_s_under_slow_and_heavy_clients(server):
    """64 connections sending headers a byte a second, 16 sending 5 MB bodies a kilobyte a
    second, and 16 clients posting ~4.8 MB CSV batches back to back: every ping within 2 s."""
    body = csv_batch(11000)
    assert 4 * MB < len(body) < 6 * MB
    with (
        SlowClients(server.port, headers=64, bodies=16) as slow,
        BatchLoad(server.port, body, CSV, JSON, clients=16) as load,
    ):
        assert load.wait_for_answers(16, timeout=120), load.statuses  # the workers are busy with batches
        latencies = ping_latencies(server.port, count=20, timeout=10.0)
        answered_meanwhile = sum(load.statuses.values())
        assert slow.open_connections == 80 and slow.closed_by_server == 0  # all still held by nginx
    worst = max(latencies)
    assert worst < PING_LIMIT_SECONDS, [round(v, 3) for v in latencies]
    assert set(load.statuses) == {200}, load.statuses
    assert answered_meanwhile >= 16
