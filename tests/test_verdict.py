"""Verdict and Evidence contracts (schema synthdetect.verdict/1)."""

from __future__ import annotations

import json

import pytest

from synthdetect.verdict import SCHEMA, Evidence, Verdict


def test_scores_sorted_and_complementary():
    v = Verdict(file="x.jpg", label="ai", p_ai=0.97)
    assert v.scores == [{"label": "ai", "score": 0.97}, {"label": "human", "score": pytest.approx(0.03)}]
    v = Verdict(file="x.jpg", label="human", p_ai=0.2)
    assert v.pipeline()[0] == {"label": "human", "score": 0.8}


def test_failed_verdict_serialises_with_error():
    v = Verdict.failed("bad.jpg", "bad.jpg: truncated image data", "truncated")
    d = json.loads(v.to_json())
    assert d["schema"] == SCHEMA and d["error"] == "bad.jpg: truncated image data"
    assert d["label"] is None and d["scores"] == [] and d["error_kind"] == "truncated"
    assert not v.ok


def test_uncertain_without_score_has_no_scores():
    v = Verdict(file="big.jpg", label="uncertain", p_ai=None, reasons=["no model for this image size yet"])
    assert v.scores == [] and v.to_dict()["p_ai"] is None


def test_evidence_rejects_unknown_strength_and_signal():
    with pytest.raises(ValueError, match="strength"):
        Evidence(kind="c2pa", signal="ai", strength="certain", detail="x")
    with pytest.raises(ValueError, match="signal"):
        Evidence(kind="c2pa", signal="maybe", strength="weak", detail="x")
    e = Evidence(kind="exif", signal="human", strength="weak", detail="camera EXIF", data={"make": "Canon"})
    assert e.to_dict() == {"kind": "exif", "signal": "human", "strength": "weak", "detail": "camera EXIF",
                           "data": {"make": "Canon"}}


def test_to_json_is_strict_json_whatever_a_model_or_probe_gave():
    """NaN and infinities are null, NumPy numbers plain ones: ``json.dumps`` wrote the invalid ``NaN``/``Infinity``
    (and a web client's JSON.parse fails on them) or refused a NumPy float32 outright."""
    import numpy as np

    v = Verdict(file="x.jpg", label="uncertain", p_ai=float("nan"),
                models=[{"model": "m", "raw_logit": float("inf"), "p_ai": 1.0}],
                evidence=[Evidence("ela", "none", "info", "ela", {"mean": np.float32(0.25), "peaks": np.arange(2),
                                                                  "ratio": float("-inf")})],
                timing_ms={"model": float("nan")})
    d = json.loads(v.to_json())
    assert d["p_ai"] is None and d["scores"] == [] and d["models"][0]["raw_logit"] is None
    assert d["evidence"][0]["data"] == {"mean": 0.25, "peaks": [0, 1], "ratio": None}
    assert d["timing_ms"] == {"model": None}
    assert json.loads(json.dumps(v.to_dict(), allow_nan=False)) == d
