"""Other people's detectors as first-class models: ``hf:``, ``timm:``, ``keras:`` and ``onnx:`` names.

Importing this package registers the prefixes and nothing else: transformers,
keras, timm and onnxruntime are imported only when a name with their prefix
is loaded, so ``synthdetect detect`` with a shipped model never pays for them.
"""

from __future__ import annotations

from synthdetect.models import register_prefix
from synthdetect.models.base import Model


@register_prefix("hf")
def _load_hf(spec: str) -> Model:
    from synthdetect.models.adapters.hf import load_hf

    return load_hf(spec)


@register_prefix("timm")
def _load_timm(spec: str) -> Model:
    from synthdetect.models.adapters.timm import load_timm

    return load_timm(spec)


@register_prefix("keras")
def _load_keras(spec: str) -> Model:
    from synthdetect.models.adapters.keras import load_keras

    return load_keras(spec)


@register_prefix("onnx")
def _load_onnx(spec: str) -> Model:
    from synthdetect.models.adapters.onnx import load_onnx

    return load_onnx(spec)


PREFIXES = ("hf", "timm", "keras", "onnx")
