"""The ``clip-cascade`` kind: a small CNN decides the images it is sure of, a CLIP head the others.

Why: on CIFAKE, small CNNs trained with every recipe tried level off together
and miss the same images, which look semantic (studio-like real photos,
snapshot-like AI ones); averaging CNNs gains at most 3 of 3,960 validation
images.  Those misses sit where the CNN is unsure: 75 of 1.1.0's 82 lie in
the 15% of validation images with the smallest |logit|.  There a logistic
head on the image's CLIP embedding and the CNN's logit got 14, 11 and 7 more
validation images right than three CNNs alone (docs/cifake-cnn-attempts.md).

The CNN sees the image resized to its input (32 px); CLIP sees that same
small image enlarged bicubic to 224 px, as the head was trained.  Outside
the band the output is the CNN's logit over its validation temperature, in
the band the head's logit, so both halves are log-odds on one scale before
the card's calibration.  CLIP runs only for band images (about one in seven).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage, ModelPackageError
from synthdetect.models.torch_kinds import TorchModel, build_small_cnn, load_weights

#: CLIP's input side; the small image is enlarged to it.
CLIP_SIDE = 224


def clip_views(arrays: Sequence[np.ndarray]) -> list[Image.Image]:
    """The 224 px views CLIP sees of the CNN's resized uint8 inputs (trainer and model alike)."""
    return [Image.fromarray(np.asarray(a, dtype=np.uint8)).resize((CLIP_SIDE, CLIP_SIDE), Image.Resampling.BICUBIC)
            for a in arrays]


def head_logits(embeddings: np.ndarray, cnn_logits: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """The head's log-odds of AI from [embedding, raw CNN logit]."""
    features = np.c_[np.asarray(embeddings, dtype=np.float64), np.asarray(cnn_logits, dtype=np.float64)]
    return features @ np.asarray(weights, dtype=np.float64) + float(bias)


class ClipCascadeModel(Model):
    """The CNN member (a :class:`TorchModel` on the same card) and the band head; not itself a torch model, so
    Grad-CAM and ONNX export refuse it (either would explain or export the CNN alone)."""

    def __init__(self, card: dict[str, Any], cnn: TorchModel, head: dict[str, Any]):
        super().__init__(card)
        self.cnn = cnn
        cascade = card["cascade"]
        self.tau = float(cascade["tau"])
        self.cnn_temperature = float(cascade["cnn_temperature"])
        self.extractor_name = cascade["encoder"]["name"]
        self.weights, self.bias = np.asarray(head["weights"], dtype=np.float64), float(head["bias"])
        if self.weights.shape != (int(cascade["encoder"]["dim"]) + 1,):
            raise ModelPackageError(f"{self.name}: head has {self.weights.shape} weights for a "
                                    f"{cascade['encoder']['dim']}-d embedding and the CNN logit")

    def prepare(self, image) -> np.ndarray:
        return self.cnn.prepare(image)

    def logits_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        from synthdetect.models.view_features import get_extractor

        cnn = np.asarray(self.cnn.logits_prepared(prepared), dtype=np.float64).reshape(-1)
        out = cnn / self.cnn_temperature
        band = np.flatnonzero(np.abs(cnn) < self.tau)
        if band.size:
            embeddings = get_extractor(self.extractor_name).features(clip_views([prepared[i] for i in band]))
            out[band] = head_logits(embeddings, cnn[band], self.weights, self.bias)
        return out

    def ready(self) -> None:
        from synthdetect.models.view_features import get_extractor

        get_extractor(self.extractor_name)  # built once, before a scan forks its workers


@register_kind("clip-cascade")
def _load_clip_cascade(package: ModelPackage) -> Model:
    module = build_small_cnn(package.card["architecture"])
    module.load_state_dict(load_weights(package))
    with np.load(package.file("head")) as stored:
        head = {"weights": stored["weights"], "bias": float(stored["bias"])}
    return ClipCascadeModel(package.card, TorchModel(package.card, module), head)
