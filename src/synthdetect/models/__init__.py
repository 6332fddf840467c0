"""Model kinds, named packages and the one factory that resolves a model name.

Names resolve in this order: a registered prefix (``onnx:``, ``hf:``...), a
model shipped with synthdetect, a path to a package directory or card.  A
bare shipped name (``default``) means the shipped model even when the working
directory holds a folder of that name; write ``./default`` for the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from synthdetect.lazy_registry import LazyRegistry
from synthdetect.models.base import Model, ModelScore, build_model, import_all_kinds, model_kinds, register_kind
from synthdetect.models.package import ModelPackage, ModelPackageError, load_package

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "weights"
_log = logging.getLogger(__name__)

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


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is written as a path (``./x``, ``~/x``, ``/x``, ``a/b``), so it cannot mean a shipped model."""
    return Path(name).name != name or name.startswith((".", "~")) or Path(name).is_absolute()


def shipped_package_dir(name: str) -> Path | None:
    if looks_like_path(name) or not (BUILTIN_DIR / name / "model.json").is_file():
        return None
    return BUILTIN_DIR / name


def find_package(name: str, *, verify: bool = True) -> ModelPackage:
    """A shipped model by bare name, else a package path; a same-named local folder never shadows a shipped model.

    ``verify=False`` reads the card without checking the weight files (``models show`` of a partial download)."""
    shipped = shipped_package_dir(name)
    path = Path(name).expanduser()
    if shipped is not None:
        if path.exists():
            _log.warning("'%s' is a shipped model, used here; the local %s '%s' is not (write ./%s to load it)",
                         name, "folder" if path.is_dir() else "file", name, name)
        return load_package(shipped, verify=verify)
    if path.exists():
        return load_package(path, verify=verify)
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
    return adapter() if adapter is not None else load_package_model(find_package(name))


def load_package_model(package: ModelPackage) -> Model:
    """:func:`build_model`, with what goes wrong inside a kind's loader reported as one line naming the package."""
    try:
        return build_model(package)
    except (ModelPackageError, ValueError, ImportError):
        raise
    except Exception as exc:  # a card its kind cannot build from, weights torch cannot read: one line, not a traceback
        why = " ".join(str(exc).split())
        raise ModelPackageError(f"{package.root}: model '{package.name}' (kind {package.kind}) could not be loaded: "
                                f"{type(exc).__name__}: {why}") from exc


__all__ = [
    "Model", "ModelScore", "ModelPackage", "ModelPackageError", "load_model", "find_package", "builtin_names",
    "register_kind", "register_prefix", "model_kinds", "BUILTIN_DIR",
]
