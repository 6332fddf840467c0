"""``?name=`` names a raw image body; with a multipart body it is refused, not silently ignored."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from synthdetect.api import Detector
from synthdetect.server.app import create_app
from synthdetect.server.limits import ServerSettings

from tiny_model import png_bytes, write_tiny_cnn

LIMITS = ServerSettings(max_body_bytes=200_000, max_file_bytes=100_000, max_pixels=100_000, max_files=3,
                        workers=1, max_queue=2, timeout_s=20)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    detector = Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))
    with TestClient(create_app(detector, LIMITS)) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/explain"])
@pytest.mark.parametrize("value", ["x.jpg", ""])
def test_name_with_a_multipart_body_is_a_422(client, path, value):
    """It came back 200 with the part's own name ("a.png"), no sign that ?name=x.jpg did nothing."""
    response = client.post(path, params={"name": value, "map": "ela"} if path.endswith("explain") else
                           {"name": value}, files=[("files", ("a.png", png_bytes(seed=1), "image/png"))])
    assert response.status_code == 422, (response.status_code, response.headers["content-type"], response.content[:80])
    error = response.json()["error"]
    assert error["status"] == 422 and error["kind"] == "invalid_request", error
    assert error["message"].startswith("query.name: applies to a raw image body only")
    assert "filename" in error["message"] and "\n" not in error["message"]
    assert response.json()["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/explain"])
def test_name_still_names_a_raw_body_and_multipart_without_it_is_judged(client, path):
    params = {"map": "ela"} if path.endswith("explain") else {}
    raw = client.post(path, content=png_bytes(seed=2), headers={"content-type": "image/png"},
                      params={**params, "name": "raw.png"})
    form = client.post(path, params=params, files=[("files", ("a.png", png_bytes(seed=1), "image/png"))])
    assert raw.status_code == 200 and form.status_code == 200, (raw.text, form.text)
    if path == "/v1/detect":
        assert raw.json()["verdicts"][0]["file"] == "raw.png" and form.json()["verdicts"][0]["file"] == "a.png"


def test_openapi_says_name_is_for_raw_bodies(client):
    params = client.get("/openapi.json").json()["paths"]["/v1/detect"]["post"]["parameters"]
    assert "multipart" in next(p for p in params if p["name"] == "name")["description"]
