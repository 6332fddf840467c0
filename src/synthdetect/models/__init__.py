"""Model kinds, named packages and the one factory that resolves a model name.

Names resolve in this order: a registered prefix (``onnx:``, ``hf:``...), a
path to a package directory or card, a model shipped with synthdetect.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from synthdetect.models.base import Model, ModelScore, build_model, model_kinds, register_kind
from synthdetect.models.package import ModelPackage, ModelPackageError, load_package

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Modules that register model kinds when imported.
_KIND_MODULES = ["synthdetect.models.torch_kinds", "synthdetect.models.router", "synthdetect.models.ela_cnn",
                 "synthdetect.models.onnx_backend", "synthdetect.models.clip_onnx", "synthdetect.models.handcrafted",
                 "synthdetect.models.adapters", "synthdetect.models.efficientnet_lite",
                 "synthdetect.models.pair"]

PrefixLoader = Callable[[str], Model]
_PREFIXES: dict[str, PrefixLoader] = {}


def register_prefix(prefix: str) -> Callable[[PrefixLoader], PrefixLoader]:
    """Register a loader for names such as ``hf:ORG/NAME`` (``prefix='hf'``)."""

    def deco(loader: PrefixLoader) -> PrefixLoader:
        _PREFIXES[prefix] = loader
        return loader

    return deco


def _import_kinds() -> None:
    for module in _KIND_MODULES:
        importlib.import_module(module)


def builtin_names() -> list[str]:
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "model.json").is_file()) if BUILTIN_DIR.is_dir() else []


def find_package(name: str) -> ModelPackage:
    path = Path(name).expanduser()
    if path.exists():
        return load_package(path)
    if (BUILTIN_DIR / name / "model.json").is_file():
        return load_package(BUILTIN_DIR / name)
    known = ", ".join(builtin_names()) or "none"
    raise ModelPackageError(f"unknown model '{name}' (shipped models: {known}; or give a package path)")


def load_model(name: str) -> Model:
    _import_kinds()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _PREFIXES and len(prefix) > 1:  # len>1 keeps Windows drive letters paths
        return _PREFIXES[prefix](rest)
    return build_model(find_package(name))


__all__ = [
    "Model", "ModelScore", "ModelPackage", "ModelPackageError", "load_model", "find_package", "builtin_names",
    "register_kind", "register_prefix", "model_kinds", "BUILTIN_DIR",
]
