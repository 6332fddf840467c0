"""Audit of ``synthdetect explain`` (session 23): maps that claim no more than they show, notes never lost."""

from __future__ import annotations

import numpy as np

from synthdetect.api import Detector
from synthdetect.explain import explain
from synthdetect.images import load_image

from test_explain import CARD, NumpyRedness, red_square_png


class ScaledRedness(NumpyRedness):
    """NumpyRedness centred on the red square (logit 0, p_ai 0.5) times ``gain``: the same map, a tiny or a
    large effect on p_ai."""

    gain = 1.0

    def logits(self, images):
        return (super().logits(images) + 0.5) * self.gain


def scaled(gain: float) -> Detector:
    model = ScaledRedness(dict(CARD))
    model.gain = gain
    return Detector(model, use_evidence=False)


def painted(ex) -> int:
    """How far the occlusion overlay moves any pixel away from the image under it (0-255)."""
    picture = ex.overlay("occlusion")
    under = ex.image.repeat(picture.height // ex.image.shape[0], 0).repeat(picture.width // ex.image.shape[1], 1)
    return int(np.abs(np.asarray(picture).astype(int) - under.astype(int)).max())


def test_an_occlusion_map_of_negligible_effects_is_not_painted_as_strong_evidence():
    """Colours were scaled to the map's own extreme: blurring that moved p_ai by 0.00002 was painted bright red."""
    weak = explain(scaled(1e-4), red_square_png(), methods=["occlusion"])
    strong = explain(scaled(10.0), red_square_png(), methods=["occlusion"])
    # the same pattern: only the square's edges matter
    assert np.allclose(weak.occlusion / np.abs(weak.occlusion).max(), strong.occlusion / np.abs(strong.occlusion).max(),
                       atol=1e-3)
    assert painted(strong) > 80  # a real effect is still drawn at full strength
    assert painted(weak) <= 2  # the old overlay painted this one exactly as boldly (83 of 255) as the strong one
    assert weak.occlusion_shift is not None and weak.occlusion_shift < 0.001
    assert strong.occlusion_shift > 0.05
    assert "occlusion is flat: blurring any one region moved redness's p_ai by less than 0.001" in weak.notes
    assert not any(n.startswith("occlusion is flat") for n in strong.notes)
    assert weak.to_dict()["occlusion_p_ai_shift"] < 0.001


def test_the_occlusion_shift_is_in_calibrated_p_ai_not_raw_logits():
    """A temperature of 0.05 makes a raw logit change 20 times larger in log-odds; the shift follows p_ai."""
    plain = explain(scaled(0.05), red_square_png(), methods=["occlusion"])
    card = {**CARD, "calibration": {"method": "temperature", "temperature": 0.05}}
    model = ScaledRedness(card)
    model.gain = 0.05
    sharp = explain(Detector(model, use_evidence=False), red_square_png(), methods=["occlusion"])
    np.testing.assert_allclose(plain.occlusion, sharp.occlusion)  # the map is in raw logits either way
    assert sharp.occlusion_shift > 5 * plain.occlusion_shift


def test_the_figure_shows_every_note_not_only_the_first_two(monkeypatch):
    """A figure kept two notes and five lines: here the third, that occlusion ran on a coarser grid, was dropped."""
    from matplotlib.figure import Figure

    drawn: list[str] = []
    original = Figure.text
    monkeypatch.setattr(Figure, "text", lambda self, x, y, s, *a, **k: (drawn.append(s), original(self, x, y, s, *a,
                                                                                                        **k))[1])
    ex = explain(scaled(10.0), red_square_png(), methods=["ela"])
    ex.notes += ["maps computed on a 512x384 copy of the 4000x3000 image",
                 "gradcam unavailable: Grad-CAM needs a differentiable torch model; redness is kind 'test'",
                 "occlusion on a 3x3 grid to fit 60 s (redness takes about 2.10 s per call)",
                 "occlusion is flat: blurring any one region moved redness's p_ai by less than 0.001"]
    plain = ex.figure()
    text = " ".join(" ".join(drawn).split())
    for note in ex.notes:
        assert note in text, note
    ex.notes[:] = ex.notes[:1]
    assert plain.height > ex.figure().height  # the caption's area grew to hold them


def test_what_loading_did_to_the_picture_is_said_beside_the_maps():
    """An animated GIF is judged and explained on its first frame; that was only in the verdict's JSON."""
    import io

    from PIL import Image

    frames = [Image.open(io.BytesIO(red_square_png())).convert("RGB"), Image.new("RGB", (32, 32), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    ex = explain(scaled(10.0), buffer.getvalue(), methods=["ela"])
    assert ex.verdict.image["notes"] == ["2 frames; judged the first"]
    assert "2 frames; judged the first" in ex.notes


def test_a_strip_is_not_shrunk_below_the_smallest_side_the_model_judges():
    """An 8x2000 strip (judged by a model that takes any aspect) had its maps made on a 2x512 copy, which the
    model would refuse (it needs 8 px): the maps explained an image it could not have scored."""
    from PIL import Image

    card = {**CARD, "input": {**CARD["input"], "max_aspect": 1000.0}}
    model = ScaledRedness(card)
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 8, 3), dtype=np.uint8))
    ex = explain(Detector(model, use_evidence=False), strip, methods=["occlusion", "ela"])
    assert ex.verdict.models and ex.model == "redness"  # the model judged the strip
    assert min(ex.image.shape[:2]) >= 8, ex.notes
    assert model.out_of_domain(load_image(Image.fromarray(ex.image))) is None
    assert ex.occlusion.shape == ex.image.shape[:2] == ex.ela.shape[:2]


def run_cli(*args):
    from typer.testing import CliRunner

    from synthdetect.cli import app

    return CliRunner().invoke(app, ["explain", *map(str, args)])


def test_cli_takes_format_json_as_detect_does(tmp_path, monkeypatch):
    """``detect -f json`` is the grammar; ``explain -f json`` answered "No such option: -f"."""
    import json

    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, *a, **k: scaled(10.0)))
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    result = run_cli(photo, "-o", tmp_path / "why.png", "--method", "ela", "-f", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == {"figure": str(tmp_path / "why.png")} and summary["model"] == "redness"


def test_an_output_under_a_file_is_not_called_a_missing_folder(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    result = run_cli(photo, "-o", photo / "why.png", "--model", tmp_path / "no-such-model")
    assert result.exit_code == 2
    assert f"folder {photo} is a file, not a folder" in result.stderr, result.stderr  # was "does not exist"


def test_grad_cam_explains_the_models_own_answer_when_provenance_decided():
    """Generator metadata made the verdict ``ai`` while the model said human (p_ai 0.003): Grad-CAM was drawn
    toward AI, the model's faint AI evidence scaled to full brightness under an "AI" headline."""
    from dataclasses import replace

    from synthdetect.explain import explain_loaded
    from synthdetect.models.torch_kinds import TorchModel

    from test_explain import Redness

    # calibrated so the red square scores p_ai about 0.007: the model says human
    card = {**CARD, "decision": {"ai_at_or_above": 0.9, "human_below": 0.1},
            "calibration": {"method": "platt", "a": 1.0, "b": -5.0}}
    model = TorchModel(card, Redness())
    detector = Detector(model, use_evidence=False)
    image = load_image(red_square_png())
    own = detector.judge_loaded([(image.source, image)])[0]
    assert own.label == "human", own.reasons
    by_provenance = replace(own, label="ai", p_ai=1.0, reasons=["C2PA manifest declares trainedAlgorithmicMedia",
                                                                 f"model redness p_ai {own.p_ai:.3f} (disagrees; "
                                                                 "provenance decides)"])
    ex = explain_loaded(detector, image, methods=["gradcam"], verdict=by_provenance)
    assert ex.target == "human"  # the old code explained toward AI, which the model never said
    assert any(n.startswith("the verdict ai is not redness's: alone it says human") for n in ex.notes), ex.notes
    agreeing = explain_loaded(detector, image, methods=["gradcam"], verdict=replace(by_provenance, label="human",
                                                                                    p_ai=0.0))
    assert agreeing.target == "human" and not any("is not redness's" in n for n in agreeing.notes)


class Failing(NumpyRedness):
    def logits(self, images):
        raise RuntimeError("CUDA out of memory")


def test_a_model_that_failed_on_the_image_gets_no_map_and_the_cli_says_so(tmp_path, monkeypatch):
    """The model failed, so there was no verdict; the CLI printed "photo.png: None", exit status 0, wrote a figure,
    and logged a traceback from the occlusion map it still tried to make."""
    ex = explain(Detector(Failing(dict(CARD)), use_evidence=False), red_square_png(), name="photo.png")
    assert not ex.verdict.ok and ex.gradcam is None and ex.occlusion is None and ex.ela is not None
    assert "no model map: no verdict to explain (photo.png: model failed (RuntimeError: CUDA out of memory))" \
        in ex.notes, ex.notes
    ex.figure()  # still draws: the original, ELA, and the error

    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, *a, **k: Detector(Failing(dict(CARD)),
                                                                                      use_evidence=False)))
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    result = run_cli(photo, "-o", tmp_path / "why.png")
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == f"error: {photo}: model failed (RuntimeError: CUDA out of memory)"
    assert result.stdout == "" and not (tmp_path / "why.png").exists()


CORNER = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)


class NanWhenTheCornerIsBlurred(ScaledRedness):
    """A model that breaks (NaN) on some inputs: here any copy whose detailed bottom-right corner was blurred."""

    gain = 1e-4  # elsewhere the map is negligible

    def logits(self, images):
        out = np.asarray(super().logits(images), dtype=np.float64)
        broken = [not np.array_equal(np.asarray(image.rgb)[28:, 28:], CORNER) for image in images]
        return np.where(broken, np.nan, out)


def test_windows_the_model_could_not_score_are_not_called_flat():
    """NaN scores became zeros in the map: those windows looked like "no effect" and nothing said otherwise."""
    from PIL import Image

    pixels = np.asarray(Image.open(__import__("io").BytesIO(red_square_png()))).copy()
    pixels[28:, 28:] = CORNER
    ex = explain(Detector(NanWhenTheCornerIsBlurred(dict(CARD)), use_evidence=False), Image.fromarray(pixels),
                 methods=["occlusion"])
    assert ex.occlusion is not None
    assert any(n.startswith("occlusion: ") and "got no usable score from redness" in n for n in ex.notes), ex.notes
    assert not any(n.startswith("occlusion is flat") for n in ex.notes), ex.notes
