"""The REST service and web page: ``create_app(detector)`` -> a FastAPI app.

Every route goes through the one ``Detector`` loaded at start; decoding and
inference run in a bounded worker pool so concurrent requests queue (or get
503) instead of exhausting memory.  Clients send image bytes; the service
never fetches URLs.  Errors are JSON: ``{"error": {"status", "kind", "message"}, "request_id"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import io
import json
import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Literal, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from synthdetect import __version__
from synthdetect.api import Detector
from synthdetect.explain import METHODS, Explanation, explain_loaded
from synthdetect.explain.maps import torch_twin
from synthdetect.explain.render import png_bytes
from synthdetect.images import ImageLoadError, load_image
from synthdetect.server.forms import client_name, disposition_filename, image_parts, looks_like_form
from synthdetect.server.limits import (
    BodyLimitMiddleware,
    RequestLogMiddleware,
    ServerSettings,
    ServiceError,
    Ticket,
    WorkerPool,
)
from synthdetect.verdict import SCHEMA, SIGNALS, STRENGTHS, Label, Verdict

STATIC_DIR = Path(__file__).resolve().parent / "static"
T = TypeVar("T")
log = logging.getLogger("synthdetect.server")

#: HTTP status for each ``ImageLoadError.kind`` when no file of a request could be judged.
LOAD_ERROR_STATUS = {
    "too_large": 413, "too_many_pixels": 413,
    "unsupported_format": 415, "not_an_image": 415,
    "empty": 422, "corrupt": 422, "truncated": 422,
}
#: ... and for a failed Verdict's ``error_kind``: a model that fails is the server's fault, not a bad request.
VERDICT_ERROR_STATUS = {**LOAD_ERROR_STATUS, "model_error": 500, "timeout": 504}
RAW_MEDIA_TYPES = ("application/octet-stream", "")
RAW_NAME = ("file name to report for a raw image body (else the filename of its Content-Disposition header, "
            "else 'upload'); refused with a multipart body, whose parts are named by their own filename")

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "one or more image files"}}},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"},
                        "description": "a single image as the raw request body"},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "a single image as the raw request body"},
        },
    }
}


class MapChoice(str, Enum):
    auto = "auto"
    gradcam = "gradcam"
    occlusion = "occlusion"
    ela = "ela"
    figure = "figure"


class ErrorDetail(BaseModel):
    status: int = Field(description="the HTTP status again")
    kind: str = Field(description="machine-readable, e.g. body_too_large, not_an_image, no_files, busy, timeout")
    message: str = Field(description="one line for people, naming the file and the numbers")


class EvidenceBody(BaseModel):
    kind: str
    signal: Literal[SIGNALS]  # type: ignore[valid-type]
    strength: Literal[STRENGTHS]  # type: ignore[valid-type]
    detail: str
    data: dict[str, Any] | None = Field(None, description="present only when the probe recorded data")


class ScoreBody(BaseModel):
    label: Literal["ai", "human"]
    score: float


class VerdictBody(BaseModel):
    """One image's Verdict, ``Verdict.to_dict()`` (schema synthdetect.verdict/1, described in the README).

    Documentation only: the service sends what ``to_dict()`` gives, and a test checks the two keep the same keys.
    """

    model_config = ConfigDict(populate_by_name=True)
    schema_: Literal[SCHEMA] = Field(alias="schema")  # type: ignore[valid-type]
    file: str = Field(description="the upload's file name (upload, upload-N when the client sent none)")
    sha256: str | None
    label: Label | None = Field(description="null when the file could not be judged (see error)")
    p_ai: float | None = Field(description="calibrated probability of AI; null when no model judged the image")
    scores: list[ScoreBody]
    reasons: list[str]
    evidence: list[EvidenceBody]
    models: list[dict[str, Any]]
    image: dict[str, Any]
    timing_ms: dict[str, float]
    error: str | None = Field(description="one line naming the file and the reason it could not be judged")
    error_kind: str | None = Field(description="too_large, too_many_pixels, not_an_image, corrupt, truncated, ...")


class DetectBody(BaseModel):
    request_id: str
    model: str
    verdicts: list[VerdictBody] = Field(description="one per uploaded file, in the order sent")


class LimitsBody(BaseModel):
    max_body_bytes: int = Field(description="largest request body; more is refused with 413 body_too_large")
    max_file_bytes: int = Field(description="largest single image file")
    max_pixels: int = Field(description="most pixels in one image, read from its header before decoding")
    max_files: int = Field(description="most images in one request")
    timeout_s: float = Field(description="seconds a request may take, upload included")


class ModelsBody(BaseModel):
    loaded: dict[str, Any] = Field(description="the loaded model's card: name, version, kind, description, input, "
                                               "decision, routes (those it has)")
    shipped: list[dict[str, Any]] = Field(description="the same for each model shipped with synthdetect, or its "
                                                      "name and error when its package cannot be read")
    limits: LimitsBody


class HealthBody(BaseModel):
    status: Literal["ok"]
    version: str
    model: str
    workers: int
    pending: int = Field(description="requests running or queued now")
    capacity: int = Field(description="workers + max_queue: more pending requests get 503 busy")


class ErrorBody(BaseModel):
    """Every error the service sends; /v1/detect adds ``model`` and ``verdicts`` when no file could be judged."""

    error: ErrorDetail
    request_id: str | None = Field(None, description="also the X-Request-ID header and the id in the log line")
    model: str | None = None
    verdicts: list[VerdictBody] | None = Field(None, description="one failed Verdict per file (/v1/detect)")


def _documented(errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": kinds} for status, kinds in errors.items()}
    if 503 in documented:
        documented[503]["headers"] = {"Retry-After": {"description": "seconds to wait before sending again",
                                                      "schema": {"type": "integer"}}}
    return documented


def _text_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


#: The verdict an explain answer carries beside its PNG.
EXPLAIN_HEADERS = {
    "X-Synthdetect-Map": _text_header("the map drawn: gradcam, occlusion, ela or figure"),
    "X-Synthdetect-Label": _text_header("the verdict's label: ai, human or uncertain"),
    "X-Synthdetect-P-Ai": _text_header("the verdict's p_ai with 6 decimals; empty when no model judged the image"),
    "X-Synthdetect-Model": _text_header("the model that judged the image, in ASCII (other characters as ?)"),
    "X-Synthdetect-Model-Utf8": _text_header("the same, whole: UTF-8, percent-encoded (RFC 3986)"),
    "X-Synthdetect-Notes": _text_header("why this map and not another, notes joined by ' | ', one line of ASCII "
                                        "(other characters as ?, cut at 1,000 characters)"),
    "X-Synthdetect-Notes-Utf8": _text_header("the same notes, whole: UTF-8, percent-encoded (RFC 3986)"),
}


#: The ``kind`` values each error status carries, for OpenAPI (FastAPI would document a 422 shape we never send).
UPLOAD_ERRORS = {
    400: "bad_multipart: a malformed multipart body",
    408: "upload_timeout: the upload did not finish within the request timeout",
    413: "body_too_large, too_many_files, too_large (one file), too_many_pixels",
    415: "unsupported_media_type (neither an image nor a multipart body, a multipart form sent under another "
         "type, or a Content-Encoding such as gzip), not_an_image, unsupported_format",
    422: "no_files, empty, corrupt, truncated, invalid_request (a bad query parameter, one given twice, one "
         "the endpoint does not take, or ?name= with a multipart body)",
    500: "internal: a bug; quote the request_id. model_error: the model failed on every file",
    503: "busy: every worker busy and the queue full; retry after Retry-After seconds",
    504: "timeout: nothing judged within the request timeout (files not reached after others were judged "
         "come back in a 200, their error_kind timeout)",
}
EXPLAIN_ERRORS = {**UPLOAD_ERRORS, 422: UPLOAD_ERRORS[422] + ", one_file_only, map_unavailable"}


def error_response(request: Request, error: ServiceError, **extra: Any) -> JSONResponse:
    request.state.outcome = error.kind
    body = {**error.body(getattr(request.state, "request_id", None)), **extra}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def load_error(exc: ImageLoadError) -> ServiceError:
    return ServiceError(LOAD_ERROR_STATUS.get(exc.kind, 422), exc.kind, str(exc))


async def read_uploads(request: Request, settings: ServerSettings, deadline: float,
                       name: str | None) -> list[tuple[str, bytes]]:
    """The images of a request: multipart file parts, or the raw body as one image."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):  # RFC 9110's 415 for a content coding: else gzip bytes read "not an image"
        raise ServiceError(415, "unsupported_media_type",
                           f"Content-Encoding '{coding}' is not supported: send the image bytes as they are")
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            if media == "multipart/form-data":
                uploads = await image_parts(request.headers["content-type"], request.stream(),
                                            settings.max_files, settings.max_files + 16)
            elif media.startswith("image/") or media in RAW_MEDIA_TYPES:
                body = await request.body()
                if looks_like_form(body):  # an image was sent, in a form under the wrong type: say so
                    sent_as = f"its Content-Type is '{media}'" if media else "it has no Content-Type"
                    raise ServiceError(415, "unsupported_media_type", (
                        f"the body is a multipart form, but {sent_as}: send it as multipart/form-data with its "
                        "boundary (curl -F does: drop -H 'Content-Type: ...')"))
                # ?name= first, then the body's own Content-Disposition (curl -H, .NET's ByteArrayContent).
                disposition = request.headers.get("content-disposition", "")
                name = client_name(name) if name else disposition_filename(disposition)
                # An empty body that says it is an image is an empty image; with no type at all, no image was sent.
                uploads = [(name or "upload", body)] if body or media else []
            else:
                raise ServiceError(415, "unsupported_media_type",
                                   f"send images as multipart/form-data or as a raw image/* body, not '{media}'")
    except TimeoutError:
        raise ServiceError(408, "upload_timeout", f"upload not finished within {settings.timeout_s:g} s") from None
    if not uploads:
        raise ServiceError(422, "no_files", "no image in the request (multipart field 'files', or a raw image body)")
    if len(uploads) > settings.max_files:
        raise ServiceError(413, "too_many_files", f"too many files ({len(uploads)} > limit {settings.max_files})")
    request.state.files = len(uploads)
    return uploads


def create_app(detector: Detector, settings: ServerSettings | None = None) -> FastAPI:
    """The service around an already loaded ``detector`` (its model is shared, never reloaded)."""
    settings = settings or ServerSettings()
    detector = Detector(detector.model, limits=settings.load_limits(), probes=detector.probes,
                        use_evidence=detector.use_evidence)
    pool = WorkerPool(settings.workers, settings.max_queue)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPIOffline(
        title="synthdetect", version=__version__, lifespan=lifespan,
        description="Was this image made by a generative model? Verdicts with evidence and a calibrated p_ai.",
        static_url="/static-docs",
    )
    app.state.detector, app.state.settings, app.state.pool = detector, settings, pool
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLogMiddleware)  # added last = outermost: logs 413s from the body guard too

    def remaining(deadline: float) -> float:
        return deadline - time.monotonic()

    # Unexpected exceptions are answered by RequestLogMiddleware, so the 500 carries the request ID.
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})  # a 405's Allow (RFC 9110 requires it; plain Starlette sends it)
        message = str(exc.detail)
        if exc.status_code == 405:  # "Method Not Allowed" alone left `curl URL` guessing
            headers["Allow"] = _allowed_methods(app, request) or headers.get("Allow", "GET, HEAD")
            message = f"{request.method} is not allowed on {client_name(request.url.path)}: use {headers['Allow']}"
        elif exc.status_code == 404 and exc.detail == "Not Found":  # Starlette's; say where to go instead
            message = _not_found(app, request.url.path)
        return error_response(request, ServiceError(exc.status_code, kind, message, headers))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(request, ServiceError(422, "invalid_request", message))

    @app.get("/healthz", tags=["service"], response_model=HealthBody)
    async def healthz() -> dict[str, Any]:
        """Liveness and load: the loaded model, and how many requests are running or queued."""
        return {"status": "ok", "version": __version__, "model": detector.name, "workers": pool.workers,
                "pending": pool.pending, "capacity": pool.capacity}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)  # uptime probes that use HEAD

    @app.get("/v1/models", tags=["models"], response_model=ModelsBody)
    async def models(request: Request) -> dict[str, Any]:
        """The loaded model's card summary and the models shipped with synthdetect."""
        from synthdetect.models import builtin_names, find_package

        shipped = []
        for model_name in builtin_names():
            try:
                card = find_package(model_name).card
            except Exception as exc:  # noqa: BLE001 - one broken package must not hide the others
                # The text names the package's folder on this server ("weight file missing: /opt/.../weights.pt"):
                # the operator reads it in the log, the client learns which model and why in general terms.
                logged = _log_detail("model_unreadable", request.state.request_id, model=model_name,
                                     error=f"{type(exc).__name__}: {exc}")
                shipped.append({"name": model_name,
                                "error": f"{model_name}: its package cannot be read ({type(exc).__name__}); {logged}"})
                continue
            shipped.append(_card_summary(card))
        return {"loaded": _card_summary(detector.model.card), "shipped": shipped, "limits": _limits(settings)}

    @app.post("/v1/detect", tags=["detect"], openapi_extra=UPLOAD_BODY,
              responses={200: {"model": DetectBody}, **_documented(UPLOAD_ERRORS)})
    async def detect(request: Request,
                     name: str | None = Query(None, description=RAW_NAME)
                     ) -> JSONResponse:
        """Judge one or many images; returns ``{"verdicts": [...]}`` (schema synthdetect.verdict/1).

        If at least one file is judged the status is 200 and failed files carry
        ``error``; if none is, the status says why (413, 415 or 422; 500 when the model failed).
        """
        deadline = time.monotonic() + settings.timeout_s
        _checked_query(request)
        _checked_name(request, name)
        async with admitted(pool) as ticket:
            uploads = await read_uploads(request, settings, deadline, name)
            judged = _Judged()
            try:
                verdicts = await _while_connected(
                    request, pool.run(ticket, _detect_in_pixel_groups, detector, uploads, settings.max_pixels,
                                      judged, timeout=remaining(deadline)), judged.stopped)
            except TimeoutError:
                verdicts = judged.stop(uploads, settings.timeout_s)
        verdicts = [_for_client(v, request.state.request_id) for v in verdicts]
        body: dict[str, Any] = {"request_id": request.state.request_id, "model": detector.name,
                                "verdicts": [v.to_dict() for v in verdicts]}
        failed = [v for v in verdicts if not v.ok]
        if failed and len(failed) == len(verdicts):
            # The first file's reason sets the status; the message names every file (each error starts with its name).
            first = failed[0]
            error = ServiceError(VERDICT_ERROR_STATUS.get(first.error_kind or "", 422), first.error_kind or "error",
                                 "; ".join(v.error or f"{v.file}: could not judge the image" for v in failed))
            return error_response(request, error, **body)
        request.state.outcome = "ok" if not failed else f"ok ({len(failed)} failed)"
        return JSONResponse(body)

    @app.post("/v1/explain", tags=["explain"], openapi_extra=UPLOAD_BODY, response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the map as a PNG overlay",
                               "headers": EXPLAIN_HEADERS},
                         **_documented(EXPLAIN_ERRORS)})
    async def explain(request: Request,
                      map: MapChoice = Query(MapChoice.auto, description=(
                          "auto (Grad-CAM, else occlusion, else ELA), one map, or the composite figure")),
                      name: str | None = Query(None, description=RAW_NAME),
                      ) -> Response:
        """A heatmap PNG explaining one image's verdict; the verdict travels in ``X-Synthdetect-*`` headers."""
        deadline = time.monotonic() + settings.timeout_s
        _checked_query(request)
        _checked_name(request, name)
        async with admitted(pool) as ticket:
            uploads = await read_uploads(request, settings, deadline, name)
            if len(uploads) != 1:
                raise ServiceError(422, "one_file_only", f"explain takes exactly one image, got {len(uploads)}")
            file_name, raw = uploads[0]
            try:
                explanation, chosen, png = await _in_pool(request, pool, ticket, remaining(deadline), settings,
                                                          _explain_job, detector, settings, file_name, raw,
                                                          map.value, deadline, request.state.request_id)
            except _VerdictFailed as exc:
                verdict = _for_client(exc.verdict, request.state.request_id)
                raise ServiceError(exc.status, exc.kind, verdict.error or exc.message) from None
        verdict = explanation.verdict
        headers = {
            "x-synthdetect-map": chosen,
            "x-synthdetect-label": verdict.label or "",
            "x-synthdetect-p-ai": "" if verdict.p_ai is None else f"{verdict.p_ai:.6f}",
            "x-synthdetect-model": _header_text(explanation.model or ""),
            "x-synthdetect-model-utf8": _percent_encoded(explanation.model or ""),
            "x-synthdetect-notes": _header_text(" | ".join(explanation.notes)),
            "x-synthdetect-notes-utf8": _percent_encoded(" | ".join(explanation.notes)),
        }
        request.state.outcome = f"ok ({chosen})"
        return Response(png, media_type="image/png", headers=headers)

    # A trailing slash is the same endpoint. Starlette answered it with an empty 307 to the path without one:
    # `curl -F files=@x.jpg .../v1/detect/` printed nothing and exited 0, urllib raised "HTTP Error 307", and a
    # client that follows it uploads the body twice.
    app.add_api_route("/v1/detect/", detect, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/explain/", explain, methods=["POST"], include_in_schema=False, response_class=Response)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: uptime checkers
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app


@asynccontextmanager
async def admitted(pool: WorkerPool) -> AsyncIterator[Ticket]:
    """A place in the pool before the upload is read; given back here unless a worker job now holds it."""
    ticket = pool.admit()
    try:
        yield ticket
    finally:
        if not ticket.handed_to_worker:
            ticket.release()


async def _in_pool(request: Request, pool: WorkerPool, ticket: Ticket, seconds: float, settings: ServerSettings,
                   fn: Any, *args: Any) -> Any:
    try:
        return await _while_connected(request, pool.run(ticket, fn, *args, timeout=seconds))
    except TimeoutError:
        raise ServiceError(504, "timeout", f"request took longer than the limit of {settings.timeout_s:g} s") from None


async def _client_gone(request: Request) -> None:
    """Returns when the client has gone away: once the body is read, an ASGI server's ``receive()`` blocks until
    it sends ``http.disconnect``, so waiting here costs nothing while the client waits for its answer."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _while_connected(request: Request, work: Awaitable[T], stop: threading.Event | None = None) -> T:
    """``work`` (a pool job), unless the client goes away first: then a job still queued never runs, a running
    detect job (``stop``) starts no further pixel group, and ``ClientDisconnect`` has the request logged as 499.

    Without this, 4 clients that gave up after 0.2 s on a 1-worker service were still judged one after the other
    (4 s of model time that queued requests waited behind), each logged as a 200.
    """
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        left = not job.done()
        if left:  # the client went away (or this request was cancelled): drop the job
            job.cancel()
            if stop is not None:
                stop.set()
    if left:
        raise ClientDisconnect
    return job.result()


class _Judged:
    """The verdicts of the groups a detect job has finished, so a request that runs out of time keeps them."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.stopped = threading.Event()

    def stop(self, uploads: list[tuple[str, bytes]], timeout_s: float) -> list[Verdict]:
        """The verdicts so far, and a ``timeout`` failure for each file not judged; the job starts no more groups.

        Without this, 12 phone photos judged by the default model on a busy 2-core machine (30.0 s) came back
        as one 504 with no verdict at all, though most had been judged.
        """
        self.stopped.set()
        done = list(self.verdicts)
        if not done:
            raise ServiceError(504, "timeout", f"request took longer than the limit of {timeout_s:g} s")
        return done + [Verdict.failed(name, f"{name}: not judged: the request's {timeout_s:g} s ran out "
                                            "(send fewer images per request)", "timeout")
                       for name, _ in uploads[len(done):]]


class _VerdictFailed(ServiceError):
    """A one-image job whose verdict failed: the route answers it with the verdict's reason, made fit for a client."""

    def __init__(self, verdict: Verdict):
        kind = verdict.error_kind or "error"
        super().__init__(VERDICT_ERROR_STATUS.get(kind, 422), kind, verdict.error or f"{verdict.file}: could not judge")
        self.verdict = verdict


#: Failures of the server's own code or model; their text names this server's files ("No such file or directory:
#: '/opt/models/wild-v3/heads.npz'"), so it goes to the log. Reasons about the upload (too large, corrupt) stay.
SERVER_SIDE_KINDS = ("model_error",)
#: "model failed (RuntimeError: ...)", "preparing the model input failed (ValueError: ...)": what failed, and how.
_FAILURE = re.compile(r"(?P<what>[^()]*\bfailed) \((?P<type>[A-Za-z_][\w.]*)(?:[:)]|$)")


def _for_client(verdict: Verdict, request_id: str) -> Verdict:
    """The verdict with a server-side failure's text replaced by what failed, the exception type and the request id.

    The full text goes to the log under that id, as for the 500 ``internal`` answer: a model package whose file
    had gone told every client "model failed (FileNotFoundError: [Errno 2] No such file or directory:
    '/home/alice/models/pkg/weights.onnx')".
    """
    if verdict.error_kind not in SERVER_SIDE_KINDS or not verdict.error:
        return verdict
    logged = _log_detail(verdict.error_kind, request_id, file=verdict.file, error=verdict.error)
    prefix = f"{verdict.file}: "
    detail = verdict.error[len(prefix):] if verdict.error.startswith(prefix) else verdict.error
    match = _FAILURE.match(detail)
    said = f"{match['what']} ({match['type']})" if match else "model failed"
    return dataclasses.replace(verdict, error=f"{prefix}{said}; {logged}")


def _log_detail(event: str, request_id: str, **fields: str) -> str:
    """One JSON line, like the request line that follows it, with what a client is not shown; returns what the
    client is told instead of it."""
    log.warning(json.dumps({"event": event, "id": request_id, **fields}))
    return f"the service log has the details under request id {request_id}"


def _detect_in_pixel_groups(detector: Detector, uploads: list[tuple[str, bytes]], max_pixels: int,
                            judged: _Judged) -> list[Verdict]:
    """Verdicts in upload order, judged in groups of at most ``max_pixels`` pixels as the image headers declare them.

    A request that runs out of time keeps the groups already judged (12 phone photos had been one 504 with no
    verdict); small images still share one model batch.
    """
    groups: list[list[tuple[str, bytes]]] = []
    pixels = 0
    for name, raw in uploads:
        size = _declared_pixels(raw)
        if not groups or pixels + size > max_pixels:
            groups.append([])
            pixels = 0
        groups[-1].append((name, raw))
        pixels += size
    for group in groups:
        if judged.stopped.is_set():
            break
        judged.verdicts.extend(detector.detect([raw for _, raw in group], [name for name, _ in group]))
    return judged.verdicts


def _declared_pixels(raw: bytes) -> int:
    """Width x height from the image header, without decoding; 0 for what PIL cannot open (it holds no pixels)."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - not an image PIL knows: load_image says why, and decodes nothing
        return 0


def _explain_job(detector: Detector, settings: ServerSettings, name: str, raw: bytes, choice: str,
                 deadline: float, request_id: str = "-") -> tuple:
    try:
        image = load_image(raw, detector.limits, name=name)
    except ImageLoadError as exc:
        raise load_error(exc) from None

    def options() -> dict[str, Any]:
        """Occlusion may take at most half the time the request has left, not half its whole timeout: a request
        that had waited 4.5 of its 6 s behind another was still budgeted 3 s and came back 504 with no map."""
        left = max(deadline - time.monotonic(), 0.0)
        return {"grid": settings.explain_grid, "occlusion_budget_s": round(left / 2, 1)}  # a note quotes it

    verdict = detector.judge_loaded([(name, image)])[0]  # computed once and reused by every map
    if not verdict.ok:  # the model failed: a map of a verdict never given would explain nothing; answer as detect
        raise _VerdictFailed(verdict)
    if choice == "figure":
        explanation = _failures_for_client(explain_loaded(detector, image, verdict=verdict, **options()), request_id)
        return explanation, "figure", png_bytes(explanation.figure())  # drawn after: its caption shows the notes
    notes: list[str] = []
    for method in (_auto_order(detector, image) if choice == "auto" else (choice,)):
        explanation = _failures_for_client(
            explain_loaded(detector, image, methods=[method], verdict=verdict, **options()), request_id)
        # A Grad-CAM that failed is None (its note says why): auto goes on to occlusion, as for a flat one.
        flat = (method == "gradcam" and choice == "auto" and explanation.gradcam is not None
                and not explanation.gradcam.any())
        if method in explanation.maps() and not flat:  # a flat Grad-CAM shows nothing: auto goes on to occlusion
            explanation.notes[:0] = [n for n in notes if n not in explanation.notes]  # say why not the first choice
            return explanation, method, png_bytes(explanation.overlay(method))
        notes.extend(n for n in explanation.notes if n not in notes)
    raise ServiceError(422, "map_unavailable", "; ".join(notes) or f"no {choice} map for this image")


def _failures_for_client(explanation: Explanation, request_id: str) -> Explanation:
    """Each failed map's note replaced by the map, the exception type and the request id, as ``_for_client`` does
    for a model failure; the whole text and traceback go to the log as one JSON line under that id.

    The notes reach the client in headers, in the 422 ``map_unavailable`` message and in the figure's caption:
    they had said "gradcam failed: RuntimeError: Load model from /srv/models/pkg/model.onnx failed", and the log
    had a many-line traceback without the request id.
    """
    for failure in explanation.failures:
        logged = _log_detail("map_failed", request_id, file=explanation.verdict.file, map=failure.method,
                             error=f"{failure.error_type}: {failure.error}", traceback=failure.traceback)
        what = failure.note.partition(":")[0]  # "gradcam failed", "occlusion unavailable"
        said = f"{what} ({failure.error_type}); {logged}"
        explanation.notes = [said if note == failure.note else note for note in explanation.notes]
    return explanation


def _auto_order(detector: Detector, image: Any) -> tuple[str, ...]:
    """Grad-CAM when the routed model has gradients, else occlusion, else ELA: skip maps that cannot be made (and a
    flat Grad-CAM, usual for cifake-cnn 1.1.0's ``ai`` verdicts: 22 of 30 CIFAKE fakes)."""
    model, _ = detector.model_for(image)
    if model is None:
        return ("ela",)
    return METHODS if torch_twin(model) is not None else ("occlusion", "ela")


def _checked_name(request: Request, name: str | None) -> None:
    """Refuse ``?name=`` on a multipart body with a 422, before the body is read or a worker waited for.

    ``name`` names a raw image body; a multipart part is named by its own filename.  It was silently ignored
    there, so ``?name=x.jpg`` with ``curl -F`` came back under the part's name with no sign the parameter did
    nothing.  Any other media type keeps its own answer (a raw body uses ``name``, the rest get the 415).
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if name is not None and media == "multipart/form-data":
        raise ServiceError(422, "invalid_request", (
            "query.name: applies to a raw image body only; the parts of a multipart/form-data body are named by "
            "their own filename (drop ?name=, or send the image as the raw body)"))


def _checked_query(request: Request) -> None:
    """Refuse a query parameter the route does not take, or one given twice, with a 422 naming it.

    FastAPI ignores unknown parameters, so a typo ran the default: ``?mpa=ela`` drew Grad-CAM and ``?treshold=0.9``
    judged with the model's own thresholds, both answered 200.  And it keeps the last of repeated values:
    ``?map=ela&map=occlusion`` drew occlusion, the other value silently dropped.  The accepted names are the
    route's own declared query parameters, so the check follows the signature.
    """
    route = request.scope.get("route")
    accepted = [param.alias for param in getattr(getattr(route, "dependant", None), "query_params", [])]
    unknown = [key for key in dict.fromkeys(request.query_params.keys()) if key not in accepted]
    if unknown:
        shown = ", ".join(repr(client_name(key[:60])) for key in unknown[:4]) + (", ..." if len(unknown) > 4 else "")
        close = [match for key in unknown[:4] for match in difflib.get_close_matches(key, accepted, n=1)]
        hint = f" (did you mean {', '.join(repr(m) for m in dict.fromkeys(close))}?)" if close else ""
        takes = ", ".join(accepted) if accepted else "no query parameters"
        raise ServiceError(422, "invalid_request", f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                                                   f"{shown}{hint}: {request.url.path} takes {takes}")
    for key in accepted:
        values = request.query_params.getlist(key)
        if len(values) > 1:
            shown = ", ".join(repr(client_name(value[:60])) for value in values[:4])
            more = ", ..." if len(values) > 4 else ""
            raise ServiceError(422, "invalid_request",
                               f"query.{key}: given {len(values)} times ({shown}{more}); give it once")


def _not_found(app: FastAPI, path: str) -> str:
    """"Not Found" alone did not say that ``/V1/detect`` or ``/v1/detects`` is a typo: name the nearest path and
    the service's endpoints."""
    paths = sorted({route.path for route in app.router.routes
                    if getattr(route, "include_in_schema", False) and hasattr(route, "methods")})
    close = difflib.get_close_matches(path.lower().rstrip("/") or "/", paths, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    shown = client_name(path[:200]) + ("..." if len(path) > 200 else "")
    return f"nothing at {shown}{hint}: the endpoints are {', '.join(paths)}, the page at / and the API docs at /docs"


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route takes at this path: Starlette's Allow names only the first route's (/healthz has a
    GET route and a HEAD route, so it said GET alone)."""
    methods: set[str] = set()
    for route in app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def _card_summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "version", "kind", "description", "input", "decision", "routes")
    return {k: card[k] for k in keys if k in card}


def _limits(settings: ServerSettings) -> dict[str, Any]:
    return {"max_body_bytes": settings.max_body_bytes, "max_file_bytes": settings.max_file_bytes,
            "max_pixels": settings.max_pixels, "max_files": settings.max_files, "timeout_s": settings.timeout_s}


#: What ``_percent_encoded`` leaves as it is: printable ASCII but ``%``, so the header stays readable.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _percent_encoded(text: str) -> str:
    """UTF-8, percent-encoded (RFC 3986; ``decodeURIComponent``, ``urllib.parse.unquote``): a header carries it whole.

    ``_header_text`` must show what ASCII lacks as ``?``: a note naming ``写真.jpg`` lost the name.
    """
    return quote(text, safe=_HEADER_SAFE)


def _header_text(text: str) -> str:
    """One line of ASCII, other characters as ``?``: RFC 9110 has senders write ASCII, as clients decode other bytes
    differently (browsers as latin-1, httpx's TestClient as UTF-8, which failed on an ``é``); a model name latin-1
    cannot write had made every explain call a 500."""
    return " ".join(text.encode("ascii", "replace").decode("ascii").split())[:1000]
