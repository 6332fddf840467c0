"""Trainer for ``small-pair``: both members, their combiner and the int8 package, in one command.

Each member keeps the recipe it was measured with: the small CNN takes the
command's own settings (``--optimizer sgd --lr 0.1 --epochs ...``), the
EfficientNet-Lite member its own options (``lite_epochs``, ``lite_lr``,
``lite_optimizer``; AdamW at 1e-3 for 2 epochs by default).  Both see the
same decoded 32 px arrays and augmentation.  The combiner is a logistic
regression on the two validation logits; its accuracy is also estimated by
5-fold cross-validation on validation, because the in-sample figure is
optimistic.  The card's calibration, thresholds and metrics are those of
the stored (int8) weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from synthdetect.models.efficientnet_lite import (
    LIBRARY_REQUIREMENT, LITE_MEAN, LITE_STD, VARIANTS, EfficientNetLiteDetector, load_imagenet_state,
    locate_imagenet_weights,
)
from synthdetect.models.package import ModelPackage
from synthdetect.models.pair import PAIR_MEAN, PAIR_STD, PairNet
from synthdetect.models.torch_kinds import images_to_tensor
from synthdetect.models.weight_codec import pack_int8, round_trip
from synthdetect.train.augment import PixelAugmenter, mix_batch
from synthdetect.train.registry import TrainerError, TrainRequest, option_flag, register_trainer
from synthdetect.train.small_image import (
    _input_spec, check_augment_fits, finish_torch_package, small_cnn_from_options,
)
from synthdetect.train.trainer import (
    TrainConfig, TrainResult, decode_records, fit_classifier, predict_logits, write_epoch_log,
)

WEIGHT_STORAGE = ("int8", "float32")


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(((logits > 0) == (labels > 0.5)).mean())


def fit_combiner(val_logits: np.ndarray, val_labels: np.ndarray, seed: int) -> dict[str, Any]:
    """Logistic regression on the members' validation logits, with a cross-validated accuracy beside it."""
    labels = (np.asarray(val_labels) > 0.5).astype(int)
    combiner = LogisticRegression(max_iter=1000).fit(val_logits, labels)
    folds = min(5, int(np.bincount(labels, minlength=2).min()))
    cv_accuracy = None
    if folds >= 2:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        cv_logits = cross_val_predict(LogisticRegression(max_iter=1000), val_logits, labels, cv=cv,
                                      method="decision_function")
        cv_accuracy = _accuracy(cv_logits, labels)
    return {"weights": [float(w) for w in combiner.coef_[0]], "bias": float(combiner.intercept_[0]),
            "fitted_on": "validation", "method": "logistic regression on the member logits",
            "validation_accuracy_in_sample": _accuracy(combiner.decision_function(val_logits), labels),
            "validation_accuracy_cv": cv_accuracy, "cv_folds": folds if folds >= 2 else None}


def _lite_config(config: TrainConfig, options: dict[str, Any]) -> TrainConfig:
    """The EfficientNet-Lite member's own recipe (``lite_epochs``, ``lite_lr``, ``lite_optimizer``)."""
    lite_epochs = int(options.get("lite_epochs", 2))
    return dataclasses.replace(
        config, epochs=lite_epochs, lr=float(options.get("lite_lr", 1e-3)),
        optimizer=str(options.get("lite_optimizer", "adamw")), patience=max(config.patience, lite_epochs))


def _member_history(member: str, result: TrainResult) -> list[dict[str, Any]]:
    return [{"member": member, **row} for row in result.history]


@register_trainer("small-pair")
def train_small_pair(request: TrainRequest) -> ModelPackage:
    """A small CNN from scratch and an EfficientNet-Lite from ImageNet, combined on validation."""
    options = request.options
    variant = str(options.get("lite_variant", "efficientnet-lite0"))
    if variant not in VARIANTS:
        raise TrainerError(f"small-pair: unknown lite_variant '{variant}' (choose from {', '.join(VARIANTS)})")
    storage = str(options.get("weight_storage", "int8"))
    if storage not in WEIGHT_STORAGE:
        raise TrainerError(f"small-pair: weight_storage must be one of {', '.join(WEIGHT_STORAGE)}, not '{storage}'")
    weights_path = locate_imagenet_weights(variant)  # fail before decoding anything
    spec = _input_spec(options, 32)
    size = tuple(spec["size"])
    check_augment_fits(request.augment, size)
    cnn_config = dataclasses.replace(request.config, epochs=int(options.get("cnn_epochs", request.config.epochs)))
    torch.manual_seed(cnn_config.seed)
    cnn = small_cnn_from_options(options, size, tta_hflip=option_flag(options.get("tta_hflip", True)), depth=4,
                                 layout="pool-mid")
    out = Path(request.out)
    workdir = out / "_work"
    x_train, y_train, e_train = decode_records(request.train, size, description="decode train")
    x_val, y_val, e_val = decode_records(request.val, size, description="decode val")
    x_test, y_test, e_test = decode_records(request.test, size, description="decode test")
    augment = request.augment
    augment_fn = PixelAugmenter(augment)
    mix_fn = (lambda x, y, g: mix_batch(x, y, g, augment)) if augment.mixes else None
    lite_config = _lite_config(request.config, options)

    cnn_result = fit_classifier(cnn, (x_train, y_train), (x_val, y_val), cnn_config, mean=PAIR_MEAN, std=PAIR_STD,
                                workdir=workdir / "cnn", augment=augment_fn, mix=mix_fn)

    torch.manual_seed(lite_config.seed)
    lite = EfficientNetLiteDetector(variant, size[0])
    lite.load_imagenet(load_imagenet_state(variant, weights_path))
    lite_result = fit_classifier(lite, (x_train, y_train), (x_val, y_val), lite_config, mean=LITE_MEAN,
                                 std=LITE_STD, workdir=workdir / "lite", augment=augment_fn, mix=mix_fn)
    lite_hparams = {**lite.hparams, "normalisation": "tf-lite"}  # as fit_classifier normalised it just now

    # The combiner is fitted on the members as they will be stored, so it weighs what is shipped.
    pair = PairNet(cnn.hparams, lite_hparams)
    pair.cnn.load_state_dict(cnn.state_dict())
    pair.lite.load_state_dict(lite.state_dict())
    float_state = {k: v.clone() for k, v in pair.state_dict().items()}
    if storage == "int8":
        pair.load_state_dict(round_trip(float_state))
    val_members = _member_logits(pair, x_val)
    combiner = fit_combiner(val_members, y_val, request.seed)
    shipped = PairNet(cnn.hparams, lite_hparams, combiner)
    shipped.load_state_dict(pair.state_dict())
    val_logits = predict_logits(shipped, x_val, PAIR_MEAN, PAIR_STD, batch_size=256)
    test_logits = predict_logits(shipped, x_test, PAIR_MEAN, PAIR_STD, batch_size=256) if len(x_test) else None
    storage_report = _storage_report(storage, float_state, shipped, x_val, val_logits)

    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.pt"
    state = shipped.state_dict()
    torch.save(pack_int8(state) if storage == "int8" else state, weights)
    members = {
        "cnn": {"epochs_run": len(cnn_result.history), "best_epoch": cnn_result.best_epoch,
                "seconds": round(cnn_result.seconds, 1), "config": dataclasses.asdict(cnn_config),
                "validation_accuracy": _accuracy(val_members[:, 0], y_val)},
        "lite": {"epochs_run": len(lite_result.history), "best_epoch": lite_result.best_epoch,
                 "seconds": round(lite_result.seconds, 1), "config": dataclasses.asdict(lite_config),
                 "validation_accuracy": _accuracy(val_members[:, 1], y_val),
                 "pretrained": {"weights": f"{VARIANTS[variant].weights_distribution}==0.1.0 ({weights_path.name})",
                                "sha256": VARIANTS[variant].weights_sha256, "data": "ImageNet-1k",
                                "license": "Apache-2.0", "library": LIBRARY_REQUIREMENT}},
    }
    card = {
        "version": str(options.get("version", "1.0.0")),
        "description": options.get("description")
        or f"A small CNN trained from scratch and {variant} fine-tuned from ImageNet, logits combined on "
           f"validation; whole image resized to {size[0]} px.",
        "labels": {"output": "one logit: log-odds that the image is AI-generated", "positive": "ai", "negative": "human"},
        "architecture": shipped.hparams,
        "parameters": int(sum(p.numel() for p in shipped.parameters())),
        "input": spec,
        # the small CNN's third block (4x4 at 32 px); the Lite member's last convolutions run at 1x1
        "explain": {"gradcam_layer": "cnn.features.2" if shipped.cnn.hparams["depth"] >= 3 else None},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    history = _member_history("cnn", cnn_result) + _member_history("lite", lite_result)
    write_epoch_log(workdir, history)  # one log for both members, where finish_torch_package copies it from
    result = TrainResult(best_epoch=cnn_result.best_epoch, history=history,
                         stopped_early=cnn_result.stopped_early or lite_result.stopped_early,
                         seconds=cnn_result.seconds + lite_result.seconds)
    package = finish_torch_package(
        request, kind="small-pair", card=card, result=result, errors=e_train + e_val + e_test, workdir=workdir,
        val=(val_logits, y_val), test=(test_logits, y_test), weights=weights,
        keep_workdir=option_flag(options.get("keep_workdir", False)),
        extra_training={"members": members, "combiner": combiner, "weight_storage": storage_report},
    )
    return package


def _member_logits(pair: PairNet, arrays: np.ndarray) -> np.ndarray:
    """(n, 2) logits of the small CNN and the Lite member, as the pair computes them."""
    pair.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(arrays), 256):
            x = images_to_tensor(arrays[start : start + 256], PAIR_MEAN, PAIR_STD)
            z_cnn, z_lite = pair.member_logits(x)
            out.append(torch.stack([z_cnn, z_lite], 1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def _storage_report(storage: str, float_state: dict, shipped: PairNet, x_val: np.ndarray,
                    stored_logits: np.ndarray) -> dict[str, Any]:
    """What storing the weights as int8 changed on the validation split (nothing to report for float32)."""
    if storage != "int8":
        return {"format": "float32"}
    reference = PairNet(shipped.cnn.hparams, shipped.lite.hparams, shipped.combiner)
    reference.load_state_dict(float_state)
    float_logits = predict_logits(reference, x_val, PAIR_MEAN, PAIR_STD, batch_size=256)
    diff = np.abs(float_logits - stored_logits)
    return {"format": "int8 weights, one float32 scale per output channel; float32 at load",
            "validation_max_abs_logit_change": float(diff.max()) if diff.size else 0.0,
            "validation_mean_abs_logit_change": float(diff.mean()) if diff.size else 0.0,
            "validation_decisions_changed_at_logit_0": int(((float_logits > 0) != (stored_logits > 0)).sum())}
