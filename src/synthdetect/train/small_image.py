"""Trainers for the small CNN (``small-cnn``) and the ELA-CNN (``ela-cnn``).

Both decode the whole dataset once into uint8 arrays at the input size (the
model's own preprocessing: a plain resize, or the Error Level Analysis image
for the ELA-CNN), train with the shared loop in ``trainer.py``, and hand the
validation and test logits to :func:`finalize_package`, which calibrates,
sets thresholds on validation data and writes the package.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synthdetect.models.cnn import SmallCNN
from synthdetect.models.package import ModelPackage
from synthdetect.train.augment import AugmentConfig, PixelAugmenter, mix_batch
from synthdetect.train.datasets import open_dataset
from synthdetect.train.registry import (
    TrainerError, TrainRequest, finalize_package, option_flag, register_trainer,
)
from synthdetect.train.splits import split_records
from synthdetect.train.trainer import TrainConfig, decode_records, fit_classifier, predict_logits

MEAN = STD = [0.5, 0.5, 0.5]


def _input_spec(options: dict[str, Any], default_size: int) -> dict[str, Any]:
    size = int(options.get("input_size") or default_size)
    max_short = options.get("max_short_side")
    if max_short is None:
        max_short = 2 * size  # a whole-image resize model should not judge images far larger than it saw
    return {"size": [size, size], "resample": "bicubic", "mean": MEAN, "std": STD, "channel_order": "RGB",
            "min_side": int(options.get("min_side", 8)), "max_aspect": float(options.get("max_aspect", 2.0)),
            "max_short_side": int(max_short) or None}


@dataclass
class FittedCNN:
    """A small CNN trained by the shared loop, with the decoded splits it saw (uint8 NHWC at its input size)."""

    module: SmallCNN
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    result: Any
    errors: list
    workdir: Path


def fit_small_cnn(request: TrainRequest, input_spec: dict[str, Any], transform: Callable | None = None) -> FittedCNN:
    """Build the CNN the options ask for, decode the three splits and train it (``small-cnn``, ``ela-cnn`` and
    ``clip-cascade``'s member)."""
    workdir = Path(request.out) / "_work"
    size = tuple(input_spec["size"])
    torch.manual_seed(request.config.seed)
    module = small_cnn_from_options(request.options, size, tta_hflip=option_flag(request.options.get("tta_hflip")))
    check_augment_fits(request.augment, size)
    x_train, y_train, e_train = decode_records(request.train, size, description="decode train", transform=transform)
    x_val, y_val, e_val = decode_records(request.val, size, description="decode val", transform=transform)
    x_test, y_test, e_test = decode_records(request.test, size, description="decode test", transform=transform)
    augment = request.augment
    result = fit_classifier(
        module, (x_train, y_train), (x_val, y_val), request.config, mean=MEAN, std=STD, workdir=workdir,
        augment=PixelAugmenter(augment),
        mix=(lambda x, y, g: mix_batch(x, y, g, augment)) if augment.mixes else None,
    )
    return FittedCNN(module, (x_train, y_train), (x_val, y_val), (x_test, y_test), result,
                     e_train + e_val + e_test, workdir)


def cnn_card(module: SmallCNN, input_spec: dict[str, Any], description: str) -> dict[str, Any]:
    """The card fields every small-CNN kind writes (version, labels, architecture, input)."""
    return {
        "version": "1.0.0",
        "description": description,
        "labels": {"output": "one logit: log-odds that the image is AI-generated", "positive": "ai", "negative": "human"},
        "architecture": module.hparams,
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "input": input_spec,
    }


def _train_torch_cnn(
    request: TrainRequest, *, kind: str, input_spec: dict[str, Any], description: str,
    transform: Callable | None = None, extra_input: dict[str, Any] | None = None,
) -> ModelPackage:
    out = Path(request.out)
    fitted = fit_small_cnn(request, input_spec, transform)
    module, (x_val, y_val), (x_test, y_test) = fitted.module, fitted.val, fitted.test
    val_logits = predict_logits(module, x_val, MEAN, STD)
    test_logits = predict_logits(module, x_test, MEAN, STD) if len(x_test) else None
    weights = out / "weights.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), weights)
    card = cnn_card(module, {**input_spec, **(extra_input or {})}, description)
    return finish_torch_package(request, kind=kind, card=card, result=fitted.result, errors=fitted.errors,
                                workdir=fitted.workdir, val=(val_logits, y_val), test=(test_logits, y_test),
                                weights=weights, keep_workdir=option_flag(request.options.get("keep_workdir", False)))


def small_cnn_from_options(options: dict[str, Any], size: tuple[int, ...], *, tta_hflip: bool, depth: int = 3,
                           layout: str = "vgg") -> SmallCNN:
    """The small CNN that ``--option width/depth/layout`` ask for (``depth`` and ``layout`` give the kind's defaults).

    Every trainer of a small CNN builds it here, before decoding: decoding a large zip takes minutes, so a bad
    layout, depth or input size is refused first, as one TrainerError.
    """
    layout = str(options.get("layout", layout))
    if layout == "s2d" and (size[0] % 2 or size[1] % 2):
        raise TrainerError(f"layout s2d folds 2x2 pixel patches into channels, so the input size must be even, "
                           f"not {size[0]}x{size[1]}")
    try:
        return SmallCNN(width=int(options.get("width", 32)), depth=int(options.get("depth", depth)), in_channels=3,
                        tta_hflip=tta_hflip, layout=layout)
    except ValueError as exc:
        raise TrainerError(str(exc)) from exc


def check_augment_fits(augment: AugmentConfig, size: tuple[int, ...]) -> None:
    """Refuse, before decoding, a shift the input size cannot take (torch raised it at the first training step)."""
    try:
        augment.check_input_size((size[0], size[1]))
    except ValueError as exc:
        raise TrainerError(str(exc)) from exc


def finish_torch_package(
    request: TrainRequest, *, kind: str, card: dict[str, Any], result, errors: list[str], workdir: Path,
    val: tuple, test: tuple, weights: Path, keep_workdir: bool = False, extra_training: dict | None = None,
    extra_files: dict[str, Path] | None = None,
) -> ModelPackage:
    """Shared end of every torch trainer: calibrate and write the package, keep the epoch logs, tidy up."""
    training = {
        "decode_errors": errors[:50], "decode_error_count": len(errors),
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1),
        "threads": torch.get_num_threads(), **(extra_training or {}),
    }
    test_logits, y_test = test
    package = finalize_package(
        request, kind=kind, card=card, val_logits=val[0], val_labels=val[1],
        test_logits=test_logits, test_labels=y_test if test_logits is not None else None,
        files={"weights": weights, **(extra_files or {})}, training=training, history=result.history,
        unreadable=[error.record for error in errors if hasattr(error, "record")],
    )
    out = Path(request.out)
    for log in ("metrics.jsonl", "metrics.csv"):  # the per-epoch log stays with the package
        if (workdir / log).exists():
            shutil.copy2(workdir / log, out / f"training_{log}")
    if not keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return package


@register_trainer("small-cnn")
def train_small_cnn_request(request: TrainRequest) -> ModelPackage:
    """The small CNN on whole images resized to ``input_size`` (32 px: CIFAKE)."""
    spec = _input_spec(request.options, 32)
    return _train_torch_cnn(
        request, kind="small-cnn", input_spec=spec,
        description=request.options.get("description")
        or f"Small CNN for small images (about {spec['size'][0]} px), trained with synthdetect train.",
    )


@register_trainer("ela-cnn")
def train_ela_cnn(request: TrainRequest) -> ModelPackage:
    """The Keras ELA-CNN recipe: the CNN sees the Error Level Analysis image, not the pixels."""
    from synthdetect.models.ela_cnn import ela_input

    options = dict(request.options)
    options.setdefault("max_short_side", 0)  # ELA is computed at full resolution: any size is in domain
    spec = _input_spec(options, 128)
    quality = int(options.get("ela_quality", 90))
    return _train_torch_cnn(
        request, kind="ela-cnn", input_spec=spec, extra_input={"ela_quality": quality},
        transform=lambda loaded, size: ela_input(loaded, size, quality),
        description=options.get("description")
        or f"ELA-CNN: small CNN on the JPEG quality-{quality} error-level image, resized to {spec['size'][0]} px.",
    )


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
    """Python entry point kept for existing callers: a stratified split, then the ``small-cnn`` trainer."""
    config = config or TrainConfig()
    records = open_dataset(data)
    split = split_records(records, "stratified", val_fraction=val_fraction, test_fraction=test_fraction,
                          seed=config.seed)
    request = TrainRequest(
        train=split.train, val=split.val, test=split.test, out=Path(out), name=name, seed=config.seed,
        threads=config.threads, augment=AugmentConfig(shift=config.max_shift), config=config, command=command,
        data=str(data), split=split.describe(),
        options={"width": width, "input_size": input_size, "max_short_side": max_short_side,
                 **({"description": description} if description else {})},
    )
    return train_small_cnn_request(request)
