"""A small, explicit PyTorch training loop: augmentation, early stopping, resume, logs.

Written out rather than pulled from a framework (Lightning, Keras) to keep
torch the only heavy dependency and to control the two things that matter
on small CPUs: the thread count, and holding the whole decoded dataset as
uint8 in memory so every epoch costs only the model's arithmetic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from synthdetect.atomic import write_atomically
from synthdetect.evaluate.metrics import binary_metrics
from PIL import Image

from synthdetect.images import LoadedImage
from synthdetect.models.torch_kinds import images_to_tensor, resize_to_input
from synthdetect.train.augment import AlternatingFlip, AugmentConfig, PixelAugmenter, parse_augment
from synthdetect.train.datasets import RECORD_ERRORS, Record, load_record, record_error

logger = logging.getLogger(__name__)


def progress_bar(transient: bool = False) -> Progress:
    """On stderr: stdout carries what commands print for machines and logs (JSON, tables, the `wrote` lines)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        transient=transient, console=Console(stderr=True),
    )


def set_threads(threads: int | None) -> int:
    """Pin torch to ``threads`` (default: the CPUs this process may use).

    Oversubscribed OpenMP threads spin-wait; on a 2-core machine shared with
    another process that made training 10-30x slower, so this is explicit.
    """
    if threads is None or threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


class UnreadableRecord(str):
    """The ``file: reason`` line the card lists for a record that could not be read, carrying that record, so
    that a card can count per split what was actually used (the lines of all splits arrive as one list)."""

    record: Record

    def __new__(cls, record: Record, line: str) -> UnreadableRecord:
        self = super().__new__(cls, line)
        self.record = record
        return self


def decode_records(
    records: Sequence[Record], size: tuple[int, int], *, resample: str = "bicubic", description: str = "decode",
    transform: Callable[[LoadedImage, tuple[int, int]], Image.Image] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[UnreadableRecord]]:
    """Decode and resize every record to uint8 NHWC; failures are returned, never dropped silently.

    ``transform(loaded, size)`` replaces the plain resize; it must be the
    same function the model kind applies when serving (the ELA-CNN's input).
    """
    arrays = np.empty((len(records), size[1], size[0], 3), dtype=np.uint8)
    keep = np.ones(len(records), dtype=bool)
    errors: list[UnreadableRecord] = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(records), status="")
        for i, record in enumerate(records):
            try:
                loaded = load_record(record)
                image = transform(loaded, size) if transform else resize_to_input(loaded.rgb, size, resample)
                arrays[i] = np.asarray(image)
            except RECORD_ERRORS as exc:
                keep[i] = False
                errors.append(UnreadableRecord(record, record_error(record, exc)))
            if i % 512 == 0 or i == len(records) - 1:
                bar.update(task, completed=i + 1, status=f"{len(errors)} errors")
    if errors:
        if len(errors) == len(records):
            raise ValueError(f"{description}: none of the {len(records)} images could be read, e.g. {errors[0]}")
        logger.warning("%s: %d of %d images could not be read and are left out (listed in the card as "
                       "training.decode_errors), e.g. %s", description, len(errors), len(records), errors[0])
    labels = np.array([r.label for r in records], dtype=np.float32)
    return arrays[keep], labels[keep], errors


#: Training arithmetic: float32, or bfloat16 autocast for the training forward (weights stay float32).
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    patience: int = 3
    monitor: str = "loss"  # validation loss (lower is better) or "roc_auc"/"accuracy" (higher is better)
    seed: int = 0
    threads: int | None = None
    max_shift: int = 2
    label_smoothing: float = 0.0
    optimizer: str = "adamw"  # "adamw", or "sgd" (Nesterov momentum 0.9), which often generalises better on small CNNs
    hard_fraction: float = 1.0  # < 1: selective backprop, see choose_hard_images
    hard_after: int = 3  # full epochs before selection starts, so every image has a loss to rank
    device: str = "cpu"  # "cpu", "cuda[:N]" or "auto"; the package is read on the CPU either way
    precision: str = "fp32"  # "bf16": the training forward under bfloat16 autocast, see training_autocast
    extra: dict[str, Any] = field(default_factory=dict)
    #: what makes a run this run (``synthdetect train``'s arguments and the dataset's identity), stored in
    #: checkpoint.pt so that a retry never resumes another run's state; not written to the card
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.hard_fraction <= 1:
            raise ValueError(f"hard fraction must be in (0, 1], got {self.hard_fraction}")
        if self.hard_after < 1:
            raise ValueError(f"hard-after must be at least 1 full epoch, got {self.hard_after}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected {' or '.join(PRECISIONS)}")

    def images_per_epoch(self, epoch: int, n_images: int) -> int:
        """Epochs are 0-based; full epochs first, then ``hard_fraction`` of the images."""
        if self.hard_fraction >= 1 or epoch < self.hard_after:
            return n_images
        return max(1, round(self.hard_fraction * n_images))

    def epoch_equivalents(self, n_images: int) -> float:
        """The run's training arithmetic in full epochs (selective backprop's part-epochs at their share)."""
        return sum(self.images_per_epoch(e, n_images) for e in range(self.epochs)) / n_images


@dataclass
class TrainResult:
    best_epoch: int
    history: list[dict[str, Any]]
    stopped_early: bool
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``auto`` takes a CUDA GPU when torch sees one; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: expected cpu, cuda, cuda:N or auto") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this torch build sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported: expected cpu, cuda, cuda:N or auto")
    return device


def predict_logits(module: torch.nn.Module, arrays: np.ndarray, mean, std, batch_size: int = 512) -> np.ndarray:
    """Logits for uint8 NHWC ``arrays``, computed on whichever device ``module`` sits."""
    module.eval()
    device = next(module.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(arrays), batch_size):
            batch = images_to_tensor(arrays[start : start + batch_size], mean, std).to(device)
            out.append(module(batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions in hardware (AVX512-BF16 or AMX) rather than emulating them."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_autocast(config: TrainConfig, device: torch.device):
    """The context each training forward runs in.

    bfloat16 autocast runs convolutions and linear layers in bfloat16 while the weights, the optimizer and the
    loss stay float32.  On a 2-core AMD EPYC with AVX512-BF16 it made 1.1.0's network train 1.7x faster per
    step (115-122 ms against 200-209 ms, batch 128, 2 threads; width 48: 240 against 439 ms).  On a CPU without
    it oneDNN emulates bfloat16 and a step got slower (207 against 163 s per epoch on an earlier host), hence a
    warning.  Validation, calibration and serving stay float32: the package is the same kind of file either way.
    """
    if config.precision != "bf16":
        return torch.autocast(device.type, enabled=False)
    if device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so torch emulates "
                       "it and training is likely slower than --precision fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(module: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}: expected adamw or sgd")


def batch_slices(n_images: int, batch_size: int) -> list[slice]:
    """An epoch's batches; a last batch of one image joins the one before it.

    Batch norm cannot train on a single image where a network's last blocks are 1x1 px (EfficientNet-Lite
    on 32 px inputs): torch stopped the run with "Expected more than 1 value per channel when training".
    """
    starts = list(range(0, n_images, batch_size))
    if len(starts) > 1 and n_images - starts[-1] == 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, [*starts[1:], n_images])]


def _as_pixels(batch: torch.Tensor) -> torch.Tensor:
    """Augmented pixels as uint8, rounded: a cast alone truncates, darkening interpolated pixels by half a level."""
    if batch.is_floating_point():
        batch = batch.round().clamp_(0, 255)
    return batch.to(torch.uint8)


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle LR, warming up over the first 20% of the steps.

    Torch's OneCycleLR divides by the length of each phase, so a run of a handful of steps (one epoch of a few
    hundred images) crashed with ZeroDivisionError: the warm-up gets at least 2 steps, and a run of 1-2 steps keeps
    the peak LR throughout.
    """
    if total_steps < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                               pct_start=max(0.2, 2.0 / total_steps))


def refuse_selection_with_mixing(config: TrainConfig, mixes: bool) -> None:
    """Selective backprop ranks images by their own loss, and Mixup/CutMix leave no loss per image.

    Called by the CLI before decoding and by ``fit_classifier`` for every other caller.
    """
    if mixes and config.hard_fraction < 1:
        raise ValueError("--hard-fraction below 1 needs one loss per image, so it cannot be combined with mixup/cutmix")


def refuse_one_class_training(labels: np.ndarray) -> None:
    """A run with no images, or one class only (a tiny split, or unreadable files), learns nothing; it once wrote a
    package anyway ("epoch 1/1: 0 images")."""
    labels = np.asarray(labels)
    ai = int((labels >= 0.5).sum())
    if ai == 0 or ai == len(labels):
        raise ValueError(f"training needs images of both classes, and has {len(labels) - ai} human, {ai} ai")


def refuse_one_class_validation(labels: np.ndarray) -> None:
    """Validation chooses the epoch, the calibration and the thresholds, so it needs both classes.

    The split has both, but unreadable files can take the last of one class out after decoding: the run then
    trained every epoch and only failed when the package was calibrated. Said before the first epoch instead.
    """
    labels = np.asarray(labels)
    ai = int((labels >= 0.5).sum())
    if ai == 0 or ai == len(labels):
        raise ValueError(f"the validation images that could be read are {len(labels) - ai} human, {ai} ai: validation "
                         f"needs both classes to choose the epoch, calibrate and set thresholds, so nothing was "
                         f"trained; replace or remove the unreadable files, or raise --val-fraction")


def _explain_single_image_batch(exc: ValueError, batch: int) -> ValueError | None:
    """Torch's batch-norm error for a one-image batch, in the command's terms.

    ``--batch-size 1`` on EfficientNet-Lite at 32 px (1x1 px features) ended in "Expected more than 1 value per
    channel when training", naming no option.
    """
    if batch == 1 and "more than 1 value per channel" in str(exc):
        return ValueError(f"--batch-size 1: this network's batch norm needs 2 or more images in a batch at this input "
                          f"size ({exc}); use --batch-size 2 or more")
    return None


def refuse_unfit_input(module: torch.nn.Module, arrays: np.ndarray, mean, std) -> None:
    """One image through the network before the first epoch: a network too deep for its input (``--option
    depth=9`` halves 32 px to nothing) stopped the first step with a torch traceback ("Output size is too small").

    In eval mode and without gradients, so it changes no weight, running statistic or random state.
    """
    try:
        predict_logits(module, arrays[:1], mean, std)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the network cannot take {arrays.shape[2]}x{arrays.shape[1]} px inputs ({reason}); choose a "
                         f"larger --input-size, or for small-cnn and ela-cnn a smaller --option depth") from exc


def choose_hard_images(losses: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """The images of one epoch, shuffled: all of them when ``count`` covers them, else selective backprop.

    Selective backprop (Jiang et al. 2019, "focusing on the biggest losers") on stale losses: image i is kept
    with probability percentile_i ** beta, beta = n / count - 1, so ``count`` images are expected and the largest
    recent losses are nearly always kept while easy images still come back now and then (their stale loss is
    refreshed when they do).  The draw is then trimmed or topped up at random to exactly ``count`` so the
    one-cycle schedule knows its length in advance.  ``losses`` holds each image's loss from the last time it was
    trained on; no extra forward pass is spent on ranking.
    """
    n = len(losses)
    if count >= n:
        return torch.randperm(n, generator=generator)
    percentile = (torch.argsort(torch.argsort(losses)).double() + 1) / n
    keep = torch.rand(n, generator=generator, dtype=torch.float64) < percentile ** (n / count - 1)
    chosen, rest = keep.nonzero().flatten(), (~keep).nonzero().flatten()
    if len(chosen) > count:
        chosen = chosen[torch.randperm(len(chosen), generator=generator)[:count]]
    elif len(chosen) < count:
        chosen = torch.cat([chosen, rest[torch.randperm(len(rest), generator=generator)[: count - len(chosen)]]])
    return chosen[torch.randperm(len(chosen), generator=generator)]


class CheckpointMismatch(ValueError):
    """A checkpoint left by a run with other settings or data; resuming it would crash or mix two runs."""


#: TrainConfig fields that change where or how fast a run goes, not what it computes.
_NOT_FINGERPRINTED = ("threads", "device", "fingerprint", "extra")


def run_fingerprint(config: TrainConfig, module: torch.nn.Module, n_train: int, n_val: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed.

    The caller's ``config.fingerprint`` when it gives one (``synthdetect train``: its arguments and the dataset),
    else what the loop itself sees: its settings, the model's layer shapes and the number of images.
    """
    if config.fingerprint:
        return dict(config.fingerprint)
    loop = {f"config.{k}": v for k, v in asdict(config).items() if k not in _NOT_FINGERPRINTED}
    if config.precision == "fp32":  # the default, as before the setting existed: older checkpoints still resume
        del loop["config.precision"]
    shapes = {name: list(p.shape) for name, p in module.state_dict().items()}
    return {**loop, "model layers": hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()[:16],
            "training images": n_train, "validation images": n_val}


#: ``--option`` keys that change only the card (its text, its serving limits) or what is kept once the run ends,
#: never what the loop computes (``--max-short-side`` may change on a retry for the same reason).
CARD_ONLY_OPTIONS = ("keep_workdir", "description", "version", "max_short_side", "min_side", "max_aspect")


def _as_the_loop_sees_it(key: str, value: Any) -> Any:
    """A fingerprint value reduced to what bears on training, so that a retry is refused only for a real change.

    Adding ``--option keep_workdir=true`` to a retry (to keep the checkpoint this time) was "a different run
    (--option differs); delete it", which would have thrown away the finished epochs; so were ``--option``s in
    another order and ``--augment flip,shift:2``, which is the default spelled out.
    """
    if key == "--option":
        return sorted(str(item) for item in value or () if str(item).partition("=")[0].strip() not in CARD_ONLY_OPTIONS)
    if key == "--augment":
        try:
            return parse_augment(value).spec()
        except ValueError:
            return value
    return value


def fingerprint_differences(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Keys whose values differ; a checkpoint from before fingerprints (None) matches anything, as it used to."""
    if saved is None:
        return []
    return sorted(k for k in set(saved) | set(current)
                  if _as_the_loop_sees_it(k, saved.get(k)) != _as_the_loop_sees_it(k, current.get(k)))


def check_checkpoint(path: Path, fingerprint: dict[str, Any]) -> None:
    """Raise :class:`CheckpointMismatch` when the checkpoint at ``path`` belongs to another run."""
    if not path.exists():
        return
    saved = torch.load(path, map_location="cpu", weights_only=False).get("fingerprint")
    _refuse_mismatch(path, fingerprint_differences(saved, fingerprint))


def _refuse_mismatch(path: Path, differs: list[str]) -> None:
    if differs:
        raise CheckpointMismatch(f"{path} belongs to a different run ({', '.join(differs)} "
                                 f"{'differs' if len(differs) == 1 else 'differ'}); delete it or choose another --out")


def _global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """Torch's global random state, for the checkpoint: dropout draws from it, not from the loop's generator.

    Without it a resumed run re-seeded the global state and drew epoch 1's dropout masks again, so a run
    interrupted and resumed trained other weights than the same run left alone (epoch 2's training loss
    0.932 against 0.982 for a small-cnn) although the loop's own generator resumed exactly.
    """
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _restore_global_rng(state: dict[str, Any], device: torch.device) -> None:
    """The inverse of :func:`_global_rng_state`; checkpoints written before it carry none and resume as before."""
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "loss" else new > best


def fit_classifier(
    module: torch.nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    workdir: Path,
    augment: Callable[..., torch.Tensor] | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Any] | None = None,
) -> TrainResult:
    """Train ``module`` (one logit out) with AdamW or SGD + one-cycle LR, early stopping and resume.

    ``workdir`` receives ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt``
    (resumable state after every epoch) and ``best.pt`` (restored at the end);
    ``metrics.csv`` repeats the epoch log for spreadsheets.  ``mix(x, y, g)``
    (Mixup/CutMix) returns an object with ``.x`` and soft labels ``.y``; the
    loss is binary cross-entropy against those soft targets.  ``config.hard_fraction`` < 1 turns on selective
    backprop (see ``choose_hard_images``); it needs one loss per image, so it refuses ``mix``.
    ``augment`` defaults to a random flip and a ``config.max_shift`` px shift.  An ``augment`` whose
    ``alternates_flip`` is true (``PixelAugmenter`` for ``--augment flip:alt``) is handed each batch's mirror mask
    as ``flip=`` (``AlternatingFlip``); any other is called as ``augment(x, generator)`` and flips as it likes.
    """
    refuse_selection_with_mixing(config, mixes=mix is not None)
    refuse_one_class_training(train[1])
    refuse_one_class_validation(val[1])
    workdir.mkdir(parents=True, exist_ok=True)
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    module = module.to(device=device, memory_format=torch.channels_last)
    refuse_unfit_input(module, train[0], mean, std)
    x_train = torch.from_numpy(train[0])
    y_train = torch.from_numpy(train[1]).float()
    epoch_images = [config.images_per_epoch(e, len(x_train)) for e in range(config.epochs)]
    epoch_batches = [batch_slices(n, config.batch_size) for n in epoch_images]
    epoch_steps = [len(batches) for batches in epoch_batches]
    image_losses = torch.full((len(x_train),), float("inf"))  # never trained on ranks as hardest
    augment = augment or PixelAugmenter(AugmentConfig(shift=config.max_shift))
    flips = AlternatingFlip(len(x_train), generator) if getattr(augment, "alternates_flip", False) else None
    optimizer = make_optimizer(module, config)
    scheduler = one_cycle(optimizer, config.lr, sum(epoch_steps))
    autocast = training_autocast(config, device)
    ckpt_path, best_path = workdir / "checkpoint.pt", workdir / "best.pt"
    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, bad_epochs = 0, None, -1, 0
    fingerprint = run_fingerprint(config, module, len(x_train), len(val[1]))
    if ckpt_path.exists():  # resume after interruption, only the same run
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _refuse_mismatch(ckpt_path, fingerprint_differences(state.get("fingerprint"), fingerprint))
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start_epoch, best_value, best_epoch, bad_epochs = (
            state["epoch"] + 1, state["best_value"], state["best_epoch"], state["bad_epochs"])
        history = state["history"]
        for row in history:  # checkpoints written before epochs logged their image count: full epochs
            row.setdefault("images", epoch_images[row["epoch"] - 1])
        image_losses = state.get("image_losses", image_losses)
        if flips is not None:
            flips.load_state_dict(state["flips"])
        _restore_global_rng(state, device)
    started = time.time()
    # a checkpoint of a run that had already stopped early (its package not yet written) resumes as stopped,
    # rather than training one more epoch than the run it continues
    stopped_early = start_epoch > 0 and bad_epochs >= config.patience
    with progress_bar() as bar:
        epoch_task = bar.add_task("epochs", total=config.epochs, completed=start_epoch, status="")
        for epoch in range(start_epoch, config.epochs if not stopped_early else start_epoch):
            module.train()
            order = choose_hard_images(image_losses, epoch_images[epoch], generator)
            steps_per_epoch = epoch_steps[epoch]
            step_task = bar.add_task(f"epoch {epoch + 1}", total=steps_per_epoch, status="")
            running, seen, t0 = 0.0, 0, time.time()
            for step in range(steps_per_epoch):
                idx = order[epoch_batches[epoch][step]]
                xb = augment(x_train[idx], generator, flip=flips(idx)) if flips is not None else augment(x_train[idx], generator)
                xb = images_to_tensor(_as_pixels(xb).numpy(), mean, std).to(device, non_blocking=True)
                yb = y_train[idx].to(device)
                if mix is not None:
                    mixed = mix(xb, yb, generator)
                    xb, yb = mixed.x, mixed.y
                if config.label_smoothing:
                    yb = yb * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
                try:
                    with autocast:
                        logits = module(xb)
                except ValueError as exc:
                    explained = _explain_single_image_batch(exc, len(idx))
                    if explained is None:
                        raise
                    raise explained from exc
                per_image = F.binary_cross_entropy_with_logits(logits.float(), yb, reduction="none")
                if mix is None:
                    image_losses[idx] = per_image.detach().cpu()
                loss = per_image.mean()
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # stop at once: every later step and metric would be NaN
                    raise TrainingDiverged(epoch + 1, step + 1, scheduler.get_last_lr()[0], loss_value)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss_value * len(idx)
                seen += len(idx)
                if step % 20 == 0 or step == steps_per_epoch - 1:
                    bar.update(step_task, completed=step + 1, status=f"loss {running / seen:.4f}")
            bar.remove_task(step_task)
            val_logits = predict_logits(module, val[0], mean, std)
            if not np.isfinite(val_logits).all():
                raise TrainingDiverged(epoch + 1, None, scheduler.get_last_lr()[0], float("nan"),
                                       where="the model's validation output")
            val_metrics = binary_metrics(1 / (1 + np.exp(-val_logits)), val[1])
            row = {"epoch": epoch + 1, "train_loss": running / max(seen, 1), "images": seen,
                   "seconds": time.time() - t0,
                   "lr": scheduler.get_last_lr()[0],
                   **{f"val_{k}": v for k, v in val_metrics.items() if isinstance(v, (int, float))}}
            history.append(row)
            write_epoch_log(workdir, history)
            value = val_metrics[config.monitor]
            if _better(config.monitor, value, best_value):
                best_value, best_epoch, bad_epochs = value, epoch + 1, 0
                write_atomically(best_path, partial(torch.save, module.state_dict()), binary=True)
            else:
                bad_epochs += 1
            bar.update(epoch_task, completed=epoch + 1,
                       status=f"val acc {_number(val_metrics['accuracy'])} auc {_number(val_metrics['roc_auc'])} "
                              f"best@{best_epoch}")
            if not bar.console.is_terminal:  # a log file gets no live bar, so it gets one line per epoch
                bar.console.print(epoch_line(history, config.epochs, best_epoch, epoch_images[epoch + 1:]),
                                  highlight=False, soft_wrap=True)
            # Whole or not at all: saved in place, a Ctrl-C during the write left a cut checkpoint, and every
            # retry then ended in a torch traceback ("failed locating file data.pkl") instead of resuming.
            write_atomically(ckpt_path, partial(torch.save, {
                "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "epoch": epoch,
                "best_value": best_value, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "history": history, "image_losses": image_losses, "fingerprint": fingerprint,
                **_global_rng_state(device),
                **({"flips": flips.state_dict()} if flips is not None else {})}), binary=True)
            if bad_epochs >= config.patience:
                stopped_early = True
                _warn_if_stopped_at_high_lr(row["lr"], config, epoch + 1, best_epoch)
                break
    module.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    module.to("cpu")  # callers score, calibrate and export on the CPU, as serving does
    return TrainResult(best_epoch=best_epoch, history=history, stopped_early=stopped_early,
                       seconds=time.time() - started)


class TrainingDiverged(ValueError):
    """The loss (or the model's output) stopped being a finite number: the weights have blown up."""

    def __init__(self, epoch: int, step: int | None, lr: float, value: float, where: str = "the training loss"):
        when = f"at epoch {epoch}, step {step}" if step is not None else f"after epoch {epoch}"
        super().__init__(f"training diverged: {where} became {value} {when} (learning rate {lr:.3g}); no package "
                         "was written. Try a lower --lr, in a new --out folder (the checkpoint there is this run's)")
        self.epoch, self.step = epoch, step


def _number(value: float | None) -> str:
    """4 decimals, or n/a where a metric is undefined (ROC-AUC of a one-class validation set)."""
    return "n/a" if value is None else f"{value:.4f}"


def epoch_line(history: list[dict[str, Any]], epochs: int, best_epoch: int, images_left: Sequence[int]) -> str:
    """One epoch for a log: its numbers, and an ETA from this run's images per second so far."""
    row = history[-1]
    rate = sum(r["seconds"] for r in history) / max(sum(r["images"] for r in history), 1)
    eta_min = rate * sum(images_left) / 60
    return (f"epoch {row['epoch']}/{epochs}: {row['images']} images in {row['seconds']:.0f} s, train loss "
            f"{row['train_loss']:.4f}, val loss {_number(row.get('val_loss'))}, val acc {_number(row.get('val_accuracy'))}, "
            f"best epoch {best_epoch}, eta {eta_min:.1f} min")


def _warn_if_stopped_at_high_lr(lr: float, config: TrainConfig, epoch: int, best_epoch: int) -> None:
    """Validation loss swings while one-cycle's LR is high, so a stop there ends a run whose annealing (where the
    gains come) is still ahead; say so rather than let it pass as converged.  Seen on cifake-cnn width 16: stops at
    LR 77% and 43% of peak restored an epoch-4 model (validation accuracy 0.954)."""
    if lr > 0.1 * config.lr:
        logger.warning(
            "early stopping fired at epoch %d of %d while the learning rate (%.3g) was still above a tenth of its "
            "peak (%.3g); the best epoch (%d) comes from the noisy high-LR phase. A larger --patience lets the "
            "schedule anneal.", epoch, config.epochs, lr, config.lr, best_epoch)


def write_epoch_log(workdir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` and ``metrics.csv`` rewritten from the whole history after every epoch.

    Rewriting (a few hundred rows at most) rather than appending means a run
    resumed from its checkpoint never repeats an epoch logged after the last
    checkpoint, and a log of two members with different columns (``small-pair``)
    gets every column.
    """
    import csv

    with open(workdir / "metrics.jsonl", "w") as log:
        log.writelines(json.dumps(row) + "\n" for row in history)
    with open(workdir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
        writer.writeheader()
        writer.writerows(history)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The card's copy of the settings (the checkpoint fingerprint stays in the checkpoint)."""
    out = asdict(config)
    out.pop("fingerprint", None)
    return out
