"""How evidence and calibrated model scores become one labelled verdict, with reasons.

Order of authority:
1. decisive provenance (a C2PA manifest from a known generator whose
   certificate chain verifies, or the generator's own parameters) sets the
   label whatever the model says; decisive evidence both ways, or decisive
   evidence against strong evidence the other way (generator parameters in
   a file whose camera-capture manifest verifies), is a conflict and yields
   ``uncertain``;
2. otherwise the calibrated model score decides against the operating
   thresholds on the model's card, with ``uncertain`` in between;
3. strong evidence that contradicts the model's label (an unsigned AI
   declaration or a watermark against a ``human`` score; a verified camera
   capture against an ``ai`` score) turns the label into ``uncertain`` --
   it never sets ``ai`` or ``human`` by itself;
4. with no applicable model, or a model score that is not a probability
   (NaN, outside 0..1), the answer is ``uncertain`` and says why.
Absent evidence contributes nothing; weak evidence, unverified claims and
tampered manifests are reported in the reasons but never move a label.
Reasons: the deciding one first, then any contrary evidence (each record
named once), then the other findings, strongest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

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

    def __post_init__(self) -> None:
        # one line per finding: a packet may hold the same source type as several URI spellings (http, https,
        # QCode), each its own record with the same text, and a reason had repeated it once per spelling
        self.reasons = list(dict.fromkeys(self.reasons))


def _decisive(evidence: list[Evidence], signal: str) -> list[Evidence]:
    return [e for e in evidence if e.strength == "decisive" and e.signal == signal]


def _strong(evidence: list[Evidence], signal: str) -> list[Evidence]:
    return [e for e in evidence if e.strength == "strong" and e.signal == signal]


def _context(evidence: list[Evidence], skip: list[Evidence] = ()) -> list[str]:
    """Plain-words lines for the findings worth a reader's attention (not info-level features), strongest first:
    the probes report in name order, so a weak camera EXIF had come before a strong AI declaration."""
    shown = [e for e in evidence if e.strength in _REPORTED and e.signal != "none" and e not in skip]
    return [_line(e) for e in sorted(shown, key=lambda e: -_REPORTED.index(e.strength))]


def _provenance_records(evidence: list[Evidence]) -> list[Evidence]:
    """Records a provenance probe read from the file, whatever their strength (a verified C2PA manifest that records
    edits, an XMP editing history), but not the forensic views (ELA, spectrum) nor records that could not be read."""
    forensic = set(_all_probes()) - set(_default_probes())
    return [e for e in evidence if e.kind not in forensic and not e.data.get("probe_failed")]


def _line(e: Evidence) -> str:
    if e.signal in ("unverified", "tampered"):
        return e.detail
    return f"{e.detail} ({e.strength} {e.signal} evidence)"


def fuse(
    evidence: list[Evidence],
    score: ModelScore | None,
    model: Model | None,
    abstain_reason: str | None = None,
    *,
    probes_run: Sequence[str] | None = None,
    file_bytes: bool = True,
) -> Fused:
    """``probes_run``: the evidence probes that looked at the image (None: the default set; ``[]``: evidence off);
    ``file_bytes``: False for an in-memory (PIL) image, whose C2PA and XMP records were never given to the probes.
    Either way a reason never says "no provenance found" about provenance nobody could look for."""
    broken = None
    if score is not None and not _is_probability(score.p_ai):  # a NaN compares false to both thresholds
        broken = f"model {score.model} gave no usable score (p_ai {score.p_ai}), so no model judged this image"
        score = None
    decisive_ai, decisive_human = _decisive(evidence, "ai"), _decisive(evidence, "human")
    model_p = None if score is None else score.p_ai
    model_note = f"model {score.model} p_ai {score.p_ai:.3f}" if score is not None else broken
    decisive = decisive_ai or decisive_human
    against = _strong(evidence, "human" if decisive_ai else "ai") if decisive else []
    if (decisive_ai and decisive_human) or against:
        conflicting = decisive_ai + decisive_human + against
        reasons = [f"conflicting provenance: {e.detail}" for e in conflicting]
        if model_note:
            reasons.append(model_note)
        reasons.extend(_context(evidence, skip=conflicting))
        return Fused("uncertain", model_p, reasons)
    if decisive:
        label = "ai" if decisive_ai else "human"
        reasons = [e.detail for e in decisive]
        if score is not None:
            alone = _model_label(score.p_ai, model) if model is not None else None
            stance = ("agrees" if alone == label else f"alone it would say {alone}" if alone == "uncertain"
                      else "disagrees")
            reasons.append(f"{model_note} ({stance}; provenance decides)")
        elif broken:
            reasons.append(broken)
        reasons.extend(_context(evidence, skip=decisive))
        return Fused(label, 1.0 if label == "ai" else 0.0, reasons)

    found = _context(evidence)
    unchecked = _unchecked(probes_run)
    if unchecked and len(unchecked) == len(_default_probes()):
        ran = ", ".join(probes_run or ())
        prefix = f"provenance not checked ({f'only {ran} ran' if ran else 'evidence probes off'})"
    else:
        # "no provenance found" beside an evidence list holding a verified C2PA manifest (info: it records edits)
        # or an XMP editing history said there was nothing where there was something
        prefix = "no decisive provenance found" if found or _provenance_records(evidence) else "no provenance found"
        if unchecked:
            prefix += f" by the probes run (not checked: {', '.join(unchecked)})"
        if not file_bytes:
            prefix += " in an in-memory image (no file bytes, so no C2PA or XMP record could be read)"
    failed = [e for e in evidence if e.data.get("probe_failed")]
    if failed:  # "none found" must not read as "none there" when a record could not be read
        prefix += f" (but {len(failed)} record(s) could not be read: {failed[0].detail})"
    if score is None or model is None:
        reason = broken or abstain_reason or "no model could judge this image"
        return Fused("uncertain", None, [reason, *found])

    ai_at, human_below = thresholds(model)
    source = _band_source(model)
    p = score.p_ai
    if p >= ai_at:
        shown, (at,) = _decimals(p, ai_at)
        label, rule = "ai", f"at or above the AI threshold {at} ({_rule(model, 'ai_rule', 'ai_at_or_above')})"
    elif p < human_below:
        shown, (below,) = _decimals(p, human_below)
        label, rule = "human", f"below the human threshold {below} ({_rule(model, 'human_rule', 'human_below')})"
    else:
        shown, (low, high) = _decimals(p, human_below, ai_at)
        label, rule = "uncertain", f"between {low} and {high}, the uncertain band of {source}"
    reasons = [f"{prefix}; model {score.model} p_ai {shown} {rule}"]
    contrary = _strong(evidence, "human") if label == "ai" else _strong(evidence, "ai") if label == "human" else []
    if contrary:  # every contrary record named once, here (it had been named here and again in the list below)
        label = "uncertain"
        reasons.append(f"uncertain because strong evidence contradicts the model: "
                       f"{'; '.join(dict.fromkeys(e.detail for e in contrary))}")
        found = _context(evidence, skip=contrary)
    return Fused(label, p, reasons + found)


@lru_cache(maxsize=1)
def _default_probes() -> tuple[str, ...]:
    from synthdetect.evidence import probe_names

    return tuple(probe_names(include_on_request=False))


def _unchecked(probes_run: Sequence[str] | None) -> list[str]:
    """The default (provenance) probes that did not look at the image."""
    if probes_run is None:
        return []
    return [name for name in _default_probes() if name not in probes_run]


@lru_cache(maxsize=1)
def _all_probes() -> tuple[str, ...]:
    from synthdetect.evidence import probe_names

    return tuple(probe_names(include_on_request=True))


def thresholds(model: Model) -> tuple[float, float]:
    """(AI at or above, human below): the card's validated band, else the fallback.

    A fallback never crosses the card's own threshold on the other side: a card with only ``human_below`` 0.95
    had p_ai 0.92 called ``ai`` by the default 0.9, though the card's validated rule says ``human`` there."""
    ai_at, human_below = model.ai_at_or_above, model.human_below
    if ai_at is None:
        ai_at = FALLBACK_AI_AT if human_below is None else max(FALLBACK_AI_AT, human_below)
    if human_below is None:
        human_below = min(FALLBACK_HUMAN_BELOW, ai_at)
    return ai_at, human_below


def _band_source(model: Model) -> str:
    """Whose thresholds bound the uncertain band: a card with one of the two had its default half called validated,
    or (with only ``human_below``) the whole band called "default thresholds (card has none)"."""
    card_ai, card_human = model.ai_at_or_above is not None, model.human_below is not None
    if card_ai and card_human:
        return (model.card.get("decision") or {}).get("band", "its validated thresholds")
    if card_ai:
        return "the card's AI threshold and the default human threshold (the card has none)"
    if card_human:
        return "the card's human threshold and the default AI threshold (the card has none)"
    return "default thresholds (card has none)"


def _model_label(p: float, model: Model) -> str:
    ai_at, human_below = thresholds(model)
    return "ai" if p >= ai_at else "human" if p < human_below else "uncertain"


def _rule(model: Model, key: str, threshold: str) -> str:
    """How the card says a threshold was chosen; a card threshold without that text is not the default band."""
    if getattr(model, threshold) is None:
        ai_at, human_below = thresholds(model)
        if threshold == "ai_at_or_above" and ai_at != FALLBACK_AI_AT:
            return "default band, raised to the card's human threshold"
        if threshold == "human_below" and human_below != FALLBACK_HUMAN_BELOW:
            return "default band, lowered to the card's AI threshold"
        return "default band"
    return (model.card.get("decision") or {}).get(key, "the model card's threshold")


def _is_probability(p: float) -> bool:
    try:
        p = float(p)  # a NumPy float32 from an adapter is a number too
    except (TypeError, ValueError):
        return False
    return math.isfinite(p) and 0.0 <= p <= 1.0


def _decimals(p: float, *bounds: float) -> tuple[str, tuple[str, ...]]:
    """``p`` and the thresholds with enough decimals (3 or more) that they read as they compare.

    p_ai 0.35530 against a human threshold of 0.35537 is below it, but at three decimals reads as
    "0.355 below the human threshold 0.355"; a p_ai just under the AI threshold reads as equal to it.
    """
    for digits in range(3, 13):
        shown, marks = f"{p:.{digits}f}", tuple(f"{b:.{digits}f}" for b in bounds)
        if all((float(shown) < float(mark)) == (p < b) for mark, b in zip(marks, bounds)):
            break
    return shown, marks
