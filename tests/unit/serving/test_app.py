"""The WSGI app in process (falcon.testing), over the real model and hooks: content types,
shapes, refusals, batch transform's assembly. The decoders, encoders and the app are pure;
what needs a real server (nginx, gunicorn, sockets) is in test_serving_http.py."""

from __future__ import annotations

import io
import json
import pickle
import time

import falcon.testing
import numpy as np
import pytest

from devtools.localjob import digits_channels
from devtools.localmodel import write_model
from serving import constants as C
from serving.app import create_app
from serving.config import ServeConfig
from serving.handlers import load_handlers
from serving.model import load_model, predict_probabilities

pytestmark = pytest.mark.unit

N_FEATURES, N_CLASSES = 64, 10
PARAMS = {"n_layers": 1, "n_units_l0": 32, "optimizer": "Adam", "adam_alpha": 1e-3, "weight_decay": 1e-6}
JSON, CSV, NPY, JSONLINES = "application/json", "text/csv", "application/x-npy", "application/jsonlines"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "model"
    write_model(path, N_FEATURES, N_CLASSES, PARAMS, seed=1)
    return path


class InProcess:
    """The app as a gunicorn worker builds it, called through falcon.testing; the same
    ``request`` as LocalServer's: (status, lower-cased headers, body)."""

    def __init__(self, model_dir, **env: str) -> None:
        self.config = ServeConfig.from_environ({C.ENV_MODEL_DIR: str(model_dir), C.ENV_WORKERS: "2", **env})
        self.handlers = load_handlers(self.config)
        model = self.handlers.model_fn(str(self.config.model_dir))
        self.client = falcon.testing.TestClient(create_app(self.config, self.handlers, model))

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str):
        result = self.client.simulate_request(
            method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        return result.status_code, {k.lower(): v for k, v in result.headers.items()}, result.content


@pytest.fixture(scope="module")
def server(model_dir):
    return InProcess(model_dir)


@pytest.fixture(scope="module")
def batch():
    """Seven real test digits (pixel / 16, 64 wide), as training saw them."""
    return digits_channels()["test"][0][:7]


@pytest.fixture(scope="module")
def expected(model_dir, batch):
    """What the same model gives in this process: the served answers must match it."""
    return predict_probabilities(load_model(model_dir), batch)


def npy(array: np.ndarray, **kwargs) -> bytes:
    out = io.BytesIO()
    np.save(out, array, **kwargs)
    return out.getvalue()


def invoke(server, body: bytes, content_type: str | None = JSON, accept: str | None = None, **extra: str):
    headers = dict(extra)
    if content_type is not None:
        headers["Content_Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    return server.request("POST", C.ROUTE_INVOCATIONS, body, **headers)


def from_json(body: bytes):
    preds = json.loads(body)["predictions"]
    return np.array([p["label"] for p in preds]), np.array([p["probabilities"] for p in preds])


# --- health and routes ------------------------------------------------------------------------


def test_ping_is_200(server):
    status, _, body = server.request("GET", C.ROUTE_PING)
    assert status == 200 and body == b""


def test_unknown_route_and_wrong_method(server):
    assert server.request("GET", "/nope")[0] == 404
    assert server.request("GET", C.ROUTE_INVOCATIONS)[0] == 405


def test_execution_parameters_for_batch_transform(server):
    status, headers, body = server.request("GET", C.ROUTE_EXECUTION_PARAMETERS)
    assert status == 200 and headers["content-type"] == JSON
    assert json.loads(body) == {
        "MaxConcurrentTransforms": 2,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_bare_endpoint_is_off_unless_asked_for(server):
    assert server.request("POST", C.ROUTE_BARE, b"x")[0] == 404


# --- content types in ---------------------------------------------------------------------------


def test_json_rows(server, batch, expected):
    status, headers, body = invoke(server, json.dumps(batch.tolist()).encode())
    assert status == 200 and headers["content-type"] == JSON
    labels, probs = from_json(body)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    assert (labels == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_json_instances_and_charset_parameter(server, batch, expected):
    body = json.dumps({"instances": batch.tolist()}).encode()
    status, _, answer = invoke(server, body, content_type="Application/JSON; charset=utf-8")
    assert status == 200
    np.testing.assert_allclose(from_json(answer)[1], expected, rtol=1e-5, atol=1e-7)


def test_csv_rows(server, batch, expected):
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in batch) + "\n"
    status, _, answer = invoke(server, text.encode(), content_type=CSV)
    assert status == 200
    np.testing.assert_allclose(from_json(answer)[1], expected, rtol=1e-5, atol=1e-7)


def test_npy_images_any_trailing_shape_and_dtype(server, batch, expected):
    for array in (batch, batch.reshape(-1, 8, 8), batch.astype(np.float64), np.asfortranarray(batch)):
        status, _, answer = invoke(server, npy(array), content_type=NPY)
        assert status == 200, answer
        np.testing.assert_allclose(from_json(answer)[1], expected, rtol=1e-5, atol=1e-7)


# --- content types out ----------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", JSON, "application/*", "text/csv;q=0.5, application/json"])
def test_json_is_the_default_answer(server, batch, accept):
    status, headers, body = invoke(server, npy(batch), NPY, accept)
    assert status == 200 and headers["content-type"] == JSON
    assert len(json.loads(body)["predictions"]) == len(batch)


def test_npy_answer_is_probabilities_labels_are_argmax(server, batch, expected):
    status, headers, body = invoke(server, npy(batch), NPY, NPY)
    assert status == 200 and headers["content-type"] == NPY
    probs = np.load(io.BytesIO(body), allow_pickle=False)
    assert probs.dtype == np.float32 and probs.shape == (len(batch), N_CLASSES)
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_csv_answer_is_label_then_probabilities(server, batch, expected):
    status, headers, body = invoke(server, npy(batch), NPY, "Text/CSV")
    assert status == 200 and headers["content-type"] == CSV
    table = np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2)
    assert table.shape == (len(batch), 1 + N_CLASSES)
    assert (table[:, 0] == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(table[:, 1:], expected, rtol=1e-6)


def test_unsupported_accept_is_406(server, batch):
    status, headers, body = invoke(server, npy(batch), NPY, "image/png")
    assert status == 406 and b"image/png" in body and headers["content-type"] == "text/plain"


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", None])
def test_unknown_content_type_is_415(server, batch, content_type):
    status, _, body = invoke(server, npy(batch), content_type)
    assert status == 415 and b"application/x-npy" in body


# --- batch sizes ----------------------------------------------------------------------------------


def test_one_row_and_a_batch_just_under_6_mb(server, model_dir):
    model = load_model(model_dir)
    for n in (1, (6 * MB - 200) // (N_FEATURES * 4)):
        x = np.random.default_rng(n).random((n, N_FEATURES), dtype=np.float32)
        body = npy(x)
        assert len(body) <= 6 * MB
        status, _, answer = invoke(server, body, NPY, NPY)
        assert status == 200
        probs = np.load(io.BytesIO(answer), allow_pickle=False)
        np.testing.assert_allclose(probs, predict_probabilities(model, x), rtol=1e-5, atol=1e-7)


def test_large_json_and_csv_batches(server):
    x = np.random.default_rng(0).random((5000, N_FEATURES)).round(4)
    status, _, answer = invoke(server, json.dumps(x.tolist()).encode(), JSON, CSV)
    assert status == 200 and len(answer.splitlines()) == 5000
    text = "\n".join(",".join(map(str, row)) for row in x.tolist())
    status, _, answer = invoke(server, text.encode(), CSV, JSON)
    assert status == 200 and len(json.loads(answer)["predictions"]) == 5000


# --- refusals -------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this creates a file: proof that nothing was unpickled is that it does not exist."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_and_object_arrays_are_refused_and_never_loaded(server, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        pickle.dumps(Exploit(marker)),
        npy(np.array([[Exploit(marker)]], dtype=object), allow_pickle=True),
        npy(np.zeros((2, N_FEATURES), dtype=[("a", "f4")])),
    ]
    zipped = io.BytesIO()
    np.savez(zipped, x=np.zeros((2, N_FEATURES), dtype=np.float32))
    payloads.append(zipped.getvalue())
    for body in payloads:
        status, _, answer = invoke(server, body, NPY)
        assert status == 400, answer
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        (JSON, b"", b"empty"),
        (NPY, b"", b"empty"),
        (CSV, b"  \n", b"empty"),
        (JSON, b"[[1, 2", b"JSON"),
        (JSON, b"[]", b"no values"),
        (JSON, b'{"rows": []}', b"instances"),
        (JSON, b"[1, 2, 3]", b"rows"),
        (JSON, b'[["a", "b"]]', b"numbers"),
        (JSON, b"[[1, null]]", b"numbers"),
        (JSON, b"[[true, false]]", b"numbers"),
        (JSON, b"[[1, 2], [3]]", b"shape"),
        (JSON, b"[[NaN, 1]]", b"finite"),
        (JSON, b"[[1e400, 1]]", b"finite"),
        (JSON, b"[[1e39, 1]]", b"finite"),  # beyond float32
        (JSON, b"\xff\xfe", b"JSON"),
        (JSON, b"[" * 100_000, b"JSON"),
        (CSV, b"a,b\n1,2\n", b"CSV"),
        (CSV, b"1,2\n3\n", b"CSV"),
        (CSV, b"nan,1\n", b"finite"),
        (NPY, b"\x93NUMPY\x01\x00\xff\x7f", b"header"),
        (NPY, b"not an npy", b"npy"),
    ],
)
def test_bad_bodies_are_400_with_a_short_message(server, content_type, body, says):
    status, headers, answer = invoke(server, body, content_type)
    assert status == 400 and says in answer, answer
    assert headers["content-type"] == "text/plain" and len(answer) < 300 and b"Traceback" not in answer


@pytest.mark.parametrize(
    "array",
    [
        np.full((2, N_FEATURES), np.nan, dtype=np.float32),
        np.full((2, N_FEATURES), np.inf),
        np.zeros((2, N_FEATURES), dtype=np.complex64),
        np.zeros((2, N_FEATURES), dtype=bool),
        np.zeros((0, N_FEATURES), dtype=np.float32),
        np.zeros(N_FEATURES, dtype=np.float32),
        np.zeros((2, N_FEATURES + 1), dtype=np.float32),
        np.zeros((2, 28, 28), dtype=np.float32),
    ],
)
def test_bad_arrays_are_400(server, array):
    status, _, answer = invoke(server, npy(array), NPY)
    assert status == 400, answer


def test_finite_values_so_large_that_the_network_overflows(server):
    status, _, answer = invoke(server, npy(np.full((2, N_FEATURES), 3e38, dtype=np.float32)), NPY)
    assert status == 400 and b"overflow" in answer


def test_wrong_width_names_the_expected_width(server):
    status, _, answer = invoke(server, json.dumps([[0.0] * 63]).encode())
    assert status == 400 and b"expected 64 features" in answer


def test_npy_header_promising_more_data_than_sent(server):
    out = io.BytesIO()
    huge = {"descr": "<f4", "fortran_order": False, "shape": (10**9, N_FEATURES)}  # a 256 GB promise
    np.lib.format.write_array_header_1_0(out, huge)
    header = out.getvalue()
    t0 = time.monotonic()
    status, _, answer = invoke(server, header + b"\0" * 64, NPY)
    assert status == 400 and b"promises" in answer and time.monotonic() - t0 < 2


def test_body_over_6_mb_is_413_and_a_short_body_is_400(server):
    status, _, answer = invoke(server, b"\0" * (7 * MB), NPY)
    assert status == 413 and b"limit" in answer
    # the client closed its side before sending all it declared: never scored as a shorter batch
    body = json.dumps([[0.5] * N_FEATURES]).encode()
    status, _, answer = invoke(server, body, JSON, Content_Length=str(len(body) + 10))
    assert status == 400 and b"Content-Length" in answer


def test_a_bad_request_leaves_the_app_serving(server, batch, tmp_path):
    bad = [
        (pickle.dumps(Exploit(tmp_path / "pwned")), NPY),
        (npy(np.full((2, N_FEATURES), np.nan)), NPY),
        (b"[[1, 2", JSON),
        (b"", CSV),
        (json.dumps([[0.0] * 3]).encode(), JSON),
        (b"\x93NUMPY\x01\x00\xff\x7f" + b"{" * 200, NPY),
        (b"1,2,x\n", CSV),
        (b"\x00" * 1000, "image/png"),
    ]
    for body, content_type in bad * 10:
        assert invoke(server, body, content_type)[0] in (400, 415)
    status, _, answer = invoke(server, npy(batch), NPY)
    assert status == 200 and len(json.loads(answer)["predictions"]) == len(batch)


# --- JSON lines and batch transform (SplitType=Line, AssembleWith=Line) ---------------------------


def test_jsonlines_in_and_out(server, batch, expected):
    body = "\n".join(json.dumps(row) for row in batch.tolist()).encode()  # as the SDK's JSONLinesSerializer
    status, headers, answer = invoke(server, body, JSONLINES, JSONLINES)
    assert status == 200 and headers["content-type"] == JSONLINES
    lines = answer.decode().rstrip().split("\n")  # as the SDK's JSONLinesDeserializer
    records = [json.loads(line) for line in lines]
    assert [r["label"] for r in records] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose([r["probabilities"] for r in records], expected, rtol=1e-5, atol=1e-7)
    images = "\n".join(json.dumps(row) for row in batch.reshape(-1, 8, 8).tolist()).encode() + b"\n\n"
    status, _, answer = invoke(server, images, JSONLINES, JSON)  # nested rows, trailing blank lines
    assert status == 200
    np.testing.assert_allclose(from_json(answer)[1], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"[1, 2]\n{", b"line 2"), (b'{"x": 1}', b"line 1"), (b"\n \n", b"empty"), (b"[1]\n[1, 2]", b"shape")],
)
def test_bad_jsonlines_are_400_naming_the_line(server, body, says):
    status, _, answer = invoke(server, body, JSONLINES)
    assert status == 400 and says in answer, answer


def line_transform(server, records: list[bytes], content_type: str, accept: str, per_request: int) -> bytes:
    """What batch transform does with SplitType=Line and AssembleWith=Line: records (lines of the
    input object) sent ``per_request`` at a time (1: SingleRecord, more: MultiRecord), joined by
    newlines; in the output object, every answer followed by a newline."""
    assembled = b""
    for start in range(0, len(records), per_request):
        body = b"\n".join(records[start : start + per_request]) + b"\n"
        status, _, answer = invoke(server, body, content_type, accept)
        assert status == 200, answer
        assembled += answer + b"\n"
    return assembled


@pytest.mark.parametrize("per_request", [1, 3])
@pytest.mark.parametrize(("content_type", "accept"), [(CSV, CSV), (JSONLINES, JSONLINES), (CSV, JSONLINES)])
def test_batch_transform_line_assembly_has_one_line_per_record(
    server, batch, expected, content_type, accept, per_request
):
    if content_type == CSV:
        records = [",".join(repr(float(v)) for v in row).encode() for row in batch]
    else:
        records = [json.dumps(row).encode() for row in batch.tolist()]
    output = line_transform(server, records, content_type, accept, per_request).decode()
    lines = output.split("\n")
    assert lines[-1] == "" and "" not in lines[:-1], repr(output[:300])  # no blank line anywhere
    lines = lines[:-1]
    assert len(lines) == len(batch)
    if accept == CSV:
        table = np.array([[float(v) for v in line.split(",")] for line in lines])
        labels, probs = table[:, 0], table[:, 1:]
    else:
        parsed = [json.loads(line) for line in lines]
        labels, probs = [r["label"] for r in parsed], [r["probabilities"] for r in parsed]
    assert list(labels) == expected.argmax(axis=1).tolist()  # record i's answer is on line i
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)


# --- user hooks: transform_fn and the toolkit's rules (in process) ----------------------------


def with_program(model_dir, tmp_path, source: str, name: str) -> dict[str, str]:
    """A copy of the model with <model_dir>/code/<name>.py; the settings that select it."""
    import shutil
    import textwrap

    target = tmp_path / name / "model"
    shutil.copytree(model_dir, target)
    (target / "code").mkdir()
    (target / "code" / f"{name}.py").write_text(textwrap.dedent(source))
    return {C.ENV_MODEL_DIR: str(target), C.ENV_PROGRAM: f"{name}.py"}


TRANSFORM = """
import json
from serving.handlers import input_fn as _decode, predict_fn as _predict

def transform_fn(model, body, content_type, accept):
    probabilities = _predict(_decode(body, content_type), model)
    return json.dumps({"top": probabilities.argmax(axis=1).tolist(), "accept": accept}), "application/vnd.top+json"
"""


def test_transform_fn_does_the_whole_request(model_dir, tmp_path, batch, expected):
    env = with_program(model_dir, tmp_path, TRANSFORM, "transform_only")
    app = InProcess(env[C.ENV_MODEL_DIR], **env)
    assert app.handlers.overridden() == ["transform_fn"]
    status, headers, answer = invoke(app, npy(batch), NPY)
    assert status == 200 and headers["content-type"] == "application/vnd.top+json"
    assert json.loads(answer) == {"top": expected.argmax(axis=1).tolist(), "accept": JSON}
    status, _, answer = invoke(app, b"[[1, 2]]", JSON)  # our BadInput raised inside the user's transform_fn
    assert status == 400 and b"expected 64 features" in answer


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            TRANSFORM + "\ndef input_fn(body, content_type):\n    return body\n",
            "defines transform_fn and input_fn",
        ),
        (
            TRANSFORM + "\nfrom serving.handlers import predict_fn, output_fn\n",
            "defines transform_fn and predict_fn, output_fn",
        ),
        (
            "def model_warmup_fn(model_dir, model):\n    pass\n",
            "defines model_warmup_fn, which this server does not run",
        ),
        ("def pre_model_fn(model_dir):\n    pass\n", "defines pre_model_fn"),
        ("def default_input_fn(body, content_type):\n    pass\n", "defines default_input_fn"),
        ("def handle(data, context):\n    pass\n", "defines handle"),
        (
            "def input_fn(body, content_type, context):\n    pass\n",
            "input_fn(body, content_type, context) cannot be called with 2",
        ),
        ("def transform_fn(model, body):\n    pass\n", "transform_fn(model, body) cannot be called with 4"),
        ("predict_fn = 3\n", "predict_fn is not a function"),
    ],
)
def test_module_the_server_cannot_run_as_written_is_refused_naming_the_hook(
    model_dir, tmp_path, source, says
):
    from serving.errors import StartupError

    name = f"hooks_{abs(hash(source))}"
    env = with_program(model_dir, tmp_path, source, name)
    with pytest.raises(StartupError, match=".*") as refused:
        load_handlers(ServeConfig.from_environ(env))
    assert says in str(refused.value) and f"{name}.py" in str(refused.value)


def test_imported_defaults_are_not_mistaken_for_hooks(model_dir, tmp_path):
    """`from serving.handlers import input_fn as default_input_fn` (docs/serving.md's pattern) is fine."""
    source = """
    from serving.handlers import input_fn as default_input_fn

    def input_fn(body, content_type):
        return default_input_fn(body, content_type)
    """
    env = with_program(model_dir, tmp_path, source, "imports_defaults")
    handlers = load_handlers(ServeConfig.from_environ(env))
    assert handlers.overridden() == ["input_fn"]
