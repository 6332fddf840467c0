"""The ``clip-cascade`` kind: trained by one command, served as trained, CLIP run only inside the band.

A stand-in extractor replaces the CLIP encoder (90 MB, 125 ms an image), registered under the encoder's name; it
counts the images it embeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synth_data import make_image, write_folder
from synthdetect import Detector
from synthdetect.cli import app
from synthdetect.models import view_features
from synthdetect.models.clip_cascade import clip_views, head_logits
from synthdetect.models.package import load_package


class StandInClip(view_features.FeatureExtractor):
    """Unit-norm summary statistics of a 224 px view (the AI class's checkerboard raises its pixel differences)."""

    name, dim = "clip-vit-b16-int8", 5

    def __init__(self):
        self.embedded = 0

    def features(self, crops):
        rows = []
        for crop in crops:
            assert crop.size == (224, 224)
            a = np.asarray(crop, dtype=np.float64) / 255
            rows.append([a.mean(), a.std(), np.abs(np.diff(a, axis=0)).mean(), np.abs(np.diff(a, axis=1)).mean(), 0.5])
            self.embedded += 1
        rows = np.array(rows)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def stand_in(monkeypatch) -> StandInClip:
    extractor = StandInClip()
    monkeypatch.setitem(view_features._INSTANCES, "clip-vit-b16-int8", extractor)
    return extractor


def overlapping_classes(root: Path, n_per_class: int = 40) -> Path:
    """AI images with a checkerboard of amplitude 8-40, human ones 0-16: the classes overlap, so the CNN's
    least-confident band holds both (with clean classes it held the less confident class alone)."""
    rng = np.random.default_rng(3)
    for label, folder, (low, high) in ((1, "ai", (8, 40)), (0, "human", (0, 16))):
        (root / folder).mkdir(parents=True)
        for i in range(n_per_class):
            base = np.asarray(make_image(0, seed=7000 + 100 * label + i, size=32), dtype=np.int16)
            yy, xx = np.mgrid[:32, :32]
            board = np.where((yy + xx) % 2 == 0, 1, -1)[..., None] * rng.uniform(low, high)
            Image.fromarray(np.clip(base + board, 0, 255).astype(np.uint8)).save(root / folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    data = overlapping_classes(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs") / "cascade"
    extractor = StandInClip()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(view_features._INSTANCES, "clip-vit-b16-int8", extractor)
        result = CliRunner().invoke(app, [
            "train", str(data), "--out", str(out), "--name", "tiny-cascade", "--model", "clip-cascade",
            "--epochs", "8", "--patience", "8", "--width", "8", "--option", "depth=2", "--threads", "1", "--batch-size", "8",
            "--val-fraction", "0.25", "--test-fraction", "0.2", "--seed", "1",
            "--option", "band=0.5", "--option", "head_images=30", "--option", "head_sample=44"])
    assert result.exit_code == 0, result.output
    assert "clip-cascade: band |logit| <" in result.output
    return out


def test_the_card_records_the_band_the_head_and_what_the_band_changed(trained: Path):
    card = json.loads((trained / "model.json").read_text())
    assert card["kind"] == "clip-cascade" and set(card["files"]) == {"weights", "head"}
    cascade = card["cascade"]
    assert cascade["band_share"] == 0.5 and cascade["tau"] > 0 and cascade["cnn_temperature"] > 0
    assert cascade["encoder"]["name"] == "clip-vit-b16-int8"
    assert 0 < cascade["head"]["images"] <= 30 and cascade["head"]["sample"] <= 44
    val = cascade["validation"]
    assert val["band_images"] > 0 and 0 <= val["cascade_right"] <= val["n"] == card["metrics"]["validation"]["n"]
    assert card["explain"]["gradcam_layer"] is None  # Grad-CAM would explain the CNN alone


def test_served_logits_are_the_cnn_outside_the_band_and_the_head_inside(trained: Path, stand_in: StandInClip):
    detector = Detector.load(str(trained), use_evidence=False)
    model = detector.model
    images = [make_image(label, seed=5000 + i, size=32) for i in range(12) for label in (0, 1)]
    prepared = [model.prepare(_loaded(im)) for im in images]
    cnn = np.asarray(model.cnn.logits_prepared(prepared), dtype=np.float64)
    band = np.abs(cnn) < model.tau
    out = model.logits_prepared(prepared)
    assert stand_in.embedded == band.sum()  # CLIP runs only where the CNN is unsure
    np.testing.assert_allclose(out[~band], cnn[~band] / model.cnn_temperature)
    if band.any():
        embeddings = StandInClip().features(clip_views([prepared[i] for i in np.flatnonzero(band)]))
        np.testing.assert_allclose(out[band], head_logits(embeddings, cnn[band], model.weights, model.bias))
    verdicts = detector.detect(images)
    assert all(v.ok and v.models[0]["model"] == "tiny-cascade" for v in verdicts)


def test_grad_cam_and_onnx_export_refuse_the_cascade(trained: Path, stand_in: StandInClip, tmp_path: Path):
    from synthdetect.explain.maps import torch_twin

    model = Detector.load(str(trained), use_evidence=False).model
    assert torch_twin(model) is None  # it would explain the CNN member, not the cascade
    result = CliRunner().invoke(app, ["export", str(trained), "--onnx", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "kind 'clip-cascade' has no torch module to export" in result.output, result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option, message", [
    ("band=1.5", "--option band=1.5: expected a share between 0 and 1"),
    ("encoder=clip-vit-l14", "--option encoder=clip-vit-l14: expected one of clip-vit-b16-int8, clip-vit-b16-f32"),
    ("head_images=5", "expected at least 10 head images"),
])
def test_cascade_settings_are_checked_before_anything_is_decoded(tmp_path: Path, stand_in, option, message):
    data = write_folder(tmp_path / "data", n_per_class=6, size=32)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "o"), "--model", "clip-cascade",
                                      "--option", option, "--epochs", "1"])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "decode" not in result.output


def _loaded(image: Image.Image):
    from synthdetect.images import load_image
    from synth_data import encode

    return load_image(encode(image))
