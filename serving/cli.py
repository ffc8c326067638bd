"""`serve`: check the settings and the model, then run nginx + gunicorn (or gunicorn alone).

SageMaker runs ``docker run IMAGE serve``; this process is the one that receives SIGTERM. By
default it supervises nginx and a forked gunicorn master (serving/supervisor.py); with
``SERVING_PROXY=none`` it becomes the gunicorn master itself (the old arrangement).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from serving import constants as C

if TYPE_CHECKING:
    from serving.config import ServeConfig

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
LOG_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Parse the environment, check the model here (fail fast, exit 1), then run the server."""
    argparse.ArgumentParser(prog="serve", description=__doc__).parse_args(argv)
    logging.basicConfig(format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT, stream=sys.stderr)
    logging.getLogger("serving").setLevel(logging.INFO)  # ours: importing Chainer resets the root's level
    for name in C.SINGLE_THREAD_ENV:  # before numpy is imported: BLAS sizes its pool once, at load
        os.environ.setdefault(name, "1")

    from serving.config import ServeConfig
    from serving.errors import StartupError

    try:
        config = ServeConfig.from_environ(os.environ)
        if config.proxy == C.PROXY_NGINX:
            from serving.nginx import nginx_binary

            nginx_binary()  # before loading anything: a missing nginx is the quickest thing to report
        preflight(config)
    except StartupError as e:
        log.error("serve cannot start: %s", e)
        sys.exit(1)

    if config.proxy == C.PROXY_NGINX:
        from serving.supervisor import run

        run(config)
    else:
        from serving.server import ServeApplication

        ServeApplication(config).run()


def preflight(config: ServeConfig) -> None:
    """Import the user's module and load our model once, before forking, so a broken one stops serve now.

    Workers inherit the imported module; each still runs ``model_fn`` itself after the fork.
    """
    from serving.handlers import DEFAULTS, load_handlers  # numpy and Chainer: only once the settings are good

    handlers = load_handlers(config)
    if handlers.overridden():
        log.info("user hooks from %s: %s", handlers.source, ", ".join(handlers.overridden()))
    if handlers.model_fn is DEFAULTS["model_fn"]:
        record = handlers.model_fn(str(config.model_dir)).record
        log.info(
            "model %s: trial %s of study %r, %s=%s",
            config.model_dir,
            record.trial_number,
            record.study_name,
            record.objective_metric,
            record.value,
        )
    front = f"nginx, {config.workers} workers, {config.threads} request thread(s) each"
    if config.proxy == C.PROXY_NONE:
        front = f"no proxy, {config.workers} sync workers"
    log.info(
        "serving on %s:%d (%s), timeout %d s, max body %d bytes",
        C.BIND_HOST,
        config.port,
        front,
        config.timeout,
        config.max_body_bytes,
    )


if __name__ == "__main__":
    main()
