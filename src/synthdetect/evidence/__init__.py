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
from synthdetect.messages import first_line
from synthdetect.verdict import Evidence

Probe = Callable[[LoadedImage], list[Evidence]]
_PROBES: dict[str, Probe] = {}
#: Probes run only when asked for by name (image-forensics features with no decision power of their own).
_ON_REQUEST: set[str] = set()
_log = logging.getLogger(__name__)


def register_probe(name: str, *, default: bool = True) -> Callable[[Probe], Probe]:
    """Register ``probe`` under ``name``; ``default=False`` leaves it out of ``run_probes(names=None)``."""

    def deco(probe: Probe) -> Probe:
        _PROBES[name] = probe
        if not default:
            _ON_REQUEST.add(name)
        return probe

    return deco


def probe_names(include_on_request: bool = True) -> list[str]:
    _import_builtin_probes()
    return sorted(n for n in _PROBES if include_on_request or n not in _ON_REQUEST)


#: Probes that read records from the file's bytes and header, not its pixels: they still run on a file whose
#: pixels cannot be decoded (a C2PA manifest, XMP packet or PNG text chunk before the point where a file is cut).
RECORD_PROBES = ("c2pa", "metadata", "genparams", "exif")


def record_probes(names: Iterable[str] | None = None) -> list[str]:
    """Of the probes ``names`` selects (the default set when None), those that can read a damaged file's records."""
    selected = list(names) if names is not None else probe_names(include_on_request=False)
    return [name for name in dict.fromkeys(selected) if name in RECORD_PROBES]


def run_probes(image: LoadedImage, names: Iterable[str] | None = None) -> list[Evidence]:
    """Run the named probes (the default set when ``names`` is None); a probe that crashes is reported, never fatal."""
    _import_builtin_probes()
    selected = list(names) if names is not None else probe_names(include_on_request=False)
    found: list[Evidence] = []
    for name in selected:
        probe = _PROBES.get(name)
        if probe is None:
            raise KeyError(f"unknown evidence probe '{name}' (known: {', '.join(sorted(_PROBES))})")
        try:
            found.extend(probe(image))
        except Exception as exc:  # noqa: BLE001 - one broken probe must not lose the verdict
            reason = failure_reason(exc)
            _log.warning("%s: probe %s failed: %s", image.source, name, reason)
            found.append(Evidence(kind=name, signal="none", strength="info", detail=f"probe failed: {name} {reason}",
                                  data={"probe_failed": True, "error": str(exc)[:200]}))
    return found


def clipped(text: str | None, limit: int = 80) -> str:
    """Text from a file as a reason quotes it: records are untrusted and run to kilobytes, a reason stays short."""
    text = text or ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def failure_reason(exc: BaseException) -> str:
    """One readable line: the details end up in tables and reasons, and many messages (c2pa's) span lines or are
    empty (``KeyError('x')`` alone says ``'x'``)."""
    message = first_line(exc)
    return f"raised {type(exc).__name__}" + (f": {message}" if message else "")


_BUILTIN_PROBES: tuple[str, ...] = ("c2pa", "metadata", "genparams", "exif", "watermark", "ela", "spectrum")


def _import_builtin_probes() -> None:
    import importlib

    for module in _BUILTIN_PROBES:
        importlib.import_module(f"synthdetect.evidence.{module}")
