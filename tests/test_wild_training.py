"""``synthdetect train-wild`` end to end, and the copies rule of its leave-one-source-out folds.

A manifest may file one image under two sources (wild-dev does: one AI image sits in ``web-mixed-a`` and in
``ai-art-scrape``).  Holding out one of them while training on the other would score memory, so each fold
leaves such copies out of its training, outer and inner, and every image is still scored once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from synthdetect import Detector
from synthdetect.cli import app
from synthdetect.train.duplicates import copies_of
from synthdetect.train.route_calibration import ThumbnailScores, leave_one_source_out
from synthdetect.train.wild import WildData
from synth_data import add_copies, make_image, write_manifest


def test_copies_of_marks_training_files_identical_to_a_held_out_one():
    digests = ["a", "b", "a", "c", None, None, "b"]
    held_out = np.array([True, False, False, False, True, False, False])
    assert copies_of(digests, held_out).tolist() == [False, False, True, False, False, False, False]
    # an unreadable file (no digest) is nobody's copy; a copy inside the held-out part is not training anyway
    assert not copies_of(["x", "x"], np.array([True, True])).any()


def test_route_calibration_folds_never_fit_on_a_copy_of_the_held_out_source():
    rng = np.random.default_rng(3)
    logits, labels, sources, digests = [], [], [], []
    for source in ("a", "b", "c"):
        for label in (0, 1):
            for i in range(60):
                logits.append(rng.normal(2.0 * label - 1.0, 1.0)), labels.append(label)
                sources.append(source), digests.append(f"{source}{label}{i}")
    # five thumbnails of one held-out image of 'a' also filed under 'b'
    for _ in range(5):
        logits.append(9.0), labels.append(0), sources.append("b"), digests.append("a00")
        logits.append(9.0), labels.append(0), sources.append("a"), digests.append("a00")
    scores = ThumbnailScores(np.asarray(logits), np.asarray(labels, dtype=float), np.asarray(sources),
                             ["x"] * len(logits), images=len(logits), image_digests=digests)
    with_rule = leave_one_source_out(scores, "synthetic")
    assert with_rule["per_source"]["a"]["copies_left_out_of_fit"] == 5
    assert with_rule["per_source"]["b"]["copies_left_out_of_fit"] == 6  # 'a00' itself and its 5 twins in 'a'
    assert "copies_left_out_of_fit" not in with_rule["per_source"]["c"]
    without_digests = leave_one_source_out(
        ThumbnailScores(scores.logits, scores.labels, scores.sources, scores.variants, images=scores.images),
        "synthetic")
    assert "copies_left_out_of_fit" not in without_digests["per_source"]["a"]
    # the fit for 'a' lost real thumbnails scored 9.0, so its band moved
    assert with_rule["per_source"]["a"]["ai_at_or_above"] != without_digests["per_source"]["a"]["ai_at_or_above"]


def test_a_fold_trains_on_the_other_sources_minus_copies_of_its_held_out_images():
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    n = len(groups)
    data = WildData(labels=np.array([1, 0, 1, 0, 1, 0]), groups=groups, names=[str(i) for i in range(n)],
                    formats=np.array(["PNG"] * n), short_side=np.full(n, 64), bytes_per_pixel=np.ones(n),
                    global_feats={}, crop_feats={}, digests=["x", "y", "x", "z", "w", "v"])
    test, train, copies = data.fold(np.arange(n), "a")
    assert test.tolist() == [0, 1] and train.tolist() == [3, 4, 5] and copies == 1  # 2 is a copy of 0
    inner = np.array([2, 3, 4, 5])  # an inner fold inside the outer fold that held out 'a'
    test, train, copies = data.fold(inner, "c")
    assert test.tolist() == [4, 5] and train.tolist() == [2, 3] and copies == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild")
    manifest = write_manifest(root / "data", {"alpha": (6, 6), "beta": (6, 6), "gamma": (6, 6)}, size=64, broken=1)
    add_copies(manifest, [(0, "beta", None), (1, "gamma", None)])  # two AI images of 'alpha' under other sources
    out, report = root / "pkg", root / "loso.json"
    result = CliRunner().invoke(app, [
        "train-wild", str(manifest), "--out", str(out), "--name", "wild-test", "--extractors", "handcrafted-v1",
        "--crops", "0", "--crop-size", "64", "--package-version", "2.0.1", "--cache", str(root / "cache"), "--report", str(report)])
    assert result.exit_code == 0, result.output
    return out, json.loads(report.read_text()), result.output


def test_train_wild_writes_a_package_the_detector_loads(trained):
    out, report, output = trained
    card = json.loads((out / "model.json").read_text())
    assert card["name"] == "wild-test" and card["kind"] == "handcrafted" and card["version"] == "2.0.1"
    assert card["training"]["images_used"] == 38 and card["training"]["data"].endswith("manifest.csv")
    assert report["winner"] in report["candidates"] and len(report["held_out_p_ai"]) == 38
    verdict = Detector.load(str(out), use_evidence=False)(make_image(1, seed=99, size=64))
    assert verdict.error is None and verdict.models[0]["model"] == "wild-test" and 0.0 <= verdict.p_ai <= 1.0
    assert "wrote" in output
    assert "## Crop policy" in (out / "MODEL_CARD.md").read_text()  # train-wild's own card, written once


def test_train_wild_folds_leave_copies_of_the_held_out_source_out_of_training(trained):
    out, report, _ = trained
    folds = {f["source"]: f["copies_left_out_of_training"] for f in report["folds"]}
    # holding out 'alpha' drops its two copies from beta and gamma; holding out beta (or gamma) drops the
    # original in alpha that its copy duplicates
    assert folds == {"alpha": 2, "beta": 1, "gamma": 1}
    card = json.loads((out / "model.json").read_text())
    assert card["metrics"]["copies_left_out_of_training"]["per_held_out_source"] == folds
    assert "byte-identical" in card["metrics"]["protocol"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("case", ["bad-label", "no-manifest", "unknown-extractor", "two-clips", "no-extractor",
                                  "out-is-a-file", "unknown-candidate", "missing-benchmark", "report-is-a-folder",
                                  "one-source", "a-fold-left-with-one-class", "negative-crops", "report-under-a-file"])
def test_train_wild_refuses_a_bad_run_with_one_line_before_extracting(tmp_path, case):
    sources = {"alpha": (3, 3), "beta": (3, 3), "gamma": (3, 3)}
    if case == "one-source":
        sources = {"alpha": (3, 3)}
    if case == "a-fold-left-with-one-class":
        sources = {"alpha": (3, 3), "beta": (3, 3), "gamma": (3, 0)}  # hold out alpha and beta: gamma is all AI
    manifest = write_manifest(tmp_path / "data", sources, size=32)
    if case == "bad-label":
        manifest.write_text(manifest.read_text().replace(",ai,", ",AIish,", 1))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "afolder").mkdir()
    extra = {"no-manifest": [], "unknown-extractor": ["--extractors", "bogus"],
             "two-clips": ["--extractors", "clip-vit-b16-f32,clip-vit-b16-int8"], "no-extractor": ["--extractors", ","],
             "out-is-a-file": ["--out", tmp_path / "afile"], "unknown-candidate": ["--candidate", "bogus"],
             "missing-benchmark": ["--benchmark", tmp_path / "none.json"],
             "report-is-a-folder": ["--report", tmp_path / "afolder"], "negative-crops": ["--crops", "-1"],
             # was a FileExistsError traceback after every fold was fitted
             "report-under-a-file": ["--report", tmp_path / "afile" / "loso.json"]}.get(case, [])
    data = tmp_path / "nope.csv" if case == "no-manifest" else manifest
    cache = tmp_path / "cache"
    result = _invoke("train-wild", data, "--out", tmp_path / "pkg", "--extractors", "handcrafted-v1", "--crops", "0",
                     "--crop-size", "32", "--cache", cache, *extra)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert not cache.exists() and not (tmp_path / "pkg").exists()  # refused before any feature was extracted


def test_train_wild_names_a_manifest_whose_images_all_fail(tmp_path):
    manifest = write_manifest(tmp_path / "data", {"alpha": (2, 2), "beta": (2, 2), "gamma": (2, 2)}, size=32)
    for image in (tmp_path / "data" / "images").rglob("*.png"):
        image.unlink()
    result = _invoke("train-wild", manifest, "--out", tmp_path / "pkg", "--extractors", "handcrafted-v1",
                     "--crops", "0", "--crop-size", "32", "--cache", tmp_path / "cache")
    assert result.exit_code == 2 and "none of its 12 images could be read" in result.output, result.output
    assert "No such file or directory" in result.output and "alpha" in result.output


def test_train_wild_counts_and_names_unreadable_files(trained):
    out, _, output = trained
    assert "1 of 39 images unreadable and left out" in output
    failed = json.loads((out / "model.json").read_text())["training"]["images_failed"]
    assert len(failed) == 1 and failed[0].count("broken_0.png") == 1  # named once, not "path: path: ..."


def test_calibration_of_separable_logits_stays_off_0_and_1():
    from synthdetect.train.wild import fit_calibration, fit_positive_logistic

    z = np.r_[np.linspace(-3, -1, 20), np.linspace(1, 3, 20)]
    y = np.r_[np.zeros(20), np.ones(20)]
    (plain_slope,), _ = fit_positive_logistic(z.reshape(-1, 1), y, l2=0.0)
    assert plain_slope > 100  # the old fit: the slope runs to its bound and p_ai is 0.0 or 1.0
    calibration = fit_calibration(z, y)
    p = calibration(z)
    assert 0.005 < p.min() < 0.02 and 0.98 < p.max() < 0.995  # Platt's targets: 1/22 .. 21/22 at most
    assert calibration.to_dict()["fit"] == {"targets": "platt-smoothed", "separable": True}
    rng = np.random.default_rng(0)
    mixed = fit_calibration(np.r_[rng.normal(-1, 1, 200), rng.normal(1, 1, 200)], np.r_[np.zeros(200), np.ones(200)])
    assert "fit" not in mixed.to_dict() and 1.8 < mixed.a < 2.4  # true log-odds 2z: an overlap keeps the plain fit


def test_train_wild_says_how_it_groups_images_without_a_source(tmp_path):
    manifest = write_manifest(tmp_path / "data", {"alpha": (3, 3), "beta": (3, 3), "gamma": (3, 3)}, size=32)
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[:-2] + [r.replace(",gamma,", ",,") for r in rows[-2:]]) + "\n")
    result = _invoke("train-wild", manifest, "--out", tmp_path / "pkg", "--extractors", "handcrafted-v1",
                     "--crops", "0", "--crop-size", "32", "--cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "2 image(s) have an empty source cell" in " ".join(result.output.split())
    card = json.loads((tmp_path / "pkg" / "model.json").read_text())
    assert "unknown" in json.dumps(card["metrics"])


def test_cached_features_are_read_back_only_for_the_same_extractor_identity(tmp_path, monkeypatch):
    """The cache was keyed by the extractor's name alone: a new encoder pin or normalisation under the same name
    read back the old features."""
    from synthdetect.models.handcrafted import HandcraftedFeatures
    from synthdetect.models.multicrop import CropPolicy
    from synthdetect.train.datasets import open_dataset
    from synthdetect.train.wild_features import extract_cached

    manifest = write_manifest(tmp_path / "data", {"alpha": (1, 1)}, size=64)
    records = list(open_dataset(manifest))
    computed = []
    features = HandcraftedFeatures.features

    def counting(self, crops):
        computed.append(len(crops))
        return features(self, crops)

    monkeypatch.setattr(HandcraftedFeatures, "features", counting)
    policy = CropPolicy(size=64, native_crops=0)
    first = extract_cached(records, policy, ["handcrafted-v1"], tmp_path / "cache")
    assert len(computed) == 2
    again = extract_cached(records, policy, ["handcrafted-v1"], tmp_path / "cache")
    assert len(computed) == 2  # read back
    assert np.array_equal(first.views["handcrafted-v1"][0]["global"], again.views["handcrafted-v1"][0]["global"])
    monkeypatch.setattr(HandcraftedFeatures, "revision", 2)  # as after a change to what the features are
    extract_cached(records, policy, ["handcrafted-v1"], tmp_path / "cache")
    assert len(computed) == 4  # computed again, not the old ones read back


def test_train_wild_interrupted_says_nothing_is_lost_but_the_run(tmp_path, monkeypatch):
    """Ctrl-C printed only Click's "Aborted!"; the features already extracted stay cached for the rerun."""
    from synthdetect.train import wild

    manifest = write_manifest(tmp_path / "data", {"alpha": (3, 3), "beta": (3, 3), "gamma": (3, 3)}, size=32)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wild, "run_loso", interrupt)
    result = _invoke("train-wild", manifest, "--out", tmp_path / "pkg", "--extractors", "handcrafted-v1",
                     "--crops", "0", "--crop-size", "32", "--cache", tmp_path / "cache")
    assert result.exit_code == 130
    assert " ".join(result.stderr.split()).endswith(  # after the extraction's progress bar
        f"interrupted: no package was written ({tmp_path / 'pkg'} is as it was); the features extracted so far stay "
        f"in the cache ({tmp_path / 'cache'}), so the same command goes on from there")
    assert not (tmp_path / "pkg").exists() and any((tmp_path / "cache").rglob("*.npz"))
