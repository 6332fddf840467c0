"""Calibration and operating thresholds, fitted on validation data only.

A raw logit is not a probability; users act on ``p_ai``, and a false "AI"
verdict can hurt a real artist.  So every shipped model carries (1) a
calibration map from logit to probability, (2) thresholds chosen for stated
false-positive rates on validation data, and (3) an ``uncertain`` band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    # log(1+exp(-z)) for positives, log(1+exp(z)) for negatives, computed stably.
    signed = np.where(labels > 0.5, logits, -logits)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar, so ranking is unchanged."""
    from scipy.optimize import minimize_scalar  # imported here: it costs 0.7 s, and serving never fits

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    result = minimize_scalar(
        lambda log_t: _nll(logits / np.exp(log_t), labels), bounds=(-4.0, 4.0), method="bounded"
    )
    return float(np.exp(result.x))


def fit_platt(logits: np.ndarray, labels: np.ndarray, balanced: bool = False) -> tuple[float, float]:
    """Platt scaling: p = sigmoid(a * logit + b), fitted by logistic regression.

    ``balanced`` weighs both classes equally, so p_ai assumes even odds instead
    of the calibration data's class balance (which, across sources, is arbitrary).
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000, class_weight="balanced" if balanced else None)
    model.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), np.asarray(labels).astype(int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


@dataclass
class Calibration:
    method: str = "identity"
    temperature: float = 1.0
    a: float = 1.0
    b: float = 0.0

    def __call__(self, logits: np.ndarray | float) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature":
            return sigmoid(logits / self.temperature)
        if self.method == "platt":
            return sigmoid(self.a * logits + self.b)
        return sigmoid(logits)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "temperature":
            return {"method": "temperature", "temperature": self.temperature}
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {"method": "identity"}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Calibration":
        if not data:
            return cls()
        method = data.get("method", "identity")
        if method == "temperature":
            return cls(method=method, temperature=float(data["temperature"]))
        if method == "platt":
            return cls(method=method, a=float(data["a"]), b=float(data["b"]))
        return cls()

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, method: str = "temperature", *,
            balanced: bool = False) -> "Calibration":
        if method == "temperature":
            return cls(method="temperature", temperature=fit_temperature(logits, labels))
        if method == "platt":
            a, b = fit_platt(logits, labels, balanced=balanced)
            return cls(method="platt", a=a, b=b)
        if method == "identity":
            return cls()
        raise ValueError(f"unknown calibration method '{method}' (temperature, platt, identity)")


def threshold_at_fpr(p_ai: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """Smallest threshold whose false-positive rate on ``labels == 0`` is at most ``fpr``.

    An image is called AI when ``p_ai >= threshold``.
    """
    negatives = np.sort(np.asarray(p_ai, dtype=np.float64)[np.asarray(labels) < 0.5])
    if negatives.size == 0:
        raise ValueError("no human (negative) examples to set a false-positive threshold")
    allowed = int(np.floor(fpr * negatives.size))  # negatives allowed at or above threshold
    if allowed >= negatives.size:
        return float(negatives[0])
    # threshold just above the (allowed+1)-th highest negative score
    cutoff = negatives[negatives.size - allowed - 1]
    return float(np.nextafter(cutoff, np.inf))


def threshold_at_fnr(p_ai: np.ndarray, labels: np.ndarray, fnr: float) -> float:
    """Largest threshold below which at most ``fnr`` of the AI examples fall."""
    positives = np.sort(np.asarray(p_ai, dtype=np.float64)[np.asarray(labels) > 0.5])
    if positives.size == 0:
        raise ValueError("no AI (positive) examples to set a miss-rate threshold")
    allowed = int(np.floor(fnr * positives.size))
    return float(positives[min(allowed, positives.size - 1)])


def operating_points(
    p_ai: np.ndarray, labels: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05), *, human_fnr: float = 0.05,
    decide_fpr: float = 0.01,
) -> dict[str, Any]:
    """Thresholds for each stated FPR and the uncertain band stored in model cards.

    Above the ``decide_fpr`` threshold the verdict is ``ai``; below the
    threshold that lets at most ``human_fnr`` of validation AI images through
    it is ``human``; in between it is ``uncertain``.
    """
    p_ai = np.asarray(p_ai, dtype=np.float64)
    labels = np.asarray(labels)
    thresholds = {}
    for fpr in fprs:
        t = threshold_at_fpr(p_ai, labels, fpr)
        negatives = p_ai[labels < 0.5]
        positives = p_ai[labels > 0.5]
        thresholds[f"fpr_{fpr:g}"] = {
            "fpr_target": fpr,
            "threshold": t,
            "fpr_validation": float(np.mean(negatives >= t)),
            "tpr_validation": float(np.mean(positives >= t)) if positives.size else None,
        }
    ai_at = threshold_at_fpr(p_ai, labels, decide_fpr)
    human_below = min(threshold_at_fnr(p_ai, labels, human_fnr), ai_at)
    return {
        "thresholds": thresholds,
        "decision": {
            "ai_at_or_above": ai_at,
            "ai_rule": f"p_ai at or above the {decide_fpr:g} FPR threshold",
            "human_below": human_below,
            "human_rule": f"p_ai below the threshold that misses {human_fnr:g} of validation AI images",
        },
    }
