"""Binary detection metrics, computed with scikit-learn where it has them."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def expected_calibration_error(p_ai: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE over equal-width bins of p_ai (scikit-learn has no ECE of its own)."""
    p_ai = np.asarray(p_ai, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p_ai, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(p_ai[mask].mean() - labels[mask].mean())
    return float(ece)


def reliability_bins(p_ai: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    p_ai = np.asarray(p_ai, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p_ai, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        rows.append({
            "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(mask.sum()),
            "mean_p": float(p_ai[mask].mean()) if mask.any() else None,
            "frac_ai": float(labels[mask].mean()) if mask.any() else None,
        })
    return rows


def tpr_at_fpr(p_ai: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """TPR at the strictest threshold whose FPR does not exceed ``fpr``."""
    from synthdetect.evaluate.calibration import threshold_at_fpr

    t = threshold_at_fpr(p_ai, labels, fpr)
    positives = np.asarray(p_ai)[np.asarray(labels) > 0.5]
    return float(np.mean(positives >= t)) if positives.size else float("nan")


def binary_metrics(p_ai: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    p_ai = np.asarray(p_ai, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    pred = (p_ai >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    clipped = np.clip(p_ai, 1e-7, 1 - 1e-7)
    out: dict[str, Any] = {
        "n": int(labels.size),
        "n_ai": int(labels.sum()),
        "n_human": int((1 - labels).sum()),
        "threshold": float(threshold),
        "loss": float(skm.log_loss(labels, clipped, labels=[0, 1])),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "precision": float(skm.precision_score(labels, pred, zero_division=0)),
        "recall": float(skm.recall_score(labels, pred, zero_division=0)),
        "f1": float(skm.f1_score(labels, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, p_ai)) if both else None,
        "average_precision": float(skm.average_precision_score(labels, p_ai)) if both else None,
        "ece": expected_calibration_error(p_ai, labels),
        "confusion_matrix": {
            "labels": ["human", "ai"],
            "rows_true_cols_pred": skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist(),
        },
    }
    if both:
        out["tpr_at_fpr_0.01"] = tpr_at_fpr(p_ai, labels, 0.01)
        out["tpr_at_fpr_0.05"] = tpr_at_fpr(p_ai, labels, 0.05)
    return out
