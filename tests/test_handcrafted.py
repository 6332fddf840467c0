"""The hand-crafted residual/spectrum kind: features, training through the registry, serving through Detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from synthdetect.models.handcrafted import FEATURE_NAMES, crop_features


def _scene(seed: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([120 + 80 * np.sin(3 * xx + seed), 100 + 60 * yy, 90 + 50 * np.cos(2 * yy + xx)], -1)
    return base + rng.normal(0, 1, 3)[None, None] * 10


def camera_like(seed: int) -> Image.Image:
    """Scene plus per-pixel sensor-style noise."""
    rng = np.random.default_rng(1000 + seed)
    arr = _scene(seed) + rng.normal(0, 6, (256, 256, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render_like(seed: int) -> Image.Image:
    """The same kind of scene, noiseless and smooth."""
    img = Image.fromarray(np.clip(_scene(seed), 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(1.0))


def test_features_are_finite_and_named():
    for img in (camera_like(0), render_like(0), Image.new("RGB", (224, 224), (128, 128, 128))):
        f = crop_features(img.crop((0, 0, 224, 224)))
        assert f.shape == (len(FEATURE_NAMES),)
        assert np.isfinite(f).all()


def test_residual_features_see_sensor_noise():
    noisy = crop_features(camera_like(1).crop((0, 0, 224, 224)))
    smooth = crop_features(render_like(1).crop((0, 0, 224, 224)))
    i = FEATURE_NAMES.index("lap_log_std")
    assert noisy[i] > smooth[i] + 1.0


@pytest.fixture(scope="module")
def tiny_handcrafted(tmp_path_factory):
    from synthdetect.train.datasets import Record
    from synthdetect.train.registry import TrainRequest, get_trainer

    tmp_path = tmp_path_factory.mktemp("handcrafted")
    records = []
    for i in range(10):
        for label, make in ((0, camera_like), (1, render_like)):
            path = tmp_path / "data" / f"{label}_{i}.png"
            path.parent.mkdir(exist_ok=True)
            make(i).save(path)
            records.append(Record(str(path), label, source="synthetic"))
    request = TrainRequest(train=records[:12], val=records[12:18], test=records[18:], out=tmp_path / "pkg",
                           name="tiny-handcrafted", options={"cache": str(tmp_path / "cache"), "crops": 1})
    return get_trainer("handcrafted")(request)


def test_trains_through_the_registry_and_serves_through_detector(tiny_handcrafted):
    from synthdetect import Detector

    card = tiny_handcrafted.card
    assert card["kind"] == "handcrafted"
    assert card["crop_policy"]["native_crops"] == 1
    assert {"fpr_0.01", "fpr_0.05"} <= set(card["thresholds"])
    assert (tiny_handcrafted.root / "heads.npz").is_file()
    det = Detector.load(str(tiny_handcrafted.root), use_evidence=False)
    noisy, smooth = det([camera_like(99), render_like(99)])
    assert smooth.p_ai > noisy.p_ai
    assert noisy.models and noisy.models[0]["model"] == "tiny-handcrafted"


def test_altered_head_weights_are_refused(tiny_handcrafted, tmp_path):
    import shutil

    from synthdetect.models import ModelPackageError, load_model

    copy = tmp_path / "copy"
    shutil.copytree(tiny_handcrafted.root, copy)
    heads = copy / "heads.npz"
    heads.write_bytes(heads.read_bytes() + b"x")
    with pytest.raises(ModelPackageError, match="sha256 mismatch"):
        load_model(str(copy))


def test_images_the_served_model_answers_uncertain_are_left_out_of_its_card(tmp_path, capsys):
    """On 16 px images `train --model handcrafted` printed held-out accuracy 1.0000, but the package answers every
    such image "uncertain, too small to judge": the card described answers it never gives."""
    from synthdetect.train.datasets import Record
    from synthdetect.train.registry import TrainRequest, get_trainer

    def record(i: int, label: int, size: int | None = None) -> Record:
        image = (render_like if label else camera_like)(i)
        path = tmp_path / "data" / f"{label}_{i}_{size}.png"
        path.parent.mkdir(exist_ok=True)
        (image.resize((size, size)) if size else image).save(path)
        return Record(str(path), label, source="synthetic")

    train = [record(i, label) for i in range(6) for label in (0, 1)] + [record(50, 1, 16)]
    val = [record(i, label) for i in range(6, 9) for label in (0, 1)]
    test = [record(i, label) for i in range(9, 11) for label in (0, 1)] + [record(60, 0, 16), record(61, 1, 16)]
    package = get_trainer("handcrafted")(TrainRequest(
        train=train, val=val, test=test, out=tmp_path / "pkg", name="small-aware",
        options={"cache": str(tmp_path / "cache"), "crops": 1}))
    assert package.card["metrics"]["test"]["at_0.5"]["n"] == 4
    assert {k: v for k, v in package.card["training"]["outside_domain"].items() if k != "rule"} == {
        "train": 1, "validation": 0, "test": 2}
    assert ("warning: small-aware: 3 images are under 32 px on the short side or longer than 6:1, which this model "
            "answers uncertain; they are left out of training and of the card's numbers (train 1, validation 0, "
            "test 2)") in capsys.readouterr().err
