"""The ``small-pair`` kind: a from-scratch small CNN and an ImageNet-pretrained EfficientNet-Lite, one logit out.

Why two networks: on CIFAKE, small CNNs trained from scratch with different
recipes and layouts level off together and miss the *same* images, so
averaging them gains little.  A fine-tuned EfficientNet-Lite0 starts from
ImageNet features and, on the validation split, misses different ones (it
gets half of the small CNN's misses right).  On the held-out split that
overlap was larger and the pair gained little over its CNN (README,
"cifake-cnn: how it was trained"), so it is a kind to train and measure,
not the shipped model.  The weights and bias of that sum are fitted on the
validation split by the trainer and stored on the card
(``architecture.combiner``).

Both members read the same 32 px image: the card normalises it for the
small CNN (mean and std 0.5) and the module re-normalises it as the Lite
member was trained (``architecture.lite.normalisation``: ``tf-lite``, or
``imagenet`` for packages from before 2026-12-05), so serving, Grad-CAM and
ONNX export see one input and one logit.  Weights are stored int8 (see
``weight_codec``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from synthdetect.models.base import Model, register_kind
from synthdetect.models.cnn import SmallCNN
from synthdetect.models.efficientnet_lite import NORMALISATIONS, EfficientNetLiteDetector
from synthdetect.models.package import ModelPackage
from synthdetect.models.torch_kinds import serve_torch_package

#: The card's input normalisation (the small CNN's); the Lite member's is derived from it.
PAIR_MEAN = PAIR_STD = [0.5, 0.5, 0.5]


class PairNet(nn.Module):
    """``w_cnn * cnn(x) + w_lite * lite(x) + bias``; the member logits come out of :meth:`member_logits`."""

    def __init__(self, cnn: dict[str, Any], lite: dict[str, Any], combiner: dict[str, Any] | None = None):
        super().__init__()
        self.cnn = SmallCNN(**cnn)
        self.lite = EfficientNetLiteDetector(lite["variant"], int(lite["image_size"]))
        combiner = combiner or {"weights": [0.5, 0.5], "bias": 0.0}
        self.combiner = {"weights": [float(w) for w in combiner["weights"]], "bias": float(combiner["bias"])}
        normalisation = lite.get("normalisation", "imagenet")  # a card without it predates tf-lite
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown Lite normalisation {normalisation!r} (known: {', '.join(NORMALISATIONS)})")
        self.hparams = {"cnn": dict(self.cnn.hparams), "lite": {**self.lite.hparams, "normalisation": normalisation},
                        "combiner": dict(self.combiner)}
        # x_lite = (x01 - m) / s with x01 = x * std_pair + mean_pair: one multiply-add per channel
        mean, std = torch.tensor(PAIR_MEAN), torch.tensor(PAIR_STD)
        m, s = (torch.tensor(v) for v in NORMALISATIONS[normalisation])
        self.register_buffer("lite_scale", (std / s).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("lite_shift", ((mean - m) / s).view(1, 3, 1, 1), persistent=False)

    @property
    def tta_hflip(self) -> bool:
        """The small CNN's mirror averaging (Grad-CAM turns it off and mirrors the map itself)."""
        return self.cnn.tta_hflip

    @tta_hflip.setter
    def tta_hflip(self, value: bool) -> None:
        self.cnn.tta_hflip = bool(value)

    def member_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cnn(x), self.lite(x * self.lite_scale + self.lite_shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z_cnn, z_lite = self.member_logits(x)
        w_cnn, w_lite = self.combiner["weights"]
        return w_cnn * z_cnn + w_lite * z_lite + self.combiner["bias"]


def build_pair(architecture: dict[str, Any]) -> PairNet:
    return PairNet(architecture["cnn"], architecture["lite"], architecture.get("combiner"))


@register_kind("small-pair")
def _load_small_pair(package: ModelPackage) -> Model:
    return serve_torch_package(package, build_pair)
