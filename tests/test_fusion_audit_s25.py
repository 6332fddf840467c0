"""Fusion audit (s25): what the reasons say beside the evidence list, and the band a card with one threshold gets."""

from __future__ import annotations

import pytest

from synthdetect import fusion
from synthdetect.fusion import fuse
from synthdetect.models.base import Model, ModelScore
from synthdetect.verdict import Evidence


class FixedModel(Model):
    def logits(self, images):  # pragma: no cover - fusion never calls the model
        raise AssertionError


MODEL = FixedModel({"name": "wild-v1", "kind": "test",
                    "decision": {"ai_at_or_above": 0.87, "human_below": 0.2,
                                 "ai_rule": "p_ai at or above the 0.01 FPR threshold",
                                 "human_rule": "p_ai below the threshold that misses 0.05 of validation AI images"}})


def score(p: float, name: str = "wild-v1") -> ModelScore:
    return ModelScore(name, 0.0, p)


XMP_AI = Evidence("metadata", "ai", "strong", "XMP/IPTC DigitalSourceType 'trainedAlgorithmicMedia' (unsigned)")
WATERMARK = Evidence("watermark", "ai", "strong", "Stable Diffusion invisible watermark")
INVOKE = Evidence("genparams", "ai", "moderate", "InvokeAI chunk name over a free text")
CAMERA = Evidence("exif", "human", "weak", "camera EXIF: Canon EOS (weak: EXIF can be copied)")
CAPTURE = Evidence("c2pa", "human", "strong", "C2PA manifest signed by Leica declares a camera capture (verified)")
C2PA_EDITS = Evidence("c2pa", "edited", "info", "C2PA manifest signed by Adobe Inc. records edits and no AI source")
C2PA_PROCEDURAL = Evidence("c2pa", "none", "info", "C2PA manifest signed by Adobe Inc. declares algorithmicMedia "
                                                   "(certificate chain verified to X): computer-made, not generative")
XMP_HISTORY = Evidence("metadata", "edited", "info", "XMP history softwareAgent 'Adobe Photoshop 27.5': edited")
EXIF_ODD = Evidence("exif", "none", "info", "EXIF names Canon EOS but has no capture time")
ELA = Evidence("ela", "none", "info", "error level analysis ...")
UNREADABLE = Evidence("c2pa", "none", "info", "C2PA data present but unreadable (x)", {"probe_failed": True})


@pytest.mark.parametrize("record", [C2PA_EDITS, C2PA_PROCEDURAL, XMP_HISTORY, EXIF_ODD])
def test_a_provenance_record_that_decides_nothing_is_not_called_no_provenance(record):
    """A verified C2PA manifest that records edits, or a Photoshop editing history, is info-level: it moves nothing
    and is not listed among the reasons.  The first reason still said "no provenance found" beside an evidence
    list that held it (measured: `detect cat-yawn-ps.png` with the default router)."""
    for p in (0.05, 0.5, 0.95):
        reason = fuse([record], score(p), MODEL).reasons[0]
        assert reason.startswith("no decisive provenance found; model wild-v1"), reason


def test_forensic_views_and_unreadable_records_still_read_as_no_provenance():
    assert fuse([ELA], score(0.5), MODEL).reasons[0].startswith("no provenance found; model")
    assert fuse([UNREADABLE], score(0.5), MODEL).reasons[0].startswith(
        "no provenance found (but 1 record(s) could not be read: C2PA data present but unreadable (x))")


def test_a_real_editing_record_read_by_the_probes_is_not_called_no_provenance():
    from evidence_fakes import png_with_text, textured_rgb

    from synthdetect.evidence import run_probes
    from synthdetect.images import load_image

    evidence = run_probes(load_image(png_with_text(textured_rgb(64), {"Software": "Adobe Photoshop 25.0"})))
    assert [(e.signal, e.strength) for e in evidence] == [("edited", "info")], evidence
    assert fuse(evidence, score(0.05), MODEL).reasons[0].startswith("no decisive provenance found; model")


@pytest.mark.parametrize("p,contrary", [(0.05, [XMP_AI, WATERMARK]), (0.95, [CAPTURE])])
def test_contrary_strong_evidence_is_named_once_and_in_full(p, contrary):
    """Only the first contrary record was named in the "uncertain because" line, and that one was then listed a
    second time below it."""
    fused = fuse([CAMERA, *contrary, INVOKE], score(p), MODEL)
    assert fused.label == "uncertain"
    because = "uncertain because strong evidence contradicts the model: " + "; ".join(e.detail for e in contrary)
    assert fused.reasons[1] == because
    for e in contrary:
        assert sum(e.detail in r for r in fused.reasons) == 1, fused.reasons
    assert fused.reasons[2:] == [f"{INVOKE.detail} (moderate ai evidence)", f"{CAMERA.detail} (weak human evidence)"]


def test_findings_are_listed_strongest_first():
    """Probes report in name order (c2pa, exif, genparams, metadata, watermark), so a weak camera EXIF came before a
    strong AI declaration, and the table's "why" column read the weakest finding first."""
    fused = fuse([CAMERA, INVOKE, XMP_AI, WATERMARK], score(0.5), MODEL)
    assert fused.label == "uncertain"
    assert fused.reasons[1:] == [f"{XMP_AI.detail} (strong ai evidence)", f"{WATERMARK.detail} (strong ai evidence)",
                                 f"{INVOKE.detail} (moderate ai evidence)", f"{CAMERA.detail} (weak human evidence)"]


@pytest.mark.parametrize("decision,says", [
    ({"ai_at_or_above": 0.8}, "between 0.100 and 0.800, the uncertain band of the card's AI threshold and the default "
                              "human threshold (the card has none)"),
    ({"human_below": 0.3}, "between 0.300 and 0.900, the uncertain band of the card's human threshold and the default "
                           "AI threshold (the card has none)"),
    ({}, "between 0.100 and 0.900, the uncertain band of default thresholds (card has none)"),
])
def test_a_card_with_one_threshold_says_which_half_of_the_band_is_the_default(decision, says):
    """With only an AI threshold the band was "its validated thresholds" though its lower half was the default 0.1;
    with only a human threshold, "default thresholds (card has none)" though the card had one."""
    model = FixedModel({"name": "half", "kind": "test", "decision": decision})
    assert says in fuse([], score(0.5, "half"), model).reasons[0]


def test_the_default_ai_threshold_never_overrides_the_cards_own_human_threshold():
    """A card with only ``human_below`` 0.95: p_ai 0.92 is below the card's validated human threshold, yet the
    default AI threshold 0.9 was checked first and the image called ``ai``."""
    model = FixedModel({"name": "half", "kind": "test", "decision": {"human_below": 0.95}})
    fused = fuse([], score(0.92, "half"), model)
    assert fused.label == "human", fused.reasons
    assert "below the human threshold 0.950 (the model card's threshold)" in fused.reasons[0]
    assert fuse([], score(0.96, "half"), model).reasons[0].endswith(
        "at or above the AI threshold 0.950 (default band, raised to the card's human threshold)")
    low = FixedModel({"name": "low", "kind": "test", "decision": {"ai_at_or_above": 0.05}})
    assert fuse([], score(0.07, "low"), low).label == "ai"
    assert fuse([], score(0.03, "low"), low).reasons[0].endswith(
        "below the human threshold 0.050 (default band, lowered to the card's AI threshold)")
    # the one rule, public, so that explain and compare can read a card's band as fusion does
    assert fusion.thresholds(model) == (0.95, 0.95) and fusion.thresholds(low) == (0.05, 0.05)
    assert fusion.thresholds(MODEL) == (0.87, 0.2)
    assert fusion.thresholds(FixedModel({"name": "bare", "kind": "test"})) == (0.9, 0.1)


_SPELLINGS = ["http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
              "https://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia/",
              "digsrctype:trainedAlgorithmicMedia"]


def _xmp_with_every_spelling() -> str:
    described = "".join('<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
                        f"<Iptc4xmpExt:DigitalSourceType>{v}</Iptc4xmpExt:DigitalSourceType></rdf:Description>"
                        for v in _SPELLINGS)
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f"{described}</rdf:RDF></x:xmpmeta>")


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_one_source_type_in_several_spellings_is_one_reason(p):
    """The metadata probe gives one record per spelling of the same source type (same text); the reasons repeated
    it once per record (4 times at p_ai 0.05, 3 at 0.5)."""
    from evidence_fakes import png_with_text, textured_rgb

    from synthdetect.evidence import run_probes
    from synthdetect.images import load_image

    image = png_with_text(textured_rgb(64), {"XML:com.adobe.xmp": _xmp_with_every_spelling()})
    evidence = run_probes(load_image(image))
    assert len(evidence) == 1, evidence  # the probe gives one record for the three spellings (it had given three)
    evidence = evidence * 3  # and fusion says a repeated record once, whichever probe repeats it
    fused = fuse(evidence, score(p), MODEL)
    assert fused.label == "uncertain"
    assert sum(r.count("DigitalSourceType") for r in fused.reasons) == 1, fused.reasons
