"""The ``ela-cnn`` kind: a small CNN that looks at the Error Level Analysis image.

The recipe of the Keras "ELA CNN" model card: re-save the image as JPEG at
quality 90, take the absolute difference, stretch it so its brightest pixel
is 255, resize, classify.  Regions re-saved fewer times than the rest (or
never JPEG-compressed, like most generator output) show a different error
level.  The ELA image comes from the evidence probe's own function, so the
probe and the model agree on what "ELA" means; training decodes through
:func:`ela_input` too, so what was trained is what is served.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage
from synthdetect.models.onnx_backend import OnnxModel
from synthdetect.models.torch_kinds import TorchModel, build_small_cnn, resize_to_input, serve_torch_package


def ela_quality_problem(value: Any) -> str | None:
    """Why ``--option ela_quality=VALUE`` is no JPEG quality, or None.

    ``abc`` stopped the run with Python's "invalid literal for int()", naming no option; 150 (JPEG tops out at
    100) trained and was written on the card as the quality the model reads.
    """
    try:
        quality = float(value)
    except (TypeError, ValueError):
        quality = math.nan
    if isinstance(value, bool) or not (quality.is_integer() and 1 <= quality <= 100):
        return f"--option ela_quality={value}: expected a whole-number JPEG quality from 1 to 100 (default 90)"
    return None


def ela_input(loaded: LoadedImage, size: tuple[int, int], quality: int = 90) -> Image.Image:
    """The model's input: the ELA image at full resolution (brightest difference stretched to white), resized."""
    from synthdetect.evidence.ela import ela_image

    return resize_to_input(ela_image(loaded, quality=quality), tuple(size), "bilinear")


class ElaOnnxModel(OnnxModel):
    """An exported ela-cnn on ONNX Runtime: the graph must see the ELA image, as the torch module does."""

    def __init__(self, card: dict[str, Any], onnx_path, threads: int | None = None):
        super().__init__(card, onnx_path, threads)
        self.quality = int(card["input"].get("ela_quality", 90))

    def prepare(self, image: LoadedImage) -> np.ndarray:
        return np.asarray(ela_input(image, self.input_size, self.quality))


class ElaCNNModel(TorchModel):
    onnx_class = ElaOnnxModel

    def __init__(self, card: dict[str, Any], module: torch.nn.Module):
        super().__init__(card, module)
        self.quality = int(card["input"].get("ela_quality", 90))

    def prepare(self, image: LoadedImage) -> np.ndarray:
        return np.asarray(ela_input(image, self.input_size, self.quality))


@register_kind("ela-cnn")
def _load_ela_cnn(package: ModelPackage) -> Model:
    return serve_torch_package(package, build_small_cnn, ElaCNNModel)
