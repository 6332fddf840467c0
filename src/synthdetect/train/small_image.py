"""Train the small-image CNN (``small-cnn`` kind) into a model package.

Three-way split: train / validation (early stopping, calibration, thresholds)
/ held-out test (the numbers on the card).  Thresholds are never chosen on the
images they are reported on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthdetect.evaluate.calibration import Calibration, operating_points
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.models.cnn import SmallCNN
from synthdetect.models.package import ModelPackage, write_package
from synthdetect.train.datasets import Record, open_dataset, stratified_split
from synthdetect.train.trainer import TrainConfig, config_dict, decode_records, fit_classifier, predict_logits

MEAN = STD = [0.5, 0.5, 0.5]


def _summary(records: list[Record]) -> dict[str, int]:
    return {"n": len(records), "ai": sum(r.label for r in records), "human": sum(1 - r.label for r in records)}


def train_small_cnn(
    data: str | Path,
    out: str | Path,
    *,
    name: str = "small-cnn",
    config: TrainConfig | None = None,
    width: int = 32,
    input_size: int = 32,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    max_short_side: int = 64,
    command: str | None = None,
    description: str | None = None,
) -> ModelPackage:
    config = config or TrainConfig()
    out = Path(out)
    workdir = out / "_work"
    records = open_dataset(data)
    train_r, val_r, test_r = stratified_split(records, [1 - val_fraction - test_fraction, val_fraction, test_fraction],
                                              seed=config.seed)
    size = (input_size, input_size)
    x_train, y_train, e_train = decode_records(train_r, size, description="decode train")
    x_val, y_val, e_val = decode_records(val_r, size, description="decode val")
    x_test, y_test, e_test = decode_records(test_r, size, description="decode test")
    errors = e_train + e_val + e_test
    torch.manual_seed(config.seed)
    module = SmallCNN(width=width)
    result = fit_classifier(module, (x_train, y_train), (x_val, y_val), config, mean=MEAN, std=STD, workdir=workdir)

    val_logits = predict_logits(module, x_val, MEAN, STD)
    calibration = Calibration.fit(val_logits, y_val, "temperature")
    p_val = calibration(val_logits)
    points = operating_points(p_val, y_val)
    test_logits = predict_logits(module, x_test, MEAN, STD)
    p_test = calibration(test_logits)
    decision = points["decision"]
    test_report = {
        "at_0.5": binary_metrics(p_test, y_test, 0.5),
        "at_fpr_0.01_threshold": binary_metrics(p_test, y_test, points["thresholds"]["fpr_0.01"]["threshold"]),
        "verdict_bands": _band_counts(p_test, y_test, decision),
    }
    card: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "kind": "small-cnn",
        "description": description or "Small CNN for small images (about 32 px), trained with synthdetect train.",
        "labels": {"output": "one logit: log-odds that the image is AI-generated", "positive": "ai", "negative": "human"},
        "architecture": module.hparams,
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "input": {"size": [input_size, input_size], "resample": "bicubic", "mean": MEAN, "std": STD,
                  "channel_order": "RGB", "min_side": 8, "max_aspect": 2.0, "max_short_side": max_short_side},
        "training": {
            "data": str(data), "command": command, "config": config_dict(config),
            "split": {"method": "stratified random", "seed": config.seed,
                      "train": _summary(train_r), "validation": _summary(val_r), "test": _summary(test_r)},
            "decode_errors": errors[:50], "decode_error_count": len(errors),
            "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1),
            "threads": torch.get_num_threads(),
        },
        "calibration": calibration.to_dict(),
        **points,
        "metrics": {"validation": binary_metrics(p_val, y_val, 0.5), "test": test_report},
        "history": result.history,
    }
    weights = out / "weights.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), weights)
    package = write_package(out, card, {"weights": weights})
    shutil.rmtree(workdir, ignore_errors=True)
    return package


def _band_counts(p: np.ndarray, y: np.ndarray, decision: dict[str, float]) -> dict[str, Any]:
    ai = p >= decision["ai_at_or_above"]
    human = p < decision["human_below"]
    uncertain = ~(ai | human)
    out = {}
    for name, cls in (("ai_images", 1), ("human_images", 0)):
        m = y == cls
        out[name] = {"ai": int((ai & m).sum()), "human": int((human & m).sum()), "uncertain": int((uncertain & m).sum())}
    decided = ai | human
    correct = (ai & (y == 1)) | (human & (y == 0))
    out["accuracy_when_decided"] = float(correct.sum() / max(decided.sum(), 1))
    out["fraction_uncertain"] = float(uncertain.mean())
    return out


def card_json(package: ModelPackage) -> str:
    return json.dumps(package.card, indent=2)
