"""The registry of trainers: ``synthdetect train --model KIND`` dispatches through it.

How to add a model kind (as ``small-cnn`` and ``ela-cnn`` do in
``synthdetect/train/small_image.py``)::

    from synthdetect.train.registry import TrainRequest, finalize_package, register_trainer

    @register_trainer("my-kind")
    def train_my_kind(request: TrainRequest) -> ModelPackage:
        ...fit on request.train, early-stop on request.val...
        return finalize_package(request, kind="my-kind", card={...architecture, input...},
                                val_logits=..., val_labels=..., test_logits=..., test_labels=...,
                                files={"weights": request.out / "weights.pt"})

then add the module to :data:`TRAINER_MODULES` so the registry imports it on
first use (lazily: importing a trainer may pull heavy libraries).  The card
written by :func:`finalize_package` carries what ``Detector.load`` and the
fusion step read: ``calibration``, ``thresholds``, ``decision``, plus
``input``, ``metrics`` and ``training`` for people.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

import numpy as np

from synthdetect.evaluate.calibration import Calibration, operating_points
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.lazy_registry import LazyRegistry
from synthdetect.models.package import ModelPackage, write_package
from synthdetect.train.augment import AugmentConfig
from synthdetect.train.datasets import Record
from synthdetect.train.trainer import TrainConfig, config_dict


class TrainerError(ValueError):
    """An unknown kind, or a kind whose module is not installed."""


@dataclass
class TrainRequest:
    """Everything a trainer needs; kind-specific settings go in ``options``."""

    train: list[Record]
    val: list[Record]
    test: list[Record]
    out: Path
    name: str
    seed: int = 0
    threads: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    options: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None
    #: how the split was made (method, seed, held-out sources), copied to the card
    split: dict[str, Any] = field(default_factory=dict)
    calibration: str = "temperature"
    fprs: tuple[float, ...] = (0.01, 0.05)


def option_flag(value: Any) -> bool:
    """A ``--option KEY=VALUE`` switch: options arrive as strings, so ``bool("false")`` would read as on.

    A word that is neither (``tta_hflip=maybe``, ``=ture``) is a ValueError: it had read silently as off."""
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", "", "none"):
        return False
    raise ValueError(f"{value!r} is not a switch value (true/false, yes/no, on/off, 1/0)")


Trainer = Callable[[TrainRequest], ModelPackage]
#: kind -> module that registers its trainer when imported.
TRAINERS: LazyRegistry[Trainer] = LazyRegistry({
    "small-cnn": "synthdetect.train.small_image",
    "ela-cnn": "synthdetect.train.small_image",
    "small-pair": "synthdetect.train.small_pair",
    "clip-cascade": "synthdetect.train.clip_cascade",
    "clip-head": "synthdetect.train.wild_trainers",
    "handcrafted": "synthdetect.train.wild_trainers",
    "efficientnet-lite0": "synthdetect.models.efficientnet_lite",
    "efficientnet-lite1": "synthdetect.models.efficientnet_lite",
    "efficientnet-lite2": "synthdetect.models.efficientnet_lite",
})
TRAINER_MODULES = TRAINERS.modules
#: kinds that do not train by gradient descent in the torch loop, so its settings (epochs, lr, ...) mean nothing
_NO_TORCH_LOOP: set[str] = set()


def register_trainer(kind: str, *, torch_loop: bool = True) -> Callable[[Trainer], Trainer]:
    """``torch_loop=False`` declares that the kind ignores :class:`TrainConfig` and augmentation, so that
    ``synthdetect train`` can refuse those settings instead of dropping them without a word."""
    def deco(fn: Trainer) -> Trainer:
        TRAINERS.register(kind)(fn)
        if not torch_loop:
            _NO_TORCH_LOOP.add(kind)
        return fn

    return deco


def uses_torch_loop(kind: str) -> bool:
    get_trainer(kind)  # imports the module that declares it
    return kind not in _NO_TORCH_LOOP


def trainer_kinds() -> list[str]:
    return TRAINERS.names()


def get_trainer(kind: str) -> Trainer:
    if kind not in TRAINERS:
        raise TrainerError(f"unknown model kind '{kind}' (available: {', '.join(trainer_kinds())})")
    try:
        trainer = TRAINERS.get(kind)
    except ModuleNotFoundError as exc:
        raise TrainerError(f"model kind '{kind}' is not available: {exc.name} is not installed "
                           f"(module {TRAINER_MODULES[kind]})") from exc
    if trainer is None:
        raise TrainerError(f"model kind '{kind}': module {TRAINER_MODULES.get(kind)} registers no trainer for it")
    return trainer


def record_summary(records: list[Record], unreadable: Collection[str] = ()) -> dict[str, Any]:
    """What a split used: records whose ref is in ``unreadable`` (they could not be read) are counted apart."""
    used = [r for r in records if r.ref not in unreadable]
    out: dict[str, Any] = {"n": len(used), "ai": sum(r.label for r in used), "human": sum(1 - r.label for r in used)}
    if len(used) < len(records):
        out["unreadable"] = len(records) - len(used)
    sources = sorted({r.source for r in used if r.source})
    if sources:
        out["sources"] = sources
    return out


def band_counts(p: np.ndarray, y: np.ndarray, decision: dict[str, float]) -> dict[str, Any]:
    """Counts per true class of the three served verdicts at the card's thresholds."""
    ai = p >= decision["ai_at_or_above"]
    human = p < decision["human_below"]
    uncertain = ~(ai | human)
    out = {}
    for name, cls in (("ai_images", 1), ("human_images", 0)):
        m = y == cls
        out[name] = {"ai": int((ai & m).sum()), "human": int((human & m).sum()), "uncertain": int((uncertain & m).sum())}
    decided = ai | human
    correct = (ai & (y == 1)) | (human & (y == 0))
    out["accuracy_when_decided"] = float(correct.sum() / max(decided.sum(), 1))
    out["fraction_uncertain"] = float(uncertain.mean()) if uncertain.size else None
    return out


def calibration_warnings(calibration: Calibration, points: dict[str, Any]) -> list[str]:
    """One line each when the validation data could not support the calibration or the thresholds as usual
    (the card records the same facts: ``calibration.fit`` and ``decision.uncertain_band_empty``)."""
    lines = [calibration.warning] if calibration.warning else []
    if points["decision"].get("uncertain_band_empty"):
        lines.append("the uncertain band is empty (the human threshold reaches the ai threshold on validation data)")
    for entry in points["thresholds"].values():
        if entry.get("note"):
            lines.append(entry["note"])
    return lines


def finalize_package(
    request: TrainRequest,
    *,
    kind: str,
    card: dict[str, Any],
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray | None,
    test_labels: np.ndarray | None,
    files: dict[str, Path],
    training: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    unreadable: Iterable[Record] = (),
) -> ModelPackage:
    """Calibrate on validation logits, choose thresholds for stated FPRs, score the test set, write the package.

    Thresholds come from validation data only; the test numbers on the card
    are measured at those thresholds, never chosen on them.  ``unreadable``: the records the trainer could not
    read; each split's counts on the card are of the images it used, with how many it could not read.
    """
    failed = {r.ref for r in unreadable}
    val_labels = np.asarray(val_labels)
    if len(np.unique(val_labels)) < 2:
        raise TrainerError("the validation split needs both AI and human images to calibrate and set thresholds")
    calibration = Calibration.fit(val_logits, val_labels, request.calibration)
    p_val = calibration(val_logits)
    points = operating_points(p_val, val_labels, request.fprs, decide_fpr=request.fprs[0])  # the first --fpr decides
    for line in calibration_warnings(calibration, points):
        print(f"warning: {request.name}: {line}", file=sys.stderr)
    metrics: dict[str, Any] = {"validation": binary_metrics(p_val, val_labels, 0.5)}
    if test_logits is not None and test_labels is not None and len(test_labels):
        test_labels = np.asarray(test_labels)
        p_test = calibration(test_logits)
        test: dict[str, Any] = {"at_0.5": binary_metrics(p_test, test_labels, 0.5)}
        first = f"fpr_{request.fprs[0]:g}"
        if len(np.unique(test_labels)) == 2 or (test_labels == 0).any():
            test[f"at_{first}_threshold"] = binary_metrics(p_test, test_labels, points["thresholds"][first]["threshold"])
        test["verdict_bands"] = band_counts(p_test, test_labels, points["decision"])
        metrics["test"] = test
    out: dict[str, Any] = {"name": request.name, "version": card.pop("version", "1.0.0"), "kind": kind}
    out.update(card)
    out["training"] = {
        "data": request.data, "command": request.command, "config": config_dict(request.config),
        # kinds that fit heads on frozen features never augment: their card must not say they did
        **({"augment": request.augment.to_dict(), "augment_spec": request.augment.spec()}
           if kind not in _NO_TORCH_LOOP else {"augment": None}),
        "options": request.options,
        "split": {**request.split, "seed": request.seed, **{
            part: record_summary(records, failed)
            for part, records in (("train", request.train), ("validation", request.val), ("test", request.test))}},
        **(training or {}),
    }
    out["calibration"] = calibration.to_dict()
    out.update(points)
    out["metrics"] = metrics
    if history is not None:
        out["history"] = history
    return write_package(request.out, out, files)
