"""``synthdetect train``: build a model package from a labelled dataset, for any registered kind."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def parse_label_map(items: list[str] | None) -> dict[str, int] | None:
    """``["synthetic=ai", "photo=human"]`` -> ``{"synthetic": 1, "photo": 0}``."""
    from synthdetect.train.datasets import AI, HUMAN

    if not items:
        return None
    mapping = {}
    for item in items:
        name, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep or value not in ("ai", "human"):
            raise typer.BadParameter(f"'{item}': expected NAME=ai or NAME=human", param_hint="--label")
        mapping[name.strip().lower()] = AI if value == "ai" else HUMAN
    return mapping


def parse_options(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs; values parsed as JSON when they can be (numbers, booleans), else kept as text."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"'{item}': expected KEY=VALUE", param_hint="--option")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def out_dir_problem(out: Path) -> str | None:
    """Why ``-o OUT`` cannot become a directory (a file is in the way), said before any work rather than after."""
    for path in (out, *out.parents):
        if path.exists():
            return None if path.is_dir() else f"{out}: {'exists and is' if path == out else f'{path} is'} a file, not a directory"
    return None


def interrupted_state(out: Path) -> str:
    """What an interrupted run left in ``out``, and how to go on: a checkpoint resumes, a package is the old one."""
    from synthdetect.models.package import CARD_FILE

    checkpoints = sorted((out / "_work").rglob("checkpoint.pt")) if (out / "_work").is_dir() else []
    left = (f"{', '.join(str(c) for c in checkpoints)} holds the epochs finished so far; run the same command again "
            f"to resume" if checkpoints else "no epoch had finished, so there is nothing to resume")
    if (out / CARD_FILE).is_file():
        left += f"; {out / CARD_FILE} is an earlier run's card, not this run's"
    return f"no package was written; {left}"


def replaced_package(out: Path) -> str | None:
    """The package already in ``out`` that a run will overwrite (its name, kind and version), said up front."""
    from synthdetect.models.package import CARD_FILE

    try:
        card = json.loads((out / CARD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict):
        return None
    return ", ".join(f"{key} {card[key]}" for key in ("name", "kind", "version") if card.get(key)) or "no name"


def judged_elsewhere(out: Path, parts) -> str | None:
    """The validation and test images the written package answers ``uncertain`` for by its own limits, though
    its card's numbers score them, said in one line; None when it judges them all.

    A small-cnn trained on 96 px images with the default input size served at most 64 px (2x its input): it
    called every image of its own test set "image larger than ... handles", while the card printed a held-out
    accuracy for them.  The package's own ``out_of_domain`` decides, on the images as serving loads them.
    """
    from synthdetect.models import load_package_model
    from synthdetect.models.package import ModelPackageError, load_package
    from synthdetect.train.datasets import RECORD_ERRORS, load_record

    try:
        model = load_package_model(load_package(out))
    except (ModelPackageError, ValueError, ImportError, OSError):  # not this check's to report; `models show` says
        return None
    from synthdetect.train.trainer import progress_bar

    counts, first = {}, None
    with progress_bar(transient=True) as bar:
        task = bar.add_task("check the package's limits", total=len(parts.val) + len(parts.test), status="")
        for part, records in (("validation", parts.val), ("test", parts.test)):
            for record in records:
                bar.advance(task)
                try:
                    reason = model.out_of_domain(load_record(record))
                except RECORD_ERRORS:  # unreadable: the card already counts it
                    continue
                if reason:
                    counts[part] = counts.get(part, 0) + 1
                    first = first or f"{record.ref}: {reason}"
    if not counts:
        return None
    scored = {"validation": len(parts.val), "test": len(parts.test)}
    return (f"{out} answers 'uncertain' for {', '.join(f'{n} of {scored[p]} {p}' for p, n in counts.items())} "
            f"images by its own limits (e.g. {first}), yet its card's numbers score them; if such images are what "
            f"it should judge, train again with limits that cover them (--max-short-side N, 0 for none; --option "
            f"max_aspect=R; --option min_side=N)")


def served_summary(bands: dict | None) -> str:
    """The held-out verdicts as the package gives them (its thresholds, not p_ai 0.5), for the closing line.

    The line gave only the accuracy at p_ai 0.5, which the package never decides by: a run printed "held-out
    test accuracy 0.5000" for a package whose verdicts were right on 59 of 60 images, and it never said how many
    human images the package calls AI, the number an artist pays for.
    """
    try:
        ai, human = bands["ai_images"], bands["human_images"]
        n_human, n = sum(human.values()), sum(ai.values()) + sum(human.values())
        decided = n - ai["uncertain"] - human["uncertain"]
        right = (f", {ai['ai'] + human['human']} of them right" if decided else "")
        return (f"; as served: {human['ai']} of {n_human} human images called ai, {decided} of {n} images decided"
                f"{right}")
    except (TypeError, KeyError, AttributeError):  # no test set, or a card without verdict counts
        return ""


def augment_note(model: str, augment) -> str | None:
    """What an augmentation does not do for this kind, said where the run prints its augmentation."""
    pixel = [name for name, prob in (("jpeg", augment.jpeg_prob), ("blur", augment.blur_prob),
                                     ("resize", augment.resize_prob)) if prob]
    if model == "ela-cnn" and pixel:
        many = len(pixel) > 1
        return (f"ela-cnn: the {', '.join(pixel)} augmentation{'s act' if many else ' acts'} on the error-level image "
                f"the network sees, not on the photo, so {'they do' if many else 'it does'} not simulate re-saved or "
                f"re-uploaded files (small-cnn sees the photo)")
    return None


MONITORS = ("loss", "roc_auc", "accuracy")
OPTIMIZERS = ("adamw", "sgd")
CALIBRATIONS = ("temperature", "platt", "identity")


def option_problems(*, monitor: str, optimizer: str, calibration: str, lr: float, label_smoothing: float,
                    val_fraction: float, test_fraction: float, fprs: list[float], precision: str = "fp32",
                    weight_decay: float = 0.0, epochs: int = 12, hard_fraction: float = 1.0, hard_after: int = 3,
                    hard_after_only: bool = False) -> list[str]:
    """Settings that would fail only after decoding or training, or that the run would quietly ignore; checked
    first (ranges typer checks are not here)."""
    problems = []
    if monitor not in MONITORS:
        problems.append(f"--monitor {monitor!r}: expected loss, roc_auc or accuracy")
    if optimizer not in OPTIMIZERS:
        problems.append(f"--optimizer {optimizer!r}: expected {' or '.join(OPTIMIZERS)}")
    if calibration not in CALIBRATIONS:
        problems.append(f"--calibration {calibration!r}: expected temperature or platt")
    if not 0 < lr < math.inf:  # inf passed, and the run trained a whole epoch before it "diverged"
        problems.append(f"--lr {lr:g}: the learning rate must be above 0 and finite")
    if not 0 <= weight_decay < math.inf:  # typer's min=0 lets inf and nan through; inf blew up the weights
        problems.append(f"--weight-decay {weight_decay:g}: expected a number, 0 or more")
    problems.extend(_selection_problems(epochs, hard_fraction, hard_after, hard_after_only))
    from synthdetect.train.trainer import PRECISIONS  # here: the CLI starts without importing torch

    if precision not in PRECISIONS:
        problems.append(f"--precision {precision!r}: expected {' or '.join(PRECISIONS)}")
    if not 0 <= label_smoothing < 1:
        problems.append(f"--label-smoothing {label_smoothing:g}: expected at least 0 and below 1")
    if not 0 < val_fraction < 1:
        problems.append(f"--val-fraction {val_fraction:g}: expected above 0 and below 1 (validation chooses the "
                        f"epoch, calibration and thresholds)")
    if not 0 <= test_fraction < 1:
        problems.append(f"--test-fraction {test_fraction:g}: expected at least 0 and below 1")
    elif 0 < val_fraction < 1 and val_fraction + test_fraction >= 1:
        problems.append(f"--val-fraction {val_fraction:g} + --test-fraction {test_fraction:g} leave nothing to train on "
                        f"(their sum must be below 1)")
    bad = [f"{f:g}" for f in fprs if not 0 < f < 1]
    if bad:
        problems.append(f"--fpr {', '.join(bad)}: a false-positive rate is above 0 and below 1")
    return problems


def _selection_problems(epochs: int, hard_fraction: float, hard_after: int, hard_after_only: bool) -> list[str]:
    """Selective backprop settings that would never act: a run no longer than ``--hard-after`` trained every image
    every epoch, without a word, and still recorded ``hard_fraction`` 0.5 on its card."""
    if 0 < hard_fraction < 1 and hard_after >= epochs:  # out-of-range values: TrainConfig says so
        return [f"--hard-fraction {hard_fraction:g} starts after --hard-after {hard_after} full epochs, but --epochs "
                f"{epochs} ends the run first, so no epoch would select images; lower --hard-after or raise --epochs"]
    if hard_after_only:  # a --hard-fraction 1 typed beside it is a deliberate "off" (benchmarks override so)
        return [f"--hard-after {hard_after} does nothing without --hard-fraction below 1 (selective backprop is off "
                f"by default); give --hard-fraction to train on the hardest images, or leave --hard-after out"]
    return []


def class_counts(records) -> str:
    human = sum(1 for r in records if r.label == 0)
    return f"{human} human, {len(records) - human} ai"


def too_few_hint(records) -> str:
    """What to do about a validation split without both classes: with one image of a class in all, training and
    validation cannot both have it, and "raise --val-fraction" (the usual advice) would not help."""
    human = sum(1 for r in records if r.label == 0)
    rare, count = ("human", human) if human <= len(records) - human else ("ai", len(records) - human)
    if count < 2:
        return (f"the data holds {count} {rare} image ({class_counts(records)}), and training and validation each need "
                f"one; add {rare} images")
    return "raise --val-fraction or choose other sources"


def dataset_identity(records) -> str:
    """Record count and a hash of every record's path, label, source and generator: another dataset, another run.

    Hashed in the order splits are drawn in, so reordering a manifest's rows is the same dataset.  (A checkpoint
    from before splits were sorted matches only where the rows were already in that order, its split too.)
    """
    from synthdetect.train.splits import record_sort_key

    digest = hashlib.sha256()
    for r in sorted(records, key=record_sort_key):
        digest.update(f"{r.ref}\t{r.label}\t{r.source}\t{r.generator}\n".encode())
    return f"{len(records)} records, sha256 {digest.hexdigest()[:16]}"


#: ``synthdetect train`` arguments that change nothing until training has ended (the card's name, calibration,
#: thresholds, serving limit) or only where and how fast it runs: a retry that changes them may resume.
NOT_IN_FINGERPRINT = ("ctx", "out", "name", "threads", "device", "calibration", "fpr", "max_short_side", "data")


#: ``synthdetect train`` options that only the torch loop reads; kinds registered with ``torch_loop=False`` refuse them.
TORCH_LOOP_OPTIONS = ("epochs", "patience", "monitor", "batch_size", "lr", "optimizer", "weight_decay",
                      "label_smoothing", "hard_fraction", "hard_after", "augment", "width", "input_size", "device",
                      "precision")


_CNN_OPTIONS = ("width", "depth", "layout", "tta_hflip", "input_size", "max_short_side", "min_side", "max_aspect")
_PACKAGE_OPTIONS = ("description", "keep_workdir")
_LITE_OPTIONS = ("input_size", "max_short_side", "min_side", "max_aspect", "freeze_backbone", *_PACKAGE_OPTIONS)
#: train/wild_trainers.py: the crop policy, the feature cache and the crop head's aggregation.  Their card's
#: description, version and serving limits are fixed, so those keys are not read; keep_workdir is (by this command).
_HEAD_OPTIONS = ("crop_size", "crops", "cache", "aggregate", "keep_workdir")

#: The ``--option`` keys each kind's trainer reads (train/small_image.py, train/small_pair.py,
#: models/efficientnet_lite.py, train/clip_cascade.py, train/wild_trainers.py; tests/test_train_audit_s25.py
#: checks this against their source).  Any other key was ignored without a word: ``--option dpeth=4`` trained
#: depth 3, ``freeze_backbone=true`` given to small-cnn did nothing, ``--option crop_sise=32`` to handcrafted
#: cropped 224 px, yet each stood on the card.  Kinds not listed (plug-ins) are not checked here.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "small-cnn": (*_CNN_OPTIONS, *_PACKAGE_OPTIONS),
    "ela-cnn": (*_CNN_OPTIONS, *_PACKAGE_OPTIONS, "ela_quality"),
    "small-pair": (*_CNN_OPTIONS, *_PACKAGE_OPTIONS, "lite_epochs", "lite_lr", "lite_optimizer", "lite_variant",
                   "weight_storage", "cnn_epochs", "version"),
    **{f"efficientnet-lite{i}": _LITE_OPTIONS for i in range(3)},
    "clip-cascade": (*_CNN_OPTIONS, *_PACKAGE_OPTIONS, "band", "encoder", "head_images", "head_sample"),
    "clip-head": _HEAD_OPTIONS,
    "handcrafted": _HEAD_OPTIONS,
}


def unread_options(model: str, options: dict, width_given: bool, max_short_side_given: bool = False) -> str | None:
    """Why ``--option`` keys (or ``--width``, ``--max-short-side``) would be ignored by ``model``, or None (also
    for kinds not listed)."""
    known = KIND_OPTIONS.get(model)
    if known is None:
        return None
    if width_given and "width" not in known:
        return f"--width: {model} has no width setting, so it would be ignored; leave it out"
    if max_short_side_given and "max_short_side" not in known:  # it went onto the card's options, read by nothing
        return (f"--max-short-side: {model} sets no serving limit on the short side, so it would be ignored; "
                f"leave it out")
    unknown = [key for key in options if key not in known]
    if unknown:
        return (f"--option {', '.join(unknown)}: {model} reads no such setting, so {'it' if len(unknown) == 1 else 'they'} "
                f"would be ignored; check the spelling ({model} reads {', '.join(sorted(known))})")
    return None


#: The type each ``--option`` value must read as (kinds in KIND_OPTIONS); "abc" for a depth had failed with Python's
#: "invalid literal for int() with base 10", naming no option, and ``tta_hflip=maybe`` read silently as off.
_WHOLE = ("width", "depth", "input_size", "max_short_side", "min_side", "lite_epochs", "cnn_epochs", "head_images",
          "head_sample", "crops")
_NUMBER = ("max_aspect", "lite_lr", "band")
_SWITCH = ("tta_hflip", "keep_workdir", "freeze_backbone")
#: Whole numbers that must be 1 or more: ``crop_size=0`` failed every image and then said only "need at least one
#: array to stack" (``crops=0`` is fine: each crop is then the global view).
_COUNT = ("crop_size",)


def option_value_problem(options: dict) -> str | None:
    """The first ``--option`` whose value cannot be what its key needs, said in one line; None when all can."""
    from synthdetect.train.registry import option_flag

    for key, value in options.items():
        try:
            if key in _WHOLE:
                if int(str(value)) < 0:
                    return f"--option {key}={value}: expected a whole number, 0 or more"
            elif key in _COUNT:
                if int(str(value)) < 1:
                    return f"--option {key}={value}: expected a whole number, 1 or more"
            elif key == "aggregate":  # an unknown one was refused only after every image's features were made
                from synthdetect.models.multicrop import AGGREGATIONS

                if str(value) not in AGGREGATIONS:
                    return f"--option aggregate={value}: expected one of {', '.join(AGGREGATIONS)}"
            elif key in _NUMBER:
                if not 0 < float(str(value)) < math.inf:
                    return f"--option {key}={value}: expected a number above 0"
            elif key in _SWITCH:
                option_flag(value)
        except ValueError:
            what = {**dict.fromkeys((*_WHOLE, *_COUNT), "a whole number"),
                    **dict.fromkeys(_NUMBER, "a number")}.get(key)
            return f"--option {key}={value}: expected {what or 'true or false'}"
    return None


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was typed on the command line (a default value is not a request).

    Compared by name: Typer vendors its own Click, whose ParameterSource is not ``click.core``'s.
    """
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def torch_loop_options_given(ctx: typer.Context) -> list[str]:
    """The torch-loop options typed on the command line."""
    return ["--" + name.replace("_", "-") for name in TORCH_LOOP_OPTIONS if _given(ctx, name)]


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        ctx: typer.Context,
        data: Annotated[str, typer.Argument(help="Class folders, CSV manifest (path,label[,source][,generator]), or a zip of either.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the model package.")],
        model: Annotated[str, typer.Option("--model", help="Model kind to train (small-cnn, small-pair, clip-cascade, ela-cnn, clip-head, handcrafted, efficientnet-lite0/1/2).")] = "small-cnn",
        name: Annotated[Optional[str], typer.Option(help="Name written on the card.")] = None,
        epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs.")] = 12,
        patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without improvement.")] = 3,
        monitor: Annotated[str, typer.Option(help="Validation metric for early stopping: loss, roc_auc or accuracy.")] = "loss",
        batch_size: Annotated[int, typer.Option(min=1, help="Training batch size.")] = 128,
        lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 3e-3,
        optimizer: Annotated[str, typer.Option(help="adamw, or sgd (Nesterov momentum 0.9; use a peak --lr near 0.1).")] = "adamw",
        weight_decay: Annotated[float, typer.Option(min=0.0, help="Weight decay (decoupled for adamw, L2 for sgd).")] = 5e-4,
        label_smoothing: Annotated[float, typer.Option(help="Pull training targets towards 0.5 by this share.")] = 0.0,
        hard_fraction: Annotated[float, typer.Option(help="Selective backprop: after --hard-after full epochs, train each epoch on this share of the images, drawn towards those with the largest recent loss (1 = off; kinds trained by the torch loop: small-cnn, ela-cnn, small-pair, clip-cascade, efficientnet-lite).")] = 1.0,
        hard_after: Annotated[int, typer.Option(help="Full epochs before --hard-fraction applies.")] = 3,
        width: Annotated[int, typer.Option(min=1, help="small-cnn/ela-cnn: channels of the first block.")] = 32,
        input_size: Annotated[Optional[int], typer.Option(min=8, help="CNN input side in px (small-cnn 32, ela-cnn 128; at least 8).")] = None,
        max_short_side: Annotated[Optional[int], typer.Option(min=0, help="CNN kinds: refuse larger images when serving (0 = no limit; default 2x input).")] = None,
        seed: Annotated[int, typer.Option(min=0, help="Seed for split, init and augmentation.")] = 0,
        threads: Annotated[int, typer.Option(min=0, max=1024, help="Torch threads (0 = all CPUs this process may use).")] = 0,
        device: Annotated[str, typer.Option(help="Where the torch loop trains: cpu, cuda, cuda:N or auto (a GPU when torch sees one). The package is scored, calibrated and served on the CPU either way.")] = "cpu",
        precision: Annotated[str, typer.Option(help="Training arithmetic: fp32, or bf16 (bfloat16 autocast for the training forward; 1.7x faster on CPUs with AVX512-BF16 or AMX, slower elsewhere). Validation, calibration and the package stay float32.")] = "fp32",
        split: Annotated[str, typer.Option(help="random, stratified, source (whole sources held out) or loso.")] = "stratified",
        holdout_source: Annotated[Optional[list[str]], typer.Option("--holdout-source", help="Source(s) held out as the test set (source/loso splits).")] = None,
        val_fraction: Annotated[float, typer.Option(help="Validation share (early stopping, calibration, thresholds).")] = 0.05,
        test_fraction: Annotated[float, typer.Option(help="Held-out test share (the card's numbers).")] = 0.05,
        copies: Annotated[str, typer.Option(help="Validation/test files byte-identical to an earlier file: exclude them from scoring, or keep them (as cards made before 2026-11-22 did).")] = "exclude",
        augment: Annotated[Optional[str], typer.Option(help="Augmentations, e.g. flip,crop:0.6,rot:10,jpeg:0.5@60-95,blur:0.3,resize:0.3,mixup:0.2,cutmix:1.0; flip:alt mirrors each image every other time it is drawn (default flip,shift:2).")] = None,
        calibration: Annotated[str, typer.Option(help="Calibration fitted on validation logits: temperature or platt.")] = "temperature",
        fpr: Annotated[Optional[list[float]], typer.Option("--fpr", help="False-positive rates to set thresholds for (first one decides 'ai').")] = None,
        label: Annotated[Optional[list[str]], typer.Option("--label", help="Map a folder/label name: NAME=ai or NAME=human.")] = None,
        option: Annotated[Optional[list[str]], typer.Option("--option", help="Kind-specific setting KEY=VALUE.")] = None,
    ) -> None:
        """Train a detector and write a model package that Detector.load() reads.

        Interrupted runs resume from OUT/_work/checkpoint.pt when started again with the same command
        (--threads, --device, --name, --calibration, --fpr and --max-short-side may change; anything else is refused).
        """
        arguments = {"--" + key.replace("_", "-"): value for key, value in locals().items()
                     if key not in NOT_IN_FINGERPRINT}
        if precision == "fp32":  # the default, as before the option existed: earlier runs' checkpoints still resume
            del arguments["--precision"]
        from synthdetect.train.augment import parse_augment
        from synthdetect.train.datasets import DatasetError, open_dataset, refuse_listed_twice
        from synthdetect.models.package import OutInUse, PackageNotMoved, exclusive_out, staged_package
        from synthdetect.train.registry import TrainerError, TrainRequest, get_trainer, option_flag, uses_torch_loop
        from synthdetect.train.splits import SplitError, split_records
        from synthdetect.train.trainer import (CheckpointMismatch, TrainConfig, check_checkpoint,
                                               refuse_selection_with_mixing, resolve_device)

        problem = out_dir_problem(out)
        problems = option_problems(monitor=monitor, optimizer=optimizer, calibration=calibration, lr=lr,
                                   label_smoothing=label_smoothing, val_fraction=val_fraction,
                                   test_fraction=test_fraction, fprs=fpr or [], precision=precision,
                                   weight_decay=weight_decay, epochs=epochs, hard_fraction=hard_fraction,
                                   hard_after=hard_after,
                                   hard_after_only=_given(ctx, "hard_after") and not _given(ctx, "hard_fraction"))
        if problem or problems:
            typer.echo(f"error: {problem or '; '.join(problems)}", err=True)
            raise typer.Exit(2)
        try:  # held until the command returns, before OUT/_work is read for a checkpoint
            ctx.with_resource(exclusive_out(out))
        except OutInUse as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            trainer = get_trainer(model)
            ignored = [] if uses_torch_loop(model) else torch_loop_options_given(ctx)
            if ignored:
                raise TrainerError(f"{model} fits linear heads on frozen features, so {', '.join(ignored)} would be "
                                   f"ignored; leave them out (they are for the kinds trained by the torch loop)")
            kind_options = parse_options(option)
            unread = unread_options(model, kind_options, _given(ctx, "width"), _given(ctx, "max_short_side")) or (
                option_value_problem(kind_options) if model in KIND_OPTIONS else None)
            if not unread and model == "ela-cnn" and "ela_quality" in kind_options:
                from synthdetect.models.ela_cnn import ela_quality_problem

                unread = ela_quality_problem(kind_options["ela_quality"])
            if unread:
                raise TrainerError(unread)
            augment_config = parse_augment(augment)
            config = TrainConfig(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, seed=seed,
                                 threads=threads or None, monitor=monitor, max_shift=augment_config.shift,
                                 optimizer=optimizer, weight_decay=weight_decay, label_smoothing=label_smoothing,
                                 hard_fraction=hard_fraction, hard_after=hard_after, device=device,
                                 precision=precision)
            resolve_device(device)
            refuse_selection_with_mixing(config, augment_config.mixes)
            records = open_dataset(data, label_map=parse_label_map(label))
            refuse_listed_twice(data, records)
            if len({r.label for r in records}) < 2:
                raise DatasetError(f"{data}: needs both classes: {class_counts(records)}")
            parts = split_records(records, split, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                  holdout_sources=holdout_source or (), copies=copies)
            if len({r.label for r in parts.train}) < 2:
                raise SplitError(f"the training split needs both classes, and got {class_counts(parts.train)} "
                                 f"(of {class_counts(records)} in all); lower --val-fraction/--test-fraction, add "
                                 f"images, or choose other sources")
            if len({r.label for r in parts.val}) < 2:
                raise SplitError(f"the validation split needs both classes to calibrate and set thresholds, and got "
                                 f"{class_counts(parts.val)}; {too_few_hint(records)}")
            config.fingerprint = {**arguments, "dataset": dataset_identity(records)}
            for checkpoint in sorted((out / "_work").rglob("checkpoint.pt")) if (out / "_work").is_dir() else ():
                check_checkpoint(checkpoint, config.fingerprint)
        except (TrainerError, DatasetError, SplitError, CheckpointMismatch, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        # a kind without a width (efficientnet-lite) had "width": 32 on its card, a setting that did nothing
        options = {**({"width": width} if "width" in KIND_OPTIONS.get(model, ("width",)) else {}), **kind_options}
        if input_size:
            options["input_size"] = input_size
        if max_short_side is not None:
            options["max_short_side"] = max_short_side
        command = "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        typer.echo(f"split {parts.describe()['method']}: train {len(parts.train)}, validation {len(parts.val)}, "
                   f"test {len(parts.test)}"
                   + (f" (test sources: {', '.join(parts.held_out_sources)})" if parts.held_out_sources else ""),
                   err=True)
        if uses_torch_loop(model):
            typer.echo(f"augment: {augment_config.spec()}", err=True)
            note = augment_note(model, augment_config)
            if note:
                typer.echo(f"note: {note}", err=True)
        replaced = replaced_package(out)
        if replaced:
            typer.echo(f"note: {out} holds a model package ({replaced}); this run replaces it when it finishes",
                       err=True)
        if parts.unscored:
            counts = parts.describe()["copies_not_scored"]["counts"]
            typer.echo("not scored, identical to an earlier file (listed in the card): "
                       + ", ".join(f"{n} {part}" for part, n in counts.items()), err=True)
        try:  # written beside --out and renamed into place; its _work links to OUT/_work, where a retry resumes
            with staged_package(out, link_work=True,
                                drop=() if option_flag(options.get("keep_workdir")) else ("_work",)) as folder:
                package = trainer(TrainRequest(
                    train=parts.train, val=parts.val, test=parts.test, out=folder, name=name or out.name,
                    seed=seed, threads=threads or None, augment=augment_config, options=options, command=command,
                    config=config, data=str(data), split=parts.describe(), calibration=calibration,
                    fprs=tuple(fpr or (0.01, 0.05))))
        except (TrainerError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except PackageNotMoved as exc:  # complete, kept where it was written
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {interrupted_state(out)}", err=True)
            raise typer.Exit(130) from None
        try:
            outside = judged_elsewhere(out, parts) if uses_torch_loop(model) else None  # linear heads: card excludes
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {out} is complete; only the check of its limits on the validation and test "
                       f"images was skipped", err=True)
            raise typer.Exit(130) from None
        if outside:
            typer.echo(f"warning: {outside}", err=True)
        metrics = package.card["metrics"]
        where, m = ("held-out test", metrics["test"]["at_0.5"]) if "test" in metrics else ("validation", metrics["validation"])
        auc = "n/a (one class)" if m.get("roc_auc") is None else f"{m['roc_auc']:.4f}"
        typer.echo(f"wrote {out} ({where} accuracy {m['accuracy']:.4f} at p_ai 0.5, ROC-AUC {auc}, ECE {m['ece']:.4f}"
                   f"{served_summary(metrics.get('test', {}).get('verdict_bands'))})")
