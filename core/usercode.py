"""A user's model-module, imported from a folder: training's source_dir, or the copy training
packed into ``<model_dir>/code`` from which serving rebuilds the same network.

The module must define ``suggest_params(trial)`` and ``build_network(params, n_features,
n_classes)``; everything training does with it beyond that lives in entrypoint/trials/usermodule.py.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import chainer

from core import network
from core.artifact import CODE_DIR, ModelRecord

REQUIRED = ("suggest_params", "build_network")

NetworkBuilder = Callable[[dict[str, Any], int, int], chainer.Link]


class UserCodeError(Exception):
    """The model-module cannot be imported or lacks a required function (a user's mistake)."""


def import_module(name: str, folder: str | Path) -> ModuleType:
    """Import ``name`` (a module or package) from ``folder``, with errors naming both."""
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or name.startswith(f"{exc.name}."):
            raise UserCodeError(
                f"Cannot import model-module '{name}': no {name}.py or package {name}/ in {folder}"
            ) from None
        raise UserCodeError(
            f"Cannot import model-module '{name}': it needs '{exc.name}', which the image lacks"
        ) from None
    except Exception as exc:
        raise UserCodeError(f"Cannot import model-module '{name}': {type(exc).__name__}: {exc}") from exc


def load_module(name: str, folder: str | Path) -> ModuleType:
    """The model-module ``name`` from ``folder``, checked to define every required function."""
    module = import_module(name, folder)
    missing = [fn for fn in REQUIRED if not callable(getattr(module, fn, None))]
    if missing:
        raise UserCodeError(f"model-module '{name}' lacks {' and '.join(f'{m}()' for m in missing)}")
    return module


def network_builder(record: ModelRecord, model_dir: str | Path) -> NetworkBuilder:
    """The network function a model was trained with: ours, or its packed model-module's."""
    if not record.model_module:
        return network.build_network
    return load_module(record.model_module, Path(model_dir) / CODE_DIR).build_network
