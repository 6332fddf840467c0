"""The bootstrap behind every interval holds a bounded number of draw counts, so a long evaluation cannot run out
of memory at its very end (one n_boot x n matrix took 1.7 GB at 50,000 images)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from synthdetect.evaluate import metrics
from synthdetect.evaluate.metrics import bootstrap_ci


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1), y


def test_bootstrap_memory_stays_bounded_on_many_images():
    p, y = _scores(40_000)
    tracemalloc.start()
    try:
        ci = bootstrap_ci(p, y, fpr_thresholds={"tpr_at_fpr_0.05": 0.6})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one 1000 x 40,000 float matrix alone is 320 MB; the blocks keep each under 40 MB
    assert peak < 250 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert ci["roc_auc"][0] < ci["roc_auc"][1] and 0.0 <= ci["ece"][0] <= ci["ece"][1]


def test_blocks_give_the_same_statistics_as_one_matrix(monkeypatch):
    p, y = _scores(300, seed=3)
    whole = bootstrap_ci(p, y, n_boot=200, fpr_thresholds={"t": 0.6})
    monkeypatch.setattr(metrics, "BOOTSTRAP_CELLS", 300 * 200)  # still one block: drawn exactly as before
    assert bootstrap_ci(p, y, n_boot=200, fpr_thresholds={"t": 0.6}) == whole
    monkeypatch.setattr(metrics, "BOOTSTRAP_CELLS", 300 * 7)  # blocks of 7 resamples: other draws, same estimator
    blocked = bootstrap_ci(p, y, n_boot=200, fpr_thresholds={"t": 0.6})
    for key in ("roc_auc", "accuracy", "ece", "t"):
        assert blocked[key] == pytest.approx(whole[key], abs=0.03)
