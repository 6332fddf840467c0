"""Full-size model selection by leave-one-source-out, and the training of the shipped package.

Why this shape: wild-dev has 555 images from 9 sources, most of them one
class only.  A random split would let a model learn a source's look (its
camera, its generator, its JPEG settings) and call that detection.  So:

* **Outer loop** - hold out each *source name* in turn (both classes of a
  mixed source go out together); fit on the other sources; score the held-out
  source.  The held-out scores of all folds are pooled and the pooled
  ROC-AUC, TPR at 5% FPR and ECE are the selection numbers.
* **Inner loop** - inside each outer fold, the same leave-one-source-out over
  the training sources gives out-of-fold logits, on which the stacker, the
  calibration and the 1%/5% FPR thresholds of that fold are fitted.  Nothing
  about the held-out source is seen before it is scored.
* **Final model** - the winner is refit on every source; its calibration and
  thresholds come from the outer out-of-fold logits (the cross-validated
  calibration of scikit-learn's ``CalibratedClassifierCV(ensemble=False)``).

Head hyperparameters (C, aggregation trim) are fixed beforehand, not tuned
on the outer folds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synthdetect.evaluate.calibration import Calibration, is_separable, operating_points, smoothed_targets
from synthdetect.evaluate.metrics import binary_metrics, expected_calibration_error, tpr_at_fpr
from synthdetect.models.multicrop import AGGREGATIONS, CropPolicy, aggregate
from synthdetect.models.view_features import LinearMember, member_view
from synthdetect.train.duplicates import copies_of
from synthdetect.train.wild_features import CachedFeatures

#: CLIP with float32 activations (batch-invariant, deterministic); wild-v1 and wild-v2 were trained on the int8
#: path, which stays usable by naming it in --extractors.  Either plays the "clip" part of every candidate.
CLIP = "clip-vit-b16-f32"
CLIP_INT8 = "clip-vit-b16-int8"
CLIP_EXTRACTORS = (CLIP, CLIP_INT8)
HANDCRAFTED = "handcrafted-v1"
EFFICIENTNET = "efficientnet-lite0-imagenet"
SHORT_NAMES = {**dict.fromkeys(CLIP_EXTRACTORS, "clip"), HANDCRAFTED: "hc", EFFICIENTNET: "effnet"}
#: Inverse L2 strength per extractor (standardised features).  Chosen by the outer leave-one-source-out
#: from {1e-4, 3e-4, 1e-3, 1e-2, 1e-1} (CLIP) and {1e-2, 1e-1} (hand-crafted): strong shrinkage generalises
#: across sources far better than a fit that can memorise each source's look (see the note in the card).
#: EfficientNet-Lite0's 1280-d pooled features reuse CLIP's value untuned (an embedding of similar size), so its
#: leave-one-source-out numbers carry no selection optimism from the head strength.  The float32 CLIP path reuses
#: the value chosen on the int8 one, untuned, for the same reason.
HEAD_C = {**dict.fromkeys(CLIP_EXTRACTORS, 1e-4), HANDCRAFTED: 0.1, EFFICIENTNET: 1e-4}
CALIBRATION_METHOD = "platt (slope >= 0)"


# -- data -------------------------------------------------------------------------------------
@dataclass
class WildData:
    """Cached features as arrays: the unit every fold slices."""

    labels: np.ndarray
    groups: np.ndarray
    names: list[str]
    formats: np.ndarray
    short_side: np.ndarray
    bytes_per_pixel: np.ndarray
    global_feats: dict[str, np.ndarray]  # extractor -> (n, d)
    crop_feats: dict[str, list[np.ndarray]]  # extractor -> n x (k_i, d)
    digests: list[str]  # sha256 of each file: folds never train on a copy of a held-out file

    @classmethod
    def from_cache(cls, cached: CachedFeatures) -> "WildData":
        records = cached.records
        g = {e: np.stack([v["global"] for v in views]) for e, views in cached.views.items()}
        c = {e: [member_view(v, "crops") for v in views] for e, views in cached.views.items()}
        return cls(
            labels=np.array([r.label for r in records]),
            groups=np.array([r.source or "unknown" for r in records]),
            names=[r.ref for r in records],
            formats=np.array([m.format for m in cached.meta]),
            short_side=np.array([min(m.width, m.height) for m in cached.meta]),
            bytes_per_pixel=np.array([m.bytes / max(m.width * m.height, 1) for m in cached.meta]),
            global_feats=g, crop_feats=c, digests=list(cached.digests),
        )

    def __len__(self) -> int:
        return int(self.labels.size)

    def fold(self, idx: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Among ``idx``: the images of ``source`` (held out), the rest minus copies of them (training), and
        how many copies were left out of training."""
        held = self.groups[idx] == source
        copies = copies_of([self.digests[i] for i in idx], held)
        return idx[held], idx[~held & ~copies], int(copies.sum())


def loso_problem(groups: Sequence[str], labels: Sequence[int]) -> str | None:
    """Why leave-one-source-out cannot fit on these sources, or None.

    Every outer fold holds out one source and its inner folds one more, so the sources left after holding out
    any two must still hold both classes (a head needs AI and human images).  Checked on the manifest before
    any feature is extracted, and again on the images that could be read.
    """
    groups, labels = np.asarray(groups), np.asarray(labels)
    sources = sorted(set(groups.tolist()))
    if len(sources) < 3:
        return (f"leave-one-source-out needs at least 3 sources, each fold holding one out and its inner folds "
                f"another (found {len(sources)}: {', '.join(sources) or 'none'})")
    for i, first in enumerate(sources):
        for second in sources[i + 1:]:
            left = (groups != first) & (groups != second)
            if len(set(labels[left].tolist())) < 2:
                only = "AI" if labels[left].size and labels[left][0] == 1 else "human"
                rest = ", ".join(sorted(set(groups[left].tolist())))
                return (f"holding out '{first}' and '{second}' (an outer and an inner fold) leaves only {only} "
                        f"images ({rest}): every two sources held out must leave both classes; add sources "
                        f"with the other class")
    return None


#: The served package answers ``uncertain`` for an image more elongated than this (the card's ``input.max_aspect``).
MAX_ASPECT = 6.0


def outside_served_size(meta: Any, min_side: int, max_aspect: float = MAX_ASPECT) -> bool:
    """Whether a package whose card's ``input`` has these limits answers an image of this size ``uncertain``."""
    short = min(meta.width, meta.height)
    return short < min_side or max(meta.width, meta.height) > max_aspect * short


def outside_domain(cached: CachedFeatures, min_side: int, max_aspect: float = MAX_ASPECT) -> list[tuple[Any, str]]:
    """The images the written package would not judge (``uncertain`` by its ``input`` limits), with their size.

    They were trained on and counted in the card's held-out numbers and thresholds (wild-dev's 1x1 and 4x261 px
    camera-samples files among them), so the card described answers the package never gives; ``synthdetect
    train`` leaves them out the same way."""
    return [(record, f"{m.width}x{m.height} px") for record, m in zip(cached.records, cached.meta)
            if outside_served_size(m, min_side, max_aspect)]


def domain_rule(min_side: int, max_aspect: float = MAX_ASPECT, judged_by: str = "the package") -> str:
    return (f"under {min_side} px on the short side or longer than {max_aspect:g}:1, which {judged_by} answers "
            "uncertain")


def data_name(data_ref: str) -> str:
    """What the card calls the training data: ``wild-dev`` for a manifest in a wild-dev folder (the shipped cards'
    words, so their recorded command reproduces them), else the manifest as FOLDER/FILE.  The card said "wild-dev"
    whatever the data was."""
    path = Path(data_ref).expanduser().resolve()
    folder = path if path.is_dir() else path.parent
    if folder.name == "wild-dev":
        return "wild-dev"
    return path.name if path.is_dir() or not folder.name else f"{folder.name}/{path.name}"


def failure_line(ref: str, why: str) -> str:
    """``ref: why``, naming the file once (a load error usually names it already)."""
    return why if why.startswith(ref) else f"{ref}: {why}"


# -- members ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemberSpec:
    extractor: str
    view: str  # global | crops
    aggregate: str = "mean"

    @property
    def key(self) -> str:
        return f"{self.extractor}:{self.view}" + (f":{self.aggregate}" if self.view == "crops" else "")


def source_balanced_weights(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every (source, class) pair carries the same weight within its class, and the classes half each.

    Without this, 131 ImageNet photos would *be* the human class and the head
    would learn "looks like ImageNet" (leave-one-source-out AUC 0.63 -> 0.74 with it).
    """
    w = np.ones(len(labels), dtype=np.float64)
    for source, cls in set(zip(groups.tolist(), labels.tolist())):
        m = (groups == source) & (labels == cls)
        w[m] = 1.0 / m.sum()
    for cls in (0, 1):
        m = labels == cls
        if m.any():
            w[m] *= 0.5 / w[m].sum()
    return w * len(w)


def fit_positive_logistic(z: np.ndarray, y: np.ndarray, l2: float = 1e-3,
                          targets: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Logistic regression whose weights cannot turn negative (class-balanced).

    Used for calibration and stacking: a member or a calibration that learned
    to *invert* its input on the training sources (it happens when a source
    is held out) must not flip the held-out source's scores; a weight of 0 is
    the honest worst case.  scikit-learn has no sign constraint, hence scipy.
    """
    from scipy.optimize import minimize

    z = np.atleast_2d(np.asarray(z, dtype=np.float64).T).T
    y = np.asarray(y, dtype=np.float64)
    sw = np.where(y > 0.5, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1)) * len(y)

    t = y if targets is None else np.asarray(targets, dtype=np.float64)  # soft targets: Platt's smoothed ones

    def loss(theta):
        w = np.exp(theta[:-1])
        s = z @ w + theta[-1]
        # cross-entropy against t; with hard 0/1 labels one term is exactly zero, the plain logistic loss
        return float(np.mean(sw * (t * np.logaddexp(0.0, -s) + (1 - t) * np.logaddexp(0.0, s)))
                     + l2 * np.sum(w ** 2))

    best = None
    for start in (0.0, -3.0):
        res = minimize(loss, np.r_[np.full(z.shape[1], start), 0.0], method="L-BFGS-B",
                       bounds=[(-12, 6)] * z.shape[1] + [(None, None)])
        if best is None or res.fun < best.fun:
            best = res
    return np.exp(best.x[:-1]), float(best.x[-1])


def fit_calibration(z: np.ndarray, y: np.ndarray) -> Calibration:
    """Platt scaling with a non-negative slope: p = sigmoid(a z + b), a >= 0.

    When the logits separate the classes (a small or easy dataset) the plain
    fit has no finite optimum: the slope ran to its bound (e^6) and p_ai came
    out as exactly 0 or 1.  Then it fits Platt's smoothed targets, as
    ``synthdetect evaluate`` does, and the card's ``calibration.fit`` says so.
    """
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    y = np.asarray(y)
    if is_separable(z, y):
        (a,), b = fit_positive_logistic(z.reshape(-1, 1), y, l2=0.0, targets=smoothed_targets(y))
        return Calibration(method="platt", a=float(a), b=float(b),
                           fit_info={"targets": "platt-smoothed", "separable": True})
    (a,), b = fit_positive_logistic(z.reshape(-1, 1), y, l2=0.0)
    return Calibration(method="platt", a=float(a), b=float(b))


def fit_member(data: WildData, idx: np.ndarray, spec: MemberSpec, seed: int = 0) -> LinearMember:
    """Standardise + L2 logistic regression; crops weighted 1/k so every image counts once."""
    from sklearn.linear_model import LogisticRegression

    image_w = source_balanced_weights(data.groups[idx], data.labels[idx])
    if spec.view == "global":
        x = data.global_feats[spec.extractor][idx]
        y = data.labels[idx]
        w = image_w
    else:
        rows = [data.crop_feats[spec.extractor][i] for i in idx]
        x = np.concatenate(rows)
        y = np.concatenate([np.full(len(r), data.labels[i]) for r, i in zip(rows, idx)])
        w = np.concatenate([np.full(len(r), wi / len(r)) for r, wi in zip(rows, image_w)])
    if len(np.unique(y)) < 2:
        sources = ", ".join(sorted(set(data.groups[idx])))
        raise ValueError(f"cannot fit a head: the training sources ({sources}) hold only one class")
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    model = LogisticRegression(C=HEAD_C[spec.extractor], max_iter=3000, random_state=seed)
    model.fit((x - mean) / scale, y, sample_weight=w)
    return LinearMember(spec.extractor, spec.view, mean, scale, model.coef_[0].astype(np.float64),
                        float(model.intercept_[0]), spec.aggregate)


def member_logits(data: WildData, idx: np.ndarray, member: LinearMember, aggregations: Sequence[str]) -> dict[str, np.ndarray]:
    """Logits of ``member`` for images ``idx``; one array per aggregation for crop members."""
    if member.view == "global":
        return {"global": member.logits_of_rows(data.global_feats[member.extractor][idx])}
    per_image = [member.logits_of_rows(data.crop_feats[member.extractor][i]) for i in idx]
    return {how: np.array([aggregate(z, how) for z in per_image]) for how in aggregations}


def base_logits(data: WildData, train_idx: np.ndarray, test_idx: np.ndarray, extractors: Sequence[str]) -> dict[str, np.ndarray]:
    """Every base candidate's logits on ``test_idx`` after fitting on ``train_idx``."""
    out: dict[str, np.ndarray] = {}
    for extractor in extractors:
        for view in ("global", "crops"):
            member = fit_member(data, train_idx, MemberSpec(extractor, view))
            for how, z in member_logits(data, test_idx, member, AGGREGATIONS).items():
                out[MemberSpec(extractor, view, how if view == "crops" else "mean").key] = z
    return out


# -- candidates -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A base member (one key) or a stack of several keys combined by logistic regression."""

    name: str
    keys: tuple[str, ...]

    @property
    def stacked(self) -> bool:
        return len(self.keys) > 1


def fit_stacker(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights on the members' logits (a member is used or ignored, never inverted)."""
    return fit_positive_logistic(z, y)


def clip_of(extractors: Sequence[str]) -> str | None:
    """The one CLIP extractor among ``extractors`` (two would give candidates of the same name)."""
    clips = [e for e in extractors if e in CLIP_EXTRACTORS]
    if len(clips) > 1:
        raise ValueError(f"choose one CLIP extractor, not {' and '.join(clips)}")
    return clips[0] if clips else None


def default_candidates(extractors: Sequence[str]) -> list[Candidate]:
    clip = clip_of(extractors)
    cands: list[Candidate] = []
    for e in extractors:
        short = SHORT_NAMES.get(e, e)
        cands.append(Candidate(f"{short}-global", (MemberSpec(e, "global").key,)))
        for how in AGGREGATIONS:
            cands.append(Candidate(f"{short}-crops-{how}", (MemberSpec(e, "crops", how).key,)))
        for how in ("mean", "max", "trimmed_mean"):
            cands.append(Candidate(f"{short}-global+crops-{how}",
                                   (MemberSpec(e, "global").key, MemberSpec(e, "crops", how).key)))
    if clip and HANDCRAFTED in extractors:
        for how in ("mean", "trimmed_mean"):
            cands.append(Candidate(f"clip-global+crops-{how}+hc-crops-{how}",
                                   (MemberSpec(clip, "global").key, MemberSpec(clip, "crops", how).key,
                                    MemberSpec(HANDCRAFTED, "crops", how).key)))
        cands.append(Candidate("clip-global+hc-global+hc-crops-mean",
                               (MemberSpec(clip, "global").key, MemberSpec(HANDCRAFTED, "global").key,
                                MemberSpec(HANDCRAFTED, "crops", "mean").key)))
    if clip and EFFICIENTNET in extractors:
        for how in ("mean", "trimmed_mean"):
            cands.append(Candidate(f"clip-global+effnet-global+effnet-crops-{how}",
                                   (MemberSpec(clip, "global").key, MemberSpec(EFFICIENTNET, "global").key,
                                    MemberSpec(EFFICIENTNET, "crops", how).key)))
            cands.append(Candidate(f"clip-global+crops-{how}+effnet-crops-{how}",
                                   (MemberSpec(clip, "global").key, MemberSpec(clip, "crops", how).key,
                                    MemberSpec(EFFICIENTNET, "crops", how).key)))
        if HANDCRAFTED in extractors:
            cands.append(Candidate("clip-global+crops-trimmed_mean+hc-crops-trimmed_mean+effnet-crops-trimmed_mean",
                                   (MemberSpec(clip, "global").key, MemberSpec(clip, "crops", "trimmed_mean").key,
                                    MemberSpec(HANDCRAFTED, "crops", "trimmed_mean").key,
                                    MemberSpec(EFFICIENTNET, "crops", "trimmed_mean").key)))
    return cands


def _combine(cand: Candidate, logits: dict[str, np.ndarray], stacker: tuple[np.ndarray, float] | None) -> np.ndarray:
    if not cand.stacked:
        return logits[cand.keys[0]]
    z = np.stack([logits[k] for k in cand.keys], axis=1)
    return z @ stacker[0] + stacker[1]


def inner_oof(data: WildData, idx: np.ndarray, extractors: Sequence[str]) -> dict[str, np.ndarray]:
    """Leave-one-source-out logits over the sources in ``idx`` (positions aligned with ``idx``)."""
    out: dict[str, np.ndarray] = {}
    for source in np.unique(data.groups[idx]):
        hold = data.groups[idx] == source
        test, train, _ = data.fold(idx, source)
        z = base_logits(data, train, test, extractors)
        for key, values in z.items():
            out.setdefault(key, np.zeros(len(idx)))[hold] = values
    return out


@dataclass
class FoldResult:
    source: str
    test_idx: np.ndarray
    logits: dict[str, np.ndarray]  # candidate -> calibrated-space raw logit on test
    p: dict[str, np.ndarray]  # candidate -> calibrated p on test
    thresholds: dict[str, dict[str, float]]  # candidate -> {"fpr_0.01": t, "fpr_0.05": t, "human_below": t}
    base: dict[str, np.ndarray]  # base member key -> logits on test (fitted on the outer training sources)
    copies_left_out: int = 0  # training files byte-identical to a held-out file, not trained on in this fold


def outer_fold(data: WildData, source: str, extractors: Sequence[str], cands: Sequence[Candidate]) -> FoldResult:
    test, train, copies = data.fold(np.arange(len(data)), source)
    oof = inner_oof(data, train, extractors)
    test_logits = base_logits(data, train, test, extractors)
    y_train = data.labels[train]
    logits, probs, thresholds = {}, {}, {}
    for cand in cands:
        stacker = fit_stacker(np.stack([oof[k] for k in cand.keys], 1), y_train) if cand.stacked else None
        z_oof = _combine(cand, oof, stacker)
        calibration = fit_calibration(z_oof, y_train)
        points = operating_points(calibration(z_oof), y_train)
        z_test = _combine(cand, test_logits, stacker)
        logits[cand.name] = z_test
        probs[cand.name] = calibration(z_test)
        thresholds[cand.name] = {
            "fpr_0.01": points["thresholds"]["fpr_0.01"]["threshold"],
            "fpr_0.05": points["thresholds"]["fpr_0.05"]["threshold"],
            "human_below": points["decision"]["human_below"],
        }
    return FoldResult(source, test, logits, probs, thresholds, test_logits, copies)


# -- metrics ----------------------------------------------------------------------------------
def pooled_metrics(data: WildData, folds: Sequence[FoldResult], cand: str) -> dict[str, Any]:
    """Pooled held-out numbers for one candidate, plus realised rates at each fold's own thresholds."""
    n = len(data)
    p = np.full(n, np.nan)
    z = np.full(n, np.nan)
    at_1 = np.zeros(n, dtype=bool)
    at_5 = np.zeros(n, dtype=bool)
    said_human = np.zeros(n, dtype=bool)
    for f in folds:
        p[f.test_idx] = f.p[cand]
        z[f.test_idx] = f.logits[cand]
        t = f.thresholds[cand]
        at_1[f.test_idx] = f.p[cand] >= t["fpr_0.01"]
        at_5[f.test_idx] = f.p[cand] >= t["fpr_0.05"]
        said_human[f.test_idx] = f.p[cand] < t["human_below"]
    y = data.labels
    m = binary_metrics(p, y, 0.5)
    real, ai = y == 0, y == 1
    return {
        "roc_auc": m["roc_auc"], "accuracy": m["accuracy"], "ece": m["ece"],
        "tpr_at_fpr_0.05": tpr_at_fpr(p, y, 0.05), "tpr_at_fpr_0.01": tpr_at_fpr(p, y, 0.01),
        "fold_threshold_fpr_0.01": {"fpr": float(at_1[real].mean()), "tpr": float(at_1[ai].mean())},
        "fold_threshold_fpr_0.05": {"fpr": float(at_5[real].mean()), "tpr": float(at_5[ai].mean())},
        "uncertain_band": {
            "ai_images": {"ai": int((at_1 & ai).sum()), "human": int((said_human & ai).sum()),
                          "uncertain": int((~at_1 & ~said_human & ai).sum())},
            "human_images": {"ai": int((at_1 & real).sum()), "human": int((said_human & real).sum()),
                             "uncertain": int((~at_1 & ~said_human & real).sum())},
        },
        "_p": p, "_z": z,
    }


def per_source_table(data: WildData, p: np.ndarray, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Per held-out source and class: count, format mix, size, mean p_ai, accuracy (and AUC for mixed sources)."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for source in sorted(np.unique(data.groups)):
        m = data.groups == source
        row: dict[str, Any] = {"source": source, "n": int(m.sum())}
        for cls, name in ((1, "ai"), (0, "human")):
            mm = m & (data.labels == cls)
            if mm.any():
                fmts = {f: int((data.formats[mm] == f).sum()) for f in np.unique(data.formats[mm])}
                row[name] = {"n": int(mm.sum()), "formats": fmts, "median_short_side": int(np.median(data.short_side[mm])),
                             "mean_p_ai": float(p[mm].mean()),
                             "accuracy": float(np.mean((p[mm] >= threshold) == bool(cls)))}
        if len(np.unique(data.labels[m])) == 2:
            row["roc_auc"] = float(roc_auc_score(data.labels[m], p[m]))
        row["accuracy"] = float(np.mean((p[m] >= threshold) == (data.labels[m] == 1)))
        row["ece"] = expected_calibration_error(p[m], data.labels[m])
        rows.append(row)
    return rows


def format_shortcut_checks(data: WildData, p: np.ndarray) -> dict[str, Any]:
    """What a format/size-only model scores under the same LOSO, and our AUC within one format."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x = np.stack([data.formats == "PNG", data.formats == "WEBP", data.formats == "JPEG",
                  np.log(data.short_side + 1), np.log(data.bytes_per_pixel + 1e-4)], 1).astype(float)
    shortcut = np.zeros(len(data))
    for source in np.unique(data.groups):
        hold = data.groups == source
        model = LogisticRegression(max_iter=1000, class_weight="balanced").fit(x[~hold], data.labels[~hold])
        shortcut[hold] = model.predict_proba(x[hold])[:, 1]
    out = {"format_size_only_loso_auc": float(roc_auc_score(data.labels, shortcut))}
    for fmt in ("JPEG", "PNG"):
        m = data.formats == fmt
        if len(np.unique(data.labels[m])) == 2:
            out[f"auc_within_{fmt}"] = float(roc_auc_score(data.labels[m], p[m]))
            out[f"n_within_{fmt}"] = {"ai": int(data.labels[m].sum()), "human": int((1 - data.labels[m]).sum())}
    return out


def run_loso(data: WildData, extractors: Sequence[str], cands: Sequence[Candidate] | None = None,
             progress: Callable[[str], None] | None = None) -> tuple[list[FoldResult], dict[str, dict[str, Any]]]:
    cands = list(cands or default_candidates(extractors))
    folds = []
    for source in sorted(np.unique(data.groups)):
        if progress:
            progress(source)
        folds.append(outer_fold(data, source, extractors, cands))
    return folds, {c.name: pooled_metrics(data, folds, c.name) for c in cands}


def choose(results: dict[str, dict[str, Any]]) -> str:
    """Highest pooled held-out ROC-AUC; ties (within 0.002) go to higher TPR at 5% FPR."""
    best = max(r["roc_auc"] for r in results.values())
    close = [k for k, r in results.items() if r["roc_auc"] >= best - 0.002]
    return max(close, key=lambda k: (results[k]["tpr_at_fpr_0.05"], results[k]["roc_auc"]))


def public(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


# -- final model ------------------------------------------------------------------------------
def fit_final(data: WildData, cand: Candidate, oof_members: dict[str, np.ndarray]):
    """Members refit on every source; stacker on the outer out-of-fold member logits; calibration on OOF logits."""
    members = []
    for key in cand.keys:
        extractor, view, *rest = key.split(":")
        spec = MemberSpec(extractor, view, rest[0] if rest else "mean")
        members.append(fit_member(data, np.arange(len(data)), spec))
    y = data.labels
    if cand.stacked:
        weights, bias = fit_stacker(np.stack([oof_members[k] for k in cand.keys], 1), y)
        z = np.stack([oof_members[k] for k in cand.keys], 1) @ weights + bias
    else:
        weights, bias = np.ones(1), 0.0
        z = oof_members[cand.keys[0]]
    calibration = fit_calibration(z, y)
    points = operating_points(calibration(z), y, (0.01, 0.05), decide_fpr=0.01)
    return members, (weights, bias), calibration, points, z


def loso_copies(folds: Sequence[FoldResult]) -> dict[str, Any]:
    """The card's account of the copies rule: per outer fold, how many training files were left out."""
    return {"rule": "training files byte-identical (sha256) to a held-out file are not trained on in that fold",
            "per_held_out_source": {f.source: f.copies_left_out for f in folds if f.copies_left_out}}


def outer_member_oof(data: WildData, folds: Sequence[FoldResult]) -> dict[str, np.ndarray]:
    """Outer out-of-fold base logits (the stacker of the final model is fitted on these)."""
    out: dict[str, np.ndarray] = {}
    for f in folds:
        for key, z in f.base.items():
            out.setdefault(key, np.zeros(len(data)))[f.test_idx] = z
    return out


def nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return nan_to_none(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def dump_json(path: Path, obj: Any) -> None:
    """Renamed into place when complete: it rewrites a router's model.json (calibrate-route --write)."""
    from synthdetect.models.package import write_text_atomic

    write_text_atomic(path, json.dumps(nan_to_none(obj), indent=2) + "\n")


# -- package ----------------------------------------------------------------------------------
KIND_FOR_EXTRACTORS = {**{(clip,): "clip-head" for clip in CLIP_EXTRACTORS}, (HANDCRAFTED,): "handcrafted"}


def candidate_from_name(name: str, extractors: Sequence[str]) -> Candidate:
    for cand in default_candidates(extractors):
        if cand.name == name:
            return cand
    raise ValueError(f"unknown candidate '{name}'")


def failure_cases(data: WildData, p: np.ndarray, threshold: float, limit: int = 12) -> list[dict[str, Any]]:
    """The most confident held-out mistakes at the 1% FPR threshold and at 0.5."""
    wrong = np.flatnonzero((p >= 0.5) != (data.labels == 1))
    order = wrong[np.argsort(-np.abs(p[wrong] - 0.5))][:limit]
    return [{"file": Path(data.names[i]).name, "source": str(data.groups[i]), "label": "ai" if data.labels[i] else "human",
             "format": str(data.formats[i]), "short_side": int(data.short_side[i]), "held_out_p_ai": round(float(p[i]), 4),
             "called_ai_at_1pct_fpr_threshold": bool(p[i] >= threshold)} for i in order]


def _thumbnail_note(policy: CropPolicy) -> str:
    if not policy.global_short_side:  # --global-jpeg-quality alone re-encodes the full-size global view; unsaid before
        return (f"the global view is taken of the image re-encoded as JPEG q{policy.global_jpeg_quality}, so every "
                "source has the same compression; " if policy.global_jpeg_quality else "")
    jpeg = f", re-encoded as JPEG q{policy.global_jpeg_quality}" if policy.global_jpeg_quality else ""
    return (f"the global view is taken of a thumbnail: the image shrunk to a {policy.global_short_side} px short side "
            f"(Lanczos){jpeg}, so resolution, noise and compression do not reach the features; ")


def write_wild_package(
    out: Path, name: str, data: WildData, policy: CropPolicy, extractors: Sequence[str], folds: Sequence[FoldResult],
    results: dict[str, dict[str, Any]], winner: str, *, command: str | None, data_ref: str, min_side: int,
    benchmark: dict[str, Any] | None = None, failed: Sequence[tuple[Any, str]] = (), version: str = "1.0.0",
    outside: Sequence[tuple[Any, str]] = (), outside_kept: bool = False,
):
    from synthdetect.models.package import ModelPackage, staged_package, write_package
    from synthdetect.models.view_features import get_extractor, save_members

    cand = candidate_from_name(winner, extractors)
    where = data_name(data_ref)
    oof_members = outer_member_oof(data, folds)
    members, (weights, bias), calibration, points, oof_z = fit_final(data, cand, oof_members)
    used = tuple(sorted({m.extractor for m in members}))
    kind = KIND_FOR_EXTRACTORS.get(used, "wild-stack")
    held = results[winner]
    p_oof = held["_p"]
    sources = {}
    for source in sorted(np.unique(data.groups)):
        m = data.groups == source
        sources[source] = {"ai": int(data.labels[m].sum()), "human": int((1 - data.labels[m]).sum())}
    card: dict[str, Any] = {
        "name": name, "version": version, "kind": kind,
        # with --crops 0 these said "a global view and 0 native-resolution crops" and "global view + native crops"
        "description": (f"Full-size photos and art: {winner} (linear heads on {', '.join(used)} features of a global "
                        + (f"view and {policy.native_crops} native-resolution crops" if policy.native_crops else
                           "view") + "), calibrated by leave-one-source-out."),
        "input": {"min_side": min_side, "max_aspect": MAX_ASPECT,
                  "views": "global view + native crops (see crop_policy)" if policy.native_crops
                  else "global view (see crop_policy)"},
        "crop_policy": {**policy.to_dict(), "aggregate": [m.aggregate for m in members if m.view == "crops"],
                        "explained": (_thumbnail_note(policy) +
                                      "global view: short side resized to size (bicubic), centre crop; native crops: "
                                      "size x size pixels at the centres of an even grid, no resampling; an image "
                                      "smaller than size on its short side is judged on its global view alone; "
                                      "per-crop logits are aggregated by the member's 'aggregate'")},
        "extractors": {e: get_extractor(e).describe() for e in used},
        "members": [m.meta() for m in members],
        "stacker": {"weights": [float(w) for w in weights], "bias": float(bias),
                    "fitted_on": "outer leave-one-source-out logits of the members" if cand.stacked else "identity"},
        "labels": ["human", "ai"],
        "calibration_fitted_on": (f"leave-one-source-out out-of-fold logits over all {where} sources "
                                  f"({CALIBRATION_METHOD} scaling; thresholds from the same held-out scores)"),
    }
    card["calibration"] = calibration.to_dict()
    card.update(points)
    card["metrics"] = {
        "protocol": (f"leave-one-source-out on {where}: each source name held out in turn (both classes of mixed "
                     "sources together); stacker, calibration and thresholds of each fold fitted by an inner "
                     "leave-one-source-out on the training sources only; held-out predictions pooled over folds. "
                     "A training file byte-identical to a held-out one (the same image under another source) is "
                     "left out of that fold's training, outer and inner, so no held-out score credits memory. "
                     "Caveat: the head regularisation and source-balanced weighting, and the choice among the "
                     "candidates, were made on these same outer folds, so the winner's numbers carry some "
                     "selection optimism"),
        "held_out_pooled": public(held),
        "copies_left_out_of_training": loso_copies(folds),
        "held_out_per_source": per_source_table(data, p_oof),
        "shortcut_checks": format_shortcut_checks(data, p_oof),
        "candidates": {k: {m: public(v)[m] for m in ("roc_auc", "tpr_at_fpr_0.05", "ece", "accuracy")}
                       for k, v in sorted(results.items(), key=lambda kv: -kv[1]["roc_auc"])},
    }
    if benchmark:
        card["metrics"]["peers_benchmark"] = benchmark
    card["failure_cases"] = {
        "most_confident_held_out_mistakes": failure_cases(data, p_oof, points["decision"]["ai_at_or_above"]),
        "worst_held_out_sources": sorted(
            ({"source": r["source"], "accuracy_at_0.5": r["accuracy"]} for r in per_source_table(data, p_oof)),
            key=lambda r: r["accuracy_at_0.5"])[:3],
        "known_limits": [
            f"trained on {len(data)} images from {len(sources)} sources; a generator or a photo pipeline unlike these "
            "sources is out of distribution, and held-out sources show it (see the per-source table)",
            "thresholds do not transfer across sources: at each fold's own 1% FPR threshold the pooled held-out "
            "FPR was " + f"{held['fold_threshold_fpr_0.01']['fpr']:.3f}",
            f"a format/size-only model is a strong baseline on {where} (see shortcut_checks): compare against it",
            # was "below 224 px" whatever --crop-size, and with --crops 0 every image is judged on its global view
            (f"images below {policy.size} px on the short side are judged on the global view only"
             if policy.native_crops else "every image is judged on its global view alone (no native crops)"),
        ],
    }
    card["training"] = {"data": data_ref, "command": command, "sources": sources,
                        "images_used": len(data), "images_failed": [failure_line(getattr(r, 'ref', str(r)), why) for r, why in failed],
                        "outside_domain": {"rule": domain_rule(min_side),
                                           ("trained_on_and_counted (--keep-outside-domain)" if outside_kept
                                            else "left_out_of_training_and_metrics"): [
                                               f"{getattr(r, 'ref', str(r))}: {why}" for r, why in outside]}}
    # Written beside ``out`` and renamed into place: stopped after the heads were saved, the package already in
    # ``out`` had heads its card did not list (sha256 mismatch, refused at load).
    with staged_package(out) as folder:
        folder.mkdir(parents=True, exist_ok=True)
        heads = folder / "heads.npz"
        save_members(heads, members)
        package = write_package(folder, nan_to_none(card), {"heads": heads}, render=render_model_card)
    return ModelPackage(root=out, card=package.card)


def embed_benchmark(root: Path, benchmark: dict[str, Any]):
    """Add a benchmarks/wild_peers.py result to an existing card (the weights and their hashes stay as they are)."""
    from synthdetect.models.package import add_card_metrics, write_text_atomic

    package = add_card_metrics(root, {"peers_benchmark": benchmark})
    write_text_atomic(package.root / "MODEL_CARD.md", render_model_card(package.card))
    return package


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def render_model_card(card: dict[str, Any]) -> str:
    """A human-readable card beside model.json (the JSON stays the source of truth)."""
    m = card["metrics"]
    held = m["held_out_pooled"]
    lines = [f"# {card['name']} {card['version']} ({card['kind']})", "", card["description"], "",
             "## Training data", "", f"`{card['training']['data']}` - command: `{card['training']['command']}`", "",
             "| source | ai | human |", "|---|---|---|"]
    lines += [f"| {s} | {c['ai']} | {c['human']} |" for s, c in card["training"]["sources"].items()]
    lines += ["", "## Crop policy", "", "```json", json.dumps(card["crop_policy"], indent=2), "```", "",
              "## Held-out-source metrics", "", m["protocol"], "",
              "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(held[k])} |" for k in ("roc_auc", "tpr_at_fpr_0.05", "tpr_at_fpr_0.01", "ece", "accuracy")]
    lines += [f"| FPR / TPR at each fold's own 1% threshold | {_fmt(held['fold_threshold_fpr_0.01']['fpr'])} / "
              f"{_fmt(held['fold_threshold_fpr_0.01']['tpr'])} |",
              f"| FPR / TPR at each fold's own 5% threshold | {_fmt(held['fold_threshold_fpr_0.05']['fpr'])} / "
              f"{_fmt(held['fold_threshold_fpr_0.05']['tpr'])} |", "",
              "### Per held-out source", "", "| source | n | AUC | accuracy@0.5 | ECE | ai: mean p (formats) | human: mean p (formats) |",
              "|---|---|---|---|---|---|---|"]
    for r in m["held_out_per_source"]:
        cells = []
        for cls in ("ai", "human"):
            c = r.get(cls)
            cells.append(f"{c['mean_p_ai']:.3f} ({', '.join(f'{k} {v}' for k, v in c['formats'].items())})" if c else "-")
        lines.append(f"| {r['source']} | {r['n']} | {_fmt(r.get('roc_auc'))} | {_fmt(r['accuracy'])} | {_fmt(r['ece'])} | "
                     + " | ".join(cells) + " |")
    lines += ["", "### Candidates (pooled held-out)", "", "| candidate | AUC | TPR@5%FPR | ECE | accuracy |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {_fmt(v['roc_auc'])} | {_fmt(v['tpr_at_fpr_0.05'])} | {_fmt(v['ece'])} | {_fmt(v['accuracy'])} |"
              for k, v in m["candidates"].items()]
    lines += ["", "### Shortcut checks", "", "```json", json.dumps(m["shortcut_checks"], indent=2), "```", "",
              "## Calibration and thresholds", "", f"Calibration: `{json.dumps(card['calibration'])}` "
              f"({card['calibration_fitted_on']}).", "", "| FPR target | threshold on p_ai | validation FPR | validation TPR |",
              "|---|---|---|---|"]
    lines += [f"| {t['fpr_target']} | {t['threshold']:.4f} | {_fmt(t['fpr_validation'])} | {_fmt(t['tpr_validation'])} |"
              for t in card["thresholds"].values()]
    d = card["decision"]
    lines += ["", f"Verdict: `ai` at p_ai >= {d['ai_at_or_above']:.4f}; `human` below {d['human_below']:.4f}; "
              "`uncertain` in between.", ""]
    if "peers_benchmark" in m:
        b = m["peers_benchmark"]
        lines += ["## Peers, side by side (benchmarks/wild_peers.py)", "",
                  f"{b.get('images')} images (per source and class: {b.get('per_source', 'all')}), "
                  f"{b.get('threads')} threads; load average at the end {b.get('load_average_at_end')}.", "",
                  "| model | ROC-AUC | accuracy | TPR@5%FPR | ECE | images/s (all) | images/s (1-4 MP JPEG) |",
                  "|---|---|---|---|---|---|---|"]
        for model_name, e in b["models"].items():
            p = e["pooled"]
            lines.append(f"| {model_name} | {_fmt(p.get('roc_auc'))} | {_fmt(p.get('accuracy'))} | "
                         f"{_fmt(p.get('tpr_at_fpr_0.05'))} | {_fmt(p.get('ece'))} | {_fmt(e.get('images_per_s_all'))} | "
                         f"{_fmt(e.get('images_per_s_1to4mp_jpeg'))} |")
        lines += ["", "Per source: see `metrics.peers_benchmark` in model.json.", ""]
    lines += ["## Known failure cases", "", "| file | source | label | format | short side | held-out p_ai |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {f['file']} | {f['source']} | {f['label']} | {f['format']} | {f['short_side']} | {f['held_out_p_ai']} |"
              for f in card["failure_cases"]["most_confident_held_out_mistakes"]]
    lines += [""] + [f"- {x}" for x in card["failure_cases"]["known_limits"]] + [""]
    return "\n".join(lines)
