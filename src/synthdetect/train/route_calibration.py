"""Calibrate a router's small-image route on real-world thumbnails, measured leave-one-source-out.

``cifake-cnn``'s card is calibrated on CIFAKE, whose real images are CIFAR-10
photos.  On thumbnails of real-world photos and art (wild-dev shrunk to 32-64
px), its CIFAKE 1% FPR threshold called about one real image in five ``ai``.
The ``default`` detector sends every small image to that model, so its route
needs its own calibration and decision band, fitted where it is used: this
module shrinks every image of a manifest to several thumbnail sizes,
resamplers and encodings, scores them, fits Platt scaling (the score scale
shifts, so a temperature alone is not enough; both classes weigh the same, so
p_ai does not inherit the sources' arbitrary class balance) and a
1% FPR / 5% miss band whose 1% holds on every source, and measures that band on
sources the fit never saw.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from synthdetect.evaluate.calibration import Calibration, operating_points, threshold_at_fnr, threshold_at_fpr
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.images import encode_image, shrink_to_short_side
from synthdetect.models.package import weights_fingerprint
from synthdetect.train.datasets import RECORD_ERRORS, Record, load_record, record_error
from synthdetect.train.duplicates import copies_of
from synthdetect.train.registry import band_counts

SHORT_SIDES = (32, 48, 64)
RESAMPLERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}
ENCODINGS = (("JPEG", 90), ("JPEG", 75), ("PNG", None))
LABELS = ("ai", "human", "uncertain")
HUMAN_FNR = 0.05  # the human threshold misses this share of AI thumbnails


def thumbnail_variants(rgb: Image.Image, short_sides: Sequence[int] = SHORT_SIDES) -> Iterator[tuple[str, bytes]]:
    """The image as thumbnails are met in the wild: several sizes, resamplers and encodings."""
    for short in short_sides:
        if min(rgb.size) <= short:
            continue  # already this small: the image itself is the thumbnail
        for resampler, method in RESAMPLERS.items():
            small = shrink_to_short_side(rgb, short, method)
            for fmt, quality in ENCODINGS:
                data = encode_image(small, fmt, **({"quality": quality} if quality else {}))
                yield f"{short}px-{resampler}-{fmt.lower()}{quality or ''}", data


@dataclass
class ThumbnailScores:
    """Raw logits of every thumbnail the model judged, with what it came from."""

    logits: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    variants: list[str]
    images: int
    not_judged: dict[str, int] = field(default_factory=dict)  # reason -> thumbnails (uncertain by routing)
    unreadable: list[str] = field(default_factory=list)
    #: sha256 of each thumbnail's full-size file; empty when unknown (then no copies rule can apply)
    image_digests: list[str] = field(default_factory=list)
    #: records already at most the smallest thumbnail size on their short side: no thumbnail, nothing scored
    too_small: list[str] = field(default_factory=list)
    #: the thumbnail sizes made (short side, px): those the calibrated route receives
    short_sides: tuple[int, ...] = SHORT_SIDES


WILD_DEV_WHAT = "thumbnails of real-world photos and art (wild-dev)"


def default_what(data: str) -> str:
    """What the thumbnails are when ``--what`` is not given: named after DATA.  The band's rules and every verdict
    it judges quote this; a fixed "(wild-dev)" there claimed wild-dev for a calibration fitted on any data."""
    path = Path(data).expanduser().resolve()
    folder = path if path.is_dir() else path.parent
    if folder.name == "wild-dev":  # the shipped card's words, so its recorded command reproduces it
        return WILD_DEV_WHAT
    return "thumbnails of the images in " + (path.name if path.is_dir() or not folder.name
                                              else f"{folder.name}/{path.name}")


def route_short_sides(routes: Sequence[dict[str, Any]], route: dict[str, Any]) -> tuple[int, ...]:
    """The thumbnail sizes of :data:`SHORT_SIDES` that the router sends to ``route`` (the first route that takes a
    size gets it): a route for images up to 32 px must not be calibrated on 48 and 64 px thumbnails it never sees."""
    def takes(spec: dict[str, Any], short: int) -> bool:
        return ((spec.get("max_short_side") is None or short <= spec["max_short_side"])
                and (spec.get("min_short_side") is None or short >= spec["min_short_side"]))

    return tuple(short for short in SHORT_SIDES
                 if next((r for r in routes if takes(r, short)), None) is route)


def score_thumbnails(
    records: Sequence[Record], model: str, *, short_sides: Sequence[int] = SHORT_SIDES,
    progress: Callable[[int, int], None] | None = None,
) -> ThumbnailScores:
    """Score every record's thumbnails with ``model`` (evidence off: only the model's calibration is fitted)."""
    from synthdetect.api import Detector

    detector = Detector.load(model, use_evidence=False)
    logits, labels, sources, variants, digests = [], [], [], [], []
    not_judged: dict[str, int] = {}
    unreadable: list[str] = []
    too_small: list[str] = []
    images = 0
    for i, record in enumerate(records):
        try:
            loaded = load_record(record)
        except RECORD_ERRORS as exc:
            unreadable.append(record_error(record, exc))  # not "[Errno 2] ... 'x'"
            if progress:  # a bar left short of its total reads as work still to do
                progress(i + 1, len(records))
            continue
        rgb, digest = loaded.rgb, hashlib.sha256(loaded.raw or b"").hexdigest()
        thumbs = list(thumbnail_variants(rgb, short_sides))
        images += bool(thumbs)
        if not thumbs:  # counted, not passed over in silence: the card says how many images gave no thumbnail
            too_small.append(f"{record.ref}: {rgb.width}x{rgb.height} px, no larger than the smallest thumbnail "
                             f"({min(short_sides)} px short side)")
        for (tag, _), verdict in zip(thumbs, detector.detect([data for _, data in thumbs])):
            if verdict.error or not verdict.models:
                reason = verdict.error or verdict.reasons[0]
                key = re.sub(r"\d+(\.\d+)?", "N", reason.split("(")[0].strip())  # one bucket per kind of reason
                not_judged[key] = not_judged.get(key, 0) + 1
                continue
            logits.append(verdict.models[0]["raw_logit"])
            labels.append(float(record.label))
            sources.append(record.source or "unknown")
            variants.append(tag)
            digests.append(digest)
        if progress:
            progress(i + 1, len(records))
    return ThumbnailScores(np.asarray(logits, dtype=np.float64), np.asarray(labels), np.asarray(sources),
                           variants, images, not_judged, unreadable, digests, too_small, tuple(short_sides))


def route_data_problem(scores: ThumbnailScores) -> str | None:
    """Why these thumbnails cannot calibrate a route (and be measured leave-one-source-out), or None."""
    if scores.logits.size == 0:
        judged = "; ".join(f"{n} {why}" for why, n in scores.not_judged.items())
        lost = ", ".join(f"{n} {what}" for n, what in ((len(scores.unreadable), "unreadable"),
                                                       (len(scores.too_small), "too small")) if n)
        return ("no thumbnail was scored: thumbnails are the images shrunk to a "
                + "/".join(map(str, scores.short_sides)) + " px short side, so only images larger than "
                + f"{min(scores.short_sides)} px give any" + (f" (images: {lost})" if lost else "")
                + (f" (not judged: {judged})" if judged else ""))
    classes = set(scores.labels.tolist())
    if len(classes) < 2:
        return f"the scored thumbnails are all {'AI' if classes == {1.0} else 'human'}: a calibration needs both classes"
    sources = sorted(set(scores.sources.tolist()))
    if not any(len(set(scores.labels[scores.sources != s].tolist())) == 2 for s in sources):
        return (f"leave-one-source-out cannot judge any source: holding out each of {', '.join(sources)} leaves "
                "one class (or none) to fit on; add sources")
    real = sorted(set(scores.sources[scores.labels < 0.5].tolist()))
    if not any(len(set(scores.labels[scores.sources != s].tolist())) == 2 for s in real):
        each = "each of " if len(real) > 1 else ""
        return (f"leave-one-source-out cannot judge any source of real images, so how often the band calls a real "
                f"image 'ai' would go unmeasured: holding out {each}{', '.join(real)} leaves only AI thumbnails to "
                "fit on; add sources of real images")
    return None


def fit_route(logits: np.ndarray, labels: np.ndarray, what: str, sources: np.ndarray | None = None) -> dict[str, Any]:
    """Platt calibration and the 1% FPR / 5% miss decision band, with rules that say what they were fitted on.

    With ``sources``, the ``ai`` threshold must hold on *every* source, not
    only pooled: it is raised to the highest of the sources' own 1% FPR
    thresholds.  Pooled, a 1% band let one source of real photos (the
    denoising benchmarks, held out) have 8.9% of its thumbnails called
    ``ai``; a small image must never be called ``ai`` for its source's look.
    """
    calibration = Calibration.fit(logits, labels, "platt", balanced=True)
    p = calibration(logits)
    points = operating_points(p, labels, human_fnr=HUMAN_FNR)
    decision = dict(points["decision"])
    decision["ai_rule"] = f"p_ai at or above the 1% FPR threshold on {what}"
    if sources is not None:
        per_source = {s: threshold_at_fpr(p[sources == s], labels[sources == s], 0.01)
                      for s in sorted(set(sources[labels < 0.5].tolist()))}
        worst = max(per_source, key=per_source.get)
        if per_source[worst] > decision["ai_at_or_above"]:
            decision["ai_at_or_above"] = per_source[worst]
        decision["ai_rule"] = (f"p_ai at or above the 1% FPR threshold of every source of {what} "
                               f"(highest: {worst})")
    human_below = threshold_at_fnr(p, labels, HUMAN_FNR)
    if human_below >= decision["ai_at_or_above"]:  # the band is empty: every image is called ai or human
        decision["ai_at_or_above"] = decision["human_below"] = clear_of_scores(decision["ai_at_or_above"], p)
    else:  # raised for a source above the pooled empty band, the band opens, and the pooled note is stale
        decision["ai_at_or_above"] = clear_of_scores(decision["ai_at_or_above"], p)
        decision["human_below"] = clear_of_scores(human_below, p)
        decision.pop("uncertain_band_empty", None)
        decision.pop("note", None)
    decision["human_rule"] = f"p_ai below the threshold that misses 5% of AI images among {what}"
    decision["band"] = f"the thresholds fitted on {what}"
    return {"calibration": calibration.to_dict(), "decision": decision, "thresholds": points["thresholds"]}


def clear_of_scores(threshold: float, p: np.ndarray) -> float:
    """``threshold`` moved to halfway between the fitted scores on either side of it (to 1 past the last score).

    The 1% FPR threshold sits one float step above the highest real thumbnail it does not call ``ai``, and the 5%
    miss threshold on an AI thumbnail's score.  The same thumbnail judged again in another batch scores up to
    about 5e-7 apart in logit (float32 convolutions), and the fit read logits rounded to 6 decimals: either could
    call it ``ai`` (breaking its source's 1%) or ``human``.  Halfway calls no fitted thumbnail differently."""
    below, above = p[p < threshold], p[p >= threshold]
    if below.size == 0:
        return threshold
    low = float(below.max())
    high = float(above.min()) if above.size else 1.0
    middle = low + (high - low) / 2
    return middle if low < middle <= high else threshold


def band_shares(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """:func:`band_counts` as shares per true class: how the verdicts fall for real and for AI thumbnails."""
    classes = (("real", counts["human_images"]), ("ai", counts["ai_images"]))
    out: dict[str, Any] = {f"n_{name}": sum(c[label] for label in LABELS) for name, c in classes}
    for name, c in classes:
        for label in LABELS:
            out[f"{name}_called_{label}"] = c[label] / out[f"n_{name}"] if out[f"n_{name}"] else None
    return out


def leave_one_source_out(scores: ThumbnailScores, what: str) -> dict[str, Any]:
    """Fit the route on all sources but one, judge the one; pooled and per held-out source.

    A fit never sees a thumbnail of a file byte-identical to a held-out one (the same image filed under two
    sources), when the scores carry their files' digests.
    """
    held_p = np.full(scores.logits.shape, np.nan)
    pooled_counts = {key: dict.fromkeys(LABELS, 0) for key in ("ai_images", "human_images")}
    per_source = {}
    not_held_out: dict[str, str] = {}  # said on the card and by the command: it was passed over in silence
    for source in sorted(set(scores.sources.tolist())):
        test = scores.sources == source
        copies = copies_of(scores.image_digests, test) if scores.image_digests else np.zeros_like(test)
        train = ~test & ~copies
        if len(np.unique(scores.labels[train])) < 2:  # the other sources cannot calibrate: left out, and said
            left = {1.0: "AI", 0.0: "real"}.get(float(scores.labels[train][0])) if train.any() else None
            not_held_out[source] = (f"holding it out leaves only {left} thumbnails to fit on" if left else
                                    "every other thumbnail is of a file byte-identical to one of its own, and copies "
                                    "of held-out files are kept out of the fit" if copies.any() else
                                    "holding it out leaves no thumbnail to fit on")
            continue
        route = fit_route(scores.logits[train], scores.labels[train], what, scores.sources[train])
        p = Calibration.from_dict(route["calibration"])(scores.logits[test])
        held_p[test] = p
        counts = band_counts(p, scores.labels[test], route["decision"])
        for key, pooled in pooled_counts.items():
            for label in LABELS:
                pooled[label] += counts[key][label]
        per_source[source] = {**band_shares(counts),
                              "ai_at_or_above": route["decision"]["ai_at_or_above"],
                              "human_below": route["decision"]["human_below"]}
        if copies.any():
            per_source[source]["copies_left_out_of_fit"] = int(copies.sum())
    done = ~np.isnan(held_p)
    pooled = band_shares(pooled_counts)
    pooled.update({k: v for k, v in binary_metrics(held_p[done], scores.labels[done]).items()
                   if k in ("roc_auc", "ece", "accuracy")})
    return {"pooled": pooled, "per_source": per_source, **({"not_held_out": not_held_out} if not_held_out else {})}


def calibrate_route(scores: ThumbnailScores, own_card: dict[str, Any], what: str) -> dict[str, Any]:
    """The route spec to store on the router card, and the report behind it."""
    own = Calibration.from_dict(own_card.get("calibration"))
    own_p = own(scores.logits)
    own_counts = band_counts(own_p, scores.labels,
                             own_card.get("decision") or {"ai_at_or_above": 0.5, "human_below": 0.5})
    route = fit_route(scores.logits, scores.labels, what, scores.sources)
    ranking = binary_metrics(1 / (1 + np.exp(-scores.logits)), scores.labels)
    return {
        "calibration": route["calibration"],
        "decision": route["decision"],
        "calibrated_on": {
            "what": what,
            "thumbnails": int(scores.logits.size), "images": scores.images,
            "sources": int(len(set(scores.sources.tolist()))),
            "variants": "short side " + "/".join(map(str, scores.short_sides)) + " px; " + ", ".join(RESAMPLERS)
                        + "; " + ", ".join(f"{f} q{q}" if q else f for f, q in ENCODINGS),
            "model_roc_auc": ranking["roc_auc"],
            "with_the_model_card_band": {**band_shares(own_counts),
                                         "ece": binary_metrics(own_p, scores.labels)["ece"]},
            "leave_one_source_out": leave_one_source_out(scores, what),
            "model_weights": weights_fingerprint(own_card),
            "not_judged": scores.not_judged,
            "unreadable": len(scores.unreadable),
            "too_small_for_thumbnails": len(scores.too_small),
        },
    }
