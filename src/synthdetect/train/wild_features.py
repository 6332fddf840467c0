"""Extract each image's crop features once and cache them on disk.

Model selection on wild-dev fits dozens of heads (every leave-one-source-out
fold, nested); the CLIP forward passes dominate the cost (~0.3 s per crop on
one core), so they run once per image and policy and are read back from
``<cache>/<policy key>/<extractor>@<identity>/<sha256 of the file>.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synthdetect.images import ImageLoadError
from synthdetect.models.multicrop import CropPolicy
from synthdetect.models.view_features import extractor_identity, get_extractor, view_features
from synthdetect.train.datasets import Record, load_record, read_record_bytes
from synthdetect.train.trainer import progress_bar


def default_cache_dir() -> Path:
    root = os.environ.get("SYNTHDETECT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthdetect")
    return Path(root) / "features"


@dataclass
class ImageMeta:
    """What a shortcut could key on: file format, size, bytes per pixel."""

    format: str
    width: int
    height: int
    bytes: int


@dataclass
class CachedFeatures:
    records: list[Record]
    meta: list[ImageMeta]
    views: dict[str, list[dict[str, np.ndarray]]]  # extractor -> per image {"global", "crops"}
    failed: list[tuple[Record, str]]
    digests: list[str]  # sha256 of each kept file's bytes: copies under other names are found by it


#: A new folder name for an extractor whose cached features may be wrong.  CLIP features cached before 2026-12-04 on
#: an AVX2-only CPU came from saturated integer products (cosine 0.40-0.51 to the float encoder's; see
#: models/onnx_integer.py), so they are computed again rather than trusted.
CACHE_REVISIONS = {"clip-vit-b16-int8": "clip-vit-b16-int8@exact-int"}


def _cache_folder(cache_dir: Path, policy: CropPolicy, extractor: str) -> Path:
    """``<policy key>/<extractor>@<identity hash>``, where each file's features go as ``<sha256>.npz``.

    Keyed by the extractor's identity (its encoder's sha256 and normalisation for CLIP) as well as its name: a
    new encoder pin or normalisation under the same name read back the old features (cosine 0.949 to fresh ones
    after a mean/std change)."""
    identity = json.dumps(extractor_identity(extractor), sort_keys=True)
    folder = f"{CACHE_REVISIONS.get(extractor, extractor)}@{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
    return cache_dir / policy.key() / folder


def extract_cached(
    records: Sequence[Record], policy: CropPolicy, extractors: Sequence[str], cache_dir: Path | None = None,
    *, description: str = "extracting crop features",
) -> CachedFeatures:
    """Features for every record and extractor, computing only what the cache lacks."""
    cache_dir = cache_dir or default_cache_dir()
    views: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in extractors}
    kept: list[Record] = []
    meta: list[ImageMeta] = []
    digests: list[str] = []
    failed: list[tuple[Record, str]] = []
    folders = {name: _cache_folder(cache_dir, policy, name) for name in extractors}  # once, not per image
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(records), status="")
        for record in records:
            try:
                raw = read_record_bytes(record)
                digest = hashlib.sha256(raw).hexdigest()
                files = {name: folder / f"{digest}.npz" for name, folder in folders.items()}
                loaded = None
                per_image: dict[str, dict[str, np.ndarray]] = {}
                for name, path in files.items():
                    if path.is_file():
                        with np.load(path, allow_pickle=False) as data:
                            per_image[name] = {k: data[k] for k in data.files if k != "meta"}
                            info = data["meta"] if "meta" in data.files else None
                        if info is not None:
                            continue
                    if loaded is None:
                        loaded = load_record(record)
                    feats = view_features(get_extractor(name), loaded.rgb, policy)
                    info = np.array([loaded.size[0], loaded.size[1], len(raw)], dtype=np.int64)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp.npz")
                    np.savez(tmp, meta=info, **feats)
                    os.replace(tmp, path)
                    per_image[name] = feats
                fmt = loaded.format if loaded is not None else _sniff_format(raw)
                with np.load(files[extractors[0]], allow_pickle=False) as data:
                    w, h, nbytes = (int(v) for v in data["meta"])
                kept.append(record)
                meta.append(ImageMeta(fmt or "?", w, h, nbytes))
                digests.append(digest)
                for name in extractors:
                    views[name].append(per_image[name])
            except (ImageLoadError, OSError, ValueError) as exc:
                # "No such file or directory", not "[Errno 2] No such file or directory: 'the path'" (named beside it)
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror and exc.filename else str(exc)
                failed.append((record, why))
            bar.update(task, advance=1, status=f"{len(failed)} failed")
    return CachedFeatures(kept, meta, views, failed, digests)


def _sniff_format(raw: bytes) -> str:
    if raw.startswith(b"\xff\xd8"):
        return "JPEG"
    if raw.startswith(b"\x89PNG"):
        return "PNG"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return "?"
