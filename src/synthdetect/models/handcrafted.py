"""Hand-crafted residual and spectrum features per crop; kind ``handcrafted``.

Camera pipelines leave sensor noise and demosaicing correlations between
colour channels; generators leave smoother, more correlated residuals and a
different fall-off of high-frequency power.  These ~20 numbers describe that
and feed a linear head.

Deliberately *not* measured: 8x8 block boundaries and spectral peaks at
multiples of N/8.  They mostly tell JPEG from PNG, and a detector that
learned "PNG means AI" would call every screenshot and exported photo AI.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage, stats

from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage
from synthdetect.models.view_features import FeatureExtractor, load_multiview, register_extractor

#: Radial band edges as fractions of the Nyquist radius (log-spaced toward high frequencies).
BAND_EDGES = (0.0, 0.08, 0.15, 0.25, 0.38, 0.52, 0.68, 0.84, 1.0)
FEATURE_NAMES = (
    [f"{r}_{s}" for r in ("lap", "dx", "dy") for s in ("log_std", "kurtosis", "flat_fraction")]
    + ["corr_rg", "corr_gb", "corr_rb"]
    + [f"band_{i}" for i in range(len(BAND_EDGES) - 1)]
    + ["sat_mean", "sat_std", "luma_std"]
)


def _safe_corr(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.std(), b.std()
    if sa < 1e-9 or sb < 1e-9:
        return 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def _radial_bands(residual: np.ndarray) -> np.ndarray:
    """Share of residual power in each radial band (log), Hann-windowed to avoid edge leakage."""
    h, w = residual.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fftshift(np.fft.fft2((residual - residual.mean()) * window))) ** 2
    yy, xx = np.mgrid[-(h // 2) : h - h // 2, -(w // 2) : w - w // 2]
    radius = np.sqrt((yy / (h / 2)) ** 2 + (xx / (w / 2)) ** 2)
    total = power[radius <= 1.0].sum() + 1e-12
    shares = [power[(radius > lo) & (radius <= hi)].sum() / total for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])]
    return np.log(np.asarray(shares) + 1e-9)


def crop_features(crop: Image.Image) -> np.ndarray:
    rgb = np.asarray(crop.convert("RGB"), dtype=np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    feats: list[float] = []
    lap = ndimage.laplace(luma)
    residuals = (lap, np.diff(luma, axis=1), np.diff(luma, axis=0))
    for r in residuals:
        flat = r.ravel()
        # kurtosis of a constant residual is undefined (flat crops, e.g. a 1 px image upscaled): call it 0
        kurt = float(stats.kurtosis(flat)) if flat.std() > 1e-9 else 0.0
        feats += [float(np.log(flat.std() + 1e-3)), float(np.clip(kurt, -5, 200) / 10.0),
                  float(np.mean(np.abs(flat) < 0.5))]
    channel_lap = [ndimage.laplace(rgb[..., c]) for c in range(3)]
    feats += [_safe_corr(channel_lap[0], channel_lap[1]), _safe_corr(channel_lap[1], channel_lap[2]),
              _safe_corr(channel_lap[0], channel_lap[2])]
    feats += list(_radial_bands(lap))
    hsv = np.asarray(crop.convert("HSV"), dtype=np.float64) / 255.0
    feats += [float(hsv[..., 1].mean()), float(hsv[..., 1].std()), float(luma.std() / 255.0)]
    return np.asarray(feats, dtype=np.float32)


@register_extractor("handcrafted-v1")
class HandcraftedFeatures(FeatureExtractor):
    name = "handcrafted-v1"
    dim = len(FEATURE_NAMES)

    def features(self, crops: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([crop_features(c) for c in crops])

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "features": list(FEATURE_NAMES),
                "excluded": "8x8 JPEG block and N/8-harmonic features (format shortcut)"}


@register_kind("handcrafted")
def _load_handcrafted(package: ModelPackage) -> Model:
    return load_multiview(package)

