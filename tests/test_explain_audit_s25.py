"""Audit of explanations (session 25): map failures the service shows without the server's text; what
`synthdetect explain` says when a map cannot be made, a routed model fails mid-batch, ``-o`` ends in a slash or
names a folder nothing can be written in; and an occlusion budget that counts batched calls."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import synthdetect.explain as explain_module
import synthdetect.explain.maps as maps
from synthdetect.api import Detector
from synthdetect.cli import app
from synthdetect.explain import explain
from synthdetect.models import ModelPackageError
from synthdetect.server.app import create_app

from test_explain import CARD, NumpyRedness, red_square_png
from tiny_model import png_bytes, write_tiny_cnn

SERVER_TEXT = "Load model from /srv/models/pkg/model.onnx failed"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")


@pytest.fixture
def failing_gradcam(monkeypatch):
    def gradcam_map(*_args, **_kwargs):
        raise RuntimeError(SERVER_TEXT)

    monkeypatch.setattr(maps, "gradcam_map", gradcam_map)


def _with_card(package: Path, root: Path, **fields) -> Path:
    """A copy of the tiny package whose card has ``fields`` added (the card is not among the hashed files)."""
    root.mkdir()
    for file in package.iterdir():
        (root / file.name).write_bytes(file.read_bytes())
    card = json.loads((root / "model.json").read_text())
    (root / "model.json").write_text(json.dumps({**card, **fields}, ensure_ascii=False))
    return root


def test_a_failed_map_tells_the_service_client_its_type_and_request_id_not_the_text(
        package, failing_gradcam, caplog, monkeypatch):
    """Was "gradcam failed: RuntimeError: Load model from /srv/models/pkg/model.onnx failed" in the 422 message,
    the X-Synthdetect-Notes headers and the figure's caption, and a many-line traceback in the log without the
    request id. Now the map, the exception type and the request id, as a model failure in /v1/detect; the whole
    text and the traceback are one JSON line of the log under that id."""
    from matplotlib.figure import Figure

    drawn: list[str] = []
    original = Figure.text
    monkeypatch.setattr(Figure, "text", lambda self, x, y, s, *a, **k: (drawn.append(s), original(self, x, y, s, *a,
                                                                                                        **k))[1])
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(Detector.load(str(package)))) as client:
        refused = client.post("/v1/explain", content=png_bytes(), params={"map": "gradcam", "name": "a.png"},
                              headers={"content-type": "image/png"})
        figure = client.post("/v1/explain", content=png_bytes(), params={"map": "figure", "name": "a.png"},
                             headers={"content-type": "image/png"})
    assert refused.status_code == 422, refused.text
    request_id = refused.json()["request_id"]
    assert refused.json()["error"]["message"] == (
        f"gradcam failed (RuntimeError); the service log has the details under request id {request_id}")
    assert figure.status_code == 200, figure.text
    said = (f"gradcam failed (RuntimeError); the service log has the details under request id "
            f"{figure.headers['x-request-id']}")
    assert said in figure.headers["x-synthdetect-notes"].split(" | ")
    assert said in " ".join(" ".join(drawn).split())  # the caption of the picture sent
    assert "/srv/" not in refused.text + str(figure.headers) + " ".join(drawn)
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "synthdetect.server"]
    failures = [line for line in logged if line["event"] == "map_failed"]
    assert [line["id"] for line in failures] == [request_id, figure.headers["x-request-id"]]
    assert failures[0]["file"] == "a.png" and failures[0]["map"] == "gradcam"
    assert failures[0]["error"] == f"RuntimeError: {SERVER_TEXT}" and SERVER_TEXT in failures[0]["traceback"]
    # The traceback is in that line, not many lines of its own at warning level.
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]


def test_a_failed_map_is_a_note_on_the_command_line_and_its_traceback_only_with_verbose(failing_gradcam, caplog):
    """A map that raised had its traceback logged as a warning: `synthdetect explain` printed 15 lines of it
    above the verdict. The note says what failed; -v (debug) still shows where."""
    caplog.set_level(logging.DEBUG)
    ex = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["gradcam"])
    assert ex.notes[-1] == f"gradcam failed: RuntimeError: {SERVER_TEXT}"
    [failure] = ex.failures
    assert (failure.method, failure.error_type, failure.note) == ("gradcam", "RuntimeError", ex.notes[-1])
    assert "Traceback" in failure.traceback
    records = [r for r in caplog.records if r.name == "synthdetect.explain"]
    assert records and all(r.levelno == logging.DEBUG for r in records)


def test_a_card_naming_a_layer_with_no_image_grid_is_told_to_name_a_convolution(package, tmp_path):
    """A card whose explain.gradcam_layer named the Linear head got "gradcam failed: IndexError: tuple index out
    of range" (and its traceback)."""
    root = _with_card(package, tmp_path / "head", explain={"gradcam_layer": "head.2"})
    ex = explain(Detector.load(str(root)), png_bytes(), methods=["gradcam"])
    assert ex.gradcam is None and not ex.failures
    assert ex.notes[-1] == ("gradcam unavailable: Grad-CAM layer 'head.2' of tiny-cnn gives no map of the image "
                            "(its output has no height and width); name a convolution in the card's "
                            "explain.gradcam_layer")


class OnnxOnly(NumpyRedness):
    """Stands for an ONNX-served small-cnn whose package lists no torch weights."""

    onnx_path = "/models/pkg/model.onnx"


def test_grad_cam_of_an_onnx_model_without_torch_weights_says_so():
    """Was "Grad-CAM needs a differentiable torch model; tiny-cnn is kind 'small-cnn' (see the occlusion map)": a
    torch kind, and with --method gradcam no occlusion map to see."""
    model = OnnxOnly({**CARD, "kind": "small-cnn", "files": {"onnx": {"path": "model.onnx"}}})
    ex = explain(Detector(model, use_evidence=False), red_square_png(), methods=["gradcam"])
    assert ex.notes[-1] == ("gradcam unavailable: Grad-CAM needs the gradients of a torch model; redness runs on "
                            "ONNX Runtime, which has none, and its package lists no torch weights to load instead "
                            "(occlusion works for every model)")
    plain = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["gradcam"])
    assert "redness is kind 'test' (occlusion works for every model)" in plain.notes[-1]


def test_a_routed_model_failing_to_load_mid_batch_keeps_the_rows_already_explained(package, tmp_path, monkeypatch):
    """A routed model loads with its first image. When it could not, `explain ... --json` printed nothing: the
    error went up to the one-line handler and the rows of the images already explained were lost."""
    for seed in range(3):
        (tmp_path / f"img{seed}.png").write_bytes(png_bytes(seed=seed))
    real, calls = explain_module.explain, []

    def second_fails(detector, source, **kwargs):
        calls.append(source)
        if len(calls) == 2:
            raise ModelPackageError("wild-v3: weight file missing: /opt/models/wild-v3/heads.npz")
        return real(detector, source, **kwargs)

    monkeypatch.setattr(explain_module, "explain", second_fails)
    result = CliRunner().invoke(app, ["-q", "explain", *(str(tmp_path / f"img{seed}.png") for seed in range(3)),
                                      "-o", str(tmp_path / "why"), "-m", str(package), "--method", "ela", "--json"])
    assert result.exit_code == 2, result.output
    assert [row["file"] for row in json.loads(result.stdout)] == [str(tmp_path / "img0.png")]
    assert " ".join(result.stderr.split()) == (
        f"error: wild-v3: weight file missing: /opt/models/wild-v3/heads.npz; 1 of 3 images done (0 failed), their "
        f"pictures written in {tmp_path / 'why'}; the other 2 were not explained")


def test_an_output_ending_in_a_slash_is_a_folder_for_one_image_too(package, tmp_path):
    """`explain a.png -o why/` was refused: "-o why: cannot write a '(no suffix)' image" (the slash was dropped)."""
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    for out in ("why/", "why.v2/"):
        result = CliRunner().invoke(app, ["-q", "explain", str(image), "-o", f"{tmp_path}/{out}",
                                          "-m", str(package), "--method", "ela"])
        assert result.exit_code == 0, result.output
        assert [p.name for p in (tmp_path / out).iterdir()] == ["a.why.png"]
    result = CliRunner().invoke(app, ["-q", "explain", str(image), "-o", str(tmp_path / "one.png"),
                                      "-m", str(package), "--method", "ela"])
    assert result.exit_code == 0 and (tmp_path / "one.png").is_file()  # no slash: the picture, as before


class CallOverhead(NumpyRedness):
    """Each call costs 1 s of a fake clock whatever its batch, and 10 ms more per image: a model whose per-call
    overhead dominates, as a small CNN's did on a busy machine (140 ms a call, 8 ms an image in a batch of 16)."""

    batch_size = 16
    clock = 0.0

    def logits(self, images):
        CallOverhead.clock += 1.0 + 0.01 * len(images)
        return super().logits(images)


def test_the_occlusion_budget_counts_the_images_a_batched_call_scores_not_one_call_per_window(monkeypatch):
    """The map sends 16 windows per call, but its cost was estimated at one call per window: 226 windows of this
    model were taken for 228 s, and the map was cut to a 4x4 grid "to fit 60 s", though the 8x8 grid takes 17 s."""
    from types import SimpleNamespace

    from synthdetect.explain import explain_loaded
    from synthdetect.images import load_image

    monkeypatch.setattr(explain_module, "time", SimpleNamespace(perf_counter=lambda: CallOverhead.clock))
    detector = Detector(CallOverhead(dict(CARD)), use_evidence=False)
    image = load_image(red_square_png())
    verdict = detector.judge_loaded([(image.source, image)])[0]
    verdict = replace(verdict, timing_ms={**verdict.timing_ms, "model": 1010.0})  # one image, one call
    started = CallOverhead.clock
    ex = explain_loaded(detector, image, methods=["occlusion"], verdict=verdict, grid=8, occlusion_budget_s=60)
    assert ex.occlusion is not None and not any("grid to fit" in note for note in ex.notes), ex.notes
    assert CallOverhead.clock - started < 60  # the whole grid did fit: 15 calls, and the 3 that timed them


def test_an_enormous_grid_is_coarsened_at_once_not_one_value_at_a_time():
    """`--grid 1000000000` tried each grid from there down (10 million took 9.5 s) before the map began; past the
    image's long side the windows are the same."""
    from synthdetect.explain import affordable_grid

    assert affordable_grid((512, 341), 10**12, model_ms=1230, budget_s=15) == 2
    assert affordable_grid((64, 64), 10**12, model_ms=1, budget_s=60) == 10**12  # fits as asked: kept


def test_a_folder_no_picture_can_be_written_in_is_refused_before_any_map(package, tmp_path, monkeypatch):
    """`-o /sys/why.png`, or a batch into a read-only folder, computed every map and then failed each picture with
    "Permission denied". Permission bits do not tell (root, read-only mounts): a file is tried, so here the try
    is made to fail as /sys does."""
    from types import SimpleNamespace

    def denied(*_args, **kwargs):
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir")))

    def no_maps(*_args, **_kwargs):
        raise AssertionError("a map was computed")

    monkeypatch.setattr(explain_module, "tempfile", SimpleNamespace(TemporaryFile=denied))
    monkeypatch.setattr(explain_module, "explain", no_maps)
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    one = CliRunner().invoke(app, ["-q", "explain", str(image), "-o", str(tmp_path / "why.png"), "-m", str(package)])
    assert one.exit_code == 2, one.output
    assert " ".join(one.stderr.split()) == (
        f"error: -o {tmp_path / 'why.png'}: cannot write in the folder {tmp_path} (Permission denied)")
    many = CliRunner().invoke(app, ["-q", "explain", str(image), str(image), "-o", str(tmp_path / "why"),
                                    "-m", str(package)])
    assert many.exit_code == 2, many.output
    assert " ".join(many.stderr.split()) == (
        f"error: -o {tmp_path / 'why'}: cannot write in this folder (Permission denied)")
    assert not (tmp_path / "why.png").exists()


def test_grad_cam_of_a_one_colour_image_is_not_a_frame_painted_as_evidence(package, tmp_path):
    """A card that accepts flat images (input.two_colour_images) had Grad-CAM of a plain grey square scaled to its
    peak: the model's zero-padded edges drawn as a bright frame of "regions pushing toward human"."""
    card_input = json.loads((package / "model.json").read_text())["input"]
    detector = Detector.load(str(_with_card(package, tmp_path / "flat", input={**card_input,
                                                                                "two_colour_images": True})))
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    ex = explain(detector, buffer.getvalue(), methods=["gradcam", "occlusion"])
    assert ex.verdict.ok and ex.model == "tiny-cnn" and ex.gradcam is None
    assert ("gradcam unavailable: the image is one colour: no region differs from another, and Grad-CAM would "
            "show only the model's own edge effects") in ex.notes
    assert ex.occlusion is not None and not ex.occlusion.any()  # occlusion has nothing to blur, and says it is flat
    assert explain(detector, png_bytes(), methods=["gradcam"]).gradcam is not None  # a picture still gets its map
