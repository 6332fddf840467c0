"""Metrics and calibration checked against scikit-learn (and plain arithmetic) on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from synthdetect.evaluate.calibration import Calibration, fit_temperature, operating_points, threshold_at_fpr
from synthdetect.evaluate.metrics import binary_metrics, expected_calibration_error, reliability_bins, tpr_at_fpr

Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1])
P = np.array([0.05, 0.2, 0.3, 0.45, 0.55, 0.1, 0.9, 0.8, 0.4, 0.7, 0.95, 0.65, 0.6, 0.02, 0.51, 0.49])


def test_binary_metrics_match_scikit_learn():
    m = binary_metrics(P, Y, 0.5)
    pred = (P >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(Y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(Y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(Y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(Y, P))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(Y, P))
    assert m["loss"] == pytest.approx(skm.log_loss(Y, P))
    assert m["confusion_matrix"]["rows_true_cols_pred"] == skm.confusion_matrix(Y, pred).tolist()
    assert (m["n"], m["n_ai"], m["n_human"]) == (16, 8, 8)


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.125, 0.25, 0.5])
def test_tpr_at_fpr_matches_the_roc_curve(fpr):
    fprs, tprs, _ = skm.roc_curve(Y, P)
    expected = tprs[fprs <= fpr + 1e-12].max()  # best TPR among ROC points within the FPR budget
    assert tpr_at_fpr(P, Y, fpr) == pytest.approx(expected)
    t = threshold_at_fpr(P, Y, fpr)
    assert np.mean(P[Y == 0] >= t) <= fpr


def test_ece_and_reliability_bins_match_hand_computation_and_sklearn():
    n_bins = 5
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (P > lo) & (P <= hi) if lo > 0 else (P >= lo) & (P <= hi)
        if mask.any():
            ece += mask.mean() * abs(P[mask].mean() - Y[mask].mean())
    assert expected_calibration_error(P, Y, n_bins) == pytest.approx(ece)
    bins = [b for b in reliability_bins(P, Y, n_bins) if b["count"]]
    frac, mean = calibration_curve(Y, P, n_bins=n_bins, strategy="uniform")
    assert [b["frac_ai"] for b in bins] == pytest.approx(frac.tolist())
    assert [b["mean_p"] for b in bins] == pytest.approx(mean.tolist())


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.random(true_logits.size) < 1 / (1 + np.exp(-true_logits))).astype(int)
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.05)
    platt = Calibration.fit(true_logits * 3.0 + 1.0, labels, "platt")
    assert platt.a == pytest.approx(1 / 3, rel=0.05) and platt.b == pytest.approx(-1 / 3, abs=0.06)
    assert Calibration.from_dict(platt.to_dict()) == platt


def test_operating_points_respect_their_false_positive_rates():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(500), np.ones(500)].astype(int)
    p = np.clip(np.r_[rng.beta(2, 5, 500), rng.beta(5, 2, 500)], 0, 1)
    points = operating_points(p, y)
    for key, fpr in (("fpr_0.01", 0.01), ("fpr_0.05", 0.05)):
        entry = points["thresholds"][key]
        assert entry["fpr_validation"] <= fpr
        assert entry["fpr_validation"] == pytest.approx(np.mean(p[y == 0] >= entry["threshold"]))
    assert points["decision"]["human_below"] <= points["decision"]["ai_at_or_above"]
