"""REST service: request shapes real clients send that the first version refused, misnamed or answered with a 500."""

from __future__ import annotations

import asyncio
import gzip
import json
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from synthdetect.api import Detector
from synthdetect.server.app import create_app
from synthdetect.server.forms import image_parts
from synthdetect.server.limits import ServerSettings, ServiceError

from tiny_model import png_bytes, write_tiny_cnn

MULTIPART = {"content-type": "multipart/form-data; boundary=XyZ"}


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))


@pytest.fixture(scope="module")
def client(detector):
    with TestClient(create_app(detector, ServerSettings(max_files=3))) as c:
        yield c


def body_with(preamble: bytes, *names: bytes) -> bytes:
    parts = b"".join(b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="' + name
                     + b'"\r\nContent-Type: image/png\r\n\r\n' + png_bytes(seed=i) + b"\r\n"
                     for i, name in enumerate(names))
    return preamble + parts + b"--XyZ--\r\n"


def parts_of(body: bytes, chunk_size: int) -> list[tuple[str, bytes]]:
    """``image_parts`` fed as a server receives a streamed upload, ``chunk_size`` bytes at a time (TestClient sends
    a body in one piece), so a boundary may fall between two chunks."""
    async def chunks():
        for start in range(0, len(body), chunk_size):
            yield body[start:start + chunk_size]

    return asyncio.run(image_parts(MULTIPART["content-type"], chunks(), max_files=3, max_fields=19))


@pytest.mark.parametrize("preamble", [
    b"This is a multi-part message in MIME format.\r\n",  # what mail-style writers put first
    b"preamble naming --XyZ in the middle of a line\r\n\r\n",  # not a delimiter: it does not start a line
    b"x" * 5000 + b"\n",  # long, and a bare LF before the first boundary
])
def test_a_multipart_preamble_is_skipped_as_rfc_2046_says(client, preamble):
    """Was 400 bad_multipart ("Expected boundary character 45, got 84"): python-multipart refuses a preamble."""
    body = body_with(preamble, b"a.png", b"b.png")
    response = client.post("/v1/detect", content=body, headers=MULTIPART)
    assert response.status_code == 200, response.text
    assert [v["file"] for v in response.json()["verdicts"]] == ["a.png", "b.png"]
    for chunk_size in (1, 3, len(preamble) - 2, len(preamble) + 2):
        assert parts_of(body, chunk_size) == [("a.png", png_bytes(seed=0)), ("b.png", png_bytes(seed=1))]


def test_a_preamble_gives_the_same_verdicts_as_the_same_body_without_one(client):
    plain = client.post("/v1/detect", content=body_with(b"", b"a.png"), headers=MULTIPART).json()
    with_preamble = client.post("/v1/detect", content=body_with(b"hello\r\n", b"a.png"), headers=MULTIPART).json()
    assert [v["p_ai"] for v in with_preamble["verdicts"]] == [v["p_ai"] for v in plain["verdicts"]]


def test_a_body_with_no_boundary_line_is_malformed_and_a_blank_one_has_no_image(client):
    response = client.post("/v1/detect", content=b"just some text, no parts", headers=MULTIPART)
    assert response.status_code == 400 and response.json()["error"]["kind"] == "bad_multipart", response.text
    assert "boundary" in response.json()["error"]["message"]
    response = client.post("/v1/detect", content=b"\r\n\r\n", headers=MULTIPART)
    assert response.status_code == 422 and response.json()["error"]["kind"] == "no_files", response.text
    with pytest.raises(ServiceError, match="boundary"):
        parts_of(b"text, then --XyZ not at a line start", 2)
    assert parts_of(b"\r\n \r\n", 1) == []


@pytest.mark.parametrize("disposition, name", [
    ('attachment; filename="x.png"', "x.png"),
    ("attachment; filename*=UTF-8''%E5%86%99%E7%9C%9F.png", "写真.png"),
    ("attachment; filename=\"photo.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png", "été.png"),
    ("inline; filename*=UTF-8''a%0Ab.png", "a?b.png"),  # sanitised as a multipart name is: one line
    ("attachment", "upload"),
])
def test_a_raw_body_is_named_by_its_content_disposition(client, disposition, name):
    """Was ``upload`` whatever the header said: only ``?name=`` named a raw body."""
    for path in ("/v1/detect", "/v1/explain"):
        response = client.post(path, content=png_bytes(seed=3), params={"map": "ela"} if "explain" in path else {},
                               headers={"content-type": "image/png", "content-disposition": disposition})
        assert response.status_code == 200, response.text
        if path == "/v1/detect":
            assert response.json()["verdicts"][0]["file"] == name
    failed = client.post("/v1/detect", content=b"not an image",
                         headers={"content-type": "image/png", "content-disposition": disposition}).json()
    assert failed["error"]["message"].startswith(f"{name}: ")


def test_the_name_query_parameter_wins_over_content_disposition(client):
    response = client.post("/v1/detect", content=png_bytes(), params={"name": "query.png"},
                           headers={"content-type": "image/png", "content-disposition": 'attachment; filename="h.png"'})
    assert response.json()["verdicts"][0]["file"] == "query.png"


def failing_gradcam(monkeypatch, message: str) -> None:
    import synthdetect.explain.maps as maps

    def gradcam_map(*_args, **_kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(maps, "gradcam_map", gradcam_map)


def test_auto_goes_on_to_occlusion_when_grad_cam_fails(client, monkeypatch):
    """A Grad-CAM that raised is None: auto took it for a map and answered 500 (AttributeError: .any())."""
    failing_gradcam(monkeypatch, "no gradients here")
    response = client.post("/v1/explain", content=png_bytes(), params={"map": "auto"},
                           headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["x-synthdetect-map"] == "occlusion"
    # The failure's text is for the service log (it can name server paths): the client gets its type and the id.
    request_id = response.headers["x-request-id"]
    said = f"gradcam failed (RuntimeError); the service log has the details under request id {request_id}"
    assert said in response.headers["x-synthdetect-notes"].split(" | ")
    response = client.post("/v1/explain", content=png_bytes(), params={"map": "gradcam"},
                           headers={"content-type": "image/png"})
    assert response.status_code == 422 and response.json()["error"]["kind"] == "map_unavailable", response.text
    assert response.json()["error"]["message"].startswith("gradcam failed (RuntimeError); the service log has")


def test_explain_notes_reach_the_client_whole_in_utf8(tmp_path):
    """``x-synthdetect-notes`` is one header line: a note naming 写真.png read "... ??.png ...". The note here is
    the explanation's own (a card naming a Grad-CAM layer the model lacks); a failure's text is never sent."""
    root = write_tiny_cnn(tmp_path / "pkg")
    card = json.loads((root / "model.json").read_text())
    (root / "model.json").write_text(json.dumps({**card, "explain": {"gradcam_layer": "写真.🚀 100%"}}))
    with TestClient(create_app(Detector.load(str(root)))) as client:
        for choice in ("figure", "auto"):
            response = client.post("/v1/explain", content=png_bytes(), params={"map": choice, "name": "写真.png"},
                                   headers={"content-type": "image/png"})
            assert response.status_code == 200, response.text
            note = "gradcam unavailable: card names Grad-CAM layer '写真.🚀 100%', which the model does not have"
            assert note in unquote(response.headers["x-synthdetect-notes-utf8"]).split(" | ")
            assert "card names Grad-CAM layer '??.? 100%'" in response.headers["x-synthdetect-notes"]  # as documented


def test_a_model_named_outside_ascii_still_explains(tmp_path):
    """Every explain call was a 500 (UnicodeEncodeError) for a model whose name latin-1 cannot write."""
    root = write_tiny_cnn(tmp_path / "pkg")
    card = json.loads((root / "model.json").read_text())
    (root / "model.json").write_text(json.dumps({**card, "name": "modèle-写真"}, ensure_ascii=False))
    with TestClient(create_app(Detector.load(str(root)))) as client:
        response = client.post("/v1/explain", content=png_bytes(), params={"map": "ela"},
                               headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text
        assert unquote(response.headers["x-synthdetect-model-utf8"]) == "modèle-写真"
        assert response.headers["x-synthdetect-model"] == "mod?le-??"  # ASCII, as RFC 9110 has senders write


def test_a_compressed_body_is_refused_for_its_coding_not_called_not_an_image(client):
    """A gzip body was judged as it came: 415 not_an_image "upload: not an image (unrecognised data)"."""
    response = client.post("/v1/detect", content=gzip.compress(png_bytes()),
                           headers={"content-type": "image/png", "content-encoding": "gzip"})
    assert response.status_code == 415, response.text
    assert response.json()["error"]["kind"] == "unsupported_media_type"
    assert "Content-Encoding 'gzip'" in response.json()["error"]["message"]
    response = client.post("/v1/detect", content=png_bytes(),
                           headers={"content-type": "image/png", "content-encoding": "identity"})
    assert response.status_code == 200, response.text


def test_a_browsers_escaped_quote_in_a_file_name_is_read_back():
    """Browsers send a '"' in a file name as %22 (and CR, LF as %0D, %0A): the web page's upload of 'my "best".png'
    was reported as 'my %22best%22.png'. Other percent signs belong to the name."""
    def named(filename: bytes) -> bytes:
        return (b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n\r\n'
                + png_bytes() + b"\r\n--XyZ--\r\n")

    assert parts_of(named(b"my %22best%22.png"), 11) == [('my "best".png', png_bytes())]
    assert parts_of(named(b"100%25 %41 a%0Ab.png"), 11) == [("100%25 %41 a?b.png", png_bytes())]


def test_a_base64_part_is_decoded():
    """MIME writers (Python's email package, mail-style clients) send Content-Transfer-Encoding: base64; the part was
    judged as its base64 text ('not an image (the file contains text)')."""
    import base64

    encoded = base64.encodebytes(png_bytes(seed=2))  # with a line break every 76 characters
    part = (b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r\n--XyZ--\r\n")
    assert parts_of(part, 9) == [("a.png", png_bytes(seed=2))]
    with pytest.raises(ServiceError, match=r"part 'files' says base64 but is not"):
        parts_of(part.replace(encoded[:8], b"*&^%$#@!"), 9)


def test_a_body_with_lf_line_ends_is_told_so():
    """Hand-made bodies (a shell heredoc, some scripts) end lines with LF alone: python-multipart's 400 said
    "Did not find CR at end of boundary (10)", which names a byte code, not the mistake."""
    def body(eol: bytes) -> bytes:
        head = b'--XyZ' + eol + b'Content-Disposition: form-data; name="files"; filename="a.png"' + eol + eol
        return head + png_bytes() + eol + b"--XyZ--" + eol

    for chunk_size in (1, 5, 6, 200):
        with pytest.raises(ServiceError, match=r"its lines end with LF alone; multipart/form-data needs CRLF"):
            parts_of(body(b"\n"), chunk_size)
        assert parts_of(body(b"\r\n"), chunk_size) == [("a.png", png_bytes())]
    assert parts_of(b"preamble\r\n--XyZ--\r\n", 3) == []


def test_a_file_sent_in_a_field_of_another_name_is_judged_and_text_fields_are_named(client):
    """``curl -F 'image=<x.png'`` (no file name, no type, not the files field) was dropped without a word when the
    request held another image too; alone it was a 422. Binary bytes are an upload whatever the field's name."""
    image_field = b'--XyZ\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + png_bytes(seed=3) + b"\r\n"
    caption = b'--XyZ\r\nContent-Disposition: form-data; name="caption"\r\n\r\nmy cat \xe7\x8c\xab\r\n'
    named = (b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
             + png_bytes(seed=4) + b"\r\n")
    response = client.post("/v1/detect", content=named + image_field + caption + b"--XyZ--\r\n", headers=MULTIPART)
    assert response.status_code == 200, response.text
    verdicts = response.json()["verdicts"]
    assert [v["file"] for v in verdicts] == ["a.png", "upload-2"] and not any(v["error"] for v in verdicts)
    alone = client.post("/v1/detect", content=png_bytes(seed=3), headers={"content-type": "image/png"}).json()
    assert verdicts[1]["p_ai"] == alone["verdicts"][0]["p_ai"]
    assert parts_of(image_field + b"--XyZ--\r\n", 7) == [("upload-1", png_bytes(seed=3))]

    response = client.post("/v1/detect", content=caption + b"--XyZ--\r\n", headers=MULTIPART)
    assert response.status_code == 422 and response.json()["error"]["kind"] == "no_files", response.text
    message = response.json()["error"]["message"]
    assert "'caption' (10 bytes) hold text" in message and "'files'" in message


def test_openapi_documents_raw_octet_stream_bodies_and_the_explain_headers(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/detect", "/v1/explain"):
        operation = spec["paths"][path]["post"]
        bodies = set(operation["requestBody"]["content"])
        assert {"multipart/form-data", "image/*", "application/octet-stream"} <= bodies
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        name = next(p for p in operation["parameters"] if p["name"] == "name")
        assert "Content-Disposition" in name["description"]
    documented = {h.lower() for h in spec["paths"]["/v1/explain"]["post"]["responses"]["200"]["headers"]}
    response = client.post("/v1/explain", content=png_bytes(), params={"map": "ela"},
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert documented == {h for h in response.headers if h.startswith("x-synthdetect-")}


def test_a_malformed_body_leaves_only_json_lines_in_the_serve_log(detector, capsys):
    """``serve`` logged python-multipart's "WARNING ... Did not find CR at end of boundary (5)" between its JSON lines
    (a client could write a line of text into the log with each malformed body)."""
    import logging

    from synthdetect.server.commands import _request_logger

    loggers = [logging.getLogger(name) for name in ("", "synthdetect.server", "python_multipart")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        _request_logger()
        logging.basicConfig(force=True)  # the CLI configures the root logger, which python-multipart's warnings reach
        with TestClient(create_app(detector)) as client:
            body = b'--XyZ  \r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\nxx\r\n--XyZ--\r\n'
            response = client.post("/v1/detect", content=body, headers=MULTIPART)
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    assert response.status_code == 400, response.text
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["bad_multipart"], lines


def test_openapi_describes_what_v1_models_returns(client):
    """/v1/models was documented as any JSON object; the page and clients read its limits."""
    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    models = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    body = client.get("/v1/models").json()
    assert set(models["properties"]) == set(body)
    limits = spec["components"]["schemas"][models["properties"]["limits"]["$ref"].rsplit("/", 1)[-1]]
    assert set(limits["properties"]) == set(body["limits"])


@pytest.fixture
def served(detector):
    """The app behind ``serve``'s own uvicorn protocol, on a free loopback port."""
    import threading

    import uvicorn

    from synthdetect.server.commands import listen_socket, silent_connection_protocol

    sock = listen_socket("127.0.0.1", 0)
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(create_app(detector), http=silent_connection_protocol(),
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_request_http_cannot_parse_gets_the_json_error_body(served):
    """``curl 'http://.../v1/detect?name=写真.jpg'`` sends the name as raw UTF-8: uvicorn answered a plain-text
    "Invalid HTTP request received.", where every other error of the service is JSON."""
    import socket

    with socket.create_connection(("127.0.0.1", served), timeout=10) as conn:
        conn.sendall("POST /v1/detect?name=写真.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), answer
    error = json.loads(body)["error"]
    assert error["kind"] == "bad_request" and "percent-encoded" in error["message"], error
