"""REST service: every endpoint and every error path, through FastAPI's TestClient."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from synthdetect.api import Detector
from synthdetect.models.base import Model
from synthdetect.server.app import STATIC_DIR, create_app
from synthdetect.server.limits import ServerSettings, ServiceError, WorkerPool

from tiny_model import png_bytes, write_tiny_cnn

LIMITS = ServerSettings(max_body_bytes=200_000, max_file_bytes=100_000, max_pixels=100_000, max_files=3,
                        workers=2, max_queue=2, timeout_s=20)


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))


@pytest.fixture(scope="module")
def client(detector):
    with TestClient(create_app(detector, LIMITS)) as c:
        yield c


def solid_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def raw(client, data: bytes, path: str = "/v1/detect", media: str = "image/png", **params):
    return client.post(path, content=data, headers={"content-type": media}, params=params)


def files(*items: tuple[str, bytes]):
    return [("files", (name, data, "image/png")) for name, data in items]


def assert_error(response, status: int, kind: str, text: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status and body["error"]["kind"] == kind, body
    assert text in body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"], "an error names its request"
    return body


# -- endpoints ---------------------------------------------------------------------------------


def test_healthz_and_models(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "tiny-cnn" and health["pending"] == 0
    models = client.get("/v1/models").json()
    assert models["loaded"]["name"] == "tiny-cnn" and models["loaded"]["kind"] == "small-cnn"
    assert models["limits"]["max_files"] == 3
    assert isinstance(models["shipped"], list)


def test_detect_multipart_many_files_matches_the_detector(client, detector):
    a, b = png_bytes(seed=1), png_bytes(seed=2)
    body = client.post("/v1/detect", files=files(("a.png", a), ("b.png", b))).json()
    assert [v["file"] for v in body["verdicts"]] == ["a.png", "b.png"]
    direct = detector.detect([a, b], names=["a.png", "b.png"])
    for got, want in zip(body["verdicts"], direct):
        assert got["schema"] == "synthdetect.verdict/1"
        assert got["label"] == want.label and got["p_ai"] == round(want.p_ai, 6)
    assert body["model"] == "tiny-cnn" and body["request_id"]


def test_detect_raw_body_with_name(client):
    response = raw(client, png_bytes(seed=4), name="raw.png")
    assert response.status_code == 200
    verdict = response.json()["verdicts"][0]
    assert verdict["file"] == "raw.png" and verdict["label"] in ("ai", "human", "uncertain")
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_one_bad_file_does_not_fail_the_batch(client):
    response = client.post("/v1/detect", files=files(("good.png", png_bytes()), ("bad.png", b"not an image at all")))
    assert response.status_code == 200
    good, bad = response.json()["verdicts"]
    assert good["error"] is None and bad["label"] is None
    assert bad["error_kind"] == "not_an_image" and bad["error"].startswith("bad.png: ")


def test_explain_returns_a_png_heatmap_with_the_verdict_in_headers(client, detector):
    data = png_bytes(seed=5)
    response = raw(client, data, "/v1/explain")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-synthdetect-map"] == "gradcam"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG" and min(picture.size) >= 256
    verdict = detector(data)
    assert response.headers["x-synthdetect-label"] == verdict.label
    assert float(response.headers["x-synthdetect-p-ai"]) == pytest.approx(verdict.p_ai, abs=1e-6)
    for choice in ("occlusion", "ela", "figure"):
        r = client.post(f"/v1/explain?map={choice}", files=files(("x.png", data)))
        assert r.status_code == 200 and r.headers["x-synthdetect-map"] == choice
        assert Image.open(io.BytesIO(r.content)).format == "PNG"


def test_explain_large_image_falls_back_to_ela_or_says_why(client):
    big = solid_png(200, 150)  # larger than tiny-cnn's 64 px: no model judges it
    auto = raw(client, big, "/v1/explain")
    assert auto.status_code == 200 and auto.headers["x-synthdetect-map"] == "ela"
    assert "64" in auto.headers["x-synthdetect-notes"]
    assert auto.headers["x-synthdetect-label"] == "uncertain"
    assert_error(raw(client, big, "/v1/explain", map="gradcam"), 422, "map_unavailable", "64 px")


def test_openapi_docs_and_page_are_served_locally(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/explain", "/v1/models", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static-docs/swagger-ui-bundle.js" in docs.text
    assert client.get("/static-docs/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # Offline: no asset of the page may come from another host.
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", path.read_text()), path
        assert "url(http" not in path.read_text() and "import(" not in path.read_text()


# -- limits and errors -------------------------------------------------------------------------


def test_body_too_large_declared(client):
    assert_error(raw(client, b"x" * 250_000), 413, "body_too_large", "250,000 bytes")


def test_body_too_large_while_streaming_without_content_length(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    assert_error(raw(client, chunks()), 413, "body_too_large", "over the limit of 200,000")


def test_file_too_large(client):
    big = np.random.default_rng(0).integers(0, 256, (180, 180, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="BMP")  # ~97 KB < body limit... padded past the file limit below
    data = buffer.getvalue() + b"\x00" * 10_000
    assert_error(raw(client, data, media="image/bmp"), 413, "too_large", "limit 100,000")


def test_too_many_pixels(client):
    assert_error(raw(client, solid_png(400, 400)), 413, "too_many_pixels", "400x400")


def test_too_many_files(client):
    many = files(*[(f"{i}.png", png_bytes(seed=i)) for i in range(4)])
    assert_error(client.post("/v1/detect", files=many), 413, "too_many_files", "3")


@pytest.mark.parametrize("data, status, kind", [
    (b"%PDF-1.7\n...", 415, "unsupported_format"),
    (b"just some text", 415, "not_an_image"),
    (png_bytes()[:200], 422, "truncated"),
])
def test_unsupported_or_corrupt_image(client, data, status, kind):
    body = assert_error(raw(client, data), status, kind)
    assert body["verdicts"][0]["error_kind"] == kind
    assert_error(raw(client, data, "/v1/explain"), status, kind)


def test_corrupt_header(client):
    data = bytearray(png_bytes())
    data[1000:1040] = b"\x13" * 40  # a valid header over damaged pixel data
    assert_error(raw(client, bytes(data)), 422, "corrupt", "corrupt image data")


def test_no_image_in_request(client):
    assert_error(client.post("/v1/detect"), 422, "no_files")
    assert_error(client.post("/v1/detect", data={"url": "http://example.com/a.png"},
                              files=[("note", (None, b"x")), ("files", (None, b""))]), 422, "no_files")


def test_empty_raw_image_is_empty_not_no_files(client):
    body = assert_error(raw(client, b""), 422, "empty", "empty file")
    assert body["verdicts"][0]["error_kind"] == "empty"


def test_errors_from_the_body_guard_and_the_request_checks_carry_the_request_id(client):
    for response in (raw(client, b"x" * 250_000), client.post("/v1/detect"), raw(client, b"{}", media="text/plain")):
        assert response.status_code >= 400
        assert response.json()["request_id"] == response.headers["x-request-id"]


def test_multipart_parts_without_a_file_name_are_images(client, detector):
    """curl -F 'files=<x.png' and some clients send no filename; Starlette would hand those over as text."""
    a, b = png_bytes(seed=11), png_bytes(seed=12)
    response = client.post("/v1/detect", files=[("files", (None, a)), ("photo", (None, b, "image/png")),
                                                ("note", (None, b"just a caption"))])
    assert response.status_code == 200, response.text
    verdicts = response.json()["verdicts"]
    assert [v["file"] for v in verdicts] == ["upload-1", "upload-2"]
    direct = detector.detect([a, b])
    assert [v["p_ai"] for v in verdicts] == [round(v.p_ai, 6) for v in direct]


def test_unicode_file_names_and_malformed_multipart(client):
    response = client.post("/v1/detect", files=files(("ракета 🚀.png", png_bytes())))
    assert response.json()["verdicts"][0]["file"] == "ракета 🚀.png"
    assert_error(client.post("/v1/detect", content=b"--x\r\nno headers",
                             headers={"content-type": "multipart/form-data"}), 400, "bad_multipart", "boundary")


def multipart(*parts: tuple[bytes, bytes], close: bool = True) -> bytes:
    """A hand-made multipart body (boundary ``XyZ``) from ``(headers, data)`` pairs, for bodies httpx would not send."""
    body = b"".join(b"--XyZ\r\n" + headers + b"\r\n\r\n" + data + b"\r\n" for headers, data in parts)
    return body + (b"--XyZ--\r\n" if close else b"")


def post_multipart(client, body: bytes, path: str = "/v1/detect", **params):
    return client.post(path, content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"},
                       params=params)


def file_part(filename: bytes, media: bytes = b"image/png") -> bytes:
    return b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"\r\nContent-Type: ' + media


def test_truncated_multipart_body_is_400_not_a_lost_file(client):
    """python-multipart's finalize() accepts a cut body: the last file vanished (200 with one verdict of two)."""
    whole = multipart((file_part(b"a.png"), png_bytes(seed=1)), (file_part(b"b.png"), png_bytes(seed=2)))
    assert len(post_multipart(client, whole).json()["verdicts"]) == 2
    assert_error(post_multipart(client, whole[:-300]), 400, "bad_multipart", "truncated in b.png")
    alone = multipart((file_part(b"a.png"), png_bytes()), close=False)  # was 422 no_files
    assert_error(post_multipart(client, alone), 400, "bad_multipart", "truncated in a.png")
    assert_error(post_multipart(client, alone, "/v1/explain"), 400, "bad_multipart", "truncated")
    assert_error(post_multipart(client, b""), 422, "no_files")  # an empty body is no image, not a cut one


def test_an_empty_file_input_is_no_upload(client):
    """A browser sends a file input left empty as filename="" with no bytes: not a file called upload-2."""
    unchosen = (file_part(b"", b"application/octet-stream"), b"")
    response = post_multipart(client, multipart((file_part(b"a.png"), png_bytes()), unchosen))
    assert response.status_code == 200, response.text
    assert [v["file"] for v in response.json()["verdicts"]] == ["a.png"]
    assert_error(post_multipart(client, multipart(unchosen)), 422, "no_files")
    named_empty = post_multipart(client, multipart((file_part(b"e.png"), b"")))
    assert_error(named_empty, 422, "empty", "e.png: empty file")  # a named empty file is still judged


def test_empty_parts_count_toward_the_field_limit(client):
    """Empty parts are dropped but must count: 100,000 of them fit in the body limit and took seconds to parse."""
    empty = (b'Content-Disposition: form-data; name="files"', b"")
    response = post_multipart(client, multipart(*[empty] * 100, (file_part(b"a.png"), png_bytes())))
    assert_error(response, 400, "bad_multipart", "too many form fields")


def test_control_characters_in_file_names_keep_messages_on_one_line(client):
    response = post_multipart(client, multipart((file_part(b"a\nb\x1b[31m.png"), b"just text")))
    body = assert_error(response, 415, "not_an_image", "a?b?[31m.png: not an image")
    assert body["verdicts"][0]["file"] == "a?b?[31m.png"
    for name in ("a\nb.png", "a\u2028b.png", "a\rb.png"):
        body = assert_error(raw(client, b"just text", name=name), 415, "not_an_image", "a?b.png: ")
        assert len(body["error"]["message"].splitlines()) == 1
    emoji = "\U0001f468\u200d\U0001f469.png"  # a joiner is not a control character: names keep it
    assert raw(client, png_bytes(), name=emoji).json()["verdicts"][0]["file"] == emoji


def test_head_of_the_page(client):
    response = client.head("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")


def test_urls_are_never_fetched(client):
    response = client.post("/v1/detect", json={"url": "http://127.0.0.1:9/never.png"})
    assert_error(response, 415, "unsupported_media_type", "application/json")


def test_explain_takes_one_image_and_validates_query(client):
    assert_error(client.post("/v1/explain", files=files(("a.png", png_bytes()), ("b.png", png_bytes()))),
                 422, "one_file_only")
    assert_error(raw(client, png_bytes(), "/v1/explain", map="saliency"), 422, "invalid_request", "map")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/detect"), 405, "method_not_allowed")


def test_openapi_documents_the_error_body_not_fastapis_validation_error(client):
    spec = client.get("/openapi.json").json()
    assert "ErrorBody" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in json.dumps(spec["paths"])
    for path in ("/v1/detect", "/v1/explain"):
        responses = spec["paths"][path]["post"]["responses"]
        for status in ("400", "408", "413", "415", "422", "500", "503", "504"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    assert "one_file_only" in spec["paths"]["/v1/explain"]["post"]["responses"]["422"]["description"]


def test_unexpected_exception_is_a_json_500_with_the_request_id(detector, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Detector, "detect", broken)
    with TestClient(create_app(detector, LIMITS)) as c, caplog.at_level(logging.INFO, logger="synthdetect.server"):
        response = raw(c, png_bytes())
    body = assert_error(response, 500, "internal", "internal error (RuntimeError)")
    assert "a bug" not in body["error"]["message"]  # the text stays in the log: it can hold server paths
    assert body["request_id"] in body["error"]["message"]
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "synthdetect.server" and r.getMessage().startswith("{")]
    assert [(line["id"], line["status"], line["outcome"]) for line in lines] == [(body["request_id"], 500, "internal")]
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records), "the traceback is logged"


def test_one_structured_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="synthdetect.server"):
        ok = client.post("/v1/detect", files=files(("a.png", png_bytes()), ("b.png", png_bytes(seed=9))))
        bad = raw(client, b"x" * 250_000)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "synthdetect.server"]
    assert len(lines) == 2
    first, second = lines
    assert first["id"] == ok.headers["x-request-id"] and first["files"] == 2 and first["outcome"] == "ok"
    assert first["status"] == 200 and first["ms"] > 0 and first["path"] == "/v1/detect"
    assert second["status"] == 413 and second["outcome"] == "body_too_large"
    assert second["id"] == bad.headers["x-request-id"]


# -- queueing, busy and timeouts -----------------------------------------------------------------


class GatedModel(Model):
    """Blocks in ``logits`` until released, so tests can hold the worker pool busy."""

    def __init__(self) -> None:
        super().__init__({"name": "gated", "kind": "test", "input": {"min_side": 8}})
        self.gate = threading.Event()
        self.entered = threading.Event()

    def logits(self, images):
        self.entered.set()
        self.gate.wait(10)
        return np.zeros(len(images))


def test_busy_pool_answers_503_and_recovers():
    model = GatedModel()
    settings = ServerSettings(workers=1, max_queue=0, timeout_s=20)
    with TestClient(create_app(Detector(model, use_evidence=False), settings)) as c:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=raw(c, png_bytes())))
        worker.start()
        assert model.entered.wait(10)
        response = raw(c, png_bytes(seed=1))
        assert_error(response, 503, "busy")
        assert response.headers["retry-after"] == "1"
        assert c.get("/healthz").json()["pending"] == 1  # health answers while the pool is full
        model.gate.set()
        worker.join(10)
        assert first["r"].status_code == 200
        assert raw(c, png_bytes(seed=2)).status_code == 200


def test_request_timeout_is_504_and_the_slot_is_held_until_the_work_ends():
    model = GatedModel()
    settings = ServerSettings(workers=1, max_queue=0, timeout_s=1.0)
    with TestClient(create_app(Detector(model, use_evidence=False), settings)) as c:
        assert_error(raw(c, png_bytes()), 504, "timeout", "1 s")
        assert c.get("/healthz").json()["pending"] == 1  # the timed-out job still runs: no new slot yet
        model.gate.set()
        deadline = time.time() + 10
        while c.get("/healthz").json()["pending"] and time.time() < deadline:
            time.sleep(0.05)
        assert raw(c, png_bytes()).status_code == 200


def test_worker_pool_bounds_concurrency_and_queue():
    asyncio.run(_fill_the_pool())


async def _fill_the_pool() -> None:
    pool = WorkerPool(workers=2, max_queue=1)
    running, peak, lock = [0], [0], threading.Lock()
    gate = threading.Event()

    def job():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(5)
        with lock:
            running[0] -= 1
        return "done"

    tasks = [asyncio.ensure_future(pool.run(pool.admit(), job, timeout=10)) for _ in range(3)]
    await asyncio.sleep(0.2)
    with pytest.raises(ServiceError) as excinfo:
        pool.admit()
    assert excinfo.value.status == 503
    gate.set()
    assert await asyncio.gather(*tasks) == ["done"] * 3
    assert peak[0] == 2 and pool.pending == 0 and pool.peak_pending == 3
    pool.shutdown()


def test_slow_upload_is_408(detector):
    """TestClient buffers request bodies, so this drives the ASGI app directly with a trickling client."""
    app = create_app(detector, ServerSettings(timeout_s=0.3))
    sent: list[dict] = []

    async def trickle() -> dict:
        await asyncio.sleep(0.2)
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/detect", "raw_path": b"/v1/detect", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"image/png")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(app(scope, trickle, send), 5))
    assert sent[0]["status"] == 408
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"]["kind"] == "upload_timeout"


def test_a_client_that_disconnects_mid_upload_is_logged_499_not_500(detector, caplog):
    """500 reads as a bug of ours; nobody was answered, as nginx's 499 "client closed request" says."""
    app = create_app(detector, LIMITS)
    messages = [{"type": "http.request", "body": b"--XyZ\r\n", "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/detect", "raw_path": b"/v1/detect", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    with caplog.at_level(logging.INFO, logger="synthdetect.server"):
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent == []
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "synthdetect.server"]
    assert [(line["status"], line["outcome"]) for line in lines] == [(499, "client_disconnected")]


# -- synthdetect serve: operator mistakes fail in one line, before the model loads --------------------------


def _serve(monkeypatch, *args: str, loaded: Detector | None = None):
    """Run ``synthdetect serve``; the model load is stubbed (it must not be reached when ``loaded`` is None)."""
    from typer.testing import CliRunner

    from synthdetect.cli import app as cli_app

    def load(*_args, **_kwargs):
        if loaded is None:
            raise AssertionError("the model loaded before the options and the port were checked")
        return loaded

    monkeypatch.setattr(Detector, "load", staticmethod(load))
    return CliRunner().invoke(cli_app, ["serve", *args])


def test_serve_port_in_use_fails_in_one_line_before_loading_the_model(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _serve(monkeypatch, "--host", "127.0.0.1", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2, (result.exception, result.output)
    assert "cannot listen on 127.0.0.1:" in result.stderr and "in use" in result.stderr
    assert "serving" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "-1"], ["--max-file-mb", "nan"],
                                  ["--timeout", "0"], ["--max-body-mb", "-1"], ["--host", "no.such.host.invalid"]])
def test_serve_rejects_bad_options_without_a_traceback(monkeypatch, args):
    result = _serve(monkeypatch, *args)
    assert result.exit_code == 2, (args, result.exception, result.output)
    assert isinstance(result.exception, SystemExit), result.exception  # a usage error, not a crash


def test_serve_prints_a_url_that_already_answers():
    """Run as a real process: the printed URL (port 0: the real port) answers at once.

    In-process under Typer's CliRunner this test swapped and closed sys.stderr around a real serve start-up,
    which in the full suite brought pytest down ("lost sys.stderr"); a subprocess has its own streams.
    """
    import re
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    cli = Path(sys.executable).with_name("synthdetect")
    proc = subprocess.Popen([str(cli), "serve", "--host", "127.0.0.1", "--port", "0", "--model", "cifake-cnn"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        for line in proc.stdout:
            lines.append(line)
            if match := re.search(r"serving model .* on (http://127\.0\.0\.1:(\d+)/) ", line):
                url = match.group(1)
                break
        assert url and not url.endswith(":0/"), "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as response:  # the first try, no retry
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_page_url_brackets_ipv6_hosts():
    from synthdetect.server.commands import page_url

    assert page_url("::1", 8000) == "http://[::1]:8000/"
    assert page_url("127.0.0.1", 80) == "http://127.0.0.1:80/"


def test_the_request_log_writes_to_the_stderr_of_the_moment(capsys):
    """A handler bound to a stream that a test runner has since closed would fail on every request."""
    import io
    import logging
    import sys

    from synthdetect.server.commands import _request_logger

    swapped = io.StringIO()
    real, sys.stderr = sys.stderr, swapped
    try:
        _request_logger()
    finally:
        sys.stderr = real
    swapped.close()
    logging.getLogger("synthdetect.server").info('{"outcome": "ok"}')
    err = capsys.readouterr().err
    assert err == '{"outcome": "ok"}\n', err  # not logging's "--- Logging error ---" about a closed file


def test_silent_connections_are_closed_so_they_cannot_lock_the_service_out():
    """uvicorn counted connections that never sent a byte against its cap and never closed them: 30 of them
    made every request a plain-text 503 for as long as they stayed open."""
    import json as _json
    import re
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    cli = Path(sys.executable).with_name("synthdetect")
    proc = subprocess.Popen([str(cli), "serve", "--port", "0", "--model", "cifake-cnn", "--workers", "1",
                             "--max-queue", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    idle: list[socket.socket] = []
    try:
        url = None
        for line in proc.stdout:
            if match := re.search(r"on (http://127\.0\.0\.1:(\d+)/) ", line):
                url, port = match.group(1), int(match.group(2))
                break
        assert url, "serve did not start"
        for _ in range(30):  # the cap is 4 x (1 + 1) + 16 = 24 connections
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(6.5)  # the silent ones are closed after 5 s
        with urllib.request.urlopen(url + "healthz", timeout=10) as response:
            assert response.status == 200 and _json.loads(response.read())["status"] == "ok"
        assert idle[0].recv(1) == b""  # closed by the server
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_auto_goes_on_to_occlusion_when_grad_cam_is_flat(client, monkeypatch):
    """A flat Grad-CAM (the usual case for cifake-cnn's ``ai`` verdicts: 22 of 30 CIFAKE fakes) was sent as the
    heatmap: an overlay of zeros, showing nothing.  ``auto`` now says so and shows the occlusion map instead."""
    import numpy as np

    import synthdetect.explain.maps as maps

    monkeypatch.setattr(maps, "gradcam_map", lambda model, image, toward_ai=True: np.zeros(image.size[::-1]))
    auto = raw(client, png_bytes(seed=5), "/v1/explain")
    assert auto.status_code == 200 and auto.headers["x-synthdetect-map"] == "occlusion"
    assert "Grad-CAM is flat" in auto.headers["x-synthdetect-notes"]
    chosen = raw(client, png_bytes(seed=5), "/v1/explain", map="gradcam")  # asked for by name, it is sent
    assert chosen.status_code == 200 and chosen.headers["x-synthdetect-map"] == "gradcam"
