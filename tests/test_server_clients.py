"""REST service as other HTTP clients than browsers and curl call it: their multipart dialects and their contract."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from synthdetect.api import Detector
from synthdetect.models.base import Model
from synthdetect.server.app import create_app
from synthdetect.server.limits import ServerSettings

from tiny_model import png_bytes, write_tiny_cnn

BOUNDARY = "synthdetect-test-boundary"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    detector = Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))
    with TestClient(create_app(detector)) as c:
        yield c


def multipart(*dispositions: str, data: bytes) -> bytes:
    """A body whose parts carry exactly these Content-Disposition values, each with the same image."""
    body = b""
    for disposition in dispositions:
        body += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n"
                 .encode() + data + b"\r\n")
    return body + f"--{BOUNDARY}--\r\n".encode()


def reported_names(client, *dispositions: str) -> list[str]:
    response = client.post("/v1/detect", content=multipart(*dispositions, data=png_bytes(seed=4)),
                           headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 200, response.text
    verdicts = response.json()["verdicts"]
    assert all(v["error"] is None for v in verdicts), verdicts
    return [v["file"] for v in verdicts]


@pytest.mark.parametrize("disposition, name", [
    # .NET HttpClient (MultipartFormDataContent.Add(content, "files", "日本語.png")): RFC 2047 word + filename*.
    ("form-data; name=files; filename=\"=?utf-8?B?5pel5pys6KqeLnBuZw==?=\"; "
     "filename*=utf-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.png", "日本語.png"),
    # urllib3 before 1.25 (old requests): filename* alone.
    ("form-data; name=\"files\"; filename*=utf-8''%C3%A9t%C3%A9.png", "été.png"),
    # RFC 6266's pattern: an ASCII fallback, then the real name, which wins whatever the order.
    ("form-data; name=\"files\"; filename=\"photo.png\"; filename*=UTF-8''%E5%86%99%E7%9C%9F.png", "写真.png"),
    ("form-data; name=\"files\"; filename*=UTF-8''%E5%86%99%E7%9C%9F.png; filename=\"photo.png\"", "写真.png"),
    ("form-data; name=\"files\"; filename*=iso-8859-1'fr'%E9t%E9.png", "été.png"),
])
def test_rfc5987_file_names_are_decoded_not_lost_or_garbled(client, disposition, name):
    assert reported_names(client, disposition) == [name]


def test_plain_and_empty_extended_file_names_keep_their_old_meaning(client):
    names = reported_names(
        client,
        'form-data; name="files"; filename="日本.png"',  # what browsers send: raw UTF-8
        "form-data; name=\"files\"; filename=\"kept.png\"; filename*=UTF-8''",  # empty filename*: the plain one
        "form-data; name=\"files\"; filename*=UTF-8''a%0Ab.png",  # a decoded line break still keeps one line
    )
    assert names == ["日本.png", "kept.png", "a?b.png"]


def _resolve(spec: dict, schema: dict) -> dict:
    return spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema


def _ok_schema(spec: dict, path: str, method: str) -> dict:
    return _resolve(spec, spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"])


def test_openapi_describes_the_verdicts_a_detect_call_returns(client):
    """A client generated from /openapi.json must know the 200 shape, not an untyped object, and it must match."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Model: sd15")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "PNG", pnginfo=info)
    uploads = [("judged.png", png_bytes(seed=1)), ("with-evidence.png", buffer.getvalue()),
               ("too-small.png", png_bytes(size=(2, 2))), ("broken.png", b"not an image")]
    response = client.post("/v1/detect", files=[("files", (n, d, "image/png")) for n, d in uploads])
    assert response.status_code == 200, response.text
    body = response.json()
    verdicts = body["verdicts"]
    assert verdicts[1]["evidence"] and "data" in verdicts[1]["evidence"][0]
    assert verdicts[2]["p_ai"] is None and verdicts[3]["error_kind"] == "not_an_image"

    spec = client.get("/openapi.json").json()
    ok = _ok_schema(spec, "/v1/detect", "post")
    assert set(ok["properties"]) == set(body)
    verdict_schema = _resolve(spec, ok["properties"]["verdicts"]["items"])
    assert all(set(verdict_schema["properties"]) == set(v) for v in verdicts), "documented keys = sent keys"
    evidence_schema = _resolve(spec, verdict_schema["properties"]["evidence"]["items"])
    assert set(evidence_schema["properties"]) == set(verdicts[1]["evidence"][0])
    from synthdetect.server.app import DetectBody

    DetectBody.model_validate(body)  # every value fits its documented type
    health = _ok_schema(spec, "/healthz", "get")
    assert set(health["properties"]) == set(client.get("/healthz").json())


def test_a_model_that_fails_on_every_file_is_a_server_error_not_a_bad_request(tmp_path, monkeypatch):
    """422 tells a client to fix its input; a crashing model (out of memory, a broken runtime) is ours: 500."""
    detector = Detector.load(str(write_tiny_cnn(tmp_path / "pkg")))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(detector.model, "score_prepared", out_of_memory)
    with TestClient(create_app(detector)) as c:
        response = c.post("/v1/detect", content=png_bytes(seed=1), params={"name": "a.png"},
                          headers={"content-type": "image/png"})
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert (error["status"], error["kind"]) == (500, "model_error")
    # what failed and how, not the exception's text (which can name this server's files): that is in the log
    assert error["message"].startswith("a.png: model failed (RuntimeError); the service log has the details under "
                                       "request id ")
    assert "CUDA out of memory" not in error["message"]


def test_when_no_file_could_be_judged_the_message_names_every_file(client):
    response = client.post("/v1/detect", files=[("files", ("empty.png", b"", "image/png")),
                                                ("files", ("notes.png", b"shopping list", "image/png"))])
    assert response.status_code == 422, response.text  # the first file's reason
    error = response.json()["error"]
    assert error["kind"] == "empty"
    assert error["message"] == "empty.png: empty file (0 bytes); notes.png: not an image (the file contains text)"


@pytest.mark.parametrize("choice", ["auto", "ela", "figure"])
def test_explain_answers_the_models_failure_instead_of_a_map_of_no_verdict(tmp_path, monkeypatch, choice):
    """Grad-CAM runs the torch module, not the scoring path: it used to draw a map (200, empty label) for an image
    whose verdict had failed, and the failure was never told."""
    detector = Detector.load(str(write_tiny_cnn(tmp_path / "pkg")))

    def broken_runtime(*args, **kwargs):
        raise RuntimeError("session failed")

    monkeypatch.setattr(detector.model, "score_prepared", broken_runtime)
    with TestClient(create_app(detector)) as c:
        response = c.post("/v1/explain", content=png_bytes(seed=1), params={"name": "a.png", "map": choice},
                          headers={"content-type": "image/png"})
    assert response.status_code == 500, (response.status_code, dict(response.headers))
    message = response.json()["error"]["message"]
    assert message.startswith("a.png: model failed (RuntimeError); the service log has the details under request id ")
    assert "session failed" not in message


def test_healthz_answers_head_for_uptime_probes(client):
    """Many uptime checkers probe with HEAD; it used to be 405 method_not_allowed, which reads as "down"."""
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"] == "application/json"


def test_a_request_is_judged_in_groups_of_at_most_max_pixels_in_order(tmp_path, monkeypatch):
    """The service hands Detector.detect groups of at most --max-pixels pixels (from the headers), so a request
    out of time keeps the groups already judged; the groups keep the upload order and lose no file."""
    detector = Detector.load(str(write_tiny_cnn(tmp_path / "pkg")))
    settings = ServerSettings(max_pixels=100_000)
    uploads = [("big-1.png", png_bytes(size=(300, 300), seed=1)), ("small-1.png", png_bytes(seed=2)),
               ("big-2.png", png_bytes(size=(300, 300), seed=3)), ("broken.png", b"not an image"),
               ("small-2.png", png_bytes(seed=4)), ("big-3.png", png_bytes(size=(250, 300), seed=5))]
    expected = [v.to_dict() for v in detector.detect([d for _, d in uploads], [n for n, _ in uploads])]
    decoded_per_call: list[int] = []
    detect = Detector.detect

    def recording_detect(self, inputs, names=None):
        verdicts = detect(self, inputs, names)
        decoded_per_call.append(sum(v.image["width"] * v.image["height"] for v in verdicts if v.ok))
        return verdicts

    monkeypatch.setattr(Detector, "detect", recording_detect)
    with TestClient(create_app(detector, settings)) as c:
        response = c.post("/v1/detect", files=[("files", (n, d, "image/png")) for n, d in uploads])
    assert response.status_code == 200, response.text
    got = response.json()["verdicts"]
    assert [(v["file"], v["label"], v["p_ai"], v["error_kind"]) for v in got] == [
        (v["file"], v["label"], v["p_ai"], v["error_kind"]) for v in expected]
    assert decoded_per_call and max(decoded_per_call) <= 100_000, decoded_per_call


class SecondImageBlocksModel(Model):
    """Judges the first image it sees at once and blocks on any later one until released: a request out of time."""

    def __init__(self) -> None:
        super().__init__({"name": "slow-later", "kind": "test", "input": {"min_side": 8}})
        self.seen = 0
        self.release = threading.Event()

    def logits(self, images):
        self.seen += len(images)
        if self.seen > 1:
            self.release.wait(10)
        return np.zeros(len(images))


def test_a_request_out_of_time_keeps_the_verdicts_already_made():
    """It used to be one 504 with no verdict at all; now the judged files come back and the rest say why not."""
    model = SecondImageBlocksModel()
    settings = ServerSettings(workers=1, max_queue=0, timeout_s=1.0, max_pixels=100_000)
    uploads = [("first.png", png_bytes(size=(300, 300), seed=1)), ("second.png", png_bytes(size=(300, 300), seed=2))]
    try:
        with TestClient(create_app(Detector(model, use_evidence=False), settings)) as c:
            response = c.post("/v1/detect", files=[("files", (n, d, "image/png")) for n, d in uploads])
    finally:
        model.release.set()
    assert response.status_code == 200, response.text
    first, second = response.json()["verdicts"]
    assert first["file"] == "first.png" and first["error"] is None and first["p_ai"] is not None
    assert second["file"] == "second.png" and second["error_kind"] == "timeout"
    assert second["error"] == "second.png: not judged: the request's 1 s ran out (send fewer images per request)"
