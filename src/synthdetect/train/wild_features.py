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
    #: why the features could not be stored in the cache (a file in its place, a read-only or full disk), or None;
    #: the images were still used, their features computed in memory
    cache_problem: str | None = None

    def subset(self, keep: Sequence[bool]) -> "CachedFeatures":
        """Only the kept images (what the model judges); failures and the cache note stay as they were."""
        pick = [i for i, k in enumerate(keep) if k]
        return CachedFeatures([self.records[i] for i in pick], [self.meta[i] for i in pick],
                              {name: [v[i] for i in pick] for name, v in self.views.items()}, self.failed,
                              [self.digests[i] for i in pick], self.cache_problem)


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
    cache_problem: str | None = None  # the first cache write that failed: later images are not cached either
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
                infos: dict[str, np.ndarray] = {}
                for name, path in files.items():
                    hit = _read_cached(path)
                    if hit is not None:
                        per_image[name], infos[name] = hit
                        continue
                    if loaded is None:
                        loaded = load_record(record)
                    per_image[name] = view_features(get_extractor(name), loaded.rgb, policy)
                    infos[name] = np.array([loaded.size[0], loaded.size[1], len(raw)], dtype=np.int64)
                    if cache_problem is None:
                        cache_problem = _write_cached(path, infos[name], per_image[name])
                fmt = loaded.format if loaded is not None else _sniff_format(raw)
                w, h, nbytes = (int(v) for v in infos[extractors[0]])
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
    return CachedFeatures(kept, meta, views, failed, digests, cache_problem)


def _read_cached(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """An image's cached features and ``[width, height, bytes]``, or None when the file is missing or damaged.

    A damaged file (truncated by a full disk or a crash on another system, or not an ``.npz`` at all) is computed
    again and replaced: it ended the run with a BadZipFile traceback, or counted a good image as unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data.files or "global" not in data.files:
                return None  # written before sizes were stored, or not ours
            feats = {k: data[k] for k in data.files if k != "meta"}
            info = data["meta"]
    except Exception:  # noqa: BLE001 - zipfile, zlib, numpy and OS errors alike mean "not usable": compute again
        return None
    return (feats, info) if info.shape == (3,) else None


def _write_cached(path: Path, info: np.ndarray, feats: dict[str, np.ndarray]) -> str | None:
    """Store one image's features (renamed into place when complete); why not, when the cache cannot be written.

    A cache that cannot be written (a file where its folder should be, a read-only or full disk) does not make the
    image unreadable: before, every image was left out as "unreadable ... Not a directory"."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # two runs sharing a cache never share a tmp file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, meta=info, **feats)
        os.replace(tmp, path)
    except OSError as exc:
        return (f"the feature cache cannot be written ({path.parent}: {exc.strerror or exc}); features are "
                "computed in memory and a rerun computes them again")
    finally:  # a half-written file, a full disk's or one a Ctrl-C stopped, is not left behind
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def _sniff_format(raw: bytes) -> str:
    if raw.startswith(b"\xff\xd8"):
        return "JPEG"
    if raw.startswith(b"\x89PNG"):
        return "PNG"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return "?"
