"""The FastAPI application: one route per XRPC method, validated and described by the lexicon
models (api/models.py), plus playback files, the pages for people (api/pages.py), health,
CORS, and errors as XRPC JSON.

Order as in the reference server: query parameters, then the token, then the JSON body.
``/openapi.json`` lists every method with its parameters and its lexicon's errors; ``/docs``
(Swagger UI) and ``/redoc`` serve their scripts from the fastapi-offline package, not a CDN.
"""


import logging
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message

from atproto_video.api import multipart, pages
from atproto_video.api.auth import ERROR_NAMES as AUTH_ERROR_NAMES
from atproto_video.api.auth import Caller
from atproto_video.api.context import AppContext
from atproto_video.api.errors import (
    InvalidRequest,
    MethodNotImplemented,
    XrpcError,
    from_unexpected,
)
from atproto_video.api.models import (
    METHODS,
    AbortUploadInput,
    FinishUploadInput,
    GetJobStatusParams,
    GetUploadStatusParams,
    Method,
    StartUploadInput,
    UploadPartParams,
    UploadVideoParams,
    XrpcErrorBody,
)
from atproto_video.api.playback import respond
from atproto_video.api.responses import JSON
from atproto_video.api.upload import handle_upload
from atproto_video.api.validation import invalid_request
from atproto_video.core import __version__
from atproto_video.core.dbfaults import db_unavailable
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

Endpoint = Callable[..., Awaitable[Any]]
P = TypeVar("P", bound=BaseModel)

#: Errors any method may answer besides its lexicon's (SPEC section 7).
_COMMON: dict[int, str] = {
    400: "`InvalidRequest`: parameters or body do not match the lexicon",
    500: "`InternalServerError`: an unexpected failure (nothing internal is shown)",
}
_AUTH: dict[int, str] = {
    401: "The reference verifier's names: " + ", ".join(f"`{n}`" for n in AUTH_ERROR_NAMES),
    503: "`NotEnoughResources`: the issuer's DID resolver is unreachable",
}
_EXTRA: dict[str, dict[int, str]] = {
    NSID_GET_JOB_STATUS: {404: "`NotFound`: no such job"},
    NSID_UPLOAD_VIDEO: {
        413: "`PayloadTooLarge`: beyond the per-file cap",
        429: "The quota sentences social-app matches (`User has exceeded daily upload bytes "
             "limit`, `User has exceeded daily upload videos limit`) and `TooManyOpenUploads`",
        503: "`NotEnoughResources`: storage or the DID resolver is unavailable",
    },
}


#: The largest JSON body taken (lexicon inputs are a few hundred bytes): 413 beyond, unread.
JSON_BODY_LIMIT = 64 * 1024


def xrpc_error(exc: XrpcError) -> Response:
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


def http_error(exc: HTTPException) -> Response:
    """Starlette's and FastAPI's HTTP errors as XRPC bodies (400 is ``InvalidRequest``)."""
    phrase = HTTPStatus(exc.status_code).phrase
    names = {400: "InvalidRequest", 413: "PayloadTooLarge"}
    name = names.get(exc.status_code, phrase.replace(" ", ""))
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    return JSON({"error": name, "message": message}, status_code=exc.status_code,
                headers=exc.headers)


class XrpcRoute(APIRoute):
    """Every failure inside a route becomes an XRPC error body: validation (400, reference
    wording), XrpcError, a client gone (499) and, through ``from_unexpected``, the rest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # FastAPI reads a declared body whole, before the token dependency runs: bounded.
        limited = self.body_field is not None

        async def guarded(request: Request) -> Response:
            try:
                if limited:
                    request = _bounded(request, JSON_BODY_LIMIT)
                return await handler(request)
            except XrpcError as exc:
                return xrpc_error(exc)
            except RequestValidationError as exc:
                ctype = request.headers.get("content-type")
                return xrpc_error(invalid_request(exc.errors(), ctype))
            except HTTPException as exc:  # FastAPI's own: a JSON body it could not decode
                return http_error(exc)
            except ClientDisconnect:
                return Response(status_code=499)
            except Exception as exc:
                error = from_unexpected(exc)
                if error.status == 503:  # an outage, not a bug: no traceback per request
                    log.warning("unavailable: %s", error.message,
                                extra={"path": request.url.path})
                else:
                    log.exception("unhandled error", extra={"path": request.url.path})
                return xrpc_error(error)

        return guarded


def _bounded(request: Request, limit: int) -> Request:
    """The request with a body of at most ``limit`` bytes (413 ``PayloadTooLarge`` beyond,
    by ``Content-Length`` before reading or while reading)."""
    # An HTTPException: FastAPI passes those through its body parsing (http_error: 413 is
    # PayloadTooLarge); anything else raised there becomes its 400.
    too_large = HTTPException(413, f"request entity too large: at most {limit} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise too_large
        return message

    return Request(request.scope, receive)


def _responses(method: Method, authenticated: bool) -> dict[int | str, dict[str, Any]]:
    """The lexicon's errors (and the service's own) as OpenAPI responses, grouped by status."""
    lines: dict[int, list[str]] = {}
    for status, text in {**_COMMON, **(_AUTH if authenticated else {})}.items():
        lines.setdefault(status, []).append(text)
    for status, text in _EXTRA.get(method.nsid, {}).items():
        lines.setdefault(status, []).append(text)
    if method.input is not None:
        lines.setdefault(413, []).append(
            f"`PayloadTooLarge`: a JSON body beyond {JSON_BODY_LIMIT // 1024} KiB")
    for err in method.errors:
        lines.setdefault(err.status, []).append(f"`{err.name}`: {err.description}")
    return {
        status: {"model": XrpcErrorBody,
                 "description": f"{HTTPStatus(status).phrase}:\n\n"
                                + "\n".join(f"- {t}" for t in texts)}
        for status, texts in sorted(lines.items())
    }


def query_params(model: type[P], request: Request) -> P:
    """What a ``Query()`` model parameter does (validation errors included), by hand."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI parameters FastAPI would list for ``Annotated[model, Query()]``."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def _binary_body(method: Method) -> dict[str, Any]:
    assert method.input_encoding is not None
    return {"requestBody": {"required": True, "content": {
        method.input_encoding: {"schema": {"type": "string", "format": "binary"}}}}}


def build_app(ctx: AppContext) -> FastAPI:
    app = FastAPIOffline(
        title="atproto-video",
        version=__version__,
        description="The app.bsky.video XRPC methods (lexicons `app.bsky.video.*`). Errors are "
                    '`{"error": Name, "message": text}`.',
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        static_url="/docs/assets",
        default_response_class=JSON,
    )
    app.router.route_class = XrpcRoute

    def xrpc(nsid: str, *, authenticated: bool = True, binary_body: bool = False,
             declared_params: type[BaseModel] | None = None) -> Callable[[Endpoint], Endpoint]:
        method = METHODS[nsid]

        def add(endpoint: Endpoint) -> Endpoint:
            path = f"/xrpc/{nsid}"
            extra: dict[str, Any] = _binary_body(method) if binary_body else {}
            if declared_params is not None:  # validated by the endpoint itself
                extra["parameters"] = _query_parameters(declared_params)
            if authenticated:
                extra["security"] = [{"serviceAuth": []}]
            app.add_api_route(
                path, endpoint, methods=[method.http], response_model=method.output,
                response_model_exclude_none=True, responses=_responses(method, authenticated),
                summary=nsid, description=method.description, operation_id=nsid,
                openapi_extra=extra or None, tags=["app.bsky.video"],
            )
            if method.http == "GET":  # HEAD answers as GET does, as before
                app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False,
                                  response_model=method.output, response_model_exclude_none=True)
            return endpoint

        return add

    def caller(nsid: str) -> Callable[[Request], Awaitable[Caller]]:
        """The token check of a method with a JSON body: a dependency, so it runs before the
        body's validation errors are reported (reference order)."""

        async def verify(request: Request) -> Caller:
            return await ctx.verifier.verify(
                request.headers.get("authorization"), nsid, allow_pds_audience=True)

        return verify

    @xrpc(NSID_GET_JOB_STATUS, authenticated=False, declared_params=GetJobStatusParams)
    async def get_job_status(request: Request) -> Response:
        # The hot path, polled every 1.5 s by every uploading client without a token: the
        # parameters model is applied by hand (FastAPI's per-request dependency machinery cost
        # a quarter of the throughput, bench/status.py) and the status dict, already
        # lexicon-shaped (core/lexicon.py JobStatus), goes out without a model round trip. The
        # route still declares both models, so the schema is the same.
        params = query_params(GetJobStatusParams, request)
        return JSON({"jobStatus": await ctx.job_status(params.jobId)})

    @xrpc(NSID_GET_UPLOAD_LIMITS)
    async def get_upload_limits(request: Request) -> Any:
        who = await ctx.verifier.verify(
            request.headers.get("authorization"), NSID_GET_UPLOAD_LIMITS)
        return await ctx.upload_limits(who.did)

    @xrpc(NSID_UPLOAD_VIDEO, binary_body=True)
    async def upload_video(request: Request,
                           params: Annotated[UploadVideoParams, Query()]) -> Response:
        return await handle_upload(request, ctx, params)

    @xrpc(NSID_START_UPLOAD)
    async def start_upload(who: Annotated[Caller, Depends(caller(NSID_START_UPLOAD))],
                           body: StartUploadInput) -> Any:
        return await multipart.start_upload(ctx, who, body)

    @xrpc(NSID_UPLOAD_PART, binary_body=True)
    async def upload_part(request: Request,
                          params: Annotated[UploadPartParams, Query()]) -> Any:
        return await multipart.upload_part(request, ctx, params)

    @xrpc(NSID_FINISH_UPLOAD)
    async def finish_upload(who: Annotated[Caller, Depends(caller(NSID_FINISH_UPLOAD))],
                            body: FinishUploadInput) -> Any:
        return await multipart.finish_upload(ctx, who, body)

    @xrpc(NSID_GET_UPLOAD_STATUS)
    async def get_upload_status(request: Request,
                                params: Annotated[GetUploadStatusParams, Query()]) -> Any:
        return await multipart.get_upload_status(request, ctx, params)

    @xrpc(NSID_ABORT_UPLOAD)
    async def abort_upload(who: Annotated[Caller, Depends(caller(NSID_ABORT_UPLOAD))],
                           body: AbortUploadInput) -> Any:
        return await multipart.abort_upload(ctx, who, body)

    async def health(request: Request) -> Response:
        try:
            await ctx.check_database()
        except Exception as exc:
            if db_unavailable(exc):  # every probe during an outage: one line, no traceback
                log.warning("health check failed: the database is unavailable")
            else:
                log.exception("health check failed")
            return JSON({"version": __version__, "error": "Service Unavailable"}, status_code=503)
        return JSON({"version": __version__})

    async def live(request: Request) -> Response:
        """Liveness: the process answers. Never the database, so a Postgres failover does
        not restart every API pod mid-upload (readiness, /xrpc/_health, covers that)."""
        return JSON({"version": __version__})

    async def did_json(request: Request) -> Response:
        doc = ctx.did_document()
        if doc is None:
            return JSON({"error": "NotFound", "message": "not a did:web service"}, status_code=404)
        return JSON(doc)

    async def watch(request: Request) -> Response:
        # The server decoded the path once: a did:web's own %3A (a port) must stay as it is.
        did = request.path_params["did"]
        cid = request.path_params["cid"]
        rel = request.path_params["path"]
        if rel == "":  # the page for people; players fetch the files beside it
            return await pages.watch_page(ctx, did, cid)
        try:
            found = await ctx.playback(did, cid, rel)
        except StorageUnavailable:
            return JSON({"error": "NotEnoughResources", "message": "storage is unavailable"},
                        status_code=503, headers={"retry-after": "5"})
        if found is None:
            return JSON({"error": "NotFound", "message": "not found"}, status_code=404)
        return respond(request, found, rel)

    async def watch_no_slash(request: Request) -> Response:
        return pages.redirect_to_page(request.path_params["did"], request.path_params["cid"])

    async def job_page(request: Request) -> Response:
        return await pages.job_page(ctx, request.path_params["job_id"])

    async def other_method(request: Request) -> Response:
        """Known methods called with the wrong HTTP verb, and unknown methods."""
        method = METHODS.get(request.path_params["nsid"])
        if method is None:
            raise MethodNotImplemented("Method Not Implemented")
        raise InvalidRequest(f"Incorrect HTTP method ({request.method}) expected {method.http}")

    for path, endpoint, verbs in (
        ("/xrpc/_health", health, ["GET", "HEAD"]),
        ("/livez", live, ["GET", "HEAD"]),
        ("/xrpc/{nsid}", other_method,
         ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        ("/.well-known/did.json", did_json, ["GET", "HEAD"]),
        ("/watch/{did}/{cid}/{path:path}", watch, ["GET", "HEAD"]),
        ("/watch/{did}/{cid}", watch_no_slash, ["GET", "HEAD"]),
        ("/jobs/{job_id}", job_page, ["GET", "HEAD"]),
    ):
        app.add_api_route(path, endpoint, methods=verbs, include_in_schema=False)
    app.mount(pages.STATIC_URL, pages.static_files(), name="static")

    async def router_error(request: Request, exc: Exception) -> Response:
        """Router answers (no such path, wrong verb) as XRPC bodies too."""
        assert isinstance(exc, HTTPException)
        return http_error(exc)

    app.add_exception_handler(HTTPException, router_error)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["authorization", "content-type"],
        max_age=86400,
    )
    _describe_auth(app)
    # The methods first (routes are tried in order): the docs routes FastAPIOffline added at
    # construction go last.
    docs = [r for r in app.router.routes if not getattr(r, "path", "").startswith("/xrpc/")]
    app.router.routes[:] = [r for r in app.router.routes if r not in docs] + docs
    return app


def _describe_auth(app: FastAPI) -> None:
    """The schema once, with the service-auth bearer token the methods marked ``security``
    take (seed mode: ``lxm`` = the method; Bluesky mode: the PDS ``uploadBlob`` token), and
    without FastAPI's 422 answers, which this service never gives."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for item in schema["paths"].values():  # validation fails with 400, never 422
                for operation in item.values():
                    operation["responses"].pop("422", None)
            components = schema.setdefault("components", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(unused, None)
            components["securitySchemes"] = {"serviceAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "AT Protocol service-auth JWT (SPEC section 3)"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
