"""The small-image route's band: its 1% FPR must survive the noise of judging a thumbnail again, the card must not
carry a stale note, and images that give no thumbnail are counted, not passed over."""

from __future__ import annotations

import numpy as np
from PIL import Image

from synthdetect.evaluate.calibration import Calibration, threshold_at_fnr, threshold_at_fpr
from synthdetect.train.datasets import Record
from synthdetect.train.route_calibration import fit_route, score_thumbnails
from synth_data import make_image


def _sources(seed: int = 1):
    """Pooled, source a hides source b: b's 1% FPR threshold sets the band (as playground-ml72 does on wild-dev)."""
    rng = np.random.default_rng(seed)
    real_a, real_b, ai = rng.normal(-2, 1, 2000), rng.normal(0.5, 1, 200), rng.normal(2, 1, 2000)
    logits = np.r_[real_a, real_b, ai]
    labels = np.r_[np.zeros(2200), np.ones(2000)]
    sources = np.array(["a"] * 2000 + ["b"] * 200 + ["gen"] * 2000)
    return logits, labels, sources


def test_the_ai_threshold_still_holds_when_a_thumbnail_scores_a_float_step_higher():
    """cifake-cnn gives the same thumbnail logits up to 4.8e-7 apart in batches of 1 and 18 (measured on a
    wild-dev thumbnail), and the fit read logits rounded to 6 decimals.  The threshold sat one float step above
    the real thumbnail it let through, so that thumbnail judged again could be called ``ai``: 3 of 200 (1.5%)."""
    logits, labels, sources = _sources()
    route = fit_route(logits, labels, "synthetic", sources)
    calibration = Calibration.from_dict(route["calibration"])
    at = route["decision"]["ai_at_or_above"]
    for source in ("a", "b"):
        reals = logits[(sources == source) & (labels == 0)]
        allowed = int(np.floor(0.01 * reals.size))
        for noise in (0.0, 5e-7, -5e-7):
            assert np.sum(calibration(reals + noise) >= at) <= allowed, (source, noise)
    fakes = logits[labels == 1]  # and the human threshold still misses at most 5% of AI thumbnails
    for noise in (0.0, 5e-7, -5e-7):
        assert np.sum(calibration(fakes + noise) < route["decision"]["human_below"]) <= int(0.05 * fakes.size)


def test_moving_the_threshold_off_the_scores_calls_no_fitted_thumbnail_differently():
    logits, labels, sources = _sources(2)
    route = fit_route(logits, labels, "synthetic", sources)
    p = Calibration.from_dict(route["calibration"])(logits)
    edge = max(threshold_at_fpr(p[sources == s], labels[sources == s], 0.01) for s in ("a", "b"))
    at, below = route["decision"]["ai_at_or_above"], route["decision"]["human_below"]
    assert at > edge  # room above the real thumbnail it lets through
    assert np.array_equal(p >= at, p >= edge)
    missed = threshold_at_fnr(p, labels, 0.05)
    assert below < missed and np.array_equal(p < below, p < missed)


def test_a_band_widened_for_one_source_does_not_keep_the_pooled_empty_band_note():
    """Pooled, the classes separate (the band is empty, and the note says no image is called uncertain); raising
    the ai threshold for one source of high-scoring real images opens the band, so the note was false."""
    rng = np.random.default_rng(3)
    logits = np.r_[rng.normal(-6, 1, 3000), rng.normal(4, 0.5, 20), rng.normal(6, 1, 3000)]
    labels = np.r_[np.zeros(3020), np.ones(3000)]
    sources = np.array(["a"] * 3000 + ["b"] * 20 + ["gen"] * 3000)
    assert fit_route(logits, labels, "synthetic")["decision"].get("uncertain_band_empty")  # the pooled fit
    decision = fit_route(logits, labels, "synthetic", sources)["decision"]
    assert decision["human_below"] < decision["ai_at_or_above"]
    assert "uncertain_band_empty" not in decision and "note" not in decision


def test_images_that_give_no_thumbnail_are_counted_not_passed_over(tmp_path):
    """wild-dev holds a 1x1 and a 4x261 px image: they gave no thumbnail and were in no count of the card."""
    records = []
    for label in (0, 1):
        path = tmp_path / f"big-{label}.png"
        make_image(label, seed=label, size=80).save(path)
        records.append(Record(str(path), label, "s1"))
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    Image.new("RGB", (4, 261), (10, 20, 30)).save(tmp_path / "strip.png")
    records += [Record(str(tmp_path / "dot.png"), 0, "s1"), Record(str(tmp_path / "strip.png"), 0, "s1")]
    scores = score_thumbnails(records, "cifake-cnn", short_sides=(32,))
    assert scores.images == 2 and scores.logits.size == 2 * 6
    assert [line.split(":")[0] for line in scores.too_small] == [str(tmp_path / "dot.png"), str(tmp_path / "strip.png")]
    assert "1x1 px" in scores.too_small[0]


def test_the_card_counts_the_images_that_gave_no_thumbnail():
    from synthdetect.models import find_package
    from synthdetect.train.route_calibration import ThumbnailScores, calibrate_route

    logits, labels, sources = _sources(4)
    scores = ThumbnailScores(logits, labels, sources, ["x"] * logits.size, images=logits.size,
                             too_small=["dot.png: 1x1 px", "strip.png: 4x261 px"])
    info = calibrate_route(scores, find_package("cifake-cnn").card, "synthetic")["calibrated_on"]
    assert info["too_small_for_thumbnails"] == 2 and info["unreadable"] == 0
