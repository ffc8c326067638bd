"""Environment -> typed serving settings: the only place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serving import constants as C
from serving import media
from serving.errors import StartupError


def cpu_count() -> int:
    """CPUs this process may run on (respects a container's cpuset, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path
    port: int
    workers: int
    timeout: int
    program: str | None  # file name under <model_dir>/code, None for "inference.py if present"
    default_accept: str
    max_body_bytes: int
    bare_endpoint: bool
    proxy: str = C.PROXY_NGINX  # C.PROXY_NGINX or C.PROXY_NONE
    threads: int = C.DEFAULT_THREADS

    @property
    def code_dir(self) -> Path:
        return self.model_dir / C.USER_CODE_DIR

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServeConfig:
        """Parse and check every setting once; a bad value is a StartupError naming the variable."""
        max_mb = _int(environ, C.ENV_MAX_PAYLOAD_MB, C.DEFAULT_MAX_PAYLOAD_MB, 1, 1024)
        return cls(
            model_dir=Path(environ.get(C.ENV_MODEL_DIR) or C.DEFAULT_MODEL_DIR),
            port=_int(environ, C.ENV_BIND_TO_PORT, C.DEFAULT_PORT, 1, 65535),
            workers=_int(environ, C.ENV_WORKERS, cpu_count(), 1, 1024),
            timeout=_int(environ, C.ENV_TIMEOUT, C.DEFAULT_TIMEOUT_SECONDS, 1, 86400),
            program=environ.get(C.ENV_PROGRAM) or None,
            default_accept=environ.get(C.ENV_DEFAULT_ACCEPT) or media.JSON,
            max_body_bytes=max_mb * C.MB,
            bare_endpoint=environ.get(C.ENV_BARE_ENDPOINT, "").lower() in ("1", "true", "yes"),
            proxy=_choice(environ, C.ENV_PROXY, (C.PROXY_NGINX, C.PROXY_NONE)),
            threads=_int(environ, C.ENV_THREADS, C.DEFAULT_THREADS, 1, 256),
        )


def _int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise StartupError(f"{name}={value} is outside {low}..{high}")
    return value


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise StartupError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw
