"""Robustness perturbations for ``synthdetect evaluate --perturb``.

Each perturbation maps a file's bytes to new bytes, as a platform re-upload
would, and the detector then judges the new file through the usual path.
Re-compressions write their own format (JPEG, WebP); geometric and blur
perturbations write lossless PNG so that only the named change is measured.
Either way metadata is dropped, as most platforms do on re-upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from synthdetect.images import ImageLoadError, LoadLimits, encode_image, load_image, shrink_to_short_side


@dataclass(frozen=True)
class Perturbation:
    name: str  # e.g. "jpeg:70"
    kind: str
    value: float
    #: the limits the detector judges a file under (its defaults, as ``evaluate`` loads it)
    limits: LoadLimits = LoadLimits()

    def __call__(self, data: bytes) -> bytes:
        """The perturbed file; one the detector would refuse as too large is refused here, saying so.

        Why: ``resize:4`` of a 6-megapixel photo took 13 s and 0.7 GB to write a 198 MB PNG that the detector then
        refused as "file too large", naming the original (a 3 MB file).  An enlargement past the pixel limit is
        refused before any pixel is resized; an output past the byte limit, after encoding, naming what made it.
        """
        image = load_image(data, self.limits, name=self.name).rgb
        if self.kind == "resize":
            width, height = _resized_size(image, self.value)
            if width * height > self.limits.max_pixels:
                raise ImageLoadError(self.name, "too_large", (
                    f"would enlarge {image.width}x{image.height} px to {width}x{height} = {width * height:,} px, "
                    f"over the limit of {self.limits.max_pixels:,} px of a file to judge"))
        longest = MAX_SIDE.get(self.kind)
        if longest and max(image.size) > longest:  # the encoder's own limit, said before it fails (libjpeg prints)
            raise ImageLoadError(self.name, "too_large", (
                f"{self.kind.upper()} holds at most {longest:,} px a side, and this image is "
                f"{image.width}x{image.height} px"))
        try:
            out = _APPLY[self.kind](image, self.value)
        except (OSError, ValueError) as exc:  # an encoder's refusal is the perturbation's, not the original file's
            raise ImageLoadError(self.name, "unreadable", f"could not write the perturbed file ({exc})") from None
        if len(out) > self.limits.max_bytes:
            raise ImageLoadError(self.name, "too_large", (
                f"made a {len(out):,}-byte file of this {image.width}x{image.height} px image, over the limit of "
                f"{self.limits.max_bytes:,} bytes of a file to judge"))
        return out


#: The longest side libjpeg and libwebp can encode.
MAX_SIDE = {"jpeg": 65500, "webp": 16383}


def _resized_size(image: Image.Image, scale: float) -> tuple[int, int]:
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def _jpeg(image: Image.Image, quality: float) -> bytes:
    return encode_image(image, "JPEG", quality=int(quality))


def _webp(image: Image.Image, quality: float) -> bytes:
    return encode_image(image, "WEBP", quality=int(quality))


def _resize(image: Image.Image, scale: float) -> bytes:
    return encode_image(image.resize(_resized_size(image, scale), Image.Resampling.BICUBIC), "PNG")


def _crop(image: Image.Image, keep: float) -> bytes:
    """Centre crop keeping ``keep`` of each side."""
    w, h = max(1, round(image.width * keep)), max(1, round(image.height * keep))
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return encode_image(image.crop((left, top, left + w, top + h)), "PNG")


def _blur(image: Image.Image, sigma: float) -> bytes:
    return encode_image(image.filter(ImageFilter.GaussianBlur(sigma)), "PNG")


def _noise(image: Image.Image, sigma: float) -> bytes:
    # Seeded from the pixels so a rerun of the sweep gives the same numbers.
    array = np.asarray(image, dtype=np.float32)
    rng = np.random.default_rng(int(array.sum()) % (2**32))
    noisy = np.clip(array + rng.normal(0.0, sigma, array.shape), 0, 255).astype(np.uint8)
    return encode_image(Image.fromarray(noisy), "PNG")


_APPLY: dict[str, Callable[[Image.Image, float], bytes]] = {
    "jpeg": _jpeg, "webp": _webp, "resize": _resize, "crop": _crop, "blur": _blur, "noise": _noise,
}
_RANGES = {"jpeg": (1, 100), "webp": (1, 100), "resize": (0.01, 4.0), "crop": (0.05, 1.0), "blur": (0.0, 50.0),
           "noise": (0.0, 128.0)}


#: Perturbations whose value is a whole number (an encoder quality).
_INTEGER = {"jpeg", "webp"}


def parse_perturbations(spec: str) -> list[Perturbation]:
    """``"jpeg:90,jpeg:70,resize:0.5,crop:0.5,blur:1.0,webp:80,noise:5"`` -> perturbations, in order."""
    out: list[Perturbation] = []
    seen: dict[tuple[str, float], str] = {}
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        kind, _, value = item.partition(":")
        kind = kind.lower()
        if kind not in _APPLY:
            raise ValueError(f"--perturb {item!r}: unknown perturbation '{kind}' (one of {', '.join(_APPLY)})")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--perturb {item!r}: expected {kind}:NUMBER") from None
        lo, hi = _RANGES[kind]
        if not lo <= number <= hi:  # first: it also refuses nan and inf, which int() below cannot take
            raise ValueError(f"--perturb {item!r}: {kind} must be between {lo:g} and {hi:g}")
        if kind in _INTEGER and not number.is_integer():
            raise ValueError(f"--perturb {item!r}: {kind} quality must be a whole number (e.g. {kind}:{int(number)})")
        if (kind, number) in seen:
            raise ValueError(f"--perturb {item!r}: the same perturbation as {seen[kind, number]!r}, given twice")
        seen[kind, number] = item
        name = f"{kind}:{int(number)}" if kind in _INTEGER else f"{kind}:{value}"
        out.append(Perturbation(name=name, kind=kind, value=number))
    return out


#: How a platform re-delivers a photo: metadata gone, another format or quality (name, format, save options).
REENCODINGS = (("png", "PNG", {}), ("webp-q80", "WEBP", {"quality": 80}), ("jpeg-q95", "JPEG", {"quality": 95}),
               ("jpeg-q75", "JPEG", {"quality": 75}), ("jpeg-q50", "JPEG", {"quality": 50}))
#: Smaller copies of it (short side, format, save options), shrunk with Lanczos.
SHRUNK_COPIES = ((512, "JPEG", {"quality": 90}), (256, "PNG", {}))


def reencodings(image: Image.Image, shrunk: tuple = SHRUNK_COPIES) -> dict[str, bytes]:
    """The photo re-encoded every way in ``REENCODINGS`` and shrunk to each of ``shrunk``; nothing is enlarged."""
    out = {name: encode_image(image, fmt, **kwargs) for name, fmt, kwargs in REENCODINGS}
    for short, fmt, kwargs in shrunk:
        if min(image.size) > short:
            out[f"{fmt.lower()}-short{short}"] = encode_image(shrink_to_short_side(image, short), fmt, **kwargs)
    return out
