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

from typing import Any

import numpy as np
import torch
from PIL import Image

from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage
from synthdetect.models.torch_kinds import TorchModel, build_small_cnn, load_weights, resize_to_input


def ela_input(loaded: LoadedImage, size: tuple[int, int], quality: int = 90) -> Image.Image:
    """The model's input: the ELA image at full resolution (brightest difference stretched to white), resized."""
    from synthdetect.evidence.ela import ela_image

    return resize_to_input(ela_image(loaded, quality=quality), tuple(size), "bilinear")


class ElaCNNModel(TorchModel):
    def __init__(self, card: dict[str, Any], module: torch.nn.Module):
        super().__init__(card, module)
        self.quality = int(card["input"].get("ela_quality", 90))

    def prepare(self, image: LoadedImage) -> np.ndarray:
        return np.asarray(ela_input(image, self.input_size, self.quality))


@register_kind("ela-cnn")
def _load_ela_cnn(package: ModelPackage) -> Model:
    module = build_small_cnn(package.card["architecture"])
    module.load_state_dict(load_weights(package))
    return ElaCNNModel(package.card, module)
