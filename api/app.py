"""The Starlette application: XRPC routes, playback files, CORS, errors as XRPC JSON."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from atproto_video.api import multipart
from atproto_video.api.context import AppContext
from atproto_video.api.errors import (
    InvalidRequest,
    MethodNotImplemented,
    XrpcError,
    from_unexpected,
)
from atproto_video.api.playback import respond
from atproto_video.api.responses import JSON
from atproto_video.api.upload import handle_upload
from atproto_video.core import __version__
from atproto_video.core.lexicon import (
    NSID_ABORT_UPLOAD,
    NSID_FINISH_UPLOAD,
    NSID_GET_JOB_STATUS,
    NSID_GET_UPLOAD_LIMITS,
    NSID_GET_UPLOAD_STATUS,
    NSID_START_UPLOAD,
    NSID_UPLOAD_PART,
    NSID_UPLOAD_VIDEO,
)
from atproto_video.core.storage import StorageUnavailable

log = logging.getLogger(__name__)


Handler = Callable[[Request, AppContext], Awaitable[Response]]


def xrpc_error(exc: XrpcError) -> Response:
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


async def get_job_status(request: Request, ctx: AppContext) -> Response:
    job_id = request.query_params.get("jobId", "")
    if not job_id:
        raise InvalidRequest('Error: Params must have the property "jobId"')
    status = await ctx.job_status(job_id)
    return JSON({"jobStatus": status})


async def get_upload_limits(request: Request, ctx: AppContext) -> Response:
    caller = await ctx.verifier.verify(request.headers.get("authorization"), NSID_GET_UPLOAD_LIMITS)
    return JSON(await ctx.upload_limits(caller.did))


ROUTES: dict[str, tuple[str, Handler]] = {
    NSID_GET_JOB_STATUS: ("GET", get_job_status),
    NSID_GET_UPLOAD_LIMITS: ("GET", get_upload_limits),
    NSID_UPLOAD_VIDEO: ("POST", handle_upload),
    NSID_START_UPLOAD: ("POST", multipart.start_upload),
    NSID_UPLOAD_PART: ("POST", multipart.upload_part),
    NSID_FINISH_UPLOAD: ("POST", multipart.finish_upload),
    NSID_GET_UPLOAD_STATUS: ("GET", multipart.get_upload_status),
    NSID_ABORT_UPLOAD: ("POST", multipart.abort_upload),
}


def build_app(ctx: AppContext) -> Starlette:
    async def xrpc(request: Request) -> Response:
        nsid = request.path_params["nsid"]
        route = ROUTES.get(nsid)
        try:
            if route is None:
                raise MethodNotImplemented("Method Not Implemented")
            method, handler = route
            if request.method != method and not (method == "GET" and request.method == "HEAD"):
                raise InvalidRequest(f"Incorrect HTTP method ({request.method}) expected {method}")
            return await handler(request, ctx)
        except XrpcError as exc:
            return xrpc_error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:
            error = from_unexpected(exc)
            if error.status == 503:
                log.warning("database unavailable", extra={"nsid": nsid})
            else:
                log.exception("unhandled error", extra={"nsid": nsid})
            return xrpc_error(error)

    async def health(_request: Request) -> Response:
        try:
            await ctx.check_database()
        except Exception:
            log.exception("health check failed")
            return JSON({"version": __version__, "error": "Service Unavailable"}, status_code=503)
        return JSON({"version": __version__})

    async def live(_request: Request) -> Response:
        """Liveness: the process answers. Never the database, so a Postgres failover does
        not restart every API pod mid-upload (readiness, /xrpc/_health, covers that)."""
        return JSON({"version": __version__})

    async def did_json(_request: Request) -> Response:
        doc = ctx.did_document()
        if doc is None:
            return JSON({"error": "NotFound", "message": "not a did:web service"}, status_code=404)
        return JSON(doc)

    async def watch(request: Request) -> Response:
        did = unquote(request.path_params["did"])
        cid = request.path_params["cid"]
        rel = request.path_params["path"]
        try:
            found = await ctx.playback(did, cid, rel)
        except StorageUnavailable:
            return JSON({"error": "NotEnoughResources", "message": "storage is unavailable"},
                        status_code=503, headers={"retry-after": "5"})
        if found is None:
            return JSON({"error": "NotFound", "message": "not found"}, status_code=404)
        return respond(request, found, rel)

    routes = [
        Route("/xrpc/_health", health, methods=["GET", "HEAD"]),
        Route("/livez", live, methods=["GET", "HEAD"]),
        Route("/xrpc/{nsid}", xrpc, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/.well-known/did.json", did_json, methods=["GET"]),
        Route("/watch/{did}/{cid}/{path:path}", watch, methods=["GET", "HEAD"]),
    ]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type"],
            max_age=86400,
        )
    ]
    return Starlette(routes=routes, middleware=middleware)
