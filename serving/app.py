"""The WSGI app: SageMaker's /ping and /invocations over the four hooks.

It is built only after ``model_fn`` has returned, and a worker takes no request before its app
exists: without nginx it accepts no connection before; behind nginx its socket gets the name
nginx connects to only then, and /ping goes to a thread that starts only then
(serving/server.py, serving/ping.py). So a worker that answers /ping has its model loaded.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from serving import constants as C
from serving import media
from serving.body import read_body
from serving.config import ServeConfig
from serving.errors import ServingError
from serving.handlers import Handlers

log = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "internal server error (details are in the server log)"


class Ping:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_200
        resp.content_type = media.TEXT


class Invocations:
    """Body -> transform_fn (by default input_fn -> predict_fn -> output_fn) -> response."""

    def __init__(self, handlers: Handlers, model: Any, config: ServeConfig) -> None:
        self._handlers = handlers
        self._model = model
        self._limit = config.max_body_bytes
        self._default_accept = config.default_accept

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req.stream, req.content_length, self._limit)
        accept = (req.get_header("Accept") or "").strip()
        if accept in ("", media.ANY):
            accept = self._default_accept
        result = self._handlers.transform_fn(self._model, body, req.content_type or "", accept)
        payload, content_type = result if isinstance(result, tuple) else (result, accept)
        resp.data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        resp.content_type = content_type


class ExecutionParameters:
    """What batch transform should send us when its job leaves these unset."""

    def __init__(self, config: ServeConfig) -> None:
        self._doc = {
            "MaxConcurrentTransforms": config.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": config.max_body_bytes // C.MB,
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = json.dumps(self._doc).encode("utf-8")
        resp.content_type = media.JSON


class Bare:
    """The benchmark's baseline: read the body like /invocations, then answer an empty 200."""

    def __init__(self, config: ServeConfig) -> None:
        self._limit = config.max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        read_body(req.stream, req.content_length, self._limit)
        resp.status = falcon.HTTP_200


def _refuse(req: falcon.Request, resp: falcon.Response, ex: ServingError, params: dict) -> None:
    resp.status = falcon.code_to_http_status(ex.status_code)
    resp.content_type = media.TEXT
    resp.text = str(ex)
    log.info("%s %s %s: %s", req.method, req.path, ex.status_code, ex)


def _fail(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    log.error("%s %s failed", req.method, req.path, exc_info=ex)
    resp.status = falcon.HTTP_500
    resp.content_type = media.TEXT
    resp.text = INTERNAL_ERROR_MESSAGE


def create_app(config: ServeConfig, handlers: Handlers, model: Any) -> falcon.App:
    """Routes and error mapping; tracebacks go to the log, never to the client."""
    app = falcon.App()
    app.add_route(C.ROUTE_PING, Ping())
    app.add_route(C.ROUTE_INVOCATIONS, Invocations(handlers, model, config))
    app.add_route(C.ROUTE_EXECUTION_PARAMETERS, ExecutionParameters(config))
    if config.bare_endpoint:
        app.add_route(C.ROUTE_BARE, Bare(config))
    app.add_error_handler(Exception, _fail)
    app.add_error_handler(ServingError, _refuse)
    return app
