"""Error Level Analysis: how much an image changes when re-saved as JPEG.

Regions saved at a different quality, pasted in, or synthesised and never
JPEG-compressed re-compress differently; the difference image makes that
visible (as in the Keras ELA model card: re-save at quality 90, amplify the
absolute difference).  It is a picture for a human and a weak feature, never
decisive on its own: resizing, re-saving and screenshots change it as much as
generation does.  The probe therefore runs only on request (``inspect``,
reports), on a copy at most ``FEATURE_SIDE`` px, and says nothing about
``ai`` or ``human``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageChops

from synthdetect.evidence import register_probe
from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

DEFAULT_QUALITY = 90
FEATURE_SIDE = 512
#: Side of the square regions whose mean error levels ``tile_mean_spread`` compares.
TILE = 32


def _rgb(image: LoadedImage | Image.Image) -> Image.Image:
    pil = image.rgb if isinstance(image, LoadedImage) else image
    return pil if pil.mode == "RGB" else pil.convert("RGB")


#: ``ImageOps.exif_transpose``'s operation for each EXIF orientation, and the one that undoes it.
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
_UNDO_ORIENT = {**_ORIENT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def stored_orientation(image: LoadedImage | Image.Image) -> int:
    """The EXIF orientation ``load_image`` applied (1 when none): the file's own pixel grid is the other way round."""
    value = image.orientation if isinstance(image, LoadedImage) else 1
    return value if value in _ORIENT else 1


def _difference(rgb: Image.Image, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as resaved:
        return np.asarray(ImageChops.difference(rgb, resaved.convert("RGB")))


def ela_difference(image: LoadedImage | Image.Image, quality: int = DEFAULT_QUALITY) -> np.ndarray:
    """Absolute per-pixel difference (uint8, HxWx3) between the image and its JPEG re-save at ``quality``.

    An EXIF-rotated image is re-saved on the file's own pixel grid and the difference turned back: re-saving
    the turned pixels would put JPEG's 8x8 blocks across the file's (when a side is not a multiple of 16) and
    make every block edge light up.
    """
    rgb = _rgb(image)
    orientation = stored_orientation(image)
    if orientation != 1:
        stored = rgb.transpose(_UNDO_ORIENT[orientation])
        if stored.size == image.original_size:
            return np.asarray(Image.fromarray(_difference(stored, quality)).transpose(_ORIENT[orientation]))
    return _difference(rgb, quality)


def ela_image(image: LoadedImage | Image.Image, quality: int = DEFAULT_QUALITY, scale: float | None = None) -> Image.Image:
    """The ELA picture: the difference amplified so that its maximum is white (or by a fixed ``scale``)."""
    diff = ela_difference(image, quality)
    factor = scale if scale is not None else 255.0 / max(float(diff.max()), 1.0)
    # A 256-entry table instead of a float copy of the image: a 24 MP photo peaked at 820 MB more that way.
    table = np.clip(np.arange(256, dtype=np.float32) * factor, 0, 255).astype(np.uint8)
    return Image.fromarray(table[diff], "RGB")


def ela_features(image: LoadedImage | Image.Image, quality: int = DEFAULT_QUALITY) -> dict[str, float | None]:
    """Summary statistics of the error levels on a copy at most ``FEATURE_SIDE`` px (cheap, comparable).

    ``tile_mean_spread`` is None when the copy holds fewer than two whole ``TILE`` px tiles."""
    rgb = _rgb(image).copy()
    rgb.thumbnail((FEATURE_SIDE, FEATURE_SIDE))
    # An image that needed no shrinking keeps its file's JPEG grid (see ela_difference); a shrunk copy has none.
    same = rgb.size == _rgb(image).size
    diff = ela_difference(image if same else rgb, quality).astype(np.float32).mean(axis=2)
    h, w = diff.shape
    rows, cols = h // TILE, w // TILE
    # The spread compares regions: with fewer than two whole tiles there is nothing to compare, and a spread of
    # single pixels (what a 1x500 image used to report under this name) is not a tile spread.
    spread = None
    if rows * cols >= 2:
        tiles = diff[: rows * TILE, : cols * TILE].reshape(rows, TILE, cols, TILE).mean(axis=(1, 3))
        spread = round(float(tiles.max() - tiles.min()), 4)
    return {"quality": quality, "mean": round(float(diff.mean()), 4), "std": round(float(diff.std()), 4),
            "p99": round(float(np.quantile(diff, 0.99)), 4), "tile_mean_spread": spread}


@register_probe("ela", default=False)
def probe_ela(image: LoadedImage) -> list[Evidence]:
    features = ela_features(image)
    spread = features["tile_mean_spread"]
    spread_text = (f"tile spread {spread:.2f}" if spread is not None
                   else f"tile spread not measured (fewer than two {TILE} px tiles)")
    return [Evidence("ela", "none", "info",
                     f"error level at JPEG q{features['quality']}: mean {features['mean']:.2f}, "
                     f"p99 {features['p99']:.1f}, {spread_text} "
                     "(a forensic view, not evidence of AI on its own)", features)]
