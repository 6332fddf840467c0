"""What every external-model adapter shares: name options, the card, and scoring through a label mapping.

A name may carry options after ``?`` in URL query form, so they work
wherever a model name does (CLI ``--model``, ``Detector.load``, router cards):
``hf:org/name?labels=LABEL_0:human,LABEL_1:ai``, ``keras:/m.h5?positive=ai``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qsl

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.models.adapters.labels import AdapterError, OutputMapping
from synthdetect.models.base import Model


def _split_at_query(spec: str) -> tuple[str, str, str]:
    """Split at the ``?`` that ends the path: a file or folder whose own name holds ``?`` still loads."""
    if "?" in spec and local_path(spec).exists():
        return spec, "", ""
    cut = 0
    while (cut := spec.find("?", cut + 1)) != -1:
        if local_path(spec[:cut]).exists():
            return spec[:cut], "?", spec[cut + 1:]
    return spec.partition("?")


def split_options(spec: str, allowed: Sequence[str], prefix: str) -> tuple[str, dict[str, str]]:
    """``'org/name?labels=a:ai'`` -> ``('org/name', {'labels': 'a:ai'})``, refusing unknown or repeated options."""
    target, sep, query = _split_at_query(spec)
    # A '+' is kept as typed ('?labels=AI+art:ai'): parse_qsl would read it as a space, as a browser form does;
    # percent escapes (%26 for '&') are still read.
    pairs = parse_qsl(query.replace("+", "%2B"), keep_blank_values=True) if sep else []
    options = dict(pairs)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AdapterError(f"{prefix}:{spec}: unknown option(s) {unknown} (allowed: {', '.join(allowed)})")
    repeated = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
    if repeated:  # parse_qsl keeps every copy and dict() the last: '?arch=a&arch=b' would silently load b
        raise AdapterError(f"{prefix}:{spec}: option(s) {repeated} given more than once")
    if not target:
        raise AdapterError(f"{prefix}: no model given (for example {prefix}:/path/to/model)")
    return target, options


def local_path(target: str) -> Path:
    return Path(os.path.expanduser(target))


def require_file(path: Path, prefix: str, suffixes: Sequence[str] | None = None) -> Path:
    """A clear one-line error for the commonest mistake: a wrong path."""
    if not path.exists():
        raise AdapterError(f"{prefix}:{path}: file not found")
    if path.is_dir():
        raise AdapterError(f"{prefix}:{path}: is a directory, expected a model file")
    if suffixes and path.suffix.lower() not in suffixes:
        raise AdapterError(f"{prefix}:{path}: expected a {' or '.join(suffixes)} file")
    return path


def adapter_card(name: str, kind: str, *, source: str, mapping: OutputMapping, preprocessing: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A card like a package's, without calibration or thresholds: none were validated here.

    With no ``decision`` block, fusion uses its fallback uncertain band, and
    ``p_ai`` is the model's own probability for its AI classes.
    """
    return {
        "name": name,
        "kind": kind,
        "description": f"external {kind} model loaded from {source}",
        "source": source,
        "preprocessing": preprocessing,
        **mapping.describe(),
        "calibration": {"method": "identity"},
        "decision": None,
        "notes": "no thresholds validated by synthdetect; verdicts use the default uncertain band",
        **(extra or {}),
    }


MIN_SIDE = 8  # Model.out_of_domain's default: below it an image is too small to judge for any model


class AdapterModel(Model):
    """An external model: subclasses return raw outputs, the mapping turns them into log-odds of AI."""

    batch_size = 16

    def __init__(self, card: dict[str, Any], mapping: OutputMapping):
        super().__init__(card)
        self.mapping = mapping

    def out_of_domain(self, image: LoadedImage) -> str | None:
        """Only 'too small to judge'.

        The aspect-ratio and two-colour limits describe synthdetect's own models and give the reason "was not
        trained on"; what an external model was trained on is unknown here, so it scores such images as its
        publisher's pipeline would.
        """
        return super().out_of_domain(image) if min(image.size) < MIN_SIDE else None

    def raw_outputs(self, images: Sequence[LoadedImage]) -> np.ndarray:
        raise NotImplementedError

    def logits(self, images: Sequence[LoadedImage]) -> np.ndarray:
        if not images:
            return np.zeros(0)
        try:
            return self.mapping.log_odds(self.raw_outputs(images))
        except AdapterError as exc:  # the mapping does not know which model it reads: say so
            raise AdapterError(f"{self.name}: {exc}") from None
