"""A tiny, seeded small-cnn package for explain/server/browser tests (no downloads, no ../shared).

Its weights are random, so its answers mean nothing, but they are
deterministic and pass through exactly the code the shipped models use
(package card, hash check, calibration, decision thresholds, routing).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthdetect.models.cnn import SmallCNN
from synthdetect.models.package import write_package


def write_tiny_cnn(root: Path, seed: int = 0, max_short_side: int = 64) -> Path:
    torch.manual_seed(seed)
    module = SmallCNN(width=4, depth=2).eval()
    root.mkdir(parents=True, exist_ok=True)
    weights = root / "weights.pt"
    torch.save(module.state_dict(), weights)
    card = {
        "name": "tiny-cnn",
        "version": "0.0.1",
        "kind": "small-cnn",
        "description": "random-weight test model",
        "architecture": module.hparams,
        "input": {"size": [32, 32], "resample": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
                  "min_side": 8, "max_aspect": 2.0, "max_short_side": max_short_side},
        "calibration": {"method": "temperature", "temperature": 0.05},
        "decision": {"ai_at_or_above": 0.6, "human_below": 0.4},
    }
    write_package(root, card, {"weights": weights})
    return root


def png_bytes(size: tuple[int, int] = (32, 32), seed: int = 0, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()
