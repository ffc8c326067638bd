"""Every external name the serving side reads, in one place."""

from core.artifact import CODE_DIR

# Environment variables set by SageMaker hosting / batch transform, named as the
# sagemaker-inference toolkit names them so that users' habits carry over.
ENV_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
ENV_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
ENV_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
ENV_PROGRAM = "SAGEMAKER_PROGRAM"
ENV_DEFAULT_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
ENV_MAX_PAYLOAD_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"  # batch transform only
ENV_MODEL_DIR = "SM_MODEL_DIR"
# Ours: enables POST /bare (read the body, answer 200), the benchmark's baseline. Off by default.
ENV_BARE_ENDPOINT = "SERVING_BARE_ENDPOINT"
# Ours: "nginx" (default) puts nginx in front of gunicorn's threaded workers; "none" is the old
# arrangement (sync workers on the port itself), kept for the benchmark's comparison.
ENV_PROXY = "SERVING_PROXY"
ENV_THREADS = "SERVING_THREADS"  # request threads per worker behind nginx
PROXY_NGINX = "nginx"
PROXY_NONE = "none"
# One request at a time per worker: CPU-bound requests side by side only share the GIL in a
# random order (serving/server.py). /ping has a thread of its own (serving/ping.py). More threads
# help only user hooks that wait (on I/O, or in code that lets the GIL go).
DEFAULT_THREADS = 1
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")  # looked up on PATH first

# BLAS/OpenMP pools: one thread per worker, since there is one worker per CPU.
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

DEFAULT_MODEL_DIR = "/opt/ml/model"
USER_CODE_DIR = CODE_DIR  # <model_dir>/code holds the user's SAGEMAKER_PROGRAM (and a packed model-module)
DEFAULT_PROGRAM = "inference.py"  # used when present and SAGEMAKER_PROGRAM is unset

BIND_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 60  # the platform's own limit for an /invocations answer
GRACEFUL_TIMEOUT_SECONDS = 25  # SIGKILL follows SIGTERM after 30 s
UPSTREAM_KEEPALIVE_SECONDS = 60  # gunicorn keeps an idle connection from nginx this long
SLOW_CLIENT_TIMEOUT_SECONDS = 60  # nginx: longest pause between two reads of a request (headers, body)
MB = 1024 * 1024
DEFAULT_MAX_PAYLOAD_MB = 6  # the platform's request size limit for endpoints
DRAIN_LIMIT_BYTES = 64 * MB  # read (and drop) at most this much of a too-large body, so the 413 arrives

ROUTE_PING = "/ping"
ROUTE_INVOCATIONS = "/invocations"
ROUTE_EXECUTION_PARAMETERS = "/execution-parameters"
ROUTE_BARE = "/bare"

# The inference toolkit's user hooks, looked up in the user's module (and transform_fn).
HOOK_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn")
HOOK_ARGUMENTS = {
    "model_fn": ("model_dir",),
    "input_fn": ("body", "content_type"),
    "predict_fn": ("data", "model"),
    "output_fn": ("prediction", "accept"),
    "transform_fn": ("model", "body", "content_type", "accept"),
}
TRANSFORM_EXCLUDES = ("input_fn", "predict_fn", "output_fn")  # the toolkit refuses these with transform_fn
# Names with a meaning elsewhere that this server does not run: the sagemaker-inference
# toolkit's other optional hooks, its DefaultInferenceHandler's method names, and the
# module-level entry point of a model server's handler service (MMS / TorchServe `handle`).
UNSUPPORTED_HOOK_NAMES = (
    "pre_model_fn",
    "model_warmup_fn",
    "default_pre_model_fn",
    "default_model_warmup_fn",
    "default_model_fn",
    "default_input_fn",
    "default_predict_fn",
    "default_output_fn",
    "handle",
)
