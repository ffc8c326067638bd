"""Bring your own model: a user module that provides the search space and the network.

The module (hyperparameter ``model-module``) comes with the Estimator's ``source_dir`` and
must define:

    suggest_params(trial) -> dict                      the search space
    build_network(params, n_features, n_classes) -> chainer.Link   the predictor (logits)

and may define:

    make_optimizer(params, model) -> chainer.Optimizer  (default: ours, or Adam)

Training packs the source folder into ``model_dir/code/`` so that ``serve`` rebuilds the
same network from the stored parameters (importing it is core/usercode.py's, shared with
serving). Plug-ins by lookup with a default, as in the inference toolkit: no registry.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import chainer

from core import network, usercode
from core.artifact import CODE_DIR
from core.errors import UserError
from entrypoint.trials.builtin import make_optimizer, suggest_params


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Where the search space, the network and the optimizer come from."""

    suggest_params: Callable[[Any], dict[str, Any]]
    build_network: Callable[[dict[str, Any], int, int], chainer.Link]
    make_optimizer: Callable[[dict[str, Any], chainer.Link], chainer.Optimizer]
    module: ModuleType | None = None

    @property
    def module_name(self) -> str | None:
        return None if self.module is None else self.module.__name__


def _default_optimizer(params: dict[str, Any], model: chainer.Link) -> chainer.Optimizer:
    if "optimizer" in params:  # the user kept our optimizer part of the search space
        return make_optimizer(params, model)
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(model)
    return optimizer


def builtin() -> ModelSpec:
    return ModelSpec(suggest_params, network.build_network, make_optimizer)


def load(name: str | None, folder: str | Path) -> ModelSpec:
    """The user's module from ``folder``, or the built-in MLP when ``name`` is None."""
    if name is None:
        return builtin()
    try:
        module = usercode.load_module(name, folder)
    except usercode.UserCodeError as exc:
        raise UserError(str(exc)) from exc.__cause__
    return ModelSpec(
        suggest_params=module.suggest_params,
        build_network=module.build_network,
        make_optimizer=getattr(module, "make_optimizer", _default_optimizer),
        module=module,
    )


def check_origin(spec: ModelSpec, folder: str | Path) -> None:
    """Training: the module must come from the source folder, not from a module of the same
    name elsewhere on the path (whose folder would be packed into the model)."""
    if spec.module is None:
        return
    root = source_root(spec.module)
    if root != Path(folder).resolve():
        raise UserError(
            f"model-module '{spec.module_name}' was imported from {root}, not "
            f"from the source folder {folder}: another module has that name; rename yours"
        )


def source_root(module: ModuleType) -> Path:
    """The folder the module was imported from (the source_dir), also for ``pkg.mod``."""
    source = Path(module.__file__)  # not resolved: a symlinked module file stays in the folder
    depth = module.__name__.count(".") + (source.name == "__init__.py")
    return source.parents[depth].resolve()


def pack(spec: ModelSpec, model_dir: str | Path) -> str | None:
    """Copy the user's source folder into model_dir/code (replacing what is there), so that the
    module's own imports (its package, helper modules next to it) work when serving; return the
    module's name."""
    if spec.module is None:
        return None
    root = source_root(spec.module)
    target = Path(model_dir) / CODE_DIR
    tmp = Path(model_dir) / f".{CODE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")
    own = Path(model_dir).resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:
        # model_dir itself may sit inside the source folder (a local run): never copy it.
        inside = {n for n in names if (Path(folder) / n).resolve() == own}
        return set(skip(folder, names)) | inside

    try:
        shutil.copytree(root, tmp, ignore=ignore, symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise UserError(f"Cannot copy the source folder {root} into the model: {exc}") from None
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return spec.module.__name__


def source_folder(code_dir: Path, code_channel: Path) -> Path:
    """Where the user's source_dir is: /opt/ml/code (SDK v2, fetched or mounted there) unless it
    is empty and the ``code`` channel exists (SDK v3's SourceCode: /opt/ml/input/data/code)."""
    if code_dir.is_dir() and any(code_dir.iterdir()):
        return code_dir
    return code_channel if code_channel.is_dir() else code_dir


def fetch_source(submit_uri: str | None, code_dir: str | Path) -> None:
    """Fetch the Estimator's source_dir (sourcedir.tar.gz on S3) into code_dir, as the toolkit's
    script mode does; a code_dir that already holds files (a local run) is used as it is."""
    if not submit_uri:
        return
    from sagemaker_training import files

    try:
        files.download_and_extract(submit_uri, str(code_dir))
    except Exception as exc:
        raise UserError(f"Cannot fetch source_dir from {submit_uri}: {type(exc).__name__}: {exc}") from exc


def install_requirements(code_dir: str | Path) -> None:
    """pip install code_dir/requirements.txt (only when the user asked: it needs network)."""
    from sagemaker_training import errors, modules

    if not (Path(code_dir) / "requirements.txt").is_file():
        raise UserError(f"install-requirements is true but {code_dir}/requirements.txt does not exist")
    try:
        modules.install_requirements(str(code_dir), capture_error=True)
    except errors.ClientError as exc:
        raise UserError(f"pip install -r requirements.txt failed: {str(exc)[-800:]}") from None
