"""The Detector façade: inputs, routing, batches with bad files, the Verdict schema."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from badinputs import EXPECTED, make_corpus, natural_image
from synthdetect import Detector, Verdict
from synthdetect.verdict import SCHEMA

VERDICT_KEYS = {"schema", "file", "sha256", "label", "p_ai", "scores", "reasons", "evidence", "models", "image",
                "timing_ms", "error", "error_kind"}


@pytest.fixture(scope="module")
def detector():
    return Detector.load("default")


def check_schema(d: dict) -> None:
    assert set(d) == VERDICT_KEYS
    assert d["schema"] == SCHEMA
    json.dumps(d)  # serialisable
    if d["error"]:
        assert d["label"] is None and d["p_ai"] is None and d["scores"] == []
        assert "\n" not in d["error"]
        return
    assert d["label"] in ("ai", "human", "uncertain")
    assert d["reasons"], "every verdict says why"
    if d["p_ai"] is not None:
        assert 0.0 <= d["p_ai"] <= 1.0
        scores = d["scores"]
        assert [s["label"] for s in scores] in (["ai", "human"], ["human", "ai"])
        assert scores[0]["score"] >= scores[1]["score"]
        assert abs(sum(s["score"] for s in scores) - 1.0) < 1e-5
        assert d["models"] and d["models"][0]["p_ai"] == pytest.approx(d["p_ai"], abs=1e-6)


def test_single_path_returns_a_verdict(detector, tmp_path):
    path = tmp_path / "small.png"
    natural_image(32, 32).save(path)
    verdict = detector(str(path))
    assert isinstance(verdict, Verdict)
    check_schema(verdict.to_dict())
    assert verdict.file == str(path)
    assert verdict.models[0]["model"] == "cifake-cnn"
    assert len(verdict.sha256) == 64


def test_list_of_paths_bytes_and_pil(detector, tmp_path):
    image = natural_image(32, 32, seed=5)
    path = tmp_path / "a.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    verdicts = detector([str(path), buffer.getvalue(), image])
    assert isinstance(verdicts, list) and len(verdicts) == 3
    p = [v.p_ai for v in verdicts]
    # The same pixels, so the same score up to float32 rounding: on an AVX2-only host (2026-12-04) the three
    # rows of one batch differed by 1e-8; a different decode (alpha, colour conversion) moves it by far more.
    assert p[0] == pytest.approx(p[1], abs=1e-6) and p[1] == pytest.approx(p[2], abs=1e-6)
    assert verdicts[2].sha256 is None  # a PIL image has no original bytes


def test_pipeline_output(detector):
    out = detector.pipeline(natural_image(32, 32))
    assert [set(d) for d in out] == [{"label", "score"}] * 2
    assert out[0]["score"] >= out[1]["score"]
    many = detector.pipeline([natural_image(32, 32), natural_image(32, 32, seed=2)])
    assert len(many) == 2 and all(len(x) == 2 for x in many)


def test_large_images_are_uncertain_until_a_full_size_model(detector, tmp_path):
    from synthdetect.models import find_package

    routes = find_package("default").card["routes"]
    large_route = next(r for r in routes if r.get("max_short_side") is None)
    verdict = detector(natural_image(640, 480))
    check_schema(verdict.to_dict())
    if large_route.get("model") is None:
        assert verdict.label == "uncertain" and verdict.p_ai is None
        assert "no model for this image size yet" in verdict.reasons[0]
    else:
        assert verdict.models and verdict.models[0]["model"] == large_route["model"]


def test_batch_with_bad_inputs_judges_every_good_file(detector, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    names = sorted(corpus)
    verdicts = detector.detect([str(corpus[n]) for n in names], names=names)
    assert [v.file for v in verdicts] == names
    for name, verdict in zip(names, verdicts):
        check_schema(verdict.to_dict())
        expected = EXPECTED[name]
        if expected is None:
            assert verdict.error is None, f"{name}: {verdict.error}"
        else:
            assert verdict.error_kind == expected, f"{name}: {verdict.error}"
    by_name = dict(zip(names, verdicts))
    assert by_name["one-pixel.png"].label == "uncertain"
    assert "too small" in by_name["one-pixel.png"].reasons[0]
    assert by_name["strip-20000x1.png"].label == "uncertain"
    assert by_name["small.jpg"].models[0]["model"] == "cifake-cnn"


def test_iter_detect_streams_in_order(detector):
    images = [natural_image(32, 32, seed=s) for s in range(7)]
    streamed = list(detector.iter_detect(images, batch_size=3))
    direct = detector.detect(images)
    assert [v.p_ai for v in streamed] == pytest.approx([v.p_ai for v in direct])


#: The issue's target for the shipped cifake-cnn; 2.0.0 measures 0.9772 on its 3,952 held-out images, which leave
#: out copies of earlier files (README, "cifake-cnn: how it was trained").
CIFAKE_FLOOR = 0.975


def test_cifake_cnn_card_records_held_out_metrics():
    from synthdetect.models import find_package

    card = find_package("cifake-cnn").card
    test = card["metrics"]["test"]["at_0.5"]
    assert test["n"] >= 3900
    assert test["accuracy"] >= CIFAKE_FLOOR, test
    for key in ("precision", "recall", "f1", "roc_auc", "confusion_matrix", "ece"):
        assert key in test
    assert card["calibration"]["method"] == "temperature"
    assert card["decision"]["human_below"] <= card["decision"]["ai_at_or_above"]
    # trained with copies excluded: the card counts the held-out files it did not score, and lists them
    unscored = card["training"]["split"]["copies_not_scored"]
    assert unscored["counts"] == {"validation": 48, "test": 57} and len(unscored["files"]) == 100


@pytest.mark.slow
def test_detector_reproduces_card_on_held_out_cifake(cifake_zip):
    """Scoring the card's held-out test split through the Detector gives the card's accuracy."""
    from synthdetect.models import find_package
    from synthdetect.train.datasets import open_dataset, read_record_bytes
    from synthdetect.train.splits import rebuild_card_split

    card = find_package("cifake-cnn").card
    split = card["training"]["split"]
    test_records = rebuild_card_split(open_dataset(cifake_zip), split, copies="exclude").test
    assert len(test_records) == split["test"]["n"]
    det = Detector.load("cifake-cnn", use_evidence=False)
    verdicts = det.detect([read_record_bytes(r) for r in test_records])
    p = np.array([v.p_ai for v in verdicts])
    y = np.array([r.label for r in test_records])
    accuracy = float(np.mean((p >= 0.5) == (y == 1)))
    assert accuracy == pytest.approx(card["metrics"]["test"]["at_0.5"]["accuracy"], abs=1e-9)
    assert accuracy >= CIFAKE_FLOOR


def test_aspect_ratio_reason_shows_the_ratio_it_refused():
    """80x36 is 2.2:1; a rounded "2:1 is outside (max 2:1)" would contradict itself."""
    verdict = Detector.load("cifake-cnn")(Image.new("RGB", (80, 36), (90, 120, 150)))
    assert verdict.label == "uncertain"
    assert verdict.reasons[0].startswith("aspect ratio 2.2:1 is outside what cifake-cnn was trained on (max 2:1)")
    # 65x32 is 2.03:1: one decimal would print "2.0:1" beside "max 2:1", so it takes a second one
    near = Detector.load("cifake-cnn")(Image.new("RGB", (65, 32), (90, 120, 150)))
    assert near.reasons[0].startswith("aspect ratio 2.03:1 is outside")


def test_two_colour_images_are_uncertain_not_scored(tmp_path):
    """1-bit scans and line art are outside what any shipped model saw: an honest 'uncertain', not a score.

    A card whose model did train on them opts in with ``input.two_colour_images``.
    """
    from conftest import build_tiny_package

    rng = np.random.default_rng(0)
    line_art = Image.fromarray(rng.random((48, 48)) > 0.5)  # mode "1"
    verdict = Detector.load("default")(line_art)
    assert verdict.label == "uncertain" and verdict.p_ai is None
    assert verdict.reasons[0].startswith("only 2 colours in the image (1-bit, line art or flat): cifake-cnn was not")
    flat = Detector.load("default")(Image.new("RGB", (300, 200), (27, 175, 77)))
    assert flat.label == "uncertain" and flat.reasons[0].startswith("only 1 colour in the image")
    build_tiny_package(tmp_path / "tiny")
    card_path = tmp_path / "tiny" / "model.json"
    card = json.loads(card_path.read_text())
    card["input"]["two_colour_images"] = True
    card_path.write_text(json.dumps(card))
    assert Detector.load(str(card_path.parent))(line_art).p_ai is not None


def test_a_model_that_returns_nan_gives_an_honest_uncertain_in_strict_json():
    """A NaN logit (an overflow in a model or adapter) was labelled "between 0.100 and 0.900" with p_ai NaN, and
    the verdict's JSON held ``NaN``, which a browser's JSON.parse and the REST response refuse."""
    from synthdetect.models.base import Model

    class NanModel(Model):
        def logits(self, images):
            return np.full(len(images), np.nan)

    verdict = Detector(NanModel({"name": "nan-model", "kind": "test"}), use_evidence=False)(natural_image(32, 32))
    assert verdict.label == "uncertain" and verdict.p_ai is None and verdict.scores == []
    assert verdict.reasons[0].startswith("model nan-model gave no usable score (p_ai nan)")
    d = json.loads(verdict.to_json())
    check_schema(d)
    assert d["models"] == [{"model": "nan-model", "raw_logit": None, "p_ai": None}]
