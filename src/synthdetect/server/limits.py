"""What keeps the service alive under load: settings, a body-size guard, a bounded worker pool, request logs.

The body guard and the request log are plain ASGI middleware (not Starlette's
``BaseHTTPMiddleware``) so the guard can count bytes as they stream in and
answer 413 before a large upload is held in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from starlette.requests import ClientDisconnect

from synthdetect.images import LoadLimits

log = logging.getLogger("synthdetect.server")
T = TypeVar("T")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ServerSettings:
    """Every limit of the service, as explicit keywords (``synthdetect serve --help`` shows them)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_file_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 16
    workers: int = 2
    max_queue: int = 16
    timeout_s: float = 30.0
    explain_grid: int = 8

    def load_limits(self) -> LoadLimits:
        return LoadLimits(max_pixels=self.max_pixels, max_bytes=self.max_file_bytes)


class ServiceError(Exception):
    """An error the service answers with ``{"error": {"status", "kind", "message"}}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"status": self.status, "kind": self.kind, "message": self.message}}
        if request_id:
            body["request_id"] = request_id  # what a user quotes in a bug report, matched to the log line
        return body


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode("latin-1", "replace")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: at once from Content-Length, else while streaming."""

    #: Longest a refused body's rest is read and dropped before the 413 (see ``_drain``).
    DRAIN_S = 5.0

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _drain(self, receive: Receive, already: int) -> None:
        """Read and drop the rest of a refused body, while the body read so far and the rest stay within twice the
        limit and for at most ``DRAIN_S``.

        The 413 closes the connection; closing one with unread bytes makes the kernel reset it, and a reset
        discards the answer the client has not read yet: a ``requests.Session`` sending 4 MB over a 3 MB limit on a
        kept-alive connection got "Connection reset by peer" instead of the 413 in 17 of 20 chunked tries (7 of 20
        with Content-Length).  A larger or slower body is cut off as before.
        """
        dropped = already
        try:
            async with asyncio.timeout(self.DRAIN_S):
                while dropped <= 2 * self.max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    dropped += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            pass

    async def _refuse(self, scope: Scope, send: Send, declared: int | None) -> None:
        state = scope.setdefault("state", {})
        state["outcome"] = "body_too_large"
        size = f"{declared:,} bytes > limit {self.max_bytes:,}" if declared is not None else (
            f"over the limit of {self.max_bytes:,} bytes")
        error = ServiceError(413, "body_too_large", f"request body too large ({size})")
        await send_json(send, error.status, error.body(state.get("request_id")), {"connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # A client that asked "Expect: 100-continue" sends nothing more: reading would tell it to go on.
            if headers.get(b"expect", b"").lower() != b"100-continue" and int(declared) <= 2 * self.max_bytes:
                await self._drain(receive, 0)
            await self._refuse(scope, send, int(declared))
            return
        received = 0
        more = True
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, more
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = message.get("more_body", False)
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # pragma: no cover - handlers read the body before answering
                raise
            if more:
                await self._drain(receive, received)
            await self._refuse(scope, send, None)


class RequestLogMiddleware:
    """One JSON log line per request (id, method, path, status, files, outcome, ms); sets ``X-Request-ID``.

    It also answers unexpected exceptions with the JSON 500 itself: an exception
    handler on the app runs outside every middleware, so its 500 would carry no
    request ID and log as a plain "error".
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            state["outcome"] = "client_disconnected"  # nobody is left to answer; not a bug of ours
            if not started:
                status = 499  # not 500, which reads as our bug: nginx's code for "client closed request"
        except Exception as exc:
            log.exception("unexpected error in request %s", request_id)
            state["outcome"] = "internal"
            if started:  # half a response is out: nothing valid can follow, the server closes the connection
                raise
            # The exception's type only: its text can hold server paths and file contents ("Permission denied:
            # '/home/alice/.cache/...'") that a client, perhaps on another network, must not see. The traceback and
            # the text are in the log, under the request id the body and the X-Request-ID header carry.
            error = ServiceError(500, "internal", f"internal error ({type(exc).__name__}); the service log has the "
                                                  f"details under request id {request_id}")
            await send_json(send_with_id, error.status, error.body(request_id))
        finally:
            log.info(json.dumps({
                "event": "request", "id": request_id, "method": scope.get("method"), "path": scope.get("path"),
                "status": status, "files": state.get("files", 0),
                "outcome": state.get("outcome", "ok" if status < 400 else "error"),
                "ms": round((time.perf_counter() - t0) * 1000, 1),
            }))


class Ticket:
    """One admitted request's place in the pool, held from before its upload is read until its job ends."""

    def __init__(self, pool: "WorkerPool"):
        self._pool = pool
        self.handed_to_worker = False
        self._released = False

    def release(self, _future: Any = None) -> None:
        with self._pool._lock:
            if not self._released:
                self._released = True
                self._pool.pending -= 1


class WorkerPool:
    """``workers`` threads judge images; at most ``max_queue`` more requests wait; beyond that, 503 at once.

    A request is admitted *before* its body is read, so the bytes held in
    memory are bounded by ``capacity * max_body_bytes``.  A job that outlives
    its request's timeout keeps its thread (Python cannot kill a thread) and
    its place until it ends, so timeouts never let more work run than allowed.
    """

    def __init__(self, workers: int, max_queue: int):
        self.workers = workers
        self.capacity = workers + max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synthdetect-worker")
        self._lock = threading.Lock()
        self.pending = 0
        self.peak_pending = 0

    def admit(self) -> Ticket:
        with self._lock:
            if self.pending >= self.capacity:
                raise ServiceError(503, "busy", f"server busy ({self.pending} requests in progress or queued); retry",
                                   {"retry-after": "1"})
            self.pending += 1
            self.peak_pending = max(self.peak_pending, self.pending)
        return Ticket(self)

    async def run(self, ticket: Ticket, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run ``fn`` on a worker; the ticket is released when the job ends, even after a timeout."""
        future = self._executor.submit(fn, *args)
        ticket.handed_to_worker = True
        future.add_done_callback(ticket.release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(timeout, 0.001))
        except (asyncio.TimeoutError, asyncio.CancelledError):  # out of time, or the client went away
            future.cancel()  # succeeds only while the job still waits in the queue
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
