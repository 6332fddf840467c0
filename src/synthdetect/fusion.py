"""How evidence and calibrated model scores become one labelled verdict, with reasons.

Order of authority:
1. decisive provenance (a valid signed manifest, a generator's own parameters)
   sets the label whatever the model says;
2. otherwise the calibrated model score decides against the operating
   thresholds on the model's card, with ``uncertain`` in between;
3. with no applicable model the answer is ``uncertain`` and says why.
Evidence that is absent contributes nothing; weak evidence is reported but
never flips a label on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthdetect.models.base import Model, ModelScore
from synthdetect.verdict import Evidence

#: Used only for models whose card has no validated decision thresholds.
FALLBACK_AI_AT = 0.9
FALLBACK_HUMAN_BELOW = 0.1


@dataclass
class Fused:
    label: str
    p_ai: float | None
    reasons: list[str]


def _decisive(evidence: list[Evidence], signal: str) -> list[Evidence]:
    return [e for e in evidence if e.strength == "decisive" and e.signal == signal]


def fuse(
    evidence: list[Evidence],
    score: ModelScore | None,
    model: Model | None,
    abstain_reason: str | None = None,
) -> Fused:
    decisive_ai, decisive_human = _decisive(evidence, "ai"), _decisive(evidence, "human")
    model_p = None if score is None else score.p_ai
    if decisive_ai and decisive_human:
        reasons = [f"conflicting provenance: {e.detail}" for e in decisive_ai + decisive_human]
        return Fused("uncertain", model_p, reasons)
    if decisive_ai or decisive_human:
        label = "ai" if decisive_ai else "human"
        reasons = [e.detail for e in (decisive_ai or decisive_human)]
        if score is not None:
            reasons.append(f"model {score.model} p_ai {score.p_ai:.2f} (overridden by provenance)")
        return Fused(label, 1.0 if label == "ai" else 0.0, reasons)

    context = [e.detail for e in evidence if e.strength in ("moderate", "strong") and e.signal != "none"]
    prefix = "no decisive provenance found"
    if score is None or model is None:
        reason = abstain_reason or "no model could judge this image"
        return Fused("uncertain", None, [reason, *context])

    ai_at = model.ai_at_or_above if model.ai_at_or_above is not None else FALLBACK_AI_AT
    human_below = model.human_below if model.human_below is not None else FALLBACK_HUMAN_BELOW
    source = "its validated thresholds" if model.ai_at_or_above is not None else "default thresholds (card has none)"
    p = score.p_ai
    if p >= ai_at:
        label, rule = "ai", f"at or above the AI threshold {ai_at:.3f} ({_rule(model, 'ai_rule')})"
    elif p < human_below:
        label, rule = "human", f"below the human threshold {human_below:.3f} ({_rule(model, 'human_rule')})"
    else:
        label, rule = "uncertain", f"between {human_below:.3f} and {ai_at:.3f}, the uncertain band of {source}"
    reasons = [f"{prefix}; model {score.model} p_ai {p:.3f} {rule}", *context]
    return Fused(label, p, reasons)


def _rule(model: Model, key: str) -> str:
    return (model.card.get("decision") or {}).get(key, "default band")
