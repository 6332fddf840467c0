"""Azimuthally averaged power spectrum: where generators' upsampling leaves periodic traces.

Transposed convolutions and some decoders leave peaks or a raised tail at
high spatial frequencies (Durall et al., "Watch your Up-Convolution", 2020).
Compression, resizing and sharpening change the same part of the spectrum, so
this is a picture for reports and a weak feature, never decisive; like ELA
it runs only on request, on a centre crop of at most ``SIDE`` px.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from synthdetect.evidence import register_probe
from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

SIDE = 512


def _gray(image: LoadedImage | Image.Image | np.ndarray, side: int | None = SIDE) -> np.ndarray:
    if isinstance(image, np.ndarray):
        arr = image.astype(np.float64)
        arr = arr.mean(axis=2) if arr.ndim == 3 else arr
    else:
        pil = image.rgb if isinstance(image, LoadedImage) else image
        if side:  # crop before converting: a 12 MP photo costs a 512 px crop, not a full conversion
            w, h = pil.size
            left, top = max((w - side) // 2, 0), max((h - side) // 2, 0)
            pil = pil.crop((left, top, min(left + side, w), min(top + side, h)))
        arr = np.asarray(pil.convert("L"), dtype=np.float64)
    if side:
        h, w = arr.shape
        top, left = max((h - side) // 2, 0), max((w - side) // 2, 0)
        arr = arr[top : top + side, left : left + side]
    return arr


def log_power(image: LoadedImage | Image.Image | np.ndarray, side: int | None = SIDE) -> np.ndarray:
    """Centred log10 power spectrum of the grayscale (centre-cropped) image, Hann-windowed to avoid edge leakage."""
    gray = _gray(image, side)
    gray = gray - gray.mean()
    window = np.outer(np.hanning(gray.shape[0]), np.hanning(gray.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray * window))) ** 2
    return np.log10(power + 1e-8)


def power_spectrum(image: LoadedImage | Image.Image | np.ndarray, side: int | None = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(normalised radial frequency 0..1, mean log10 power at that radius)."""
    spectrum = log_power(image, side)
    h, w = spectrum.shape
    r_max = min(h, w) // 2
    # Radius in units of the short side's frequency step: on a non-square crop, index k along the long axis is a
    # lower frequency than index k along the short one, and counting both as "radius k" put low frequencies
    # of the long axis into the high-frequency bins (a 40x512 crop read a steeper slope than its square).
    yy, xx = np.indices(spectrum.shape)
    radius = np.hypot((yy - h // 2) * (2 * r_max / h), (xx - w // 2) * (2 * r_max / w)).astype(int)
    mask = radius < r_max
    sums = np.bincount(radius[mask], weights=spectrum[mask], minlength=r_max)
    counts = np.bincount(radius[mask], minlength=r_max)
    profile = sums / np.maximum(counts, 1)
    return np.arange(r_max) / max(r_max - 1, 1), profile


def spectrum_image(image: LoadedImage | Image.Image | np.ndarray, side: int | None = SIDE) -> Image.Image:
    """The 2-D log spectrum as an 8-bit grey picture for reports."""
    spectrum = log_power(image, side)
    lo, hi = np.quantile(spectrum, 0.01), spectrum.max()
    scaled = np.clip((spectrum - lo) / max(hi - lo, 1e-9), 0, 1)
    return Image.fromarray((scaled * 255).astype(np.uint8), "L")


#: Below this many radial bins (images under 32 px) the profile has too few points to summarise.
MIN_BINS = 16


def spectrum_features(image: LoadedImage | Image.Image | np.ndarray) -> dict[str, float] | None:
    """High-frequency level relative to mid frequencies, and the slope of the radial profile (None if too small)."""
    freqs, profile = power_spectrum(image)
    if len(freqs) < MIN_BINS:
        return None
    mid = profile[(freqs > 0.25) & (freqs <= 0.5)].mean()
    high = profile[freqs > 0.75].mean()
    valid = freqs > 0.05
    slope = float(np.polyfit(np.log10(freqs[valid]), profile[valid], 1)[0]) if valid.sum() > 2 else 0.0
    return {"high_minus_mid": round(float(high - mid), 4), "log_slope": round(slope, 4)}


def why_no_profile(image: LoadedImage) -> str | None:
    """Why the probe reports nothing for this image (None when it reports)."""
    short = min(image.size)
    if min(short, SIDE) // 2 < MIN_BINS:
        return f"image is {short} px on its short side; the spectrum needs at least {2 * MIN_BINS} px"
    return None


@register_probe("spectrum", default=False)
def probe_spectrum(image: LoadedImage) -> list[Evidence]:
    features = spectrum_features(image)
    if features is None:
        return []
    return [Evidence("spectrum", "none", "info",
                     f"power spectrum: high-frequency level {features['high_minus_mid']:+.2f} decades vs mid, "
                     f"slope {features['log_slope']:.2f} (a forensic view, not evidence of AI on its own)", features)]
