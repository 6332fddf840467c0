"""Evidence probes: one module per signal, one registry, one way to run them.

A probe takes a :class:`~synthdetect.images.LoadedImage` (pixels *and* the
untouched original bytes) and returns :class:`~synthdetect.verdict.Evidence`
records.  Probes report only what they find: an absent signal returns no
record, because absence of metadata is never evidence of AI.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

Probe = Callable[[LoadedImage], list[Evidence]]
_PROBES: dict[str, Probe] = {}
_log = logging.getLogger(__name__)


def register_probe(name: str) -> Callable[[Probe], Probe]:
    def deco(probe: Probe) -> Probe:
        _PROBES[name] = probe
        return probe

    return deco


def probe_names() -> list[str]:
    _import_builtin_probes()
    return sorted(_PROBES)


def run_probes(image: LoadedImage, names: Iterable[str] | None = None) -> list[Evidence]:
    """Run the named probes (all by default); a probe that crashes is reported, never fatal."""
    _import_builtin_probes()
    selected = list(names) if names is not None else sorted(_PROBES)
    found: list[Evidence] = []
    for name in selected:
        probe = _PROBES.get(name)
        if probe is None:
            raise KeyError(f"unknown evidence probe '{name}' (known: {', '.join(sorted(_PROBES))})")
        try:
            found.extend(probe(image))
        except Exception as exc:  # noqa: BLE001 - one broken probe must not lose the verdict
            _log.warning("%s: probe %s failed: %s", image.source, name, exc)
            found.append(Evidence(kind=name, signal="none", strength="info", detail=f"probe failed: {exc}"))
    return found


_BUILTIN_PROBES: tuple[str, ...] = ()


def _import_builtin_probes() -> None:
    import importlib

    for module in _BUILTIN_PROBES:
        importlib.import_module(f"synthdetect.evidence.{module}")
