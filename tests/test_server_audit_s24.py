"""REST service audit (s24): what a client sees at the edges the earlier audits did not cover."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from synthdetect.api import Detector
from synthdetect.server.app import create_app
from synthdetect.server.limits import ServerSettings, ServiceError

from tiny_model import png_bytes, write_tiny_cnn


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))


def _scope(path: str, body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


def _client(body: bytes, gone: asyncio.Event):
    """An ASGI ``receive`` as a server gives it: the body, then it blocks until the client goes (``gone``)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


async def _call(app, path: str, body: bytes, gone: asyncio.Event) -> list[dict]:
    """One request as an ASGI server makes it: the body, then ``receive()`` blocks until the client goes."""
    receive = _client(body, gone)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(path, body), receive, send)
    return sent


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/explain"])
def test_a_client_that_gives_up_while_queued_is_not_judged_and_is_logged_499(detector, monkeypatch, caplog, path):
    """Was: 4 clients that gave up after 0.2 s on a 1-worker service were all judged, one after the other, each
    logged as a 200, while requests behind them waited. Now a queued job of a client that left never runs."""
    gate, running, calls = threading.Event(), threading.Event(), []
    score = detector.model.score_prepared

    def held(batch):
        calls.append(len(batch))
        running.set()
        gate.wait(30)  # a safety bound: the test opens the gate itself
        return score(batch)

    monkeypatch.setattr(detector.model, "score_prepared", held)
    app = create_app(detector, ServerSettings(workers=1, max_queue=2))
    pool = app.state.pool

    async def scenario() -> tuple[list[dict], list[dict]]:
        stays, leaves = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_call(app, "/v1/detect", png_bytes(seed=1), stays))
        assert await asyncio.to_thread(running.wait, 30)  # the only worker is busy with the first request
        second = asyncio.create_task(_call(app, path, png_bytes(seed=2), leaves))
        leaves.set()  # the second client gives up while its job waits for the worker
        try:
            done, _ = await asyncio.wait({second}, timeout=10)  # a bound for the old code, which never returned
            assert second in done, "the request of a client that left waited for a worker to judge it"
            assert pool.pending == 1, "the queued job still holds its place in the pool"
        finally:
            gate.set()
        answered = await first
        stays.set()
        return answered, await second

    with caplog.at_level(logging.INFO, logger="synthdetect.server"):
        answered, abandoned = asyncio.run(scenario())
    pool.shutdown()
    assert answered[0]["status"] == 200 and abandoned == []
    assert calls == [1], "only the first client's image reached the model"
    assert pool.pending == 0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "synthdetect.server"]
    assert sorted((line["path"], line["status"], line["outcome"]) for line in lines) == sorted(
        [("/v1/detect", 200, "ok"), (path, 499, "client_disconnected")])


def test_a_detect_job_whose_client_left_starts_no_further_pixel_group(detector, monkeypatch):
    """A running job cannot be stopped mid-batch, but its later groups (``--max-pixels`` each) are not judged."""
    gate, running, calls = threading.Event(), threading.Event(), []
    score = detector.model.score_prepared

    def held(batch):
        calls.append(len(batch))
        running.set()
        gate.wait(30)
        return score(batch)

    monkeypatch.setattr(detector.model, "score_prepared", held)
    # 32x32 images and a 1,024-pixel budget: each image is a group of its own.
    app = create_app(detector, ServerSettings(workers=1, max_queue=1, max_pixels=1024))
    body = b"".join(b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="' + f"{i}.png".encode()
                    + b'"\r\nContent-Type: image/png\r\n\r\n' + png_bytes(seed=i) + b"\r\n" for i in range(3))
    body += b"--XyZ--\r\n"
    scope = {**_scope("/v1/detect", body), "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ")]}

    async def scenario() -> None:
        gone = asyncio.Event()
        receive = _client(body, gone)

        async def send(message: dict) -> None:
            raise AssertionError("nobody is left to answer")

        request = asyncio.create_task(app(scope, receive, send))
        try:
            assert await asyncio.to_thread(running.wait, 30)
            gone.set()
            done, _ = await asyncio.wait({request}, timeout=10)
            assert request in done, "the request waited for the job of a client that left"
        finally:
            gate.set()
        await asyncio.to_thread(lambda: app.state.pool._executor.shutdown(wait=True))

    asyncio.run(scenario())
    assert calls == [1], "the groups after the running one were not judged"
    assert app.state.pool.pending == 0


def _post(app, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[list[dict], list[dict]]:
    """POST a raw image/png body in chunks; returns what was sent and the body messages never read."""
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
                for i, chunk in enumerate(body_chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {**_scope("/v1/detect", b""), "headers": [(b"content-type", b"image/png"), *headers]}
    asyncio.run(app(scope, receive, send))
    return sent, messages


def _status(sent: list[dict]) -> tuple[int, str]:
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return sent[0]["status"], body["error"]["kind"]


@pytest.mark.parametrize("headers", [
    [],  # chunked: refused while streaming
    [(b"content-length", b"450")],  # refused from Content-Length before any byte is read
])
def test_a_refused_body_is_read_to_its_end_before_the_413_so_the_close_does_not_reset_it(detector, headers):
    """Was: the 413 closed the connection with the body's rest unread; the kernel then resets it, and a kept-alive
    requests.Session got "Connection reset by peer" instead of the 413 in 17 of 20 tries (7 of 20 with
    Content-Length). Now the rest (up to twice the limit in all) is read and dropped first."""
    app = create_app(detector, ServerSettings(max_body_bytes=250))
    sent, unread = _post(app, [b"x" * 90] * 5, headers)
    assert _status(sent) == (413, "body_too_large")
    assert unread == [], "the body's rest was left unread"
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_413_reads_nothing_for_a_client_that_waits_for_100_continue_nor_a_body_far_over_the_limit(detector):
    app = create_app(detector, ServerSettings(max_body_bytes=250))
    # Reading would make the server send "100 Continue", and the client would upload what it was spared.
    sent, unread = _post(app, [b"x" * 90] * 5, [(b"content-length", b"450"), (b"expect", b"100-continue")])
    assert _status(sent) == (413, "body_too_large") and len(unread) == 5
    sent, unread = _post(app, [b"x" * 90] * 5, [(b"content-length", b"5000")])  # past twice the limit
    assert _status(sent) == (413, "body_too_large") and len(unread) == 5
    sent, unread = _post(app, [b"x" * 90] * 40, [])  # streamed: dropped only up to twice the limit
    assert _status(sent) == (413, "body_too_large") and 0 < len(unread) < 40


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/v1/detect", "POST"),  # `curl URL` without -F or --data-binary
    ("PUT", "/v1/explain", "POST"),
    ("DELETE", "/healthz", "GET, HEAD"),  # two routes: Starlette's own Allow named the first only
    ("POST", "/v1/models", "GET"),
    ("POST", "/static/app.js", "GET, HEAD"),
])
def test_a_wrong_method_names_the_methods_to_use_in_allow_and_the_message(detector, method, path, allow):
    """Was: 405 "Method Not Allowed" with no Allow header (RFC 9110 requires one; plain Starlette sends it):
    the JSON error handler dropped it."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(detector)) as client:
        response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allow
    assert response.json()["error"] == {"status": 405, "kind": "method_not_allowed",
                                        "message": f"{method} is not allowed on {path}: use {allow}"}


def _serve(monkeypatch, *args: str):
    """``synthdetect serve`` with the model load refused: these checks must fail before it."""
    from typer.testing import CliRunner

    from synthdetect.cli import app as cli_app

    def load(*_args, **_kwargs):
        raise AssertionError("the model loaded before the options were checked")

    monkeypatch.setattr(Detector, "load", staticmethod(load))
    return CliRunner().invoke(cli_app, ["serve", "--port", "0", *args])


@pytest.mark.parametrize("option", ["--max-body-mb", "--max-file-mb"])
def test_a_size_limit_below_one_byte_is_refused_not_a_service_that_refuses_every_image(monkeypatch, option):
    """Was: ``--max-file-mb 1e-9`` is positive, so the service started with a limit of 0 bytes and answered every
    image 413 ("file too large (3,172 bytes > limit 0)")."""
    result = _serve(monkeypatch, option, "1e-9")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {option} 1e-09 is less than one byte (the unit is MiB, 1,048,576 bytes)"]


def test_serve_help_says_what_a_worker_judges_and_that_sizes_are_mib(monkeypatch):
    """Was: "--workers: Images judged at once", though a worker judges a whole request (16 images at most) at once;
    and "(MB)" for limits counted in MiB (64 is 67,108,864 bytes, as the 413 messages say)."""
    result = _serve(monkeypatch, "--help")
    text = " ".join(result.output.replace("│", " ").split())
    assert "Requests judged at once" in text and "Images judged at once" not in text
    assert "Largest request body in MiB" in text and "Largest single image file in MiB" in text


@pytest.mark.parametrize("path, query, message", [
    ("/v1/explain", "map=ela&map=occlusion", "query.map: given 2 times ('ela', 'occlusion'); give it once"),
    ("/v1/detect", "name=a.jpg&name=", "query.name: given 2 times ('a.jpg', ''); give it once"),
    ("/v1/explain", "name=a&name=b&name=c&name=d&name=e",
     "query.name: given 5 times ('a', 'b', 'c', 'd', ...); give it once"),
])
def test_a_query_parameter_given_twice_is_refused_not_one_value_silently_dropped(detector, path, query, message):
    """Was: the last value won; ``?map=ela&map=occlusion`` drew occlusion, ``?name=a.jpg&name=`` named the file
    ``upload``."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(detector)) as client:
        response = client.post(f"{path}?{query}", content=png_bytes(), headers={"content-type": "image/png"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {"status": 422, "kind": "invalid_request", "message": message}


def test_occlusion_is_budgeted_from_the_time_the_request_has_left_not_its_whole_timeout(detector, monkeypatch):
    """Was: half of ``--timeout`` whatever the request had spent queued: one that waited 4.5 of its 6 s behind
    another was still budgeted 3 s of occlusion and came back 504 with no map (2 of 3 tries). Now half of what is
    left, so the grid coarsens (a 2x2 grid "to fit 0.8 s", answered in 5.0 s)."""
    import time

    import synthdetect.server.app as server_app

    budgets: list[float] = []
    explain_loaded = server_app.explain_loaded

    def recorded(*args, **kwargs):
        budgets.append(kwargs["occlusion_budget_s"])
        return explain_loaded(*args, **kwargs)

    monkeypatch.setattr(server_app, "explain_loaded", recorded)
    settings = ServerSettings(timeout_s=30)
    try:
        _, chosen, png = server_app._explain_job(detector, settings, "a.png", png_bytes(), "occlusion",
                                                 time.monotonic() + 2.0)
        assert chosen == "occlusion" and png.startswith(b"\x89PNG")
    except ServiceError as exc:  # on a loaded machine even a 2x2 grid can exceed 1 s: said, and not what is tested
        assert exc.kind == "map_unavailable" and "budget" in exc.message
    assert len(budgets) == 1 and 0 < budgets[0] <= 1.0, budgets


def test_an_unexpected_error_is_one_line_in_the_500_body(detector, monkeypatch):
    """Was: the exception's text as it was, line breaks and all (torch's messages often have them)."""
    from fastapi.testclient import TestClient

    import synthdetect.server.app as server_app

    def broken(*_args, **_kwargs):
        raise RuntimeError("shape mismatch:\n  expected [1, 3, 32, 32]\n  got [1, 4, 32, 32]")

    monkeypatch.setattr(server_app, "_detect_in_pixel_groups", broken)
    with TestClient(create_app(detector)) as client:
        response = client.post("/v1/detect", content=png_bytes(), headers={"content-type": "image/png"})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert message.startswith("internal error (RuntimeError); the service log has the details under request id ")
    assert "\n" not in message and "shape mismatch" not in message


CURL_FORM = (b"--------------------------f027f6bba9a403fd\r\n"
             b'Content-Disposition: attachment; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
             + png_bytes() + b"\r\n--------------------------f027f6bba9a403fd--\r\n")


@pytest.mark.parametrize("media, sent_as", [
    ("image/png", "its Content-Type is 'image/png'"),  # curl -H 'Content-Type: image/png' -F files=@a.png
    ("application/octet-stream", "its Content-Type is 'application/octet-stream'"),
    ("", "it has no Content-Type"),
])
def test_a_form_sent_under_an_image_type_is_told_so_not_called_not_an_image(detector, media, sent_as):
    """Was: 415 "upload: not an image (unrecognised data)", though the form held an image: curl keeps the type
    given with -H for its -F form (and writes its parts as ``attachment``)."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(detector)) as client:
        response = client.post("/v1/detect", content=CURL_FORM, headers={"content-type": media})
        assert response.status_code == 415, response.text
        assert response.json()["error"] == {
            "status": 415, "kind": "unsupported_media_type",
            "message": f"the body is a multipart form, but {sent_as}: send it as multipart/form-data with its "
                       "boundary (curl -F does: drop -H 'Content-Type: ...')"}
        # The same bytes under their own type are judged.
        boundary = CURL_FORM.split(b"\r\n", 1)[0][2:].decode()
        form = client.post("/v1/detect", content=CURL_FORM,
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert form.status_code == 200 and form.json()["verdicts"][0]["file"] == "a.png", form.text


def test_only_a_mime_part_reads_as_a_form():
    from synthdetect.server.forms import looks_like_form

    assert looks_like_form(CURL_FORM)
    assert looks_like_form(b'--b\r\nContent-Type: image/png\r\nContent-Disposition: form-data; name="f"\r\n\r\nx')
    assert not looks_like_form(png_bytes())
    assert not looks_like_form(b"-- just a text file that starts with two dashes\r\nand more text")
    assert not looks_like_form(b"")
