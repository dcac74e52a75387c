"""The HTTP face of secstor: /client/api (CloudStack API) and /healthz.

Handlers are synchronous (SQLAlchemy sessions); Starlette runs them in its thread pool.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Callable

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from secstor.api.protocol import ApiReply, handle_api_call
from secstor.runtime import Runtime

log = logging.getLogger("secstor.api")

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


# orjson encodes a 500-template listTemplates page several times faster than json. Datetimes and
# dataclasses go through str() as they did with json.dumps(default=str).
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_reply(reply: ApiReply) -> Response:
    resp = Response(orjson.dumps(reply.body, default=str, option=_ORJSON_OPTIONS), status_code=reply.status,
                    media_type=None,
                    headers={"Content-Type": JSON_CONTENT_TYPE})
    for name, value in reply.set_cookies.items():
        resp.set_cookie(name, value, httponly=(name != "sessionkey"), samesite="strict", path="/client")
    for name in reply.clear_cookies:
        resp.delete_cookie(name, path="/client")
    return resp


def create_app(runtime: Runtime, *, ready: Callable[[], bool] = lambda: True,
               extra_routes: list[Route] | None = None, on_startup: Callable[[], None] | None = None,
               on_shutdown: Callable[[], None] | None = None) -> Starlette:
    async def api(request: Request) -> Response:
        params: dict[str, str] = dict(request.query_params)
        if request.method == "POST":
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        client = request.client.host if request.client else "-"
        reply = await run_in_threadpool(
            handle_api_call, runtime, params, cookies=dict(request.cookies), headers=dict(request.headers), client=client
        )
        return json_reply(reply)

    async def healthz(_request: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "starting"}, status_code=503)

    routes = [
        Route("/client/api", api, methods=["GET", "POST"]),
        Route("/client/api/", api, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ] + list(extra_routes or [])
    @asynccontextmanager
    async def lifespan(_app):
        if on_startup:
            await run_in_threadpool(on_startup)
        yield
        if on_shutdown:
            await run_in_threadpool(on_shutdown)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    return app
