"""Distillation: several specialist teachers become one student, trained on their soft labels.

The recipe of the EfficientNet "AI image detect distilled" model card: three
specialists (Midjourney vs real, Stable Diffusion vs real, SD fine-tunes vs
real) distilled into one efficient model.  Here:

* **Soft labels** are each teacher's *calibrated* ``p_ai``, obtained through
  :class:`~synthdetect.api.Detector` (model only, no provenance evidence),
  so a teacher's card calibration is what the student learns from.  A
  teacher that declines an image (out of its domain) gives no vote on it.
  Linear-head teachers (``handcrafted``, ``clip-head``) are scored from the
  shared feature cache instead (:func:`cached_soft_labels`: the same
  numbers, one feature pass for all teachers).
* **Combining specialists** (``combine``): ``max`` (default) -- an image is
  as AI as the most convinced specialist, because a Midjourney specialist
  is *expected* to say "real" about a Stable Diffusion image and a mean
  would wash out the one teacher that knows.  The price is that the
  specialists' false positives add up on real images; ``mean`` is the
  conservative alternative.
* **Loss**: binary cross-entropy with logits against the target
  ``t = alpha * soft + (1 - alpha) * hard`` (hard = the dataset's label).
  BCE is linear in its target, so this is exactly
  ``alpha * BCE(soft) + (1 - alpha) * BCE(hard)``.  Where no teacher
  judged an image the target is the hard label.
* Validation (early stopping, calibration, thresholds) uses **hard labels
  of whole validation sources**; the comparison runs every teacher, the
  combined teachers and the student on the **same held-out sources**.

Students: ``small-cnn`` and ``ela-cnn`` are trained by their own registry
trainers, whose loss (``fit_classifier``) already takes float targets, so a
record's label simply carries the target; ``handcrafted`` and ``clip-head``
get linear heads fitted here on soft targets (logistic regression with each
image entered once as AI with weight ``t`` and once as human with weight
``1 - t``: the same cross-entropy).
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdetect.train.autopilot import format_cell
from synthdetect.train.datasets import Record

COMBINERS = ("max", "mean")
#: Students whose registry trainer feeds record labels, as floats, to BCE (train/trainer.py fit_classifier).
SOFT_RECORD_KINDS = ("small-cnn", "ela-cnn")
#: Students whose linear heads are fitted here on soft targets.
LINEAR_HEAD_KINDS = {"handcrafted": "handcrafted-v1", "clip-head": "clip-vit-b16-f32"}
STUDENT_KINDS = SOFT_RECORD_KINDS + tuple(LINEAR_HEAD_KINDS)

COMPARISON_COLUMNS = ["model", "role", "n_scored", "roc_auc", "average_precision", "tpr_at_fpr_0.05", "ece",
                      "accuracy", "images_per_second", "size_mb", "saw_held_out_sources"]


class DistillError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# targets


def combine_soft_labels(matrix: np.ndarray, how: str = "max") -> np.ndarray:
    """``(teachers, images)`` calibrated p_ai, NaN where a teacher did not judge -> one soft label per image.

    NaN where no teacher judged the image.
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    if how not in COMBINERS:
        raise DistillError(f"unknown combination '{how}' (one of {', '.join(COMBINERS)})")
    judged = ~np.isnan(matrix)
    out = np.full(matrix.shape[1], np.nan)
    any_vote = judged.any(axis=0)
    if how == "max":
        out[any_vote] = np.where(judged, matrix, -np.inf).max(axis=0)[any_vote]
    else:
        out[any_vote] = np.where(judged, matrix, 0.0).sum(axis=0)[any_vote] / judged.sum(axis=0)[any_vote]
    return out


def distill_targets(soft: np.ndarray, hard: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * soft + (1 - alpha) * hard``; the hard label alone where ``soft`` is NaN."""
    if not 0.0 <= alpha <= 1.0:
        raise DistillError(f"alpha must be between 0 and 1 (got {alpha})")
    soft = np.asarray(soft, dtype=np.float64)
    hard = np.asarray(hard, dtype=np.float64)
    return np.where(np.isnan(soft), hard, alpha * np.nan_to_num(soft) + (1.0 - alpha) * hard)


# ---------------------------------------------------------------------------------------------
# teachers


@dataclass
class Teacher:
    label: str  # unique display name
    name: str  # as given (model name or package path)
    model: Any
    size_bytes: int | None = None

    @property
    def card(self) -> dict[str, Any]:
        return self.model.card

    def training_sources(self) -> set[str]:
        split = (self.card.get("training") or {}).get("split") or {}
        return {s for part in ("train", "validation") for s in ((split.get(part) or {}).get("sources") or [])}

    def records_sources(self) -> bool:
        """Whether the card says which sources trained it; without that, "saw held-out?" cannot be answered."""
        split = (self.card.get("training") or {}).get("split") or {}
        return any("sources" in (split.get(part) or {}) for part in ("train", "validation"))

    def saw_held_out(self, held_out: Sequence[str]) -> list[str] | None:
        """Held-out sources this teacher trained or validated on; None when its card records no sources."""
        return sorted(self.training_sources() & set(held_out)) if self.records_sources() else None


#: The "saw held-out?" cell of a model whose card does not say what it was trained on.
UNKNOWN_SOURCES = "unknown (card records no sources)"


def load_teachers(names: Sequence[str]) -> list[Teacher]:
    from synthdetect.models import ModelPackageError, find_package, load_model
    from synthdetect.train.autopilot import package_bytes

    if not names:
        raise DistillError("give at least one --teacher")
    teachers: list[Teacher] = []
    seen: dict[str, int] = {}
    given: dict[str, str] = {}
    for name in names:
        key = _teacher_identity(name)
        if key in given:  # it would vote twice: double weight under --combine mean, a duplicate row everywhere
            also = "" if given[key] == name else f" (as '{given[key]}' and '{name}')"
            raise DistillError(f"teacher '{name}' is given twice{also}; each teacher votes once, so give it once")
        given[key] = name
        model = load_model(name)
        label = model.name
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        try:
            package = find_package(name)
            size = package_bytes(_with_routed_members(package.card, model), package.root)
        except ModelPackageError:  # a prefixed adapter (hf:...) has no package of ours to measure
            size = None
        teachers.append(Teacher(label, name, model, size))
    return teachers


def _teacher_identity(name: str) -> str:
    """What a teacher name means, without loading it: a package's resolved folder (``t``, ``./t/``, ``t/model.json``
    and ``/abs/t`` are one teacher), or the name itself for a prefixed adapter (``hf:...``)."""
    from synthdetect.models import adapter_for, shipped_package_dir

    if adapter_for(name) is not None:
        return name
    path = shipped_package_dir(name) or Path(name).expanduser()
    if path.is_file():  # a path to the card itself
        path = path.parent
    return str(path.resolve())


def _with_routed_members(card: dict[str, Any], model: Any) -> dict[str, Any]:
    """A router's card lists no weights of its own: its size is that of the models it routes to (``default``
    showed 0.000 MB beside a 0.3 MB student).  One card with every member's files, the CLIP encoder once."""
    members = list(getattr(model, "member_cards", {}).values())
    if not members:
        return card
    cards = [card, *members]
    files = {f"{i}:{role}": entry for i, c in enumerate(cards) for role, entry in (c.get("files") or {}).items()}
    return {"files": files, "members": [m for c in cards for m in c.get("members") or []]}


def cached_soft_labels(model: Any, records: Sequence[Record], cache: str | Path | None = None) -> np.ndarray | None:
    """Calibrated p_ai of a linear-head teacher from the on-disk feature cache; None for other kinds.

    Soft labels for hundreds of training images from three teachers cost
    three full feature passes through the Detector; teachers built on the same
    extractor (``handcrafted``, ``clip-head``) share one pass here.  The
    numbers are those of :meth:`MultiViewModel.logits` (same crops, same
    features, same members and stacker, same calibration and domain check);
    the comparison on held-out sources still goes through the Detector.
    """
    scored = cached_scores(model, records, cache)
    return None if scored is None else scored[0]


def cached_scores(model: Any, records: Sequence[Record], cache: str | Path | None = None):
    """``(p_ai, image facts, reasons)`` per record from the feature cache for a linear-head model, else None.

    ``reasons[i]`` says why record ``i`` has no score (decode failure, out of the model's domain).
    """
    from types import SimpleNamespace

    from synthdetect.models.view_features import MultiViewModel
    from synthdetect.train.wild_features import extract_cached

    if not isinstance(model, MultiViewModel):
        return None
    cached = extract_cached(records, model.policy, sorted(model.extractors), Path(cache) if cache else None,
                            description=f"{model.name}: cached features")
    where = {r.ref: i for i, r in enumerate(records)}
    p = np.full(len(records), np.nan)
    facts: list[dict[str, Any]] = [{} for _ in records]
    reasons: list[str | None] = [None] * len(records)
    for record, why in cached.failed:
        reasons[where[record.ref]] = why
    for j, (record, meta) in enumerate(zip(cached.records, cached.meta)):
        i = where[record.ref]
        facts[i] = {"format": meta.format, "width": meta.width, "height": meta.height, "bytes": meta.bytes}
        problem = model.out_of_domain(SimpleNamespace(size=(meta.width, meta.height)))
        if problem:
            reasons[i] = f"{record.ref}: not scored: {problem}"
            continue
        feats = {name: cached.views[name][j] for name in model.extractors}  # LinearMember handles missing crops
        z = np.array([m.logit(feats[m.extractor]) for m in model.members]) @ model.stack_weights + model.stack_bias
        p[i] = float(model.calibration(z))
    return p, facts, reasons


def score(model: Any, records: Sequence[Record], description: str, *, refuse_total_failure: bool = True):
    """Calibrated p_ai of ``model`` through the Detector (model only), with timing, as report Predictions.

    A teacher that raises on some images (an adapter given a shape it cannot take) ended the whole run with a
    traceback; it now loses its vote on those images, with the reason.  One that raises on every image is refused
    (``refuse_total_failure``); in the comparison, after the student is trained, it gets a row without metrics
    instead of ending the run (see :func:`unscored_line`).
    """
    from synthdetect.api import Detector
    from synthdetect.evaluate.report import predict_records

    predictions = predict_records(Detector(model, use_evidence=False), records, description=description)
    failed = [i for i, kind in enumerate(predictions.error_kinds) if kind == "model_error"]
    if refuse_total_failure and records and len(failed) == len(records):  # the Detector fails only those images
        raise DistillError(f"{model.name} fails on every image ({description}): {predictions.errors[failed[0]]}")
    return predictions


def no_score_kind(error_kind: str | None) -> str:
    """Why a model gave an image no score, from its verdict's ``error_kind``: none (it declined the image as outside
    its domain), ``model_error`` (it raised on it), anything else (the image could not be read)."""
    return {None: "outside its domain", "model_error": "failed"}.get(error_kind, "unreadable")


def unscored_line(label: str, predictions) -> str | None:
    """A comparison row's images left unscored, counted by why, in one line; None when every image was scored.

    A teacher that failed on every held-out image ended the run after the student had been trained and written,
    with no comparison at all."""
    missing = [i for i, p in enumerate(predictions.p_ai) if math.isnan(p)]
    if not missing:
        return None
    kinds: dict[str, int] = {}
    for i in missing:
        kind = no_score_kind(predictions.error_kinds[i] if predictions.error_kinds else None)
        kinds[kind] = kinds.get(kind, 0) + 1
    counted = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    n = len(predictions.p_ai)
    head = f"warning: {label} scored none of the {n} held-out images" if len(missing) == n else \
        f"{label}: {len(missing)} of {n} held-out images not scored"
    return f"{head} ({counted}); e.g. {predictions.errors[missing[0]]}"


def teacher_votes(teacher: Teacher, records: Sequence[Record], cache: str | Path | None = None,
                  use_cache: bool = True) -> tuple[np.ndarray, list[str | None]]:
    """A teacher's calibrated p_ai per record (NaN: no vote) and, where it gave none, why (kind, then reason).

    The kinds: ``outside its domain`` (the model declined the image), ``failed`` (it raised on it) and
    ``unreadable`` (the image could not be decoded).
    """
    fast = cached_scores(teacher.model, records, cache) if use_cache else None
    if fast is not None:
        p_ai, _, why = fast
        reasons = [None if not math.isnan(p) else ("outside its domain" if w and ": not scored: " in w else
                                                    "unreadable", w or "no score") for p, w in zip(p_ai, why)]
    else:
        predictions = score(teacher.model, records, f"teacher {teacher.label}: training images")
        p_ai = predictions.p_ai
        reasons = [None if not math.isnan(p) else (no_score_kind(kind), error or "no score")
                   for p, kind, error in zip(p_ai, predictions.error_kinds or [None] * len(records),
                                             predictions.errors)]
    return p_ai, [None if r is None else f"{r[0]}: {r[1]}" for r in reasons]


@dataclass
class VoteCount:
    """How many training images a teacher voted on, and why not on the others: a teacher that declined every image
    (another size range, another domain) added nothing to the soft labels, and nothing said so."""

    n: int
    voted: int
    reasons: list[str | None]

    @classmethod
    def of(cls, p_ai: np.ndarray, reasons: list[str | None]) -> "VoteCount":
        return cls(len(p_ai), int(np.isfinite(p_ai).sum()), list(reasons))

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.reasons:
            if reason:
                kind = reason.split(": ", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def example(self) -> str | None:
        return next((r.split(": ", 1)[1] for r in self.reasons if r), None)

    def line(self, label: str) -> str | None:
        """One line for the console, or None when the teacher voted on every image."""
        missing = self.n - self.voted
        if not missing:
            return None
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.by_kind().items())
        if not self.voted:
            return (f"warning: teacher {label} gave no vote on any of the {self.n} training images ({kinds}), so it "
                    f"adds nothing to the soft labels; e.g. {self.example()}")
        return f"teacher {label}: no vote on {missing} of {self.n} training images ({kinds}); e.g. {self.example()}"

    def card_entry(self) -> dict[str, Any]:
        return {"training_images_voted": self.voted, "training_images_without_vote": self.by_kind(),
                **({"without_vote_example": self.example()} if self.voted < self.n else {})}


def refuse_one_sided_targets(kind: str, targets: np.ndarray, hard: np.ndarray, soft: np.ndarray, alpha: float,
                             combine: str = "max") -> None:
    """The CNN trainers refuse a training set on one side of 0.5 (one class); with soft targets that can happen
    though the data holds both classes, when the teachers outvote every label of one class.  The trainer's
    "training needs images of both classes, and has 16 human, 0 ai" came as a traceback and contradicted the data."""
    if kind not in SOFT_RECORD_KINDS or len(set(hard.tolist())) < 2:
        return
    ai = targets >= 0.5
    if ai.any() and not ai.all():
        return
    side, other = ("human", "ai") if not ai.any() else ("ai", "human")
    wrong = int(((soft >= 0.5) == (side == "ai"))[hard == (1 if other == "ai" else 0)].sum())
    n_other = int((hard == (1 if other == "ai" else 0)).sum())
    other_combine = "max" if side == "human" else "mean"  # the combination that leans the other way
    raise DistillError(
        f"every training target is on the {side} side of 0.5: the teachers' combined p_ai ({combine}) calls {wrong} "
        f"of the {n_other} {other} training images {side}, and --alpha {alpha} gives it the larger weight, so the "
        f"{kind} student would learn one class; lower --alpha below 0.5 (the label then decides each image's side)"
        + (f", try --combine {other_combine}" if combine != other_combine else "") + ", or check the teachers")


# ---------------------------------------------------------------------------------------------
# students


def _soft_records(records: Sequence[Record], targets: np.ndarray) -> list[Record]:
    # Record.label carries the float target; the torch trainers turn labels into float32 BCE targets as they are.
    return [replace(r, label=float(t)) for r, t in zip(records, targets)]


def train_student(kind: str, request, targets: np.ndarray):
    """Train the student ``kind`` on ``request.train`` with ``targets`` (one per train record)."""
    from synthdetect.train.registry import get_trainer

    if kind in SOFT_RECORD_KINDS:
        hard = list(request.train)
        package = get_trainer(kind)(replace(request, train=_soft_records(hard, targets)))
        return package, hard
    if kind in LINEAR_HEAD_KINDS:
        return train_soft_linear_heads(request, targets, LINEAR_HEAD_KINDS[kind], kind), list(request.train)
    raise DistillError(f"student kind '{kind}' cannot learn from soft labels here (one of {', '.join(STUDENT_KINDS)})")


def fit_soft_member(data, idx: np.ndarray, targets: np.ndarray, spec, seed: int = 0):
    """A linear head on soft targets: each row once as AI (weight t) and once as human (weight 1 - t).

    Scikit-learn's logistic regression takes only hard labels; with these
    weights its loss is exactly the cross-entropy against ``t``.  Crops are
    weighted 1/k so every image counts once, and the two hard classes carry
    equal weight, as in the hard-label heads (train/wild.py).
    """
    from sklearn.linear_model import LogisticRegression

    from synthdetect.models.view_features import LinearMember
    from synthdetect.train.wild import HEAD_C

    if spec.view == "global":
        x = data.global_feats[spec.extractor][idx]
        t = targets
        hard = data.labels[idx]
        w = np.ones(len(idx))
    else:
        rows = [data.crop_feats[spec.extractor][i] for i in idx]
        x = np.concatenate(rows)
        t = np.concatenate([np.full(len(r), targets[j]) for j, r in enumerate(rows)])
        hard = np.concatenate([np.full(len(r), data.labels[i]) for r, i in zip(rows, idx)])
        w = np.concatenate([np.full(len(r), 1.0 / len(r)) for r in rows])
    for cls in (0, 1):
        m = hard == cls
        if m.any():
            w[m] *= 0.5 * w.sum() / w[m].sum()
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    model = LogisticRegression(C=HEAD_C[spec.extractor], max_iter=3000, random_state=seed)
    model.fit(np.concatenate([z, z]), np.concatenate([np.ones(len(z)), np.zeros(len(z))]),
              sample_weight=np.concatenate([w * t, w * (1.0 - t)]))
    return LinearMember(spec.extractor, spec.view, mean, scale, model.coef_[0].astype(np.float64),
                        float(model.intercept_[0]), spec.aggregate)


def train_soft_linear_heads(request, targets: np.ndarray, extractor: str, kind: str):
    """The ``clip-head``/``handcrafted`` package layout (global + crop-mean heads, stacker on validation), soft heads."""
    from synthdetect.models.multicrop import CropPolicy
    from synthdetect.train.wild_trainers import train_linear_heads

    target_of = {r.ref: float(t) for r, t in zip(request.train, targets)}
    crops = CropPolicy(size=int(request.options.get("crop_size", 224)),
                       native_crops=int(request.options.get("crops", 4))).native_crops

    def fit_soft(data, train, spec, seed):
        return fit_soft_member(data, train, np.array([target_of[data.names[i]] for i in train]), spec, seed)

    return train_linear_heads(
        request, extractor, kind, fit=fit_soft,
        description=f"Distilled student: linear heads on {extractor} features of a global view and "
                    f"{crops} native crops, fitted on teachers' soft labels.")


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class DistillResult:
    student_package: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path


def _metrics_row(name: str, role: str, predictions, metrics: dict[str, Any], size_bytes: int | None,
                 saw: Sequence[str] | None) -> dict[str, Any]:
    """``saw``: the held-out sources the model trained on; None when that is unknown (not the same as "no")."""
    overall = metrics.get("overall", {})
    n = len(predictions.records)
    return {
        "model": name, "role": role, "n_scored": metrics["n_scored"],
        **{k: overall.get(k) for k in ("roc_auc", "average_precision", "tpr_at_fpr_0.05", "ece", "accuracy")},
        "images_per_second": round(n / predictions.seconds, 2) if predictions.seconds else None,
        "size_mb": None if size_bytes is None else round(size_bytes / 1e6, 3),
        "saw_held_out_sources": UNKNOWN_SOURCES if saw is None else ", ".join(saw) if saw else "no",
    }


def _write_soft_labels(path: Path, records: Sequence[Record], teachers: Sequence[Teacher], matrix: np.ndarray,
                       soft: np.ndarray, targets: np.ndarray, votes: Sequence[VoteCount] = ()) -> None:
    """One row per training image; ``no_vote`` says why each teacher whose cell is empty gave no vote."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ref", "source", "generator", "label"] + [f"p_ai:{t.label}" for t in teachers]
                        + ["soft", "target", "no_vote"])
        for i, r in enumerate(records):
            why = [f"{t.label}: {v.reasons[i]}" for t, v in zip(teachers, votes) if v.reasons[i]]
            writer.writerow([r.ref, r.source or "", r.generator or "", r.label]
                            + ["" if math.isnan(v) else f"{v:.6f}" for v in matrix[:, i]]
                            + ["" if math.isnan(soft[i]) else f"{soft[i]:.6f}", f"{targets[i]:.6f}", " | ".join(why)])


def student_fingerprint(teachers: Sequence[Teacher], records: Sequence[Record], split, student_kind: str,
                        alpha: float, combine: str, options: dict[str, Any], config) -> dict[str, Any]:
    """What the student's checkpoint (``OUT/student/_work``) must match to be resumed.

    Without it the training loop compared only its own settings and image counts, so a retry with other
    teachers, another alpha or other images of the same count resumed the earlier run's epochs on new targets.
    """
    from dataclasses import asdict

    from synthdetect.train.commands import dataset_identity

    def digest(obj: Any) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

    loop = {k: v for k, v in asdict(config).items() if k not in ("threads", "device", "fingerprint", "extra")}
    return {"teachers": [digest(t.card) for t in teachers], "alpha": alpha, "combine": combine,
            "student": student_kind, "student options": digest({k: v for k, v in options.items() if k != "cache"}),
            "training settings": digest(loop), "dataset": dataset_identity(records), "split": digest(split.describe())}


def finished_epochs(checkpoint: Path) -> int | None:
    """Epochs a student checkpoint holds, None when there is none; one that cannot be read is one line.

    The training loop now writes its checkpoint whole or not at all, but one cut by an older version, a disk
    fault or a copy made part-way would otherwise end every retry in a torch traceback."""
    if not checkpoint.is_file():
        return None
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        return int(state["epoch"]) + 1
    except Exception as exc:  # a truncated zip, a foreign pickle: torch raises many kinds
        why = " ".join(str(exc).split())[:160]
        raise DistillError(f"{checkpoint} cannot be read ({type(exc).__name__}: {why}); a run stopped while writing "
                           f"it leaves it so: delete it to train the student from the start") from None


class DistillInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; ``message`` says what is on disk and how to go on.  A KeyboardInterrupt
    (its args the signal number, as the scan's and the autopilot's), so a caller that stops on Ctrl-C still does."""

    def __init__(self, message: str, signum: int):
        super().__init__(signum)
        self.message, self.signum = message, signum

    def __str__(self) -> str:
        return self.message


@dataclass
class _Stage:
    now: str = "teachers"  # teachers -> student -> compare


@contextmanager
def explained_interrupts(out: Path, student_kind: str):
    """Ctrl-C (or SIGTERM) ended a distillation silently with status 130: nothing said whether the student's
    epochs were kept or how to resume them.  It now raises :class:`DistillInterrupted` saying so."""
    from synthdetect.interrupts import interrupt_signal, sigterm_raises

    stage = _Stage()
    try:
        with sigterm_raises(KeyboardInterrupt):
            yield stage
    except KeyboardInterrupt as exc:
        signum = interrupt_signal(exc)
        raise DistillInterrupted(interrupted_state(out, student_kind, stage.now), signum) from None


def interrupted_state(out: Path, student_kind: str, stage: str) -> str:
    """What an interrupted distillation left in ``out``, and what running the same command again does."""
    student = out / "student"
    if stage == "compare":
        return (f"the student is complete in {student}, but the comparison on held-out sources was not finished, "
                f"so {out / 'comparison.csv'} and {out / 'report.html'} are missing or an earlier run's; running the "
                f"same command again trains the student again")
    checkpoint = student / "_work" / "checkpoint.pt"
    done = "the teachers were scoring the training images, so no student was trained" if stage == "teachers" else \
        "no student was written"
    if checkpoint.is_file():
        left = (f"{checkpoint} holds the student's epochs finished so far; run the same command again to resume "
                f"them (the teachers score the training images again first)")
    elif stage == "student" and student_kind in LINEAR_HEAD_KINDS:
        left = "linear heads are fitted in one go, so there is nothing to resume; run the same command again"
    elif stage == "student":
        left = "no student epoch had finished, so there is nothing to resume; run the same command again"
    else:
        left = "there is nothing to resume; run the same command again"
    earlier = (f"; {student} holds an earlier run's student, not this run's" if (student / "model.json").is_file()
               else "")
    return f"{done}; {left}{earlier}"


def run_distillation(teachers: Sequence[str], student_kind: str, records: Sequence[Record], out: str | Path,
                     **options: Any) -> DistillResult:
    """``_run_distillation``, one run per ``out`` at a time: two runs into one folder shared the student's
    checkpoint and staging folder (``models.package.exclusive_out``)."""
    from synthdetect.models.package import OutInUse, exclusive_out

    try:
        with exclusive_out(out):
            return _run_distillation(teachers, student_kind, records, out, **options)
    except OutInUse as exc:
        raise DistillError(str(exc)) from None


def _run_distillation(
    teachers: Sequence[str],
    student_kind: str,
    records: Sequence[Record],
    out: str | Path,
    *,
    alpha: float = 0.7,
    combine: str = "max",
    holdout_sources: Sequence[str] = (),
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    input_size: int = 128,
    epochs: int = 15,
    seed: int = 0,
    threads: int | None = None,
    data: str | None = None,
    command: str | None = None,
    options: dict[str, Any] | None = None,
    config: Any = None,
    console: Any = None,
    use_cache: bool = True,
) -> DistillResult:
    """Score the training images with every teacher, train the student on the combined soft labels, compare all."""
    from rich.console import Console

    from synthdetect.evaluate.report import Predictions, compute_metrics, write_report
    from synthdetect.models import load_model
    from synthdetect.models.package import load_package, staged_package, write_package
    from synthdetect.train.autopilot import package_bytes
    from synthdetect.train.commands import replaced_package
    from synthdetect.train.registry import TrainRequest
    from synthdetect.train.splits import split_records
    from synthdetect.train.trainer import CheckpointMismatch, TrainConfig, check_checkpoint, set_threads

    if student_kind not in STUDENT_KINDS:
        raise DistillError(f"student kind '{student_kind}' cannot learn from soft labels here "
                           f"(one of {', '.join(STUDENT_KINDS)})")
    if combine not in COMBINERS:
        raise DistillError(f"unknown combination '{combine}' (one of {', '.join(COMBINERS)})")
    if not 0.0 <= alpha <= 1.0:
        raise DistillError(f"alpha must be between 0 and 1 (got {alpha})")
    out = Path(out)
    threads = set_threads(threads)
    split = split_records(records, "source", val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                          holdout_sources=holdout_sources)
    if len({r.label for r in split.test}) < 2:
        raise DistillError("the held-out sources need both AI and human images; name them with --holdout-source")
    for part, rows in (("training", split.train), ("validation", split.val)):  # the trainers refused in a traceback
        ai = sum(r.label == 1 for r in rows)
        if ai in (0, len(rows)):
            raise DistillError(f"the {part} sources need both AI and human images, and hold {ai} AI and "
                               f"{len(rows) - ai} human; choose other --holdout-source or --val-fraction")
    held_out = sorted(split.held_out_sources)
    out.mkdir(parents=True, exist_ok=True)  # after the refusals: a refused run left an empty OUT behind
    with explained_interrupts(out, student_kind) as stage:
        loaded = load_teachers(teachers)
        student_dir = out / "student"
        config = config or TrainConfig(epochs=epochs, patience=4, batch_size=32, lr=2e-3, seed=seed, threads=threads)
        student_options = {"input_size": input_size, "max_short_side": 0, "max_aspect": 4.0, "width": 16}
        if student_kind in LINEAR_HEAD_KINDS:
            student_options = {}
        student_options.update(options or {})
        if not config.fingerprint:  # a copy: the caller's config may serve another run
            config = replace(config, fingerprint=student_fingerprint(loaded, records, split, student_kind, alpha,
                                                                     combine, student_options, config))
        checkpoint = student_dir / "_work" / "checkpoint.pt"
        finished = finished_epochs(checkpoint)
        try:  # before the teachers score anything: a retry resumes only its own run's epochs
            check_checkpoint(checkpoint, config.fingerprint)
        except CheckpointMismatch as exc:
            raise DistillError(str(exc)) from None
        started = time.perf_counter()
        say = (console or Console(stderr=True)).print
        say(f"distill: {len(split.train)} train / {len(split.val)} validation / {len(split.test)} held-out images; "
            f"held-out sources: {', '.join(held_out)}; {len(loaded)} teachers, student {student_kind}, "
            f"alpha {alpha}, combine {combine}", highlight=False, markup=False, soft_wrap=True)
        if finished is not None:  # said up front: the teachers score the training images again before it resumes
            say(f"resuming the student from {checkpoint} ({finished} epoch{'s' if finished != 1 else ''} finished); "
                f"the teachers score the training images again first", highlight=False, markup=False, soft_wrap=True)

        # 1. soft labels on the training images
        train_preds, votes = [], []
        for t in loaded:
            say(f"teacher {t.label}: scoring {len(split.train)} training images", highlight=False, markup=False)
            p_ai, reasons = teacher_votes(t, split.train, (options or {}).get("cache"), use_cache)
            train_preds.append(p_ai)
            votes.append(VoteCount.of(p_ai, reasons))
            line = votes[-1].line(t.label)
            if line:
                say(line, highlight=False, markup=False, soft_wrap=True)
        matrix = np.stack(train_preds)
        soft = combine_soft_labels(matrix, combine)
        hard = np.array([r.label for r in split.train], dtype=np.float64)
        targets = distill_targets(soft, hard, alpha)
        _write_soft_labels(out / "soft_labels.csv", split.train, loaded, matrix, soft, targets, votes)
        refuse_one_sided_targets(student_kind, targets, hard, soft, alpha, combine)
        teacher_seconds = time.perf_counter() - started

        # 2. the student, written beside OUT/student and renamed into place once its card is complete: trained in
        # place, a run stopped after the weights left them beside the earlier student's card (sha256 mismatch).
        # Its _work links to OUT/student/_work, where a retry resumes from, as before.
        stage.now = "student"
        replaced = replaced_package(student_dir)
        if replaced:
            say(f"note: {student_dir} holds a model package ({replaced}); this run replaces it when the student is "
                f"trained", markup=False, highlight=False)
        from synthdetect.train.registry import record_summary

        with staged_package(student_dir, link_work=True) as staging:
            request = TrainRequest(
                train=split.train, val=split.val, test=split.test, out=staging, name=f"distilled-{student_kind}",
                seed=seed, threads=threads, options=student_options, command=command, config=config, data=data,
                split=split.describe(),
            )
            say(f"student {student_kind}: training on {len(split.train)} images (soft labels from "
                f"{int((~np.isnan(soft)).sum())})", highlight=False)
            t0 = time.perf_counter()
            package, hard_train = train_student(student_kind, request, targets)
            student_seconds = time.perf_counter() - t0
            voted = ~np.isnan(soft)
            agree = voted & ((soft >= 0.5) == (hard == 1))
            card = dict(package.card)
            card.setdefault("training", {}).setdefault("split", {})["train"] = record_summary(hard_train)
            card["distillation"] = {
                "teachers": [{"name": t.label, "source": t.name, "kind": t.card.get("kind"),
                              "version": t.card.get("version"), "trained_on_sources": sorted(t.training_sources()),
                              **v.card_entry()}
                             for t, v in zip(loaded, votes)],
                "combine": combine, "alpha": alpha,
                "loss": "binary cross-entropy with logits against alpha * soft + (1 - alpha) * hard",
                "soft_labels": "each teacher's calibrated p_ai (the Detector's numbers, model only; linear-head "
                               "teachers read from the feature cache); combined per image by " + combine,
                "train_images": len(hard), "images_with_a_teacher_vote": int(voted.sum()),
                "teacher_agreement_with_hard_labels": float(agree.sum() / max(voted.sum(), 1)),
                "mean_soft_on_ai_images": _nanmean(soft[hard == 1]),
                "mean_soft_on_human_images": _nanmean(soft[hard == 0]),
                "teacher_seconds": round(teacher_seconds, 1), "student_seconds": round(student_seconds, 1),
            }
            files = {role: staging / entry["path"] for role, entry in (card.get("files") or {}).items()}
            write_package(staging, card, files)
            load_package(staging)

        # 3. every model on the same held-out sources
        stage.now = "compare"
        rows: list[dict[str, Any]] = []
        reports = out / "reports"
        report_dirs = _report_dirs([t.label for t in loaded])
        test_preds: dict[str, Predictions] = {}
        say(f"comparing on {len(split.test)} held-out images", highlight=False)
        for t in loaded:
            preds = score(t.model, split.test, f"teacher {t.label}: held-out", refuse_total_failure=False)
            test_preds[t.label] = preds
            line = unscored_line(f"teacher {t.label}", preds)
            if line:
                say(line, highlight=False, markup=False, soft_wrap=True)
            metrics = write_report(preds, reports / report_dirs[t.label],
                                   title=f"teacher {t.label} on held-out sources")
            rows.append({**_metrics_row(t.label, "teacher", preds, metrics, t.size_bytes, t.saw_held_out(held_out)),
                         "report_dir": report_dirs[t.label]})
        combined = combine_soft_labels(np.stack([p.p_ai for p in test_preds.values()]), combine)
        first = next(iter(test_preds.values()))
        ensemble = Predictions(records=first.records, p_ai=combined, labels=first.labels,
                               errors=[None if not math.isnan(p) else "no teacher judged it" for p in combined],
                               model_name=f"teachers ({combine})", seconds=sum(p.seconds for p in test_preds.values()),
                               verdicts=[None] * len(combined), images=first.images)
        metrics = compute_metrics(ensemble)
        saw_any = sorted({s for t in loaded for s in (t.saw_held_out(held_out) or [])})
        unknown = any(t.saw_held_out(held_out) is None for t in loaded)
        rows.append(_metrics_row(f"teachers combined ({combine})", "ensemble", ensemble, metrics, None,
                                 None if unknown and not saw_any else saw_any))
        student_model = load_model(str(student_dir))
        student_preds = score(student_model, split.test, "student: held-out", refuse_total_failure=False)
        line = unscored_line(f"the student {student_model.name}", student_preds)
        if line:
            say(line, highlight=False, markup=False, soft_wrap=True)
        student_metrics = write_report(student_preds, reports / "student",
                                       title=f"distilled student ({student_kind}) on held-out sources")
        rows.append(_metrics_row(student_model.name, "student", student_preds, student_metrics,
                                 package_bytes(card, student_dir), []))
        summary = {
            "schema": "synthdetect.distill/1", "student": str(student_dir), "student_kind": student_kind,
            "alpha": alpha, "combine": combine, "data": data, "command": command, "seed": seed,
            "split": {**split.describe(), "train": len(split.train), "validation": len(split.val),
                      "test": len(split.test), "test_ai": sum(r.label for r in split.test),
                      "test_human": sum(1 - r.label for r in split.test)},
            "distillation": card["distillation"],
            "student_vs_teachers": student_vs_teachers(rows),
        }
        _write_comparison(rows, summary, out)
        _write_report(rows, summary, out, student_preds, student_metrics)
        return DistillResult(student_package=student_dir, rows=rows, summary=summary, out=out)


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _report_dirs(labels: Sequence[str]) -> dict[str, str]:
    """A folder under ``reports/`` per teacher, never shared: ``a/b`` and ``a_b`` clean up alike, and a teacher
    named ``student`` met the student's folder; the later report overwrote the earlier and links crossed."""
    taken, out = {"student"}, {}
    for label in labels:
        base = _safe(label) or "teacher"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        out[label] = name
    return out


def student_vs_teachers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per teacher: the student's held-out ROC-AUC, TPR at 5% FPR and ECE minus the teacher's."""
    student = next(r for r in rows if r["role"] == "student")
    out = []
    for row in rows:
        if row["role"] == "student":
            continue
        diff: dict[str, Any] = {"versus": row["model"]}
        for key in ("roc_auc", "tpr_at_fpr_0.05", "ece"):
            a, b = student.get(key), row.get(key)
            diff[f"delta_{key}"] = None if a is None or b is None else round(a - b, 4)
        auc = diff["delta_roc_auc"]
        diff["student_better_auc"] = None if auc is None else auc > 0
        out.append(diff)
    return out


def comparison_table(result: DistillResult):
    from rich.table import Table
    from rich.text import Text

    split = result.summary["split"]
    table = Table(title=f"student vs teachers on held-out sources {', '.join(split.get('test_sources', []))} "
                        f"({split['test_ai']} AI, {split['test_human']} human)", header_style="bold")
    headers = {"n_scored": "scored", "roc_auc": "AUC", "average_precision": "AP", "tpr_at_fpr_0.05": "TPR@5%FPR",
               "ece": "ECE", "accuracy": "acc@0.5", "images_per_second": "img/s", "size_mb": "MB",
               "saw_held_out_sources": "saw held-out?"}
    for col in COMPARISON_COLUMNS:
        table.add_column(headers.get(col, col), justify="left" if col in ("model", "role") else "right")
    for row in result.rows:
        table.add_row(*[Text(format_cell(row.get(c))) for c in COMPARISON_COLUMNS],  # Text: paths are not markup
                      style="bold" if row["role"] == "student" else None)
    return table


def _write_comparison(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> None:
    with open(out / "comparison.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COMPARISON_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in COMPARISON_COLUMNS} for r in rows])
    (out / "comparison.json").write_text(json.dumps({**summary, "comparison": rows}, indent=2, default=str) + "\n")


def _write_report(rows, summary, out: Path, student_preds, student_metrics) -> None:
    """``report.html``: the comparison table, then the student's full held-out evaluation; each teacher's beside it."""
    from synthdetect.evaluate.report import render_html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in COMPARISON_COLUMNS + ["report"])
    body = []
    for row in rows:
        cells = "".join(f"<td>{html.escape(format_cell(row.get(c)))}</td>" for c in COMPARISON_COLUMNS)
        name = "student" if row["role"] == "student" else row.get("report_dir")
        path = out / "reports" / name / "report.html" if name else out / "no report"
        link = f"<a href='{html.escape(os.path.relpath(path, out))}'>report</a>" if path.exists() else "–"
        body.append(f"<tr>{cells}<td>{link}</td></tr>")
    d = summary["distillation"]
    split = summary["split"]
    note = (f"Student trained on BCE against alpha*soft + (1-alpha)*hard with alpha={summary['alpha']}, soft = "
            f"{summary['combine']} of the teachers' calibrated p_ai ({d['images_with_a_teacher_vote']} of "
            f"{d['train_images']} training images had a teacher vote; teachers agreed with the hard label on "
            f"{d['teacher_agreement_with_hard_labels']:.1%}). All rows: the same held-out sources "
            f"{', '.join(split.get('test_sources', []))}, model only (no provenance evidence). "
            f"'saw held-out?' names held-out sources a teacher was trained or validated on.")
    section = (f"<h2>Student vs teachers</h2><p class='note'>{html.escape(note)}</p>"
               f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    page = render_html(student_preds, student_metrics, title="Distilled student on held-out sources")
    page = page.replace("</h1>", "</h1>" + section + "<h2>The student on held-out sources</h2>", 1)
    (out / "report.html").write_text(page)
