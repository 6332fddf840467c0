"""``synthdetect serve``: the REST service and web page over one Detector loaded at start."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
from typing import Annotated

import typer


class _CurrentStderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged, not as it was when serving began: a caller that
    swaps stderr (a test runner, an embedding app) may close the old stream, and a handler holding it would then
    fail on every request."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _request_logger() -> None:
    """One JSON line per request on stderr, whatever the CLI's log level."""
    logger = logging.getLogger("synthdetect.server")
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # python-multipart logs a plain-text warning for each malformed body a client sends, between the JSON lines;
    # the request's own line already says bad_multipart and the client got the reason.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)


MIB = 1024 * 1024

#: Seconds a new connection may stay silent before it is closed (uvicorn's keep-alive timeout, used for it too).
SILENT_CONNECTION_S = 5.0


def silent_connection_protocol():
    """uvicorn's h11 protocol, which also closes a connection that sends nothing.

    uvicorn times a connection out only after a response (keep-alive); one that connects and stays silent (a
    browser's speculative pre-connect, a stalled client, a slowloris) stays open for ever and counts against
    ``limit_concurrency``: 30 such sockets made every request, ``/healthz`` included, a plain-text 503.  Here the
    keep-alive timer starts when the connection is made; the first byte cancels it, as uvicorn does after a
    response.  (A client trickling bytes is not stopped: that needs a proxy, as the README says.)
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class SilentConnectionTimeout(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

        def send_400_response(self, msg: str) -> None:
            """The service's JSON error body, not uvicorn's plain text, for a request HTTP cannot parse (the app
            never sees it): ``curl 'http://.../v1/detect?name=写真.jpg'`` sends the name unencoded."""
            body = json.dumps({"error": {"status": 400, "kind": "bad_request", "message": (
                f"{msg.rstrip('.')} (a malformed request line or header; spaces and non-ASCII characters in a "
                "URL must be percent-encoded)")}}).encode()
            for event in (h11.Response(status_code=400, headers=[(b"content-type", b"application/json"),
                                                                 (b"content-length", str(len(body)).encode()),
                                                                 (b"connection", b"close")]),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return SilentConnectionTimeout


def listen_socket(host: str, port: int) -> socket.socket:
    """The bound socket uvicorn would open (IPv6 when the host has a colon), opened before the model loads.

    Binding first means a port in use or a host that does not resolve fails at once, in one line, instead
    of after minutes of model loading and after the "serving on" line was printed.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def page_url(host: str, port: int) -> str:
    """``http://host:port/`` with an IPv6 address in brackets, as a browser needs it."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
        model: Annotated[str, typer.Option("--model", "-m", help="Model name or package path.")] = "default",
        workers: Annotated[int, typer.Option(
            min=1, help="Requests judged at once (each request's images in one worker); more requests queue.")] = 2,
        max_queue: Annotated[int, typer.Option(min=0, help="Requests allowed to wait; beyond, 503.")] = 16,
        max_body_mb: Annotated[float, typer.Option(help=(
            "Largest request body in MiB (1,048,576 bytes), refused from Content-Length or while streaming."))] = 64,
        max_file_mb: Annotated[float, typer.Option(help="Largest single image file in MiB.")] = 32,
        max_pixels: Annotated[int, typer.Option(
            min=1, help="Refuse images with more pixels (decompression bombs).")] = 40_000_000,
        max_files: Annotated[int, typer.Option(min=1, help="Most images in one request.")] = 16,
        timeout: Annotated[float, typer.Option(help="Seconds a request may take, upload included.")] = 30.0,
    ) -> None:
        """Run the REST service (POST /v1/detect, /v1/explain) and the web page at /."""
        from synthdetect.cli import fail

        try:
            import uvicorn

            from synthdetect.server.app import create_app
            from synthdetect.server.limits import ServerSettings
        except ImportError as exc:
            fail(f"serve needs the serve extra ({exc.name} is missing): pip install 'synthdetect[serve]'")
        for option, value in (("--max-body-mb", max_body_mb), ("--max-file-mb", max_file_mb), ("--timeout", timeout)):
            if not (math.isfinite(value) and value > 0):
                fail(f"{option} must be a positive number, not {value:g}")
            if option != "--timeout" and int(value * MIB) < 1:  # a limit of 0 bytes: every image refused as too large
                fail(f"{option} {value:g} is less than one byte (the unit is MiB, {MIB:,} bytes)")
        try:
            sock = listen_socket(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        import torch

        from synthdetect.api import Detector
        from synthdetect.models import ModelPackageError

        settings = ServerSettings(
            max_body_bytes=int(max_body_mb * MIB), max_file_bytes=int(max_file_mb * MIB),
            max_pixels=max_pixels, max_files=max_files, workers=workers, max_queue=max_queue, timeout_s=timeout,
        )
        # Worker threads share the cores; without this each would start one torch thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        try:
            detector = Detector.load(model, limits=settings.load_limits())
            detector.model.ready()  # build what loads lazily now, not while the first request waits
        except (ModelPackageError, ValueError, ImportError) as exc:
            sock.close()
            fail(str(exc))
        _request_logger()
        config = uvicorn.Config(
            create_app(detector, settings), host=host, port=sock.getsockname()[1], access_log=False,
            log_level="warning", http=silent_connection_protocol(), timeout_keep_alive=SILENT_CONNECTION_S,
            # A cap on open connections; memory for bodies is bounded by the pool admitting requests before
            # reading them (capacity x max body), this only stops idle sockets piling up.
            limit_concurrency=4 * (workers + max_queue) + 16,
        )
        sock.listen(config.backlog)  # from here connections wait in the backlog: the printed URL answers
        typer.echo(f"synthdetect serving model '{detector.name}' on {page_url(host, sock.getsockname()[1])} "
                   f"(API docs at /docs)", err=True)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            sock.close()
