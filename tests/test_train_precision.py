"""`--precision bf16`: the training forward runs under bfloat16 autocast; everything after training stays float32."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synth_data import write_manifest
from synthdetect.api import Detector
from synthdetect.cli import app
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.evaluate.report import predict_records
from synthdetect.train import trainer
from synthdetect.train.datasets import open_dataset
from synthdetect.train.trainer import TrainConfig, fit_classifier

REPO = Path(__file__).resolve().parents[1]
MEAN = STD = [0.5, 0.5, 0.5]


class _DtypeSpy(torch.nn.Module):
    """A tiny conv net that records the dtype its convolution computed in, in training and in evaluation."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 1)
        self.seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}

    def forward(self, x):
        y = self.conv(x)
        self.seen[self.training].add(y.dtype)
        return self.head(y.mean(dim=(2, 3))).flatten()


def _arrays(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), (np.arange(n) % 2).astype(np.float32)


def test_bf16_trains_in_bfloat16_and_validates_in_float32(tmp_path: Path):
    torch.manual_seed(0)
    spy = _DtypeSpy()
    config = TrainConfig(epochs=2, batch_size=8, threads=1, precision="bf16", patience=5)
    result = fit_classifier(spy, _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    assert spy.seen[True] == {torch.bfloat16} and spy.seen[False] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in spy.parameters())  # the weights stay float32
    assert all(np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"]) for row in result.history)


def test_fp32_is_the_default_and_stays_float32(tmp_path: Path):
    spy = _DtypeSpy()
    fit_classifier(spy, _arrays(), _arrays(seed=1), TrainConfig(epochs=1, batch_size=8, threads=1), mean=MEAN,
                   std=STD, workdir=tmp_path)
    assert spy.seen[True] == {torch.float32}


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16': expected fp32 or bf16"):
        TrainConfig(precision="fp16")
    result = CliRunner().invoke(app, ["train", "nowhere", "--out", "o", "--precision", "fp16"])
    assert result.exit_code == 2 and "--precision 'fp16': expected fp32 or bf16" in result.output
    assert "dataset not found" not in result.output


def test_a_cpu_without_native_bfloat16_is_warned_about(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.trainer"):
        fit_classifier(_DtypeSpy(), _arrays(), _arrays(seed=1), TrainConfig(epochs=1, batch_size=8, threads=1,
                       precision="bf16"), mean=MEAN, std=STD, workdir=tmp_path)
    assert "no native bfloat16" in caplog.text and "slower than --precision fp32" in caplog.text
    caplog.clear()
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    fit_classifier(_DtypeSpy(), _arrays(), _arrays(seed=1), TrainConfig(epochs=1, batch_size=8, threads=1,
                   precision="bf16"), mean=MEAN, std=STD, workdir=tmp_path / "again")
    assert "bfloat16" not in caplog.text


def _train(tmp_path: Path, *extra: str) -> tuple[Path, Path, CliRunner]:
    manifest = write_manifest(tmp_path / "data", {"a": (16, 16), "b": (12, 12), "c": (10, 10)}, size=16)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(out), "--epochs", "2", "--patience", "2", "--width", "4",
        "--batch-size", "16", "--input-size", "16", "--threads", "1", "--seed", "0", *extra])
    assert result.exit_code == 0, result.output
    return manifest, out, result


def test_a_bf16_package_is_a_float32_package_that_serves_its_card_numbers(tmp_path: Path):
    manifest, out, _ = _train(tmp_path, "--precision", "bf16", "--split", "loso", "--holdout-source", "a",
                              "--val-fraction", "0.3")
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["config"]["precision"] == "bf16"
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    # the card's validation numbers came from the float32 model after training; serving reproduces them
    val = [r for r in open_dataset(manifest) if r.source in card["training"]["split"]["validation_sources"]]
    predictions = predict_records(Detector.load(str(out), use_evidence=False), val, progress=False)
    served = binary_metrics(predictions.p_ai, predictions.labels)
    for key in ("loss", "accuracy", "roc_auc"):
        assert served[key] == pytest.approx(card["metrics"]["validation"][key], abs=1e-5)


def test_precision_is_part_of_a_runs_identity_only_when_not_the_default(tmp_path: Path):
    _, out, _ = _train(tmp_path, "--option", "keep_workdir=true")
    fingerprint = torch.load(out / "_work" / "checkpoint.pt", weights_only=False)["fingerprint"]
    assert "--precision" not in fingerprint  # checkpoints of runs before the option existed still resume
    _, out, _ = _train(tmp_path / "b", "--option", "keep_workdir=true", "--precision", "bf16")
    assert torch.load(out / "_work" / "checkpoint.pt", weights_only=False)["fingerprint"]["--precision"] == "bf16"


def test_train_speed_times_the_precision_asked_for():
    command = [sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--steps", "1", "--threads", "1",
               "--width", "8", "--rounds", "1", "--precision", "bf16"]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout)
    assert result["precision"] == "bf16"


def test_the_loops_own_fingerprint_names_precision_only_when_not_the_default():
    from synthdetect.train.trainer import run_fingerprint

    module = torch.nn.Linear(2, 1)
    assert "config.precision" not in run_fingerprint(TrainConfig(), module, 10, 5)
    assert run_fingerprint(TrainConfig(precision="bf16"), module, 10, 5)["config.precision"] == "bf16"


def test_a_kind_that_fits_linear_heads_refuses_precision(tmp_path: Path):
    manifest = write_manifest(tmp_path / "d", {"a": (2, 2), "b": (2, 2)}, size=8)
    result = CliRunner().invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--model", "handcrafted",
                                      "--precision", "bf16"])
    assert result.exit_code == 2 and "--precision would be ignored" in result.output
