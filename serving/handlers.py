"""The inference toolkit's hooks: ours by default, each one replaceable by the user's module.

A user module (``SAGEMAKER_PROGRAM``, default ``inference.py``, in ``<model_dir>/code``) may
define any of ``model_fn(model_dir)``, ``input_fn(body, content_type)``, ``predict_fn(data,
model)``, ``output_fn(prediction, accept)``; the ones it leaves out are the defaults below.
``output_fn`` returns a body, or ``(body, content_type)`` to name its type.

Or, as in the sagemaker-inference toolkit, ``transform_fn(model, body, content_type, accept)``
does the whole request instead of the other three; that toolkit refuses a module defining
``transform_fn`` together with any of them, and so do we. A module defining a hook of that
toolkit (or of a model server's handler service) that we do not run is refused at start,
naming it, instead of being silently ignored.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from serving import constants as C
from serving import media
from serving.config import ServeConfig
from serving.errors import BadInput, StartupError
from serving.model import Model, load_model, predict_probabilities

log = logging.getLogger(__name__)


def model_fn(model_dir: str) -> Model:
    """Load the model training left in model_dir."""
    return load_model(model_dir)


def input_fn(input_data: bytes, content_type: str) -> np.ndarray:
    """Decode a JSON, CSV or .npy body into a float32 batch."""
    return media.decode(input_data, content_type)


def predict_fn(data: np.ndarray, model: Model) -> np.ndarray:
    """Class probabilities for each row, after checking the row width."""
    if data.shape[1] != model.n_features:
        raise BadInput(f"expected {model.n_features} features per example, got {data.shape[1]}")
    probabilities = predict_probabilities(model, data)
    if not np.isfinite(probabilities).all():  # finite inputs so large that the logits overflow
        raise BadInput("values too large: the network's output overflows")
    return probabilities


def output_fn(prediction: np.ndarray, accept: str) -> tuple[bytes, str]:
    """Encode probabilities and labels in the best type the Accept header allows."""
    return media.encode(prediction, accept)


DEFAULTS: dict[str, Callable[..., Any]] = {
    "model_fn": model_fn,
    "input_fn": input_fn,
    "predict_fn": predict_fn,
    "output_fn": output_fn,
}
# How many positional arguments this server passes to each hook.
ARITY = {name: len(arguments) for name, arguments in C.HOOK_ARGUMENTS.items()}


@dataclass(frozen=True)
class Handlers:
    model_fn: Callable[[str], Any]
    input_fn: Callable[[bytes, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], Any]
    source: str  # "defaults" or the user module's path, for the log
    user_transform_fn: Callable[[Any, bytes, str, str], Any] | None = None

    def transform_fn(self, model: Any, body: bytes, content_type: str, accept: str) -> Any:
        """One request: the user's transform_fn, or input_fn -> predict_fn -> output_fn."""
        if self.user_transform_fn is not None:
            return self.user_transform_fn(model, body, content_type, accept)
        return self.output_fn(self.predict_fn(self.input_fn(body, content_type), model), accept)

    def overridden(self) -> list[str]:
        names = [name for name in C.HOOK_NAMES if getattr(self, name) is not DEFAULTS[name]]
        return names + (["transform_fn"] if self.user_transform_fn is not None else [])


def user_program(config: ServeConfig) -> Path | None:
    """The user's module file, or None; an explicitly named one that is missing stops the server."""
    if config.program is None:
        default = config.code_dir / C.DEFAULT_PROGRAM
        return default if default.is_file() else None
    path = config.code_dir / config.program
    if path.suffix != ".py" or not path.is_file():
        raise StartupError(
            f"{path}: {C.ENV_PROGRAM}={config.program!r} names no Python file in {config.code_dir}"
        )
    return path


@cache
def import_user_module(path: Path) -> ModuleType:
    """Import the user's file once per process, with its folder on sys.path for its own imports."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise StartupError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(path.stem, None)
        log.exception("importing %s failed", path)
        raise StartupError(f"{path}: import failed ({type(e).__name__}: {e})") from e
    return module


def load_handlers(config: ServeConfig) -> Handlers:
    """Each hook from the user's module when it defines it, else ours."""
    path = user_program(config)
    if path is None:
        return Handlers(**DEFAULTS, source="defaults")
    module = import_user_module(path)
    check_module(module, path)
    hooks = {name: getattr(module, name, default) for name, default in DEFAULTS.items()}
    transform = getattr(module, "transform_fn", None)
    return Handlers(**hooks, source=str(path), user_transform_fn=transform)


def check_module(module: ModuleType, path: Path) -> None:
    """The toolkit's rules, plus: no hook we would ignore, and every hook callable as we call it."""
    unsupported = [name for name in C.UNSUPPORTED_HOOK_NAMES if _defined_here(module, name)]
    if unsupported:
        raise StartupError(
            f"{path}: defines {', '.join(unsupported)}, which this server does not run; "
            f"it runs {', '.join(ARITY)} (rename or remove the others)"
        )
    if getattr(module, "transform_fn", None):
        # The sagemaker-inference toolkit's own rule (its transformer raises ValueError).
        clashing = [name for name in C.TRANSFORM_EXCLUDES if getattr(module, name, None)]
        if clashing:
            raise StartupError(
                f"{path}: defines transform_fn and {', '.join(clashing)}; transform_fn replaces "
                "input_fn, predict_fn and output_fn, so define either transform_fn or those"
            )
    for name, count in ARITY.items():
        hook = getattr(module, name, None)
        if hook is None:
            continue
        if not callable(hook):
            raise StartupError(f"{path}: {name} is not a function")
        try:
            inspect.signature(hook).bind(*range(count))
        except TypeError:
            raise StartupError(
                f"{path}: {name}{inspect.signature(hook)} cannot be called with {count} arguments: "
                f"this server calls {name}({', '.join(C.HOOK_ARGUMENTS[name])}), with no context"
            ) from None
        except ValueError:  # no signature (a builtin): let the call decide
            pass


def _defined_here(module: ModuleType, name: str) -> bool:
    """True when the module defines ``name`` itself (``from serving.handlers import input_fn as
    default_input_fn`` is an import, not a definition)."""
    value = getattr(module, name, None)
    return value is not None and getattr(value, "__module__", module.__name__) == module.__name__
