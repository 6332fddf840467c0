"""How evidence and calibrated model scores become one labelled verdict, with reasons.

Order of authority:
1. decisive provenance (a C2PA manifest from a known generator whose
   certificate chain verifies, or the generator's own parameters) sets the
   label whatever the model says; decisive evidence both ways is a conflict
   and yields ``uncertain``;
2. otherwise the calibrated model score decides against the operating
   thresholds on the model's card, with ``uncertain`` in between;
3. strong evidence that contradicts the model's label (an unsigned AI
   declaration or a watermark against a ``human`` score; a verified camera
   capture against an ``ai`` score) turns the label into ``uncertain`` --
   it never sets ``ai`` or ``human`` by itself;
4. with no applicable model the answer is ``uncertain`` and says why.
Absent evidence contributes nothing; weak evidence, unverified claims and
tampered manifests are reported in the reasons but never move a label.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthdetect.models.base import Model, ModelScore
from synthdetect.verdict import Evidence

#: Used only for models whose card has no validated decision thresholds.
FALLBACK_AI_AT = 0.9
FALLBACK_HUMAN_BELOW = 0.1

_REPORTED = ("weak", "moderate", "strong", "decisive")


@dataclass
class Fused:
    label: str
    p_ai: float | None
    reasons: list[str]


def _decisive(evidence: list[Evidence], signal: str) -> list[Evidence]:
    return [e for e in evidence if e.strength == "decisive" and e.signal == signal]


def _strong(evidence: list[Evidence], signal: str) -> list[Evidence]:
    return [e for e in evidence if e.strength == "strong" and e.signal == signal]


def _context(evidence: list[Evidence], skip: list[Evidence] = ()) -> list[str]:
    """Plain-words lines for the findings worth a reader's attention (not info-level features)."""
    return [_line(e) for e in evidence if e.strength in _REPORTED and e.signal != "none" and e not in skip]


def _line(e: Evidence) -> str:
    if e.signal in ("unverified", "tampered"):
        return e.detail
    return f"{e.detail} ({e.strength} {e.signal} evidence)"


def fuse(
    evidence: list[Evidence],
    score: ModelScore | None,
    model: Model | None,
    abstain_reason: str | None = None,
) -> Fused:
    decisive_ai, decisive_human = _decisive(evidence, "ai"), _decisive(evidence, "human")
    model_p = None if score is None else score.p_ai
    model_note = f"model {score.model} p_ai {score.p_ai:.3f}" if score is not None else None
    if decisive_ai and decisive_human:
        reasons = [f"conflicting provenance: {e.detail}" for e in decisive_ai + decisive_human]
        if model_note:
            reasons.append(model_note)
        return Fused("uncertain", model_p, reasons)
    if decisive_ai or decisive_human:
        label = "ai" if decisive_ai else "human"
        decisive = decisive_ai or decisive_human
        reasons = [e.detail for e in decisive]
        if model_note:
            alone = _model_label(score.p_ai, model) if model is not None else None
            stance = ("agrees" if alone == label else f"alone it would say {alone}" if alone == "uncertain"
                      else "disagrees")
            reasons.append(f"{model_note} ({stance}; provenance decides)")
        reasons.extend(_context(evidence, skip=decisive))
        return Fused(label, 1.0 if label == "ai" else 0.0, reasons)

    found = _context(evidence)
    prefix = "no decisive provenance found" if found else "no provenance found"
    failed = [e for e in evidence if e.data.get("probe_failed")]
    if failed:  # "none found" must not read as "none there" when a record could not be read
        prefix += f" (but {len(failed)} record(s) could not be read: {failed[0].detail})"
    if score is None or model is None:
        reason = abstain_reason or "no model could judge this image"
        return Fused("uncertain", None, [reason, *found])

    ai_at, human_below = _thresholds(model)
    source = ((model.card.get("decision") or {}).get("band", "its validated thresholds")
              if model.ai_at_or_above is not None else "default thresholds (card has none)")
    p = score.p_ai
    if p >= ai_at:
        label, rule = "ai", f"at or above the AI threshold {ai_at:.3f} ({_rule(model, 'ai_rule')})"
    elif p < human_below:
        label, rule = "human", f"below the human threshold {human_below:.3f} ({_rule(model, 'human_rule')})"
    else:
        label, rule = "uncertain", f"between {human_below:.3f} and {ai_at:.3f}, the uncertain band of {source}"
    reasons = [f"{prefix}; model {score.model} p_ai {p:.3f} {rule}"]
    contrary = _strong(evidence, "human") if label == "ai" else _strong(evidence, "ai") if label == "human" else []
    if contrary:
        label = "uncertain"
        reasons.append(f"uncertain because strong evidence contradicts the model: {contrary[0].detail}")
    return Fused(label, p, reasons + found)


def _thresholds(model: Model) -> tuple[float, float]:
    """(AI at or above, human below): the card's validated band, else the fallback."""
    return (model.ai_at_or_above if model.ai_at_or_above is not None else FALLBACK_AI_AT,
            model.human_below if model.human_below is not None else FALLBACK_HUMAN_BELOW)


def _model_label(p: float, model: Model) -> str:
    ai_at, human_below = _thresholds(model)
    return "ai" if p >= ai_at else "human" if p < human_below else "uncertain"


def _rule(model: Model, key: str) -> str:
    return (model.card.get("decision") or {}).get(key, "default band")
