"""REST service audit (s25): server paths in failure messages, and query parameters the routes do not take."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from synthdetect.api import Detector
from synthdetect.models import ModelPackageError
from synthdetect.server.app import create_app

from tiny_model import png_bytes, write_tiny_cnn

SERVER_PATH = "/home/alice/models/pkg/weights.onnx"


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))


@pytest.fixture(scope="module")
def client(detector):
    with TestClient(create_app(detector)) as c:
        yield c


def _raw(client, path: str, data: bytes, **params):
    return client.post(path, content=data, params=params, headers={"content-type": "image/png"})


def _logged(caplog, event: str) -> list[dict]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "synthdetect.server"]
    return [line for line in lines if line.get("event") == event]


@pytest.fixture
def missing_weights(detector, monkeypatch):
    """The model fails as one whose weight file went away under the running service."""
    def gone(*_args, **_kwargs):
        raise FileNotFoundError(2, "No such file or directory", SERVER_PATH)

    monkeypatch.setattr(detector.model, "score_prepared", gone)


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/explain"])
def test_a_model_failure_tells_the_client_what_failed_not_the_servers_paths(client, missing_weights, caplog, path):
    """Was: "a.png: model failed (FileNotFoundError: [Errno 2] No such file or directory:
    '/home/alice/models/pkg/weights.onnx')" in the 500 body (and in the verdict), to any client. Now the exception
    type and the request id, as the 500 ``internal`` answer; the full text is in the log under that id."""
    caplog.set_level(logging.INFO, logger="synthdetect.server")
    response = _raw(client, path, png_bytes(seed=1), name="a.png")
    assert response.status_code == 500, response.text
    body = response.json()
    request_id = body["request_id"]
    expected = f"a.png: model failed (FileNotFoundError); the service log has the details under request id {request_id}"
    assert body["error"] == {"status": 500, "kind": "model_error", "message": expected}
    assert SERVER_PATH not in response.text
    if path == "/v1/detect":
        assert body["verdicts"][0]["error"] == expected and body["verdicts"][0]["error_kind"] == "model_error"
    [logged] = _logged(caplog, "model_error")
    assert logged["id"] == request_id and logged["file"] == "a.png" and SERVER_PATH in logged["error"]


def test_a_model_failure_beside_a_bad_upload_keeps_the_uploads_own_reason(client, missing_weights):
    """Reasons about the client's own file are the client's to read: only the server-side failure is shortened."""
    response = client.post("/v1/detect", files=[("files", ("notes.png", b"shopping list", "image/png")),
                                                ("files", ("a.png", png_bytes(seed=1), "image/png"))])
    verdicts = response.json()["verdicts"]
    assert verdicts[0]["error"] == "notes.png: not an image (the file contains text)"
    assert verdicts[1]["error"].startswith("a.png: model failed (FileNotFoundError); the service log has")
    assert SERVER_PATH not in response.text


def test_preparing_the_input_failing_says_so_without_the_text(client, detector, monkeypatch):
    def bad_resize(_image):
        raise ValueError(f"cannot resize with {SERVER_PATH}")

    monkeypatch.setattr(detector.model, "prepare", bad_resize)
    response = _raw(client, "/v1/detect", png_bytes(seed=1), name="a.png")
    assert response.status_code == 500, response.text
    assert response.json()["error"]["message"].startswith(
        "a.png: preparing the model input failed (ValueError); the service log has the details under request id ")
    assert SERVER_PATH not in response.text


def test_a_shipped_package_that_cannot_be_read_is_named_without_its_folder(client, monkeypatch, caplog):
    """Was: ``{"name": "wild-v3", "error": "wild-v3: weight file missing: /srv/.../weights/wild-v3/heads.npz"}``."""
    import synthdetect.models as models

    caplog.set_level(logging.INFO, logger="synthdetect.server")
    read = models.find_package

    def broken(name: str, **kwargs):
        if name == "wild-v3":
            raise ModelPackageError(f"wild-v3: weight file missing: {SERVER_PATH}")
        return read(name, **kwargs)

    monkeypatch.setattr(models, "find_package", broken)
    response = client.get("/v1/models")
    assert response.status_code == 200 and SERVER_PATH not in response.text
    request_id = response.headers["x-request-id"]
    [entry] = [m for m in response.json()["shipped"] if m["name"] == "wild-v3"]
    assert entry == {"name": "wild-v3", "error": "wild-v3: its package cannot be read (ModelPackageError); the "
                                                 f"service log has the details under request id {request_id}"}
    assert any("version" in m for m in response.json()["shipped"]), "the other packages are still listed"
    [logged] = _logged(caplog, "model_unreadable")
    assert logged["id"] == request_id and SERVER_PATH in logged["error"]


@pytest.mark.parametrize("path, query, message", [
    ("/v1/detect", "?treshold=0.9", "unknown query parameter 'treshold': /v1/detect takes name"),
    ("/v1/detect", "?modle=wild-v3&name=a.png", "unknown query parameter 'modle': /v1/detect takes name"),
    ("/v1/detect", "?nmae=a.png", "unknown query parameter 'nmae' (did you mean 'name'?): /v1/detect takes name"),
    ("/v1/explain", "?mpa=ela", "unknown query parameter 'mpa' (did you mean 'map'?): /v1/explain takes map, name"),
    ("/v1/explain", "?map=ela&model=x&debug", "unknown query parameters 'model', 'debug': /v1/explain takes map, "
                                              "name"),
])
def test_a_query_parameter_the_route_does_not_take_is_refused_not_ignored(client, path, query, message):
    """Was: 200 with the defaults (``?mpa=ela`` drew Grad-CAM, ``?treshold=0.9`` judged with the model's thresholds)."""
    response = client.post(path + query, content=png_bytes(seed=1), headers={"content-type": "image/png"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {"status": 422, "kind": "invalid_request", "message": message}


@pytest.mark.parametrize("path, query", [
    ("/v1/detect", ""), ("/v1/detect", "?name=a.png"),
    ("/v1/explain", "?map=auto"),  # what the web page sends
    ("/v1/explain", "?map=ela&name=a.png"),
])
def test_the_documented_query_parameters_still_work(client, path, query):
    response = client.post(path + query, content=png_bytes(seed=1), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/v1/detect/", "/v1/explain/"])
def test_a_trailing_slash_reaches_the_endpoint_not_an_empty_redirect(client, path):
    """Was: an empty 307 to the path without the slash (curl printed nothing and exited 0; urllib raised "HTTP Error
    307"; a client that follows it uploads the image twice)."""
    response = client.post(path, content=png_bytes(seed=1), headers={"content-type": "image/png"},
                           follow_redirects=False)
    assert response.status_code == 200, (response.status_code, response.text)
    assert client.get(path).json()["error"]["kind"] == "method_not_allowed"


@pytest.mark.parametrize("path, nearest", [("/V1/detect", "/v1/detect"), ("/v1/explian", "/v1/explain"),
                                           ("/api/detect", "/v1/detect"), ("/v2/nothing-like-it", None)])
def test_an_unknown_path_names_the_nearest_endpoint_and_lists_them(client, path, nearest):
    """Was: ``{"kind": "not_found", "message": "Not Found"}``, which did not say the case or the name was off."""
    response = client.post(path, content=png_bytes(seed=1), headers={"content-type": "image/png"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    hint = f" (did you mean {nearest}?)" if nearest else ""
    assert message == (f"nothing at {path}{hint}: the endpoints are /healthz, /v1/detect, /v1/explain, /v1/models, "
                       "the page at / and the API docs at /docs")
