"""The stated preprocessing of a Keras, ONNX or timm model, reproduced with PIL and numpy.

A detector only means what it was trained to mean on inputs prepared the way
it was trained: same resize filter, crop, scaling, channel order and layout.
These are read from the model's own metadata (timm pretrained cfg) or its
JSON sidecar, written onto the card, and applied here.  Hand-written rather
than torchvision because torchvision is not installable beside our CPU torch;
the geometry follows torchvision/timm's eval transforms step by step.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageEnhance

from synthdetect.models.adapters.labels import AdapterError

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


def error_level_image(im: Image.Image, quality: int) -> Image.Image:
    """Error level analysis as the published Keras ELA-CNNs compute it.

    Re-save as JPEG at ``quality``, take the absolute difference, and stretch
    its brightness so the largest difference becomes 255.
    """
    buffer = io.BytesIO()
    im.convert("RGB").save(buffer, "JPEG", quality=quality)
    resaved = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    diff = ImageChops.difference(im.convert("RGB"), resaved)
    max_diff = max(high for _, high in diff.getextrema()) or 1
    return ImageEnhance.Brightness(diff).enhance(255.0 / max_diff)


def center_crop(im: Image.Image, height: int, width: int) -> Image.Image:
    """torchvision's CenterCrop offsets (round half to even, like its ``int(round(...))``)."""
    top = int(round((im.height - height) / 2.0))
    left = int(round((im.width - width) / 2.0))
    return im.crop((left, top, left + width, top + height))  # PIL pads with zeros outside, as torchvision does


def shorter_side_size(im: Image.Image, short: int) -> tuple[int, int]:
    """torchvision ``Resize(int)``'s size: the shorter side becomes ``short``, the longer keeps the ratio (truncated)."""
    w, h = im.size
    return (short, int(short * h / w)) if w <= h else (int(short * w / h), short)


def resize_shorter(im: Image.Image, short: int, resample: int) -> Image.Image:
    """torchvision ``Resize(int)``."""
    size = shorter_side_size(im, short)
    return im if size == im.size else im.resize(size, resample)


def keep_ratio_size(im: Image.Image, target_hw: tuple[int, int], longest: bool = False) -> tuple[int, int]:
    """timm ``ResizeKeepRatio``'s size: scale by the smaller side ratio (or the larger, ``longest``), rounding."""
    ratios = [s / t for s, t in zip((im.height, im.width), target_hw)]
    ratio = max(ratios) if longest else min(ratios)
    # at least 1 px: a 2000x8 strip fitted into 32 px would round its height to 0, and PIL (like timm) raise
    new_h, new_w = (max(1, round(x / ratio)) for x in (im.height, im.width))
    return new_w, new_h


def resize_keep_ratio(im: Image.Image, target_hw: tuple[int, int], resample: int, longest: bool = False) -> Image.Image:
    """timm ``ResizeKeepRatio``."""
    return im.resize(keep_ratio_size(im, target_hw, longest), resample)


# Above this many pixels the resized image is not made whole before the centre crop (see resize_center_crop).
MAX_INTERMEDIATE_PIXELS = 4_000_000


def resize_center_crop(im: Image.Image, size: tuple[int, int], height: int, width: int,
                       resample: int) -> Image.Image:
    """Resize to ``size``, then take the centre ``height`` x ``width``, as torchvision and timm do.

    For a long strip the whole resized image is huge (a 20000x8 image with its short side made 256 is 640,000 x
    256 px, about 0.5 GB) though only the centre is kept. There Pillow's ``resize(box=...)`` resamples just the
    kept region at the same scale (as ``multicrop.resize_short_center_crop`` does for our own heads); it rounds a
    little differently, so other images take the plain path and match published pipelines exactly.
    """
    new_w, new_h = size
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    if new_w * new_h <= MAX_INTERMEDIATE_PIXELS or top < 0 or left < 0:
        return center_crop(im if size == im.size else im.resize(size, resample), height, width)
    sx, sy = im.width / new_w, im.height / new_h
    return im.resize((width, height), resample, box=(left * sx, top * sy, (left + width) * sx, (top + height) * sy))


def center_crop_or_pad(im: Image.Image, height: int, width: int, fill: tuple[int, int, int]) -> Image.Image:
    """timm ``CenterCropOrPad``: pad to at least the target with ``fill`` (extra pixel right/bottom), then crop."""
    if width > im.width or height > im.height:
        canvas = Image.new("RGB", (max(width, im.width), max(height, im.height)), fill)
        canvas.paste(im, ((width - im.width) // 2 if width > im.width else 0,
                          (height - im.height) // 2 if height > im.height else 0))
        im = canvas
    return center_crop(im, height, width)


@dataclass(frozen=True)
class ArrayPreprocess:
    """Image -> float32 batch, exactly as stated: resize/crop, scale, normalise, reorder."""

    height: int
    width: int
    resample: str = "bilinear"
    crop_pct: float | None = None  # None: resize straight to (height, width)
    crop_mode: str = "center"  # timm eval: center | squash | border
    rescale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    ela_quality: int | None = None

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE:
            raise AdapterError(f"unknown resample filter '{self.resample}' (one of {', '.join(RESAMPLE)})")
        if self.channel_order not in ("RGB", "BGR"):
            raise AdapterError(f"channel_order must be RGB or BGR, not '{self.channel_order}'")
        if self.layout not in ("NCHW", "NHWC"):
            raise AdapterError(f"layout must be NCHW or NHWC, not '{self.layout}'")
        if self.crop_mode not in ("center", "squash", "border"):
            raise AdapterError(f"crop_mode '{self.crop_mode}' is not supported (center, squash or border)")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise AdapterError("mean and std need three values (one per channel)")
        # checked here, not met later as a ZeroDivisionError or a silently inverted image in every batch
        if not (math.isfinite(self.rescale) and self.rescale > 0):
            raise AdapterError(f"input.rescale must be a positive number, not {self.rescale:g}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):  # a negative std inverts that channel
            raise AdapterError(f"input.std must be positive in every channel, not {list(self.std)}")
        if not all(math.isfinite(v) for v in self.mean):  # NaN here made every score NaN, silently
            raise AdapterError(f"input.mean must be finite in every channel, not {list(self.mean)}")
        if self.crop_pct is not None and not (math.isfinite(self.crop_pct) and self.crop_pct > 0):
            raise AdapterError(f"input.crop_pct must be a positive fraction such as 0.875, not {self.crop_pct:g}")
        if self.ela_quality is not None and not 1 <= self.ela_quality <= 100:
            raise AdapterError(f"input.ela_quality must be a JPEG quality from 1 to 100, not {self.ela_quality}")
        if self.height < 1 or self.width < 1:
            raise AdapterError(f"input.size must be positive, not {[self.height, self.width]}")

    def geometry(self, im: Image.Image) -> Image.Image:
        resample = RESAMPLE[self.resample]
        if self.ela_quality is not None:
            im = error_level_image(im, self.ela_quality)
        if self.crop_pct is None:
            return im if im.size == (self.width, self.height) else im.resize((self.width, self.height), resample)
        scale_h, scale_w = math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)
        if self.crop_mode == "squash":
            return center_crop(im.resize((scale_w, scale_h), resample), self.height, self.width)
        if self.crop_mode == "border":  # whole image kept, borders filled with the mean colour
            im = resize_keep_ratio(im, (scale_h, scale_w), resample, longest=True)
            # timm fills with the mean colour, round(255 * mean); in pixel units that is mean / rescale, which for a
            # sidecar's other scaling (rescale 1/127.5 with mean 1, or rescale 1 with mean 123.7) is not 255 * mean
            pixels = 1.0 / self.rescale  # exactly 255.0 for 1/255, so timm's fill is kept to the bit
            fill = tuple(min(255, max(0, round(pixels * v))) for v in self.mean)
            return center_crop_or_pad(im, self.height, self.width, fill)
        if scale_h == scale_w:
            size = shorter_side_size(im, scale_h)
        else:
            size = keep_ratio_size(im, (scale_h, scale_w))
        return resize_center_crop(im, size, self.height, self.width, resample)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = np.stack([np.asarray(self.geometry(im.convert("RGB")), dtype=np.float32) for im in images])
        if self.channel_order == "BGR":
            batch = batch[..., ::-1]
        # Divide by 255 (or 127.5) rather than multiply by its float32 reciprocal: that is how published
        # pipelines write it, and the two can differ in the last bit.
        batch = batch / np.float32(1.0 / self.rescale)
        batch = (batch - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


_SPEC_KEYS = {"size", "height", "width", "resample", "crop_pct", "crop_mode", "rescale", "mean", "std",
              "channel_order", "layout", "ela_quality"}


def preprocess_from_spec(spec: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> ArrayPreprocess:
    """Build from a sidecar's ``input`` block, falling back to what the model file itself says."""
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise AdapterError(f"{where}: unknown input setting(s) {unknown} (known: {', '.join(sorted(_SPEC_KEYS))})")
    spec = dict(spec)
    if "size" in spec:
        size = spec.pop("size")
        size = [size, size] if _is_number(size) else size
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise AdapterError(f"{where}: input.size must be one number or [height, width], not {size!r}")
        spec["height"], spec["width"] = size
    merged = {**defaults, **spec}
    if merged.get("height") is None or merged.get("width") is None:
        raise AdapterError(f"{where}: the input size is not fixed by the model; state it as \"size\": [H, W]")
    height, width = (_whole(merged[key], "input.size", where) for key in ("height", "width"))
    rescale = merged.get("rescale", 1.0 / 255.0)
    if isinstance(rescale, str):  # "1/255" reads better in JSON than 0.00392156862745098
        num, _, den = rescale.partition("/")
        try:
            rescale = float(num) / float(den or 1)
        except (ValueError, ZeroDivisionError):
            raise AdapterError(
                f"{where}: input.rescale '{rescale}' is not a number or fraction such as 1/255") from None
    crop_pct, ela_quality = merged.get("crop_pct"), merged.get("ela_quality")
    settings = dict(
        height=height, width=width, resample=str(merged.get("resample", "bilinear")).lower(),
        crop_pct=None if crop_pct is None else _number(crop_pct, "input.crop_pct", where),
        crop_mode=str(merged.get("crop_mode", "center")), rescale=_number(rescale, "input.rescale", where),
        mean=_triple(merged.get("mean", (0.0, 0.0, 0.0)), "input.mean", where),
        std=_triple(merged.get("std", (1.0, 1.0, 1.0)), "input.std", where),
        channel_order=str(merged.get("channel_order", "RGB")).upper(),
        layout=str(merged.get("layout", "NCHW")).upper(),
        ela_quality=None if ela_quality is None else _whole(ela_quality, "input.ela_quality", where),
    )
    try:
        return ArrayPreprocess(**settings)
    except AdapterError as exc:
        raise AdapterError(f"{where}: {exc}") from None


#: How pixel values are scaled before the model: nothing in an ONNX graph or a Keras file records it.
SCALING_KEYS = ("rescale", "mean", "std")


def assumed_scaling(spec: Mapping[str, Any], preprocess: ArrayPreprocess, where: str) -> str | None:
    """A note, logged once at load and written on the card, when the sidecar states none of ``rescale``, ``mean``
    and ``std``: the model is then fed ``x/255`` unnormalised, which is right only for models trained that way (an
    ImageNet-normalised model gets inputs it never saw, and its scores mean little).  It was silent."""
    if any(key in spec for key in SCALING_KEYS):
        return None
    note = (f"input scaling not stated (no input.rescale, mean or std in a sidecar): assumed "
            f"x/{1 / preprocess.rescale:.6g} with no mean/std normalisation, {preprocess.channel_order}, "
            f"{preprocess.resample} resize; state them if the model was trained otherwise")
    logging.getLogger("synthdetect.models.adapters").warning("%s: %s", where, note)
    return note


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, key: str, where: str) -> float:
    """A JSON number: ``true`` is not 1 and ``"0.5"`` is not 0.5 (a quoted value is usually a mistake)."""
    if not _is_number(value):
        raise AdapterError(f"{where}: {key} must be a number, not {value!r}")
    return float(value)


def _whole(value: Any, key: str, where: str) -> int:
    if not _is_number(value) or not float(value).is_integer():
        raise AdapterError(f"{where}: {key} must be a whole number, not {value!r}")
    return int(value)


def _triple(values: Any, key: str, where: str) -> tuple[float, float, float]:
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise AdapterError(f"{where}: {key} needs three numbers (one per channel), not {values!r}")
    return tuple(_number(v, key, where) for v in values)  # type: ignore[return-value]
