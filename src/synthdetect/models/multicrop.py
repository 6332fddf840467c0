"""Crop policy for full-size images: one global view plus crops at native resolution.

Resizing a 2000 px photo to 224 px smooths away the pixel-level traces that
generators leave (upsampling grids, missing sensor noise, odd spectra).  So a
full-size model looks at the image twice: a *global* view (short side resized
to ``size``, centre crop: what the picture shows) and a few *native* crops
(``size`` x ``size`` pixels copied without resampling: how the pixels were
made).  Per-crop scores are then aggregated.  The policy is stored in the
model card so that what was validated is exactly what is served.

``global_short_side`` makes the global view a thumbnail first (e.g. 48 px,
Lanczos), and ``global_jpeg_quality`` gives every thumbnail the same JPEG
compression.  Across wild-dev's sources, resolution, sensor noise and
compression differ more between sources than between AI and real images; a
head on CLIP features of full-resolution views learns those and fails on a
source it has not seen.  Through a thumbnail, every image arrives equally
blurred and only what the picture shows remains (measured leave-one-source-out
in the README's wild-v2 section).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np
from PIL import Image

from synthdetect.images import encode_image, shrink_to_short_side

AGGREGATIONS = ("mean", "max", "trimmed_mean", "median")


@dataclass(frozen=True)
class CropPolicy:
    """Where the crops come from.

    ``native_crops`` crops of ``size`` px are taken at the centres of an even
    grid over the image (quadrant centres for 4), never at the borders where
    logos and watermarks live.  ``max_native_side``, when set, first scales
    images whose short side exceeds it down to that size (a fixed, small
    rescale that keeps crops of huge photos from showing only sky).
    """

    size: int = 224
    native_crops: int = 4
    global_view: bool = True
    max_native_side: int | None = None
    global_short_side: int | None = None  # shrink to this short side (Lanczos) before the global view
    global_jpeg_quality: int | None = None  # then re-encode that thumbnail as JPEG: one compression for every source

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("global_short_side", "global_jpeg_quality"):
            if out[key] is None:  # older cards and cache keys stay as they were
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "CropPolicy":
        """Reads the policy fields of a card's ``crop_policy``, ignoring its explanatory extras."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def key(self) -> str:
        """Short, stable id of the policy and of how its views are cut (names feature caches)."""
        blob = json.dumps({**self.to_dict(), "views_revision": VIEWS_REVISION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def global_crop(self, rgb: Image.Image) -> Image.Image:
        """CLIP-style view: short side to ``size`` (bicubic), centre crop; through a thumbnail if the policy says so."""
        if self.global_short_side:
            rgb = shrink_to_short_side(rgb, self.global_short_side, Image.Resampling.LANCZOS)
        if self.global_jpeg_quality:
            rgb = Image.open(io.BytesIO(encode_image(rgb, "JPEG", quality=self.global_jpeg_quality))).convert("RGB")
        return resize_short_center_crop(rgb, self.size)

    def native_crop_boxes(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        s = self.size
        n = self.native_crops
        if n <= 0 or min(width, height) < s:
            return []
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        boxes = []
        for r in range(rows):
            for c in range(cols):
                if len(boxes) == n:
                    break
                cx = (c + 0.5) * width / cols
                cy = (r + 0.5) * height / rows
                left = int(min(max(round(cx - s / 2), 0), width - s))
                top = int(min(max(round(cy - s / 2), 0), height - s))
                boxes.append((left, top, left + s, top + s))
        return boxes

    def native_crops_of(self, rgb: Image.Image) -> list[Image.Image]:
        """Native-resolution crops; an image too small for one gets its global view instead."""
        image = rgb if not self.max_native_side else shrink_to_short_side(rgb, self.max_native_side,
                                                                          Image.Resampling.BICUBIC)
        boxes = self.native_crop_boxes(*image.size)
        if not boxes:
            return [self.global_crop(rgb)]
        return [image.crop(box) for box in boxes]


#: Raise when a policy's views of the same image change (cached features are then computed again). 2: strips
#: longer than BOXED_RESIZE_ASPECT are resized box-wise.
VIEWS_REVISION = 2
#: Longer than this (long side over short side), only the centre that survives the crop is resized.
BOXED_RESIZE_ASPECT = 8


def resize_short_center_crop(rgb: Image.Image, size: int) -> Image.Image:
    """The short side resized to ``size``, then the centre ``size`` x ``size`` square.

    A strip is resized only where the crop falls: resized whole, a 20000x1 image became 4,480,000x224 px on the
    way (24 s and 4.2 GB; 70000x1 would need 10 GB).  Pillow's box resize rounds differently (up to 10 levels
    on wild-dev images), so images the Detector accepts (aspect 6 at most) keep the whole-image resize that the
    shipped heads were trained on."""
    w, h = rgb.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if (new_w, new_h) == (w, h):
        return rgb.crop((left, top, left + size, top + size))
    if max(w, h) > BOXED_RESIZE_ASPECT * min(w, h):
        sx, sy = new_w / w, new_h / h
        box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
        return rgb.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return rgb.resize((new_w, new_h), Image.Resampling.BICUBIC).crop((left, top, left + size, top + size))


def aggregate(values: Sequence[float] | np.ndarray, how: str, *, trim: float = 0.25) -> float:
    """Combine per-crop logits into one.  ``trimmed_mean`` drops ``trim`` of each tail."""
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if x.size == 0:
        raise ValueError("no crop scores to aggregate")
    if how == "mean":
        return float(x.mean())
    if how == "max":
        return float(x[-1])
    if how == "median":
        return float(np.median(x))
    if how == "trimmed_mean":
        cut = int(math.floor(trim * x.size))
        kept = x[cut : x.size - cut] if x.size - 2 * cut > 0 else x
        return float(kept.mean())
    raise ValueError(f"unknown aggregation '{how}' (known: {', '.join(AGGREGATIONS)})")


def aggregate_rows(matrix: Sequence[np.ndarray], how: str) -> np.ndarray:
    """Aggregate a ragged list of per-image crop-logit arrays."""
    return np.array([aggregate(row, how) for row in matrix], dtype=np.float64)
