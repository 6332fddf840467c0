"""The web page's own faults, each driven in headless Chromium against a stub service (no model, no server).

Skips without Chromium or Playwright, like tests/test_e2e_browser.py.  One browser serves every test here.
"""

from __future__ import annotations

import pytest

from test_e2e_browser import CHROMIUM, CHROMIUM_ARGS, STUB_ORIGIN, _need_browser, _serve_page_files
from tiny_model import png_bytes


LIMITS = {"max_files": 16, "max_body_bytes": 64 << 20, "max_file_bytes": 32 << 20}


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _open(browser, answer, models=None):
    """A page of the stub service: ``answer(route, path)`` answers /v1/*, ``models`` /v1/models."""
    page = browser.new_page()

    def handle(route):
        if not _serve_page_files(route, models):
            answer(route, route.request.url.removeprefix(STUB_ORIGIN))

    page.route(STUB_ORIGIN + "/**", handle)
    page.goto(STUB_ORIGIN + "/")
    return page


def _verdict(name: str, **extra) -> dict:
    return {"file": name, "label": "human", "p_ai": 0.1, "reasons": ["stub reason"], "evidence": [], "error": None,
            **extra}


def _choose(page, *names: str, data: bytes | None = None) -> None:
    page.get_by_label("Choose images").set_input_files(
        [{"name": n, "mimeType": "image/png", "buffer": data or png_bytes(seed=3)} for n in names])


def test_heatmap_of_an_image_the_browser_cannot_preview_is_shown_and_focus_stays_on_its_button(browser):
    """A TIFF is judged, but Chromium cannot show it: its thumbnail hides.  The heatmap (a PNG) stayed hidden with it,
    and the button, disabled while it waited, threw keyboard focus back to the top of the page."""
    from playwright.sync_api import expect

    def answer(route, path):
        if path.startswith("/v1/explain"):
            route.fulfill(body=png_bytes(seed=5), content_type="image/png", headers={"x-synthdetect-map": "ela"})
        else:
            route.fulfill(json={"verdicts": [_verdict("scan.tif")]})

    page = _open(browser, answer)
    page.get_by_label("Choose images").set_input_files(
        [{"name": "scan.tif", "mimeType": "image/tiff", "buffer": b"II*\x00" + bytes(64)}])
    result = page.locator(".result")
    expect(result.locator(".map-caption")).to_have_text("No preview: the browser cannot display this file.")
    expect(result.locator(".thumb")).to_be_hidden()
    result.get_by_role("button", name="Show heatmap").focus()
    page.keyboard.press("Enter")
    shown = result.get_by_role("button", name="Show original")
    expect(shown).to_have_attribute("aria-pressed", "true")
    expect(result.locator(".thumb")).to_be_visible()
    expect(result.locator(".thumb")).to_have_attribute("alt", "Heatmap over scan.tif")
    expect(shown).to_be_focused()
    page.keyboard.press("Enter")  # still the button's: back to the (unshowable) original, and its placeholder
    expect(result.get_by_role("button", name="Show heatmap")).to_have_attribute("aria-pressed", "false")
    expect(result.locator(".thumb")).to_be_hidden()
    expect(result.locator(".map-caption")).to_have_text("No preview: the browser cannot display this file.")
    page.close()


def test_a_file_that_got_no_verdict_is_not_said_to_be_unreadable(browser):
    """A timeout, an unreadable answer or a file left out of the answer failed a good image too: the card said
    "the file could not be read as an image", gave "200 OK" as the reason, or stayed "judging..." for ever."""
    from playwright.sync_api import expect

    answers = iter([
        lambda r: r.fulfill(status=504, json={"error": {"status": 504, "kind": "timeout",
                                                        "message": "nothing judged within 30 s"}}),
        lambda r: r.fulfill(status=200, body="{", content_type="application/json"),
        lambda r: r.fulfill(json={"verdicts": [_verdict("first.png")]}),
    ])
    page = _open(browser, lambda route, path: next(answers)(route))
    for names, status in [(["slow.png"], "Checked 1 image; 1 could not be judged."),
                          (["cut.png"], "Checked 1 image; 1 could not be judged."),
                          (["first.png", "second.png"], "Checked 2 images; 1 could not be judged.")]:
        _choose(page, *names)
        expect(page.locator("#status")).to_have_text(status)
    expect(page.locator(".evidence", has_text="could not be read as an image")).to_have_count(0)
    card = lambda name: page.locator(".result", has_text=name)  # noqa: E731
    expect(card("slow.png").locator(".evidence")).to_have_text("Not examined: this file got no verdict (see why above).")
    expect(card("cut.png").locator(".reasons")).to_have_text("the server's answer (200 OK) could not be read; try again")
    expect(card("second.png").locator(".label-badge")).to_have_text("Could not judge")
    expect(card("second.png").locator(".reasons")).to_have_text(
        "second.png: the server sent no verdict for this file; try again")
    expect(card("first.png").locator(".label-badge")).to_have_attribute("data-label", "human")
    page.close()


@pytest.mark.parametrize(("models", "expected"), [
    (lambda r: r.abort("connectionrefused"),
     "Model information unavailable: could not reach the server; reload the page to try again."),
    (lambda r: r.fulfill(status=500, json={"error": {"status": 500, "kind": "internal", "message": "internal error"}}),
     "Model information unavailable: internal error."),
    (lambda r: r.fulfill(json={"loaded": {"name": "stub", "version": "1", "kind": "small-cnn"},
                               "limits": {**LIMITS, "max_file_bytes": 300_000}}),
     "Model: stub 1 (small-cnn). Up to 16 images per request, 293 kB each."),
], ids=["unreachable", "error-500", "small-file-limit"])
def test_model_line_says_what_went_wrong_in_words_and_small_limits_are_not_zero(browser, models, expected):
    """Was "TypeError: Failed to fetch", "TypeError: Cannot read properties of undefined", and "0 MB each"."""
    from playwright.sync_api import expect

    page = _open(browser, lambda route, path: route.abort(), models=models)
    expect(page.locator("#model-line")).to_have_text(expected)
    page.close()


def test_a_right_to_left_override_in_a_name_does_not_reverse_the_reason(browser):
    """U+202E in a name (kept by the server: it is not a control character) reordered the rest of the reason line
    after the name; the name now sits in a <bdi>, and the reason stays text, never HTML."""
    from playwright.sync_api import expect

    name = "photo\u202egnp.exe<b>x</b>.png"
    reason = f"{name}: not an image (unrecognised data)"

    def answer(route, path):
        route.fulfill(status=415, json={"error": {"status": 415, "kind": "not_an_image", "message": reason},
                                        "verdicts": [{**_verdict(name), "label": None, "p_ai": None,
                                                      "reasons": [], "error": reason}]})

    page = _open(browser, answer)
    _choose(page, name)
    item = page.locator(".result .reasons li")
    expect(item).to_have_text(reason)
    expect(item.locator("bdi")).to_have_text(name)
    assert item.evaluate("li => [...li.childNodes].map((n) => n.nodeName)") == ["BDI", "#text"]
    assert page.locator(".result b").count() == 0
    page.close()


def test_keyboard_focus_stays_on_the_heatmap_button_while_the_map_is_made(browser):
    """The button was disabled while the map was made, and a disabled button loses focus: Enter, then Enter again,
    did nothing the second time (focus was on the page body)."""
    from playwright.sync_api import expect

    explained: list[str] = []

    def answer(route, path):
        if path.startswith("/v1/explain"):
            explained.append(path)
            route.fulfill(body=png_bytes(seed=5), content_type="image/png", headers={"x-synthdetect-map": "gradcam"})
        else:
            route.fulfill(json={"verdicts": [_verdict("cat.png")]})

    page = _open(browser, answer)
    _choose(page, "cat.png")
    result = page.locator(".result")
    result.get_by_role("button", name="Show heatmap").focus()
    page.keyboard.press("Enter")
    expect(result.get_by_role("button", name="Show original")).to_be_focused()
    page.keyboard.press("Enter")
    expect(result.get_by_role("button", name="Show heatmap")).to_have_attribute("aria-pressed", "false")
    assert explained == ["/v1/explain?map=auto"], "the map is made once and kept"
    page.close()


def test_status_says_checked_only_when_every_chosen_file_is_judged(browser):
    """Images chosen while others were still being judged: the first choice's answer said "Checked 1 image." over
    the second, still judging.  Answers are held here and given in the order the test says."""
    import re

    from playwright.sync_api import expect

    held: list = []
    page = _open(browser, lambda route, path: held.append(route))

    def give_next_answer() -> None:
        route = held.pop(0)
        names = re.findall(rb'filename="([^"]+)"', route.request.post_data_buffer)
        route.fulfill(json={"verdicts": [_verdict(n.decode()) for n in names]})

    _choose(page, "first.png")
    expect(page.locator("#status")).to_have_text("Checking 1 image\u2026")
    _choose(page, "second.png", "third.png")
    expect(page.locator("#status")).to_have_text("Checking 3 images\u2026")
    give_next_answer()
    expect(page.locator("#status")).to_have_text("Checking 3 images\u2026 1 done.")
    expect(page.locator(".label-badge", has_text="judging")).to_have_count(2)
    for _ in range(600):  # Playwright hands over the held request while the page runs
        if held:
            break
        page.wait_for_timeout(50)
    give_next_answer()
    expect(page.locator("#status")).to_have_text("Checked 3 images.")
    page.close()


def _drop(page, selector: str, files: list[tuple[str, bytes]], text: str | None = None) -> None:
    transfer = page.evaluate_handle("""([files, text]) => {
        const transfer = new DataTransfer();
        for (const [name, bytes] of files) transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
        if (text !== null) transfer.setData("text/uri-list", text);
        return transfer;
    }""", [[[name, list(data)] for name, data in files], text])
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_a_drop_outside_the_zone_is_judged_and_a_drop_without_files_says_so(browser):
    """Images dropped on the results (outside the dashed zone) were thrown away without a word, and so was a picture
    dragged from another web page (a link, no file)."""
    from playwright.sync_api import expect

    page = _open(browser, lambda route, path: route.fulfill(json={"verdicts": [_verdict("late.png")]}))
    _drop(page, "#results-heading", [], text="https://example.com/cat.jpg")
    expect(page.locator("#status")).to_contain_text("Nothing to check: only files can be dropped.")
    _drop(page, "#results-heading", [("late.png", png_bytes(seed=4))])
    expect(page.locator("#status")).to_have_text("Checked 1 image.")
    _drop(page, "#dropzone", [("late.png", png_bytes(seed=4))])  # in the zone: once, not twice
    expect(page.locator("#status")).to_have_text("Checked 1 image.")
    expect(page.locator(".result")).to_have_count(2)
    page.close()
