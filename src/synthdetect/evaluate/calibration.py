"""Calibration and operating thresholds, fitted on validation data only.

A raw logit is not a probability; users act on ``p_ai``, and a false "AI"
verdict can hurt a real artist.  So every shipped model carries (1) a
calibration map from logit to probability, (2) thresholds chosen for stated
false-positive rates on validation data, and (3) an ``uncertain`` band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    # log(1+exp(-z)) for positives, log(1+exp(z)) for negatives, computed stably.
    signed = np.where(labels > 0.5, logits, -logits)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def smoothed_targets(labels: np.ndarray) -> np.ndarray:
    """Platt's (1999) targets: (N+ + 1)/(N+ + 2) for AI images, 1/(N- + 2) for human ones.

    Fitting to 1 and 0 exactly has no finite optimum when the validation
    logits separate the classes (a strong model on a small split): the fit
    runs to its bound and calibrated p_ai becomes exactly 0.0 or 1.0.  The
    smoothed targets keep the optimum finite (scikit-learn's sigmoid
    calibration always uses them; here only separable data does, so every
    other fit stays what it was).
    """
    labels = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = float((labels > 0.5).sum()), float((labels <= 0.5).sum())
    return np.where(labels > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def _soft_nll(z: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> float:
    loss = targets * np.logaddexp(0.0, -z) + (1.0 - targets) * np.logaddexp(0.0, z)
    return float(np.mean(loss if weights is None else weights * loss))


def is_separable(logits: np.ndarray, labels: np.ndarray) -> bool:
    """Every AI logit above every human one (or every one below): nothing to fit a slope to."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    pos, neg = logits[labels > 0.5], logits[labels <= 0.5]
    if not pos.size or not neg.size:
        return False
    return bool(pos.min() > neg.max() or pos.max() < neg.min())


#: Search bounds of log(temperature); a fit that lands on one is reported (``at_bound``).
TEMPERATURE_LOG_BOUNDS = (-4.0, 4.0)


def fit_temperature_with_info(logits: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, Any]]:
    """Temperature scaling; the dict says how the fit went.

    On separable data (where the plain fit has no finite optimum and runs to
    its bound) it fits Platt's smoothed targets instead; otherwise the fit is
    the plain maximum-likelihood one it always was.  A fit that still lands on
    a search bound is reported (``at_bound``).
    """
    from scipy.optimize import minimize_scalar  # imported here: it costs 0.7 s, and serving never fits

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    separable = is_separable(logits, labels)
    lo, hi = TEMPERATURE_LOG_BOUNDS
    if separable:
        targets = smoothed_targets(labels)
        result = minimize_scalar(lambda log_t: _soft_nll(logits / np.exp(log_t), targets), bounds=(lo, hi),
                                 method="bounded")
    else:
        result = minimize_scalar(lambda log_t: _nll(logits / np.exp(log_t), labels), bounds=(lo, hi),
                                 method="bounded")
    at_bound = bool(min(abs(result.x - lo), abs(result.x - hi)) < 1e-3)
    info = {"targets": "platt-smoothed" if separable else "labels", "separable": separable, "at_bound": at_bound}
    return float(np.exp(result.x)), info


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar, so ranking is unchanged."""
    return fit_temperature_with_info(logits, labels)[0]


def _fit_platt_smoothed(z: np.ndarray, y: np.ndarray, balanced: bool) -> tuple[float, float, bool]:
    from scipy.optimize import minimize

    targets = smoothed_targets(y)
    n_pos, n_neg = max((y > 0.5).sum(), 1), max((y <= 0.5).sum(), 1)
    weights = (np.where(y > 0.5, 0.5 * y.size / n_pos, 0.5 * y.size / n_neg) if balanced else np.ones_like(y))
    scale = float(np.std(z)) or 1.0  # fit on standardised logits so the solver's tolerance means the same at any scale
    centre = float(np.mean(z))
    u = (z - centre) / scale

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = theta[0] * u + theta[1]
        loss = weights * (targets * np.logaddexp(0.0, -s) + (1.0 - targets) * np.logaddexp(0.0, s))
        residual = weights * (1.0 / (1.0 + np.exp(-s)) - targets)
        return float(loss.mean()), np.array([np.mean(residual * u), np.mean(residual)])

    prior = float(np.log((targets * weights).sum() / ((1 - targets) * weights).sum()))
    result = minimize(loss_and_grad, np.array([1.0, prior]), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 1000})
    a_u, b_u = float(result.x[0]), float(result.x[1])
    return a_u / scale, b_u - a_u * centre / scale, bool(result.success)


def fit_platt_with_info(logits: np.ndarray, labels: np.ndarray,
                        balanced: bool = False) -> tuple[float, float, dict[str, Any]]:
    """Platt scaling; the dict says how the fit went.

    On separable data the plain logistic regression has no finite optimum
    (with C=1e6 it stops wherever the solver's tolerance leaves the slope), so
    it fits Platt's smoothed targets instead; otherwise the fit is unchanged.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if is_separable(z, y):
        a, b, converged = _fit_platt_smoothed(z, y, balanced)
        info: dict[str, Any] = {"targets": "platt-smoothed", "separable": True, "converged": converged}
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6, max_iter=1000, class_weight="balanced" if balanced else None)
        model.fit(z.reshape(-1, 1), y.astype(int))
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        info = {"targets": "labels", "separable": False}
    if a < 0:
        # A model that ranks validation images backwards got a negative slope, and p_ai ran against its own logit.
        # The best slope of at least 0 is 0: p_ai is the (weighted) share of AI images, the same for every image.
        n_pos, n_neg = float((y > 0.5).sum()), float((y <= 0.5).sum())
        a, b = 0.0, 0.0 if balanced else float(np.log(max(n_pos, 0.5) / max(n_neg, 0.5)))
        info["inverted"] = True
    return a, b, info


def fit_platt(logits: np.ndarray, labels: np.ndarray, balanced: bool = False) -> tuple[float, float]:
    """Platt scaling: p = sigmoid(a * logit + b), fitted by logistic regression.

    ``balanced`` weighs both classes equally, so p_ai assumes even odds instead
    of the calibration data's class balance (which, across sources, is arbitrary).
    """
    a, b, _ = fit_platt_with_info(logits, labels, balanced)
    return a, b


def fit_warning(info: dict[str, Any] | None) -> str | None:
    """One line for a person when a calibration fit is not to be trusted as usual, else None."""
    if not info:
        return None
    if info.get("inverted"):
        return ("calibration: the model ranks the validation images backwards (AI below human), so Platt scaling "
                "would invert its scores; calibrated p_ai is the same for every image instead. The model does not "
                "work on these validation sources")
    if info.get("at_bound"):
        return ("calibration: the temperature fit stopped at its search bound; calibrated p_ai saturate, "
                "use more validation data or --calibration platt")
    if info.get("separable"):
        return ("calibration: the validation logits separate AI from human images perfectly, so the calibration "
                "(fitted on Platt's smoothed targets) and any threshold chosen on them rest on little evidence; "
                "validate on more, or harder, images")
    return None


@dataclass
class Calibration:
    method: str = "identity"
    temperature: float = 1.0
    a: float = 1.0
    b: float = 0.0
    #: how a new fit went (targets, ``separable``, ``at_bound``); informational, never used to apply it
    fit_info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self, logits: np.ndarray | float) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature":
            return sigmoid(logits / self.temperature)
        if self.method == "platt":
            return sigmoid(self.a * logits + self.b)
        return sigmoid(logits)

    def to_dict(self) -> dict[str, Any]:
        extra = {"fit": dict(self.fit_info)} if self.fit_info else {}
        if self.method == "temperature":
            return {"method": "temperature", "temperature": self.temperature, **extra}
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b, **extra}
        return {"method": "identity"}

    @property
    def warning(self) -> str | None:
        return fit_warning(self.fit_info)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Calibration":
        if not data:
            return cls()
        method = data.get("method", "identity")
        if method == "temperature":
            return cls(method=method, temperature=float(data["temperature"]), fit_info=dict(data.get("fit") or {}))
        if method == "platt":
            return cls(method=method, a=float(data["a"]), b=float(data["b"]), fit_info=dict(data.get("fit") or {}))
        return cls()

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, method: str = "temperature", *,
            balanced: bool = False) -> "Calibration":
        if method == "temperature":
            temperature, info = fit_temperature_with_info(logits, labels)
            return cls(method="temperature", temperature=temperature, fit_info=info)
        if method == "platt":
            a, b, info = fit_platt_with_info(logits, labels, balanced=balanced)
            return cls(method="platt", a=a, b=b, fit_info=info)
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
            "false_positives_validation": int((negatives >= t).sum()),
            "n_human_validation": int(negatives.size),
        }
        if negatives.size * fpr < 1:
            thresholds[f"fpr_{fpr:g}"]["note"] = (
                f"too few human images ({negatives.size}) to measure a {fpr:.0%} FPR: at most k=0 false positives "
                f"allowed, so this is the 0% FPR threshold")
    ai_at = threshold_at_fpr(p_ai, labels, decide_fpr)
    human_below = min(threshold_at_fnr(p_ai, labels, human_fnr), ai_at)
    decision: dict[str, Any] = {
        "ai_at_or_above": ai_at,
        "ai_rule": f"p_ai at or above the {decide_fpr:g} FPR threshold",
        "human_below": human_below,
        "human_rule": f"p_ai below the threshold that misses {human_fnr:g} of validation AI images",
    }
    if human_below >= ai_at:
        decision["uncertain_band_empty"] = True
        decision["note"] = ("the uncertain band is empty: on the validation data the human threshold reaches the ai "
                            "threshold (classes separated, or too few images), so no image is called uncertain")
    return {"thresholds": thresholds, "decision": decision}
