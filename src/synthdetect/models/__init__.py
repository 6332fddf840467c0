"""Model kinds, named packages and the one factory that resolves a model name.

Names resolve in this order: a registered prefix (``onnx:``, ``hf:``...), a
path to a package directory or card, a model shipped with synthdetect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from synthdetect.lazy_registry import LazyRegistry
from synthdetect.models.base import Model, ModelScore, build_model, import_all_kinds, model_kinds, register_kind
from synthdetect.models.package import ModelPackage, ModelPackageError, load_package

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Registers the ``hf:``, ``timm:``, ``keras:`` and ``onnx:`` prefixes when imported.
_ADAPTERS = "synthdetect.models.adapters"

PrefixLoader = Callable[[str], Model]
#: Loaders for names such as ``hf:ORG/NAME``; ``register_prefix("x")`` adds one (the adapters register theirs).
PREFIXES: LazyRegistry[PrefixLoader] = LazyRegistry(dict.fromkeys(("hf", "timm", "keras", "onnx"), _ADAPTERS))
register_prefix = PREFIXES.register


def _import_kinds() -> None:
    """Register every kind and prefix (``load_model`` imports only what a name needs)."""
    import_all_kinds()
    PREFIXES.import_all()


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


def adapter_for(name: str) -> Callable[[], Model] | None:
    """A loader for a prefixed name such as ``hf:ORG/NAME``, or None for a package name or path."""
    prefix, sep, rest = name.partition(":")
    if not sep or len(prefix) < 2:  # a one-letter prefix is a Windows drive: a path
        return None
    loader = PREFIXES.get(prefix)
    return (lambda: loader(rest)) if loader is not None else None


def load_model(name: str) -> Model:
    adapter = adapter_for(name)
    return adapter() if adapter is not None else build_model(find_package(name))


__all__ = [
    "Model", "ModelScore", "ModelPackage", "ModelPackageError", "load_model", "find_package", "builtin_names",
    "register_kind", "register_prefix", "model_kinds", "BUILTIN_DIR",
]
