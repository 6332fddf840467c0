"""Fusion rules: decisive provenance decides; otherwise the calibrated score with its band; strong contrary evidence
only makes the answer uncertain; absent, weak, unverified or tampered evidence never moves a label."""

from __future__ import annotations

import pytest

from synthdetect.fusion import fuse
from synthdetect.models.base import Model, ModelScore
from synthdetect.verdict import Evidence


class FixedModel(Model):
    def logits(self, images):  # pragma: no cover - fusion never calls the model
        raise AssertionError


@pytest.fixture
def model():
    return FixedModel({"name": "wild-v1", "kind": "test",
                       "decision": {"ai_at_or_above": 0.87, "human_below": 0.2,
                                    "ai_rule": "p_ai at or above the 0.01 FPR threshold",
                                    "human_rule": "p_ai below the threshold that misses 0.05 of validation AI images"}})


def score(p: float) -> ModelScore:
    return ModelScore("wild-v1", 0.0, p)


C2PA_AI = Evidence("c2pa", "ai", "decisive", "C2PA manifest signed by OpenAI declares trainedAlgorithmicMedia")
PARAMS_AI = Evidence("genparams", "ai", "decisive", "Stable Diffusion WebUI generation parameters")
CAPTURE = Evidence("c2pa", "human", "decisive", "C2PA manifest signed by Leica declares digitalCapture")
XMP_AI = Evidence("metadata", "ai", "strong", "XMP/IPTC DigitalSourceType trainedAlgorithmicMedia")
CAMERA = Evidence("exif", "human", "weak", "camera EXIF: Canon EOS")
TEST_CLAIM = Evidence("c2pa", "unverified", "moderate", "C2PA manifest declares trainedAlgorithmicMedia, ... not proof")
TAMPERED = Evidence("c2pa", "tampered", "strong", "C2PA manifest ... changed after signing")
ELA = Evidence("ela", "none", "info", "error level ...")


def test_no_evidence_model_decides_with_plain_reason(model):
    fused = fuse([], score(0.91), model)
    assert fused.label == "ai" and fused.p_ai == 0.91
    assert fused.reasons == ["no provenance found; model wild-v1 p_ai 0.910 at or above the AI threshold 0.870 "
                             "(p_ai at or above the 0.01 FPR threshold)"]
    assert fuse([], score(0.5), model).label == "uncertain"
    assert "uncertain band" in fuse([], score(0.5), model).reasons[0]
    assert fuse([], score(0.1), model).label == "human"


@pytest.mark.parametrize("p", [0.01, 0.5, 0.99])
def test_decisive_ai_provenance_wins_whatever_the_model_says(model, p):
    fused = fuse([C2PA_AI, ELA], score(p), model)
    assert fused.label == "ai" and fused.p_ai == 1.0
    assert fused.reasons[0] == C2PA_AI.detail
    assert "provenance decides" in fused.reasons[1]


def test_decisive_without_a_model(model):
    fused = fuse([PARAMS_AI], None, None, "no model for this image size yet")
    assert fused.label == "ai" and fused.reasons == [PARAMS_AI.detail]


def test_conflicting_decisive_evidence_is_uncertain(model):
    fused = fuse([C2PA_AI, CAPTURE], score(0.9), model)
    assert fused.label == "uncertain" and fused.p_ai == 0.9
    assert all(r.startswith("conflicting provenance") for r in fused.reasons[:2])


def test_strong_ai_evidence_turns_a_human_score_into_uncertain_but_never_into_ai(model):
    assert fuse([XMP_AI], score(0.05), model).label == "uncertain"
    assert "strong evidence contradicts the model" in fuse([XMP_AI], score(0.05), model).reasons[1]
    assert fuse([XMP_AI], score(0.5), model).label == "uncertain"
    assert fuse([XMP_AI], score(0.95), model).label == "ai"


@pytest.mark.parametrize("evidence", [[CAMERA], [TEST_CLAIM], [TAMPERED], [ELA], [CAMERA, TEST_CLAIM, TAMPERED]])
@pytest.mark.parametrize("p,label", [(0.05, "human"), (0.5, "uncertain"), (0.95, "ai")])
def test_weak_unverified_tampered_or_info_never_move_the_label(model, evidence, p, label):
    fused = fuse(evidence, score(p), model)
    assert fused.label == label and fused.p_ai == p
    assert fused.reasons[0].startswith("no decisive provenance found" if evidence != [ELA] else "no provenance found")


def test_reasons_list_the_findings_in_plain_words(model):
    fused = fuse([TEST_CLAIM, CAMERA, ELA], score(0.5), model)
    assert TEST_CLAIM.detail in fused.reasons
    assert any(r.startswith(CAMERA.detail) and "weak human evidence" in r for r in fused.reasons)
    assert not any("error level" in r for r in fused.reasons)


def test_no_model_is_uncertain_and_says_why():
    fused = fuse([CAMERA], None, None, "no model for this image size yet")
    assert fused.label == "uncertain" and fused.p_ai is None
    assert fused.reasons[0] == "no model for this image size yet"


def test_card_without_thresholds_uses_the_fallback_band():
    bare = FixedModel({"name": "bare", "kind": "test"})
    assert "default thresholds" in fuse([], score(0.5), bare).reasons[0]
    assert fuse([], score(0.95), bare).label == "ai"


@pytest.mark.parametrize("p,stance", [(0.95, "agrees"), (0.5, "alone it would say uncertain"), (0.05, "disagrees")])
def test_the_model_beside_decisive_provenance_is_read_with_its_own_thresholds(model, p, stance):
    """'agrees' means the model's own band says ai, not that p_ai passed 0.5."""
    assert fuse([C2PA_AI], score(p), model).reasons[1] == f"model wild-v1 p_ai {p:.3f} ({stance}; provenance decides)"


def test_a_record_that_could_not_be_read_is_not_reported_as_no_provenance(model):
    failed = Evidence("genparams", "none", "info", "ComfyUI graph present but unreadable (TypeError: ...)",
                      {"probe_failed": True})
    reason = fuse([failed], score(0.5), model).reasons[0]
    assert reason.startswith("no provenance found (but 1 record(s) could not be read: ComfyUI graph present")


@pytest.mark.parametrize("p", [float("nan"), 1.5, -0.1])
def test_a_score_that_is_not_a_probability_is_no_score(model, p):
    """A NaN compares false with both thresholds, so it was labelled "between 0.200 and 0.870" with p_ai nan."""
    fused = fuse([CAMERA], score(p), model)
    assert fused.label == "uncertain" and fused.p_ai is None
    assert fused.reasons[0] == f"model wild-v1 gave no usable score (p_ai {p}), so no model judged this image"
    beside_provenance = fuse([C2PA_AI], score(p), model)
    assert beside_provenance.label == "ai" and beside_provenance.reasons[1].startswith("model wild-v1 gave no usable")


VERIFIED_CAPTURE = Evidence("c2pa", "human", "strong",
                            "C2PA manifest signed by Leica declares digitalCapture (certificate chain verified to X)")


@pytest.mark.parametrize("p", [0.05, 0.95])
def test_decisive_ai_against_a_verified_camera_capture_is_a_conflict(model, p):
    """Generator parameters in a file whose camera-capture manifest verifies: the two contradict each other, and a
    false 'ai' hurts a photographer, so the answer is 'uncertain' (it was 'ai', p_ai 1.0, the capture a footnote)."""
    fused = fuse([PARAMS_AI, VERIFIED_CAPTURE, CAMERA], score(p), model)
    assert fused.label == "uncertain" and fused.p_ai == p
    assert fused.reasons[:3] == [f"conflicting provenance: {PARAMS_AI.detail}",
                                 f"conflicting provenance: {VERIFIED_CAPTURE.detail}", f"model wild-v1 p_ai {p:.3f}"]
    assert any(r.startswith(CAMERA.detail) for r in fused.reasons[3:])
    assert fuse([PARAMS_AI, CAMERA], score(p), model).label == "ai"  # weak camera EXIF is no counterweight


@pytest.mark.parametrize("p,expected", [
    (0.86999, "p_ai 0.86999 between 0.20000 and 0.87000, the uncertain band"),
    (0.19996, "p_ai 0.19996 below the human threshold 0.20000 ("),
    (0.2, "p_ai 0.200 between 0.200 and 0.870, the uncertain band"),
    (0.87, "p_ai 0.870 at or above the AI threshold 0.870 ("),
])
def test_the_reason_never_prints_a_p_ai_equal_to_a_threshold_it_is_below(model, p, expected):
    """At three decimals 0.19996 read as "p_ai 0.200 below the human threshold 0.200"."""
    assert expected in fuse([], score(p), model).reasons[0]


def test_card_thresholds_without_their_rule_text_are_not_called_the_default_band():
    """Only the fallback band is the default one; a card's own threshold was labelled "(default band)"."""
    terse = FixedModel({"name": "terse", "kind": "test", "decision": {"ai_at_or_above": 0.8}})
    assert fuse([], score(0.95), terse).reasons[0].endswith("at or above the AI threshold 0.800 "
                                                            "(the model card's threshold)")
    assert fuse([], score(0.05), terse).reasons[0].endswith("below the human threshold 0.100 (default band)")
