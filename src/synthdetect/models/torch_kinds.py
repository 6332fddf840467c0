"""Model kinds backed by a PyTorch module whose weights live in the package."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, register_kind
from synthdetect.models.cnn import SmallCNN
from synthdetect.models.onnx_backend import OnnxModel, preferred_backend
from synthdetect.models.package import ModelPackage
from synthdetect.models.weight_codec import unpack

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def resize_to_input(im: Image.Image, size: tuple[int, int], resample: str = "bicubic") -> Image.Image:
    if im.size == tuple(size):
        return im
    return im.resize(tuple(size), _RESAMPLE[resample])


def images_to_tensor(arrays: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (channels_last memory, faster on CPU)."""
    x = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


class TorchModel(Model):
    """A torch module that maps a normalised, resized RGB batch to one logit per image."""

    #: What serves this kind's exported model.onnx: the same preprocessing in front of ONNX Runtime.
    onnx_class: type[OnnxModel] = OnnxModel

    def __init__(self, card: dict[str, Any], module: torch.nn.Module):
        super().__init__(card)
        self.module = module.eval().to(memory_format=torch.channels_last)
        spec = card["input"]
        self.input_size = tuple(spec["size"])
        self.resample = spec.get("resample", "bicubic")
        self.mean = spec.get("mean", [0.5, 0.5, 0.5])
        self.std = spec.get("std", [0.5, 0.5, 0.5])

    def prepare(self, image: LoadedImage) -> np.ndarray:
        """The resized uint8 HWC input (a few KB to 150 KB, whatever the photo's size)."""
        return np.asarray(resize_to_input(image.rgb, self.input_size, self.resample))

    def batch(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        return images_to_tensor(np.stack(prepared), self.mean, self.std)

    def preprocess(self, images: Sequence[LoadedImage]) -> torch.Tensor:
        return self.batch([self.prepare(im) for im in images])

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        return self.module(batch).float().numpy()

    def logits_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return self.forward(self.batch(prepared))


def build_small_cnn(hparams: dict[str, Any]) -> SmallCNN:
    return SmallCNN(**hparams)


def load_weights(package: ModelPackage) -> dict[str, torch.Tensor]:
    """The package's float32 state dict; weights stored as int8 (``weight_codec``) are expanded here, for every kind."""
    return unpack(torch.load(package.file("weights"), map_location="cpu", weights_only=True))


def serve_torch_package(package: ModelPackage, build: Callable[[dict[str, Any]], torch.nn.Module],
                        model_class: type[TorchModel] = TorchModel) -> Model:
    """The package's network with its weights, or the ONNX file it was exported to.

    A package exported with `synthdetect export --onnx` also carries model.onnx: served by ONNX Runtime
    (measured faster on CPU) unless SYNTHDETECT_BACKEND=torch asks otherwise.  ``model_class`` is the
    kind's TorchModel; its ``onnx_class`` serves the ONNX file with the kind's preprocessing.
    """
    if "onnx" in package.card.get("files", {}) and preferred_backend(package.card) == "onnxruntime":
        return model_class.onnx_class(package.card, package.file("onnx"))
    module = build(package.card["architecture"])
    module.load_state_dict(load_weights(package))
    return model_class(package.card, module)


@register_kind("small-cnn")
def _load_small_cnn(package: ModelPackage) -> Model:
    return serve_torch_package(package, build_small_cnn)
