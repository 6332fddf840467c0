"""End to end: a real ``synthdetect serve`` process, driven by headless Debian Chromium through Playwright.

Playwright's Python package only drives the browser; it never downloads one
(``executable_path`` points at Debian's ``chromium``).  The test skips only
when that browser or the package is absent, unless ``SYNTHDETECT_REQUIRE_BROWSER=1``
(set in CI) turns the skip into a failure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tiny_model import png_bytes, write_tiny_cnn

CHROMIUM = os.environ.get("SYNTHDETECT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser() -> None:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright Python package is not installed (pip install '.[test]')"
    if problem is None and not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        problem = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if problem:
        if os.environ.get("SYNTHDETECT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {problem}")
        pytest.skip(problem)


@contextmanager
def chromium_page(patient: bool = False, **options):
    """A page of headless Debian Chromium, closed afterwards; ``patient`` gives generous ceilings for a loaded CI
    machine (a passing run takes a few seconds)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**options)
            if patient:
                page.set_default_timeout(60_000)
                expect.set_options(timeout=60_000)
            yield page
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                return json.load(response)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"server at {url} not healthy after {seconds} s")


@pytest.fixture
def server(tmp_path: Path):
    package = write_tiny_cnn(tmp_path / "tiny")
    port = _free_port()
    command = [sys.executable, "-m", "synthdetect.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--model", str(package), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()


@pytest.mark.slow
def test_upload_in_the_browser_shows_the_verdict(server: str, tmp_path: Path):
    _need_browser()
    from playwright.sync_api import expect

    image = tmp_path / "cat.png"
    image.write_bytes(png_bytes(seed=7))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    request = urllib.request.Request(server + "/v1/detect?name=cat.png", data=image.read_bytes(),
                                     headers={"content-type": "image/png"})
    with urllib.request.urlopen(request, timeout=60) as response:
        expected = json.load(response)["verdicts"][0]
    label_text = {"ai": "AI-generated", "human": "Human-made", "uncertain": "Uncertain"}[expected["label"]]

    with chromium_page(viewport={"width": 1100, "height": 800}, patient=True) as page:
        page.goto(server + "/")
        expect(page.locator("#model-line")).to_contain_text("tiny-cnn")
        # The picker is reachable by its label, as a screen reader would find it; several files at once.
        page.get_by_label("Choose images").set_input_files([str(broken), str(image)])
        expect(page.locator(".result")).to_have_count(2)
        failed = page.locator(".result", has_text="broken.png")
        expect(failed.locator(".label-badge")).to_have_text("Could not judge")
        expect(failed.locator(".reasons")).to_contain_text("not an image")
        # Drag and drop: the same path as the picker.
        drop = page.evaluate_handle("""(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            return transfer;
        }""", base64.b64encode(png_bytes(seed=8)).decode())
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
        dropped = page.locator(".result", has_text="dropped.png")
        expect(dropped.locator(".label-badge[data-label]")).to_have_count(1)

        result = page.locator(".result", has_text="cat.png")
        badge = result.locator(".label-badge[data-label]")
        expect(badge).to_have_attribute("data-label", expected["label"])
        expect(badge).to_contain_text(label_text)
        expect(badge).to_contain_text(f"p_ai {expected['p_ai']:.3f}")
        gauge = result.get_by_role("meter")
        expect(gauge).to_have_attribute("aria-valuenow", str(round(expected["p_ai"] * 1000) / 10).removesuffix(".0"))
        expect(result.locator(".reasons li").first).to_contain_text(expected["reasons"][0][:40])

        toggle = result.get_by_role("button", name="Show heatmap")
        toggle.focus()
        page.keyboard.press("Enter")  # keyboard usable, not only clickable
        expect(result.get_by_role("button", name="Show original")).to_have_attribute("aria-pressed", "true")
        expect(result.locator(".map-caption")).to_contain_text("Grad-CAM")
        assert result.locator(".thumb").get_attribute("src").startswith("blob:")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_page_splits_uploads_by_count_and_by_body_size():
    """The page's batching on its own, in the browser (no server): 16 phone photos must not make one 80 MB body."""
    _need_browser()

    from synthdetect.server.app import STATIC_DIR

    mb = 1024 * 1024
    with chromium_page() as page:
        page.set_content("<!doctype html><title>batching</title>")
        page.add_script_tag(content=(STATIC_DIR / "app.js").read_text())  # after load: sets up no page

        def plan(sizes: list[int], max_files: int = 16, max_bytes: int = 64 * mb) -> list[list[int]]:
            return page.evaluate("([sizes, maxFiles, maxBytes]) => planBatches("
                                 "sizes.map((size, i) => ({name: `IMG_${i}.jpg`, size})), maxFiles, maxBytes)",
                                 [sizes, max_files, max_bytes])

        phones = plan([5 * mb] * 16)
        assert [len(b) for b in phones] == [12, 4]  # 12 x 5 MB + framing fits under 64 MB, 13 would not
        assert [len(b) for b in plan([1000] * 40)] == [16, 16, 8]  # small files: by count, as before
        assert plan([10, 70 * mb, 10]) == [[0], [1], [2]]  # too big for any request: alone, in order
        assert plan([]) == []
        sizes = [(i * 7919) % (20 * mb) for i in range(60)]
        batches = plan(sizes, 5, 40 * mb)
        assert [i for b in batches for i in b] == list(range(60))
        for batch in batches:
            body = page.evaluate("(sizes) => requestBytes(sizes.map((size) => ({name: 'IMG_00.jpg', size})))",
                                 [sizes[i] for i in batch])
            assert len(batch) <= 5 and (body <= 40 * mb or len(batch) == 1)


STUB_ORIGIN = "http://synthdetect.test"


def _choose_on_stub_page(page, handle, files: list[dict]) -> None:
    """Open the page with ``handle`` answering for the stub service, and choose ``files`` in it."""
    from playwright.sync_api import expect

    page.route(STUB_ORIGIN + "/**", handle)
    page.goto(STUB_ORIGIN + "/")
    expect(page.locator("#model-line")).to_contain_text("stub")
    page.get_by_label("Choose images").set_input_files(files)


def _serve_page_files(route, models=None) -> bool:
    """Answer the page, its static files and /v1/models as the server would (``models(route)``, when given,
    answers /v1/models instead); False for any other path."""
    from synthdetect.server.app import STATIC_DIR

    path = route.request.url.removeprefix(STUB_ORIGIN)
    if path == "/":
        route.fulfill(body=(STATIC_DIR / "index.html").read_text(), content_type="text/html")
    elif path.startswith("/static/"):
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        route.fulfill(body=(STATIC_DIR / path.removeprefix("/static/")).read_text(), content_type=kind)
    elif path == "/v1/models" and models is not None:
        models(route)
    elif path == "/v1/models":
        route.fulfill(json={"loaded": {"name": "stub", "version": "1", "kind": "small-cnn"},
                            "limits": {"max_files": 16, "max_body_bytes": 64 << 20, "max_file_bytes": 32 << 20}})
    else:
        return False
    return True


def test_page_says_the_server_is_unreachable_and_never_renders_names_as_html():
    """No server: Playwright serves the page's files and refuses /v1/detect, as a server stopped mid-request would.

    The moderator reads a sentence, not "TypeError: Failed to fetch", the status counts the failure, and a file
    named like markup stays text.
    """
    _need_browser()
    from playwright.sync_api import expect

    def handle(route):
        if not _serve_page_files(route):
            route.abort("connectionrefused")

    hostile = "<img src=x onerror=alert(1)>.png"
    with chromium_page(viewport={"width": 375, "height": 800}) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        _choose_on_stub_page(page, handle, [{"name": hostile, "mimeType": "image/png", "buffer": png_bytes(seed=3)}])
        result = page.locator(".result")
        expect(result.locator(".label-badge")).to_have_text("Could not judge")
        expect(result.locator(".reasons")).to_contain_text("could not reach the server")
        expect(result.locator(".reasons")).not_to_contain_text("TypeError")
        expect(page.locator("#status")).to_have_text("Checked 1 image; 1 could not be judged.")
        expect(result.locator(".file-name")).to_have_text(hostile)
        assert result.locator(".file-name *").count() == 0 and page.locator("img[src='x']").count() == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll on a phone
        assert dialogs == []


@pytest.mark.slow
def test_a_file_the_browser_cannot_read_fails_alone_and_is_not_blamed_on_the_server(server: str, tmp_path: Path):
    """A file deleted after it was chosen (or a dropped folder) makes Chromium fail the whole upload with
    "Failed to fetch": its batch-mates are still judged, and the server, which answers, is not called unreachable."""
    _need_browser()
    from playwright.sync_api import expect

    good, gone = tmp_path / "good.png", tmp_path / "gone.png"
    good.write_bytes(png_bytes(seed=5))
    gone.write_bytes(png_bytes(seed=6))
    with chromium_page(patient=True) as page:
        page.goto(server + "/")
        expect(page.locator("#model-line")).to_contain_text("tiny-cnn")
        # A second picker without the page's change handler, so the file can vanish before the page sends it.
        page.evaluate("""() => {
            const input = Object.assign(document.createElement("input"), {type: "file", multiple: true});
            input.id = "held";
            document.body.append(input);
        }""")
        page.set_input_files("#held", [str(good), str(gone)])
        gone.unlink()
        page.evaluate("() => handleFiles(document.querySelector('#held').files)")
        expect(page.locator("#status")).to_have_text("Checked 2 images; 1 could not be judged.")
        failed = page.locator(".result", has_text="gone.png")
        expect(failed.locator(".label-badge")).to_have_text("Could not judge")
        expect(failed.locator(".reasons")).to_contain_text("gone.png: the browser could not read this file")
        judged = page.locator(".result", has_text="good.png").locator(".label-badge")
        expect(judged).to_have_attribute("data-label", re.compile("^(ai|human|uncertain)$"))


def test_page_waits_and_resends_when_the_server_is_busy():
    """503 busy comes with Retry-After: the page waits that long and sends the same files again."""
    _need_browser()
    from playwright.sync_api import expect

    sent: list[bytes] = []

    def handle(route):
        if _serve_page_files(route):
            return
        if route.request.url.removeprefix(STUB_ORIGIN) != "/v1/detect":
            route.abort("connectionrefused")
            return
        sent.append(route.request.post_data_buffer)
        if len(sent) < 3:
            route.fulfill(status=503, headers={"retry-after": "0"},
                          json={"error": {"status": 503, "kind": "busy", "message": "server busy; retry"}})
        else:
            route.fulfill(json={"verdicts": [{"file": "queued.png", "label": "human", "p_ai": 0.1,
                                              "reasons": ["stub reason"], "evidence": [], "error": None}]})

    with chromium_page() as page:
        _choose_on_stub_page(page, handle,
                             [{"name": "queued.png", "mimeType": "image/png", "buffer": png_bytes(seed=3)}])
        expect(page.locator("#status")).to_have_text("Checked 1 image.")
        expect(page.locator(".result .label-badge")).to_have_attribute("data-label", "human")
        expect(page.locator(".result .reasons")).to_have_text("stub reason")
    assert len(sent) == 3, "sent again after each 503"
    assert all(b'filename="queued.png"' in body and len(body) == len(sent[0]) for body in sent), "the same file"


def test_page_sends_large_photos_in_small_requests_so_results_come_as_they_are_made():
    """12 phone photos of 5 MB in one request outlived the server's 30 s timeout (default model, busy 2 cores)."""
    _need_browser()
    from playwright.sync_api import expect

    requests: list[list[str]] = []

    def handle(route):
        if _serve_page_files(route):
            return
        names = re.findall(rb'filename="([^"]+)"', route.request.post_data_buffer)
        requests.append([n.decode() for n in names])
        route.fulfill(json={"verdicts": [{"file": n.decode(), "label": "human", "p_ai": 0.1, "reasons": ["stub"],
                                          "evidence": [], "error": None} for n in names]})

    photo = b"\xff\xd8" + bytes(5 * 1024 * 1024)  # the page sends it as it is; only its size matters here
    files = [("big-1.jpg", photo), ("big-2.jpg", photo), ("small-1.png", png_bytes(seed=1)),
             ("small-2.png", png_bytes(seed=2)), ("big-3.jpg", photo)]
    with chromium_page(patient=True) as page:
        _choose_on_stub_page(page, handle,
                             [{"name": name, "mimeType": "image/jpeg", "buffer": data} for name, data in files])
        expect(page.locator("#status")).to_have_text("Checked 5 images.")
    # The server would take all five at once (64 MB); the page keeps each request near 8 MB, small files together.
    assert requests == [["big-1.jpg"], ["big-2.jpg", "small-1.png", "small-2.png"], ["big-3.jpg"]]


def test_heatmap_caption_shows_notes_outside_ascii_as_written():
    """The plain notes header can only say ``??.png``; the page reads the percent-encoded UTF-8 one."""
    _need_browser()
    from playwright.sync_api import expect

    note = "gradcam failed: RuntimeError: 写真.png: 100% 🚀"

    def handle(route):
        if _serve_page_files(route):
            return
        if route.request.url.startswith(STUB_ORIGIN + "/v1/explain"):
            route.fulfill(body=png_bytes(seed=5), content_type="image/png", headers={
                "x-synthdetect-map": "occlusion", "x-synthdetect-notes": note.encode("ascii", "replace").decode(),
                "x-synthdetect-notes-utf8": urllib.parse.quote(note)})
        else:
            route.fulfill(json={"verdicts": [{"file": "写真.png", "label": "human", "p_ai": 0.1,
                                              "reasons": ["stub reason"], "evidence": [], "error": None}]})

    with chromium_page() as page:
        _choose_on_stub_page(page, handle, [{"name": "写真.png", "mimeType": "image/png", "buffer": png_bytes(seed=3)}])
        result = page.locator(".result")
        result.get_by_role("button", name="Show heatmap").click()
        expect(result.locator(".map-caption")).to_contain_text(note)
