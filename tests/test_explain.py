"""Explanations: Grad-CAM and occlusion point at the region that drives the score; ELA; pictures; CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from synthdetect.api import Detector
from synthdetect.evidence.ela import ela_image
from synthdetect.explain import METHODS, ExplainUnavailable, explain
from synthdetect.images import ImageLoadError, load_image
from synthdetect.models.base import Model
from synthdetect.models.torch_kinds import TorchModel

from tiny_model import png_bytes, write_tiny_cnn

SQUARE = (slice(4, 12), slice(4, 12))  # an 8x8 red square in the top-left quadrant of a 32x32 image


def red_square_png(size: int = 32) -> bytes:
    pixels = np.full((size, size, 3), 128, dtype=np.uint8)
    pixels[SQUARE] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Redness(torch.nn.Module):
    """logit = mean over the image of relu(red - (green + blue) / 2): only red regions matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(1, 2, 3)) * 8.0 - 1.0


class NumpyRedness(Model):
    """The same idea without torch, standing in for ONNX and other non-differentiable kinds."""

    def logits(self, images):
        out = []
        for image in images:
            a = np.asarray(image.rgb, dtype=np.float32) / 255.0
            out.append(np.maximum(a[..., 0] - (a[..., 1] + a[..., 2]) / 2, 0).mean() * 8.0 - 1.0)
        return np.asarray(out)


# the test picture is a red square on grey: two colours, which a card must accept explicitly
CARD = {"name": "redness", "kind": "test", "input": {"size": [32, 32], "min_side": 8, "max_aspect": 4.0,
                                                     "two_colour_images": True}}


def quadrant_share(values: np.ndarray) -> float:
    mass = np.abs(values)
    return float(mass[:16, :16].sum() / mass.sum())


def test_gradcam_points_at_the_region_that_drives_the_logit():
    ex = explain(Detector(TorchModel(dict(CARD), Redness()), use_evidence=False), red_square_png())
    assert ex.gradcam is not None and ex.gradcam.shape == (32, 32)
    assert 0.0 <= ex.gradcam.min() and ex.gradcam.max() == pytest.approx(1.0)
    inside, outside = ex.gradcam[SQUARE].mean(), np.delete(ex.gradcam.ravel(), np.ravel_multi_index(
        np.mgrid[SQUARE].reshape(2, -1), (32, 32))).mean()
    assert inside > 5 * outside
    assert quadrant_share(ex.gradcam) > 0.8


def test_occlusion_works_for_a_model_without_gradients():
    detector = Detector(NumpyRedness(dict(CARD)), use_evidence=False)
    ex = explain(detector, red_square_png(), name="square.png")
    assert ex.gradcam is None
    assert any(n.startswith("gradcam unavailable") and "torch" in n for n in ex.notes)
    assert ex.occlusion.shape == (32, 32)
    # Only windows touching the square's edges change the score; blurring flat grey changes nothing.
    assert quadrant_share(ex.occlusion) > 0.9
    assert np.abs(ex.occlusion).max() > 0.005
    assert np.abs(ex.occlusion[20:, 20:]).max() == 0


def test_occlusion_agrees_with_gradcam_on_the_torch_model():
    ex = explain(Detector(TorchModel(dict(CARD), Redness()), use_evidence=False), red_square_png())
    assert quadrant_share(ex.occlusion) > 0.9


def test_verdict_is_the_detectors_and_ela_is_the_evidence_modules(tmp_path: Path):
    package = write_tiny_cnn(tmp_path / "tiny")
    detector = Detector.load(str(package))
    data = png_bytes(seed=3)
    ex = explain(detector, data, name="x.png")
    direct = detector.detect([data], names=["x.png"])[0]
    assert (ex.verdict.label, ex.verdict.p_ai) == (direct.label, direct.p_ai)
    assert ex.model == "tiny-cnn" and set(ex.maps()) == set(METHODS)
    expected = np.asarray(ela_image(load_image(data), quality=90))
    assert ex.ela.dtype == np.uint8 and np.array_equal(ex.ela, expected)
    assert ex.target == ("ai" if direct.p_ai >= 0.5 else "human")


def test_pictures_composite_and_separate(tmp_path: Path):
    ex = explain(Detector(TorchModel(dict(CARD), Redness()), use_evidence=False), red_square_png(), name="sq.png")
    figure = Image.open(ex.save(tmp_path / "why.png"))
    assert figure.format == "PNG" and figure.width > 2 * figure.height
    written = ex.save_maps(tmp_path / "why")
    assert set(written) == {"gradcam", "occlusion", "ela"}
    for name, path in written.items():
        assert path.name == f"why.{name}.png"
        picture = Image.open(path)
        assert min(picture.size) >= 256  # 32 px images are enlarged for viewing
    # The overlay is red where Grad-CAM is hot and the original grey far from it.
    overlay = np.asarray(ex.overlay("gradcam").resize((32, 32), Image.Resampling.NEAREST)).astype(int)
    assert abs(overlay[28, 28] - 128).max() < 20


def test_large_image_without_a_model_gets_ela_and_a_reason(tmp_path: Path):
    detector = Detector.load(str(write_tiny_cnn(tmp_path / "tiny", max_short_side=64)))
    big = png_bytes(size=(300, 200), seed=1)
    ex = explain(detector, big, name="big.png", max_side=128)
    assert ex.verdict.label == "uncertain" and ex.model is None
    assert ex.gradcam is None and ex.occlusion is None
    assert ex.ela.shape == (85, 128, 3) and ex.image.shape == (85, 128, 3)
    assert any("128x85 copy of the 300x200" in n for n in ex.notes)
    assert any(n.startswith("no model map") and "64" in n for n in ex.notes)
    with pytest.raises(ExplainUnavailable, match="64"):
        ex.overlay("gradcam")
    ex.save(tmp_path / "big.png")  # the figure still draws: original + ELA + the verdict


def test_bad_input_and_unknown_method(tmp_path: Path):
    detector = Detector(NumpyRedness(dict(CARD)), use_evidence=False)
    with pytest.raises(ImageLoadError, match="not an image"):
        explain(detector, b"hello world", name="hello.txt")
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain(detector, red_square_png(), methods=["saliency"])


def test_cli_explain_writes_the_figure_and_maps(tmp_path: Path):
    from synthdetect.cli import app

    package = write_tiny_cnn(tmp_path / "tiny")
    image = tmp_path / "img.png"
    image.write_bytes(png_bytes(seed=2))
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["explain", str(image), "-o", str(out), "--model", str(package), "--maps",
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["maps"] == ["ela", "gradcam", "occlusion"] and summary["model"] == "tiny-cnn"
    for path in summary["written"].values():
        assert Image.open(path).format == "PNG"
    assert (tmp_path / "out.occlusion.png").is_file()

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = CliRunner().invoke(app, ["explain", str(bad), "-o", str(tmp_path / "x.png"), "--model", str(package)])
    assert result.exit_code == 3
    assert "bad.png" in result.output

    piped = CliRunner().invoke(app, ["explain", "-", "-o", str(tmp_path / "p.png"), "--model", str(package),
                                     "--method", "ela", "--json"], input=image.read_bytes())
    assert piped.exit_code == 0, piped.output
    assert json.loads(piped.stdout)["verdict"]["file"] == "<stdin>" and (tmp_path / "p.png").is_file()


@pytest.mark.slow  # the ONNX export (torch.onnx import, parity check) takes several seconds
@pytest.mark.parametrize("backend_env", [None, "onnxruntime"])  # the variable used to win over the twin's card
def test_onnx_served_package_gets_gradcam_from_its_torch_weights(tmp_path: Path, monkeypatch, backend_env):
    from synthdetect.models.onnx_backend import OnnxModel, export_package

    monkeypatch.delenv("SYNTHDETECT_BACKEND", raising=False)
    if backend_env:
        monkeypatch.setenv("SYNTHDETECT_BACKEND", backend_env)
    exported = export_package(str(write_tiny_cnn(tmp_path / "tiny")), tmp_path / "tiny-onnx")
    detector = Detector.load(str(exported.root))
    assert isinstance(detector.model, OnnxModel)
    ex = explain(detector, png_bytes(seed=3))
    assert ex.gradcam is not None and ex.occlusion is not None, ex.notes
    torch_ex = explain(Detector.load(str(tmp_path / "tiny")), png_bytes(seed=3))
    np.testing.assert_allclose(ex.gradcam, torch_ex.gradcam, atol=1e-5)
    np.testing.assert_allclose(ex.occlusion, torch_ex.occlusion, atol=1e-3)


def test_occlusion_grid_fits_the_time_budget():
    from synthdetect.explain import affordable_grid

    assert affordable_grid((32, 32), 8, model_ms=1.0, budget_s=60) == 8
    # 512x341 on a 2x2 grid: 3x3 half-overlapping windows + the original = 10 calls of 1.23 s.
    assert affordable_grid((512, 341), 8, model_ms=1230, budget_s=15) == 2
    assert affordable_grid((512, 341), 8, model_ms=5000, budget_s=15) is None
    assert affordable_grid((512, 341), 8, model_ms=None, budget_s=15) == 8
    assert affordable_grid((512, 341), 8, model_ms=5000, budget_s=None) == 8


def test_gradcam_of_a_mirror_averaging_model_covers_both_passes():
    """A model that averages the image and its mirror gets the average of both maps (mirror-symmetric here)."""
    from synthdetect.explain.maps import gradcam_map
    from synthdetect.models.cnn import SmallCNN

    torch.manual_seed(0)
    model = TorchModel(dict(CARD), SmallCNN(width=8, depth=2, tta_hflip=True))
    image = load_image(red_square_png())
    values = gradcam_map(model, image)
    assert values.shape == (32, 32) and np.isfinite(values).all()
    mirrored = gradcam_map(model, load_image(Image.fromarray(np.asarray(image.rgb)[:, ::-1].copy())))
    assert np.allclose(values, mirrored[:, ::-1], atol=1e-5)
    assert model.module.tta_hflip  # the served module is untouched


class OneAtATimeRedness(NumpyRedness):
    """Declares one image per call, as fixed-batch-1 ONNX graphs and dynamically quantised ones do."""

    batch_size = 1

    def logits(self, images):
        assert len(images) == 1, f"called with {len(images)} images at once"
        return super().logits(images)


def test_occlusion_respects_the_models_batch_size():
    ex = explain(Detector(OneAtATimeRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["occlusion"])
    reference = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(),
                        methods=["occlusion"])
    assert ex.occlusion is not None and np.allclose(ex.occlusion, reference.occlusion)


def test_gradcam_direction_follows_the_verdict_label_not_p_ai_half():
    """A human verdict above p_ai 0.5 (cifake-cnn says human below 0.897) is explained toward human."""
    p_ai = explain(Detector(TorchModel(dict(CARD), Redness()), use_evidence=False), red_square_png(),
                   methods=["ela"]).verdict.p_ai
    assert p_ai >= 0.5
    card = {**CARD, "decision": {"ai_at_or_above": 0.99, "human_below": min(0.98, p_ai + 0.01)}}
    ex = explain(Detector(TorchModel(card, Redness()), use_evidence=False), red_square_png(), methods=["gradcam"])
    assert ex.verdict.label == "human" and ex.target == "human"
    # Redness only has evidence for AI, so toward human no region moves the logit: the map says so
    assert ex.gradcam is not None and not ex.gradcam.any()
    assert "Grad-CAM is flat: no region moved the logit toward human" in ex.notes
    uncertain = {**CARD, "decision": {"ai_at_or_above": 0.99, "human_below": 0.01}}
    ex = explain(Detector(TorchModel(uncertain, Redness()), use_evidence=False), red_square_png(), methods=["gradcam"])
    assert ex.verdict.label == "uncertain" and ex.target == "ai"
    assert any(n.startswith("verdict uncertain: Grad-CAM shows regions pushing toward AI") for n in ex.notes)


def test_an_extreme_aspect_ratio_is_not_enlarged_past_the_display_cap():
    from synthdetect.explain import render

    strip = np.full((1, 512, 3), 128, dtype=np.uint8)
    for name, values in (("gradcam", np.zeros((1, 512), np.float32)), ("ela", strip)):
        picture = render.overlay(strip, name, values)
        assert max(picture.size) <= render.MAX_DISPLAY_SIDE, picture.size
    assert render.display_scale((32, 32)) * 32 >= render.MIN_DISPLAY_SIDE  # thumbnails are still enlarged


def test_cli_explain_checks_the_output_path_first_and_writes_the_format_asked(tmp_path: Path):
    from synthdetect.cli import app

    image = tmp_path / "sq.png"
    image.write_bytes(red_square_png())
    # '--model nonesuch' would fail too: the output path is checked before the model loads or a map is computed
    for out, message in ((tmp_path / "missing_dir" / "x.png", "does not exist"),
                         (tmp_path / "x.xyz", "cannot write a '.xyz' image")):
        result = CliRunner().invoke(app, ["explain", str(image), "-o", str(out), "--model", "nonesuch"])
        assert result.exit_code == 2 and message in result.stderr, result.output
    # a folder is the batch form's output (FOLDER/NAME.why.png), even for one image, and even where the image is
    result = CliRunner().invoke(app, ["explain", str(image), "-o", str(tmp_path), "--model", "nonesuch"])
    assert result.exit_code == 2 and "nonesuch" in result.stderr and "is a folder" not in result.stderr
    ex = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["ela"])
    assert Image.open(ex.save(tmp_path / "why.jpg")).format == "JPEG"
    assert Image.open(ex.save(tmp_path / "why.webp")).format == "WEBP"
