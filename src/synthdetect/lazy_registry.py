"""Registries whose entries register themselves when their module is imported, imported on first use.

Why lazily: importing every model kind, feature extractor and trainer at start made each ``synthdetect detect``
pay for torch, scikit-learn and SciPy (about 6 of its 9 seconds, ``benchmarks/cli_latency.py``) although a photo
needs none of them.  Each registry names the module that registers each entry, so a known name imports only its
own module; listing every name, or explaining an unknown one, imports them all.  One class serves the model
kinds, the feature extractors, the trainers and the adapter prefixes, so they cannot drift apart in how they do it.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    def __init__(self, modules: dict[str, str]) -> None:
        #: name -> the module whose import registers it (a test checks every such table against a fresh process)
        self.modules = modules
        self.entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")``."""

        def deco(entry: T) -> T:
            self.entries[name] = entry
            return entry

        return deco

    def __contains__(self, name: object) -> bool:
        """Known, registered or not yet imported (imports nothing)."""
        return name in self.entries or name in self.modules

    def get(self, name: str) -> T | None:
        """The entry, importing only the module that registers it; None when nothing does."""
        if name not in self.entries and name in self.modules:
            importlib.import_module(self.modules[name])
        return self.entries.get(name)

    def import_all(self) -> None:
        for module in dict.fromkeys(self.modules.values()):
            importlib.import_module(module)

    def names(self) -> list[str]:
        return sorted(set(self.entries) | set(self.modules))
