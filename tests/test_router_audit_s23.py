"""Audit of the ``default`` router and ``synthdetect calibrate-route`` (helper s23-h6).

A router card that could only fail or mislead at judging time is refused at load in one line; calibrate-route
refuses what it could not store usably, says what its band was fitted on, and answers Ctrl-C in one line.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from synth_data import make_image
from synthdetect import Detector
from synthdetect.cli import app
from synthdetect.models import BUILTIN_DIR
from synthdetect.train.route_calibration import ThumbnailScores

DEFAULT_CARD = json.loads((BUILTIN_DIR / "default" / "model.json").read_text())
SMALL_ROUTE = DEFAULT_CARD["routes"][0]


def _router(path, routes, name="my-router"):
    path.mkdir(parents=True, exist_ok=True)
    card = dict(DEFAULT_CARD, name=name, routes=routes)
    (path / "model.json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("target", ["default", "self"])
def test_a_route_to_another_router_is_refused_at_load(tmp_path, target):
    """Routed to a router, every image failed 'model failed (TypeError: a router is not scored directly ...)';
    routed to itself, the first image failed with a RecursionError."""
    path = tmp_path / "r"
    _router(path, [{"max_short_side": 16, "reason": "tiny"}, {"model": str(path) if target == "self" else target}])
    with pytest.raises(ValueError, match=r"router my-router: its route to .* names a router; a route must name"):
        Detector.load(str(path), use_evidence=False)


def test_a_route_that_takes_no_image_is_refused_at_load(tmp_path):
    """min_short_side above max_short_side: every image fell through to 'no route matches', card never blamed."""
    path = _router(tmp_path / "r", [{"min_short_side": 80, "max_short_side": 40, "model": "cifake-cnn"}])
    with pytest.raises(ValueError, match=r"routes\[0\] takes no image \(min_short_side 80 is above max_short_side 40"):
        Detector.load(str(path), use_evidence=False)


def test_a_route_recalibrated_without_its_own_band_is_refused_at_load(tmp_path):
    """Before, the CIFAKE band judged the route's Platt-rescaled p_ai and the reason quoted the CIFAKE rule for it
    ('human ... below the human threshold 0.897 (p_ai below the threshold that misses 0.05 of validation AI ...')."""
    route = {k: v for k, v in SMALL_ROUTE.items() if k != "decision"}
    path = _router(tmp_path / "r", [route, {"model": "wild-v3"}])
    with pytest.raises(ValueError, match=r"routes\[0\] recalibrates cifake-cnn without a decision band of its own"):
        Detector.load(str(path), use_evidence=False)


def _manifest(tmp_path, sources=("s1", "s2", "s3")):
    rows = []
    for source in sources:
        for label in (0, 1):
            path = tmp_path / f"{source}-{label}.png"
            make_image(label, seed=len(rows), size=40).save(path)
            rows.append({"path": path.name, "label": "ai" if label else "real", "source": source})
    manifest = tmp_path / "data" / "mine.csv"
    manifest.parent.mkdir()
    for row in rows:
        row["path"] = str(tmp_path / row["path"])
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _copy_of_default(tmp_path, routes=None):
    router = tmp_path / "router"
    router.mkdir()
    if routes is None:
        shutil.copy(BUILTIN_DIR / "default" / "model.json", router / "model.json")
    else:
        _router(router, routes, name="default-copy")
    return router


def _no_scoring(monkeypatch):
    monkeypatch.setattr("synthdetect.train.route_calibration.score_thumbnails",
                        lambda *a, **k: pytest.fail("scored thumbnails it could never use"))


def test_calibrate_route_refuses_a_model_that_sits_on_two_routes_before_scoring(tmp_path, monkeypatch):
    """--write stored a calibration on one of cifake-cnn's two routes; the router then refused to load
    ('cifake-cnn is on two routes and one recalibrates it')."""
    router = _copy_of_default(tmp_path, [{"max_short_side": 40, "model": "cifake-cnn"},
                                         {"max_short_side": 64, "model": "cifake-cnn"}, {"model": "wild-v3"}])
    before = (router / "model.json").read_text()
    _no_scoring(monkeypatch)
    result = CliRunner().invoke(app, ["calibrate-route", str(_manifest(tmp_path)), "--router", str(router),
                                      "--route-model", "cifake-cnn", "--write"])
    assert result.exit_code == 2, result.output
    assert "error: --route-model: cifake-cnn is on 2 routes" in result.output
    assert (router / "model.json").read_text() == before
    Detector.load(str(router), use_evidence=False)  # still loads


def _scores(*args, **kwargs):
    rng = np.random.default_rng(0)
    labels = np.tile([0.0, 1.0], 150)
    return ThumbnailScores(rng.normal(labels * 2 - 1, 1.0), labels, np.repeat(["s1", "s2", "s3"], 100),
                           ["32px-lanczos-png"] * 300, images=30)


def test_calibrate_route_does_not_say_wild_dev_for_other_data(tmp_path, monkeypatch):
    """Without --what, the band's rules (quoted in every verdict it judges) said 'thumbnails of real-world photos
    and art (wild-dev)' whatever DATA was."""
    router = _copy_of_default(tmp_path)
    monkeypatch.setattr("synthdetect.train.route_calibration.score_thumbnails", _scores)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["calibrate-route", str(_manifest(tmp_path)), "--router", str(router),
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    spec = json.loads(report.read_text())
    assert "wild-dev" not in json.dumps(spec["decision"]) and "wild-dev" not in spec["calibrated_on"]["what"]
    assert "thumbnails of the images in data/mine.csv" in spec["decision"]["ai_rule"]


def test_default_what_keeps_the_shipped_cards_words_for_wild_dev():
    from synthdetect.train.route_calibration import default_what

    shipped = DEFAULT_CARD["routes"][0]["calibrated_on"]["what"]
    assert default_what("../shared/datasets/wild-dev/manifest.csv") == shipped


@pytest.mark.parametrize("case", ["not-a-router", "no-source-column"])
def test_calibrate_route_refuses_in_one_line_not_a_usage_box(tmp_path, monkeypatch, case):
    router = _copy_of_default(tmp_path)
    manifest = _manifest(tmp_path)
    if case == "no-source-column":
        manifest.write_text("\n".join(",".join(line.split(",")[:2]) for line in manifest.read_text().splitlines()))
    _no_scoring(monkeypatch)
    result = CliRunner().invoke(app, ["calibrate-route", str(manifest), "--router",
                                      "cifake-cnn" if case == "not-a-router" else str(router)])
    assert result.exit_code == 2, result.output
    assert "╭" not in result.output and "Usage:" not in result.output, result.output
    expected = ("error: --router: cifake-cnn is not a router package (kind clip-cascade)" if case == "not-a-router"
                else "the manifest needs a 'source' column")
    assert expected in result.output


def test_calibrate_route_interrupted_says_nothing_was_stored(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) while scoring ended with no word at all (exit 130 or 143): was the card written?"""
    router = _copy_of_default(tmp_path)
    before = (router / "model.json").read_text()

    def interrupted(records, model, *, short_sides, progress):
        progress(2, len(records))
        raise KeyboardInterrupt

    monkeypatch.setattr("synthdetect.train.route_calibration.score_thumbnails", interrupted)
    result = CliRunner().invoke(app, ["calibrate-route", str(_manifest(tmp_path)), "--router", str(router),
                                      "--write"])
    assert result.exit_code == 130, result.output
    assert "interrupted after scoring 2 of 6 images: nothing was stored" in result.output
    assert (router / "model.json").read_text() == before


def test_calibrate_route_refuses_a_route_to_a_prefixed_model_before_scoring(tmp_path, monkeypatch):
    """A route may name an adapter (onnx:PATH); calibrate-route scored every thumbnail with it and then ended with
    "unknown model 'onnx:...'" (it looked the name up as a package to read the weights the fit is tied to)."""
    router = _copy_of_default(tmp_path, [{"max_short_side": 64, "model": f"onnx:{tmp_path / 'tiny.onnx'}"},
                                         {"model": "wild-v3"}])
    _no_scoring(monkeypatch)
    result = CliRunner().invoke(app, ["calibrate-route", str(_manifest(tmp_path)), "--router", str(router)])
    assert result.exit_code == 2, result.output
    assert "is a prefixed model with no package card" in result.output


def test_a_misspelt_route_key_is_refused_at_load(tmp_path):
    """'max_short' for 'max_short_side' made the small route take every image: each photo was answered
    'uncertain: image larger than cifake-cnn handles (short side 300 > 64 px)' and wild-v3 never judged one."""
    route = {("max_short" if k == "max_short_side" else k): v for k, v in SMALL_ROUTE.items()}
    path = _router(tmp_path / "r", [route, {"model": "wild-v3"}])
    with pytest.raises(ValueError, match=r"routes\[0\] has unknown key\(s\) max_short \(known: max_short_side"):
        Detector.load(str(path), use_evidence=False)


def _one_class_sources(classes):
    """Synthetic thumbnail scores: 40 per source, all of the class given for it."""
    rng = np.random.default_rng(1)
    labels = np.repeat([float(c) for c in classes.values()], 40)
    return ThumbnailScores(rng.normal(labels * 2 - 1, 1.0), labels, np.repeat(list(classes), 40),
                           ["32px-lanczos-png"] * labels.size, images=len(classes) * 2)


def test_calibrate_route_refuses_data_whose_real_images_no_fold_can_hold_out():
    """One source of real images and two of AI ones: its fold had only AI thumbnails to fit on and was dropped in
    silence; the card's held-out numbers then measured no real image (real called ai: none), yet were written."""
    from synthdetect.train.route_calibration import route_data_problem

    problem = route_data_problem(_one_class_sources({"real-only": 0, "gen-a": 1, "gen-b": 1}))
    assert problem is not None and "cannot judge any source of real images" in problem
    assert "holding out real-only leaves only AI thumbnails" in problem


def test_a_source_no_fold_can_hold_out_is_named_on_the_card_and_by_the_command(tmp_path, monkeypatch):
    from synthdetect.train.route_calibration import leave_one_source_out

    scores = _one_class_sources({"real-a": 0, "real-b": 0, "gen": 1})
    held = leave_one_source_out(scores, "synthetic")
    assert sorted(held["per_source"]) == ["real-a", "real-b"]
    assert held["not_held_out"] == {"gen": "holding it out leaves only real thumbnails to fit on"}
    monkeypatch.setattr("synthdetect.train.route_calibration.score_thumbnails", lambda *a, **k: scores)
    result = CliRunner().invoke(app, ["calibrate-route", str(_manifest(tmp_path)), "--router",
                                      str(_copy_of_default(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "not held out, so not in the numbers above: gen: holding it out leaves only real" in result.output


def test_a_refused_router_card_is_named_by_its_file_not_only_by_its_name(tmp_path):
    """A copy of default with a bad route said 'router default: ...', as if the shipped card were broken."""
    card = dict(DEFAULT_CARD, routes=[])
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(ValueError) as info:
        Detector.load(str(tmp_path), use_evidence=False)
    assert str(info.value).startswith(f"{tmp_path / 'model.json'}: router default: ")


def test_calibrate_route_refuses_a_report_path_it_cannot_write_before_scoring(tmp_path, monkeypatch):
    """--report under a file: every thumbnail was scored, then a FileExistsError traceback ended the run."""
    (tmp_path / "afile").write_text("x")
    _no_scoring(monkeypatch)
    result = CliRunner().invoke(app, ["calibrate-route", str(_manifest(tmp_path)), "--router",
                                      str(_copy_of_default(tmp_path)), "--report", str(tmp_path / "afile" / "r.json")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "--report cannot be written:" in result.output and "is a file, not a folder" in result.output


def test_a_relative_route_path_is_read_beside_the_router_card_from_any_directory(tmp_path, monkeypatch):
    """'model': '../tiny' worked when run from the router's folder and was "unknown model '../tiny'" elsewhere."""
    from tiny_model import png_bytes, write_tiny_cnn

    write_tiny_cnn(tmp_path / "models" / "tiny")
    router = _router(tmp_path / "models" / "router", [{"max_short_side": 64, "model": "../tiny"},
                                                      {"reason": "only thumbnails here"}])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    verdict = Detector.load(str(router), use_evidence=False)(png_bytes((32, 32)))
    assert verdict.error is None and verdict.models[0]["model"] == "tiny-cnn"


def test_a_route_no_image_can_reach_is_refused_at_load(tmp_path):
    """The small-image route put after the catch-all: wild-v3 judged every thumbnail, cifake-cnn's route (and its
    band) was dead, and nothing said so."""
    path = _router(tmp_path / "r", [{"model": "wild-v3"}, SMALL_ROUTE])
    with pytest.raises(ValueError, match=r"routes\[1\] is never reached: the routes before it take every image"):
        Detector.load(str(path), use_evidence=False)
    Detector.load(str(_router(tmp_path / "ok", [SMALL_ROUTE, {"min_short_side": 60, "model": "wild-v3"}])),
                  use_evidence=False)  # overlapping is fine: the first route that matches judges


def test_calibrate_route_says_images_without_a_source_are_held_out_together(tmp_path, monkeypatch):
    """Rows with an empty source cell were pooled as one source, 'unknown', without a word (train-wild says so)."""
    router = _copy_of_default(tmp_path)
    monkeypatch.setattr("synthdetect.train.route_calibration.score_thumbnails", _scores)
    manifest = _manifest(tmp_path, sources=("s1", "s2", "s3", ""))
    result = CliRunner().invoke(app, ["calibrate-route", str(manifest), "--router", str(router)])
    assert result.exit_code == 0, result.output
    assert "note: 2 image(s) have an empty source cell; they are held out together as one source, 'unknown', e.g. " \
           in result.stderr
