"""The shipped full-size models ``wild-v1``, ``wild-v2`` and ``wild-v3``, and the ``default`` routes to wild-v3.

Needs the CLIP encoder installed from requirements-weights.txt (skips with
the reason otherwise).  The re-encoding test also needs ../shared wild-dev.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthdetect.evaluate.perturb import reencodings
from synthdetect.models import BUILTIN_DIR, clip_onnx
from wild_dev_picks import first_real_jpegs

MISSING = clip_onnx.encoder_available()
needs_encoder = pytest.mark.skipif(MISSING is not None, reason=f"CLIP encoder not installed: {MISSING}")
CARD = BUILTIN_DIR / "wild-v1" / "model.json"
CARD_V2 = BUILTIN_DIR / "wild-v2" / "model.json"
CARD_V3 = BUILTIN_DIR / "wild-v3" / "model.json"


@pytest.mark.parametrize("card_path", [CARD, CARD_V2, CARD_V3], ids=["wild-v1", "wild-v2", "wild-v3"])
def test_wild_card_states_policy_calibration_thresholds_and_held_out_metrics(card_path):
    import json

    card = json.loads(card_path.read_text())
    assert card["kind"] in ("clip-head", "handcrafted", "wild-stack")
    assert card["crop_policy"]["size"] == 224 and "explained" in card["crop_policy"]
    assert card["calibration"]["method"] in ("platt", "temperature")
    for key in ("fpr_0.01", "fpr_0.05"):
        assert 0.0 < card["thresholds"][key]["threshold"] < 1.0
    decision = card["decision"]
    assert decision["human_below"] <= decision["ai_at_or_above"]
    held = card["metrics"]["held_out_pooled"]
    assert {"roc_auc", "tpr_at_fpr_0.05", "ece"} <= set(held)
    assert "leave-one-source-out" in card["metrics"]["protocol"]
    assert card["failure_cases"]["most_confident_held_out_mistakes"]
    assert (card_path.parent / "MODEL_CARD.md").is_file()


def test_wild_v2_judges_a_thumbnail_view_and_beats_wild_v1_held_out():
    import json

    v1, v2 = json.loads(CARD.read_text()), json.loads(CARD_V2.read_text())
    policy = v2["crop_policy"]
    assert policy["global_short_side"] == 48 and policy["global_jpeg_quality"] == 90
    assert "thumbnail" in policy["explained"]
    held_v1, held_v2 = v1["metrics"]["held_out_pooled"], v2["metrics"]["held_out_pooled"]
    assert held_v2["roc_auc"] > held_v1["roc_auc"] and held_v2["tpr_at_fpr_0.05"] > held_v1["tpr_at_fpr_0.05"]


def test_wild_v3_is_wild_v2_on_float32_clip_features():
    """Same view and procedure; only the extractor differs (the int8 path's rounding made p_ai chaotic)."""
    import json

    v2, v3 = json.loads(CARD_V2.read_text()), json.loads(CARD_V3.read_text())
    view = ("size", "native_crops", "global_view", "global_short_side", "global_jpeg_quality")
    assert {k: v3["crop_policy"][k] for k in view} == {k: v2["crop_policy"][k] for k in view}
    assert {m["extractor"] for m in v3["members"]} == {"clip-vit-b16-f32"}
    assert "clip-vit-b16-int8" not in v3["extractors"]
    assert v3["metrics"]["held_out_pooled"]["roc_auc"] >= 0.9


def test_default_routes_small_images_to_cifake_and_the_rest_to_wild_v3():
    import json

    routes = json.loads((BUILTIN_DIR / "default" / "model.json").read_text())["routes"]
    assert routes[0]["model"] == "cifake-cnn" and routes[0]["max_short_side"] == 64
    assert routes[-1]["model"] == "wild-v3"


@needs_encoder
def test_detect_on_a_full_size_image_uses_wild_v3():
    from synthdetect import Detector

    det = Detector.load("default")
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    verdict = det(img)
    assert verdict.models and verdict.models[0]["model"] == "wild-v3"
    assert 0.0 <= verdict.p_ai <= 1.0
    assert verdict.label in ("ai", "human", "uncertain")


@pytest.fixture(scope="module")
def real_photos_and_their_copies(wild_dev):
    """``[(source, path, {copy name: bytes})]``, encoded once for the three models (a 16 MP PNG takes seconds)."""
    # a fixed rule, not a choice by score: the first real JPEG photo of each of two sources, short side >= 600 px
    picked = first_real_jpegs(wild_dev, ("camera-samples", "web-mixed-a"), min_short_side=600)
    assert len(picked) == 2
    out = []
    for source, path in sorted(picked.items()):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        out.append((source, path, reencodings(rgb)))
    return out


@needs_encoder
@pytest.mark.slow
@pytest.mark.parametrize("model", ["wild-v1", "wild-v2", "wild-v3"])
def test_real_photos_are_not_called_ai_after_reencoding_or_resizing(real_photos_and_their_copies, model):
    """Format, lost metadata or a smaller size must not push a real photo over the 1% FPR threshold."""
    from synthdetect import Detector

    det = Detector.load(model, use_evidence=False)
    threshold = det.model.ai_at_or_above
    report = []
    for source, path, copies in real_photos_and_their_copies:
        original = det(str(path))
        for name, data in copies.items():
            v = det(data)
            report.append((source, name, round(original.p_ai, 3), round(v.p_ai, 3), v.label))
            if original.label != "ai":
                assert v.p_ai < threshold, f"{path.name} as {name}: p_ai {v.p_ai:.3f} >= 1% FPR threshold {threshold:.3f}"
                assert v.label != "ai"
    print(report)


def test_without_the_encoder_default_still_loads_and_says_why(monkeypatch):
    """A missing weights install must give 'uncertain' with the set-up command, never a crash or a guess."""
    from synthdetect import Detector
    from synthdetect.models import view_features

    monkeypatch.setattr(view_features, "_INSTANCES", {})
    monkeypatch.setattr(clip_onnx.importlib.util, "find_spec", lambda name: None)
    det = Detector.load("default", use_evidence=False)
    textured = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    verdict = det(textured)  # not a flat fill: that would be refused before the encoder is looked for
    assert verdict.label == "uncertain"
    assert verdict.p_ai is None
    assert any("requirements-weights.txt" in r for r in verdict.reasons)


def test_peers_benchmark_is_embedded_without_touching_the_weights(tmp_path):
    import shutil

    from synthdetect.models.package import load_package
    from synthdetect.train.wild import embed_benchmark

    copy = tmp_path / "wild-v1"
    shutil.copytree(CARD.parent, copy)
    before = load_package(copy).card["files"]
    bench = {"images": 2, "per_source": 1, "threads": 2, "load_average_at_end": [1.0, 1.0, 1.0],
             "models": {"peer-x": {"pooled": {"roc_auc": 0.5, "accuracy": 0.5, "tpr_at_fpr_0.05": 0.0, "ece": 0.2},
                                   "images_per_s_all": 1.5}}}
    package = embed_benchmark(copy, bench)
    assert load_package(copy).card["files"] == before  # hashes re-checked on load
    assert package.card["metrics"]["peers_benchmark"]["models"]["peer-x"]["pooled"]["roc_auc"] == 0.5
    assert "| peer-x | 0.500 |" in (copy / "MODEL_CARD.md").read_text()
