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


def _separable_split(seed: int = 0, n: int = 30):
    """A strong model's logits (N(+-4, 1.5)) on a small validation split that happens to separate the classes."""
    rng = np.random.default_rng(seed)
    while True:
        y = np.r_[np.zeros(n), np.ones(n)].astype(int)
        z = np.where(y == 1, rng.normal(4, 1.5, 2 * n), rng.normal(-4, 1.5, 2 * n))
        if z[y == 1].min() > z[y == 0].max():
            return z, y


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_separable_validation_data_gives_a_finite_calibration_and_says_so(method):
    z_val, y_val = _separable_split()
    rng = np.random.default_rng(1)
    y_test = np.r_[np.zeros(2000), np.ones(2000)].astype(int)
    z_test = np.where(y_test == 1, rng.normal(4, 1.5, 4000), rng.normal(-4, 1.5, 4000))
    cal = Calibration.fit(z_val, y_val, method)
    p_test = cal(z_test)
    assert not np.any((p_test == 0.0) | (p_test == 1.0))  # no saturated scores, so no ties
    assert skm.roc_auc_score(y_test, p_test) == pytest.approx(skm.roc_auc_score(y_test, z_test))
    if method == "temperature":
        assert 0.1 < cal.temperature < 10 and not cal.fit_info["at_bound"]
    else:
        assert 0.1 < cal.a < 10
    assert cal.fit_info["separable"] is True and "separate" in cal.warning
    saved = cal.to_dict()
    assert saved["fit"]["separable"] is True and saved["fit"]["targets"] == "platt-smoothed"
    assert np.array_equal(Calibration.from_dict(saved)(z_test), p_test)
    from synthdetect.train.registry import calibration_warnings

    points = operating_points(cal(z_val), y_val)
    assert points["decision"]["uncertain_band_empty"] is True
    assert points["thresholds"]["fpr_0.01"]["note"].startswith("too few human images (30)")
    assert any("uncertain band is empty" in line for line in calibration_warnings(cal, points))


def test_a_non_separable_fit_raises_no_flag():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z))).astype(int)
    for method in ("temperature", "platt"):
        cal = Calibration.fit(z, y, method)
        assert cal.warning is None and cal.fit_info["separable"] is False


def test_tpr_at_fpr_says_which_threshold_and_fpr_it_really_measured():
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(60), np.ones(80)].astype(int)
    p = np.r_[rng.beta(2, 5, 60), rng.beta(5, 2, 80)]
    m = binary_metrics(p, y)
    point = m["at_fpr"]["0.01"]
    assert point["tpr"] == m["tpr_at_fpr_0.01"] == pytest.approx(tpr_at_fpr(p, y, 0.01))
    assert point["threshold"] == threshold_at_fpr(p, y, 0.01)
    assert (point["false_positives"], point["n_human"], point["fpr_achieved"]) == (0, 60, 0.0)
    assert "too few human images (60) to measure a 1% FPR: at most k=0 false positives" in point["note"]
    five = m["at_fpr"]["0.05"]
    assert five["false_positives"] == int(np.sum(p[y == 0] >= five["threshold"])) == 3 and "note" not in five
    exact = binomtest(3, 60).proportion_ci(confidence_level=0.95, method="exact")
    assert five["fpr_ci95"] == pytest.approx([exact.low, exact.high])
    assert point["fpr_ci95"][0] == 0.0 and point["fpr_ci95"][1] == pytest.approx(1 - 0.025 ** (1 / 60))


def test_ece_uses_one_bin_count_and_knows_its_small_sample_floor():
    from synthdetect.evaluate.metrics import ECE_BINS, ece_if_calibrated

    assert binary_metrics(P, Y)["ece_bins"] == ECE_BINS == 15
    assert len(reliability_bins(P, Y)) == ECE_BINS
    floor = ece_if_calibrated(np.random.default_rng(0).random(95))
    assert 0.08 < floor["mean"] < 0.16 and floor["p95"] > floor["mean"]  # a perfect model scores ~0.12 on 95 images
    assert ece_if_calibrated(np.random.default_rng(0).random(5000))["mean"] < 0.03


def test_bootstrap_resamples_match_scikit_learn():
    from synthdetect.evaluate.metrics import bootstrap_ci, resample_stats

    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.4).astype(int)
    p = np.where(y == 1, rng.beta(4, 2, 300), rng.beta(2, 4, 300)).round(2)  # rounded: ties must count half
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = [np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)] for _ in range(3)]
    w = np.array([np.bincount(d, minlength=y.size) for d in draws], dtype=float)
    stats = resample_stats(p, y, w, threshold=0.5, fpr_thresholds={"tpr_at_fpr_0.05": 0.7})
    for b, d in enumerate(draws):
        assert stats["roc_auc"][b] == pytest.approx(skm.roc_auc_score(y[d], p[d]))
        assert stats["accuracy"][b] == pytest.approx(skm.accuracy_score(y[d], p[d] >= 0.5))
        assert stats["ece"][b] == pytest.approx(expected_calibration_error(p[d], y[d]))
        assert stats["tpr_at_fpr_0.05"][b] == pytest.approx(np.mean(p[d][y[d] == 1] >= 0.7))
    ci = bootstrap_ci(p, y, fpr_thresholds={"tpr_at_fpr_0.05": 0.7})
    assert ci == bootstrap_ci(p, y, fpr_thresholds={"tpr_at_fpr_0.05": 0.7})  # seeded
    m = binary_metrics(p, y)
    for key in ("roc_auc", "accuracy", "ece"):
        assert ci[key][0] <= m[key] <= ci[key][1] and ci[key][0] < ci[key][1]


def test_a_non_separable_platt_fit_is_the_plain_logistic_regression_it_was():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    z = rng.normal(0, 2, 300)
    y = (rng.random(300) < 1 / (1 + np.exp(-z))).astype(int)
    for balanced in (False, True):
        lr = LogisticRegression(C=1e6, max_iter=1000, class_weight="balanced" if balanced else None)
        lr.fit(z.reshape(-1, 1), y)
        cal = Calibration.fit(z, y, "platt", balanced=balanced)
        assert (cal.a, cal.b) == (float(lr.coef_[0, 0]), float(lr.intercept_[0]))
        assert cal.fit_info["targets"] == "labels"


@pytest.mark.parametrize("separable", [False, True])
def test_platt_never_turns_a_model_s_scores_around(separable):
    """A model ranking validation images backwards got a negative slope: p_ai fell as its AI logit rose."""
    from synthdetect.evaluate.calibration import fit_warning

    rng = np.random.default_rng(6)
    y = (rng.random(200) < 0.4).astype(int)
    z = np.where(y == 1, -1.0, 1.0) + (0 if separable else rng.normal(0, 1.5, 200))  # AI logits below human ones
    cal = Calibration.fit(z, y, "platt")
    assert cal.a == 0.0 and cal.fit_info["inverted"]
    assert np.allclose(cal(z), y.mean())  # the share of AI images, the same for every image
    assert Calibration.fit(z, y, "platt", balanced=True)(z) == pytest.approx(np.full(200, 0.5))
    assert "ranks the validation images backwards" in fit_warning(cal.fit_info)


def test_the_ece_interval_covers_the_true_ece_of_a_miscalibrated_model():
    """The percentile interval sat above the truth (ECE only grows with resampling noise): it covered the true ECE
    of this overconfident model in none of these 40 samples of 300 images; the basic interval in 36."""
    from synthdetect.evaluate.metrics import bootstrap_ci

    def expected_ai(p):  # an overconfident model: the truth is closer to 0.5 than its scores
        return 0.5 + 0.75 * (p - 0.5)

    population = np.random.default_rng(123).beta(0.6, 0.6, 2_000_000)
    bins = np.clip(np.digitize(population, np.linspace(0, 1, 16)[1:-1], right=True), 0, 14)
    truth = sum(abs(population[bins == b].sum() - expected_ai(population[bins == b]).sum())
                for b in range(15)) / population.size
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        p = rng.beta(0.6, 0.6, 300)
        y = (rng.random(300) < expected_ai(p)).astype(int)
        low, high = bootstrap_ci(p, y, n_boot=400, seed=seed)["ece"]
        covered += low <= truth <= high
    assert covered >= 30  # 95% nominal

