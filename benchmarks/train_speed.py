"""Does the cifake-cnn recipe fit its training-time bound on this machine today?  Printed as JSON.

Times the training step of the recipe on the shipped `cifake-cnn` card (or with --width/--depth/--layout/
--batch-size/--epochs/--hard-fraction/--hard-after/--precision changed for its small CNN): augmentation, forward, backward and optimizer step on random 32 px
images, then projects seconds per epoch and minutes per run for the card's training-set size (selective backprop's
part-epochs counted at their share).  A `small-pair` card
trains two members one after the other, so both are timed with their own recipes and the run is their sum; a
`clip-cascade` card adds its CLIP embeddings (head images and band images), timed one image per call.  It needs
no dataset, so it answers in about a minute what a full run answers in half an hour; the same host ran one recipe at
121-143 s per epoch one day and 161-192 s another, which decides whether a run fits 30 minutes.

The speed also moves within minutes: on 2026-11-22 one projection said 155 s per full epoch and the run started
right after it took 179-214 s (29 min 20 s against 22.0 projected).  So the steps are timed in ``--rounds``
rounds, the projection is their median, and ``fits_budget`` is judged on the slowest round.

    .venv/bin/python benchmarks/train_speed.py [--width 16] [--layout pool-mid] [--epochs 22] [--steps 40]
        [--hard-fraction 0.5 --hard-after 3] [--precision bf16] [--rounds 3] [--budget-min 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

#: Decoding the zip, validation after every epoch and the final calibration: a width-16 run projected at 20.0 min
#: of training steps took 20 min 53 s from start to written package.
OVERHEAD_MIN = 1.0


def host_facts() -> dict[str, str | int]:
    """The processor behind the projection: the same recipe projected 20 minutes on a 2-core host with AVX-512
    and 65 on a 2-core AMD EPYC with AVX2 only (2026-12-04), so a projection means little without it."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from synthdetect.models.onnx_backend import default_threads

    return {"cpu": model, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpus_usable": default_threads()}


def time_steps(module, config, augment, mean, std, side, batch_size: int, steps: int) -> dict[str, float]:
    """Mean seconds of each phase of one training step, after 5 warm-up steps."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from synthdetect.models.torch_kinds import images_to_tensor
    from synthdetect.train.augment import augment_pixels
    from synthdetect.train.trainer import make_optimizer, training_autocast

    module = module.train().to(memory_format=torch.channels_last)
    autocast = training_autocast(config, torch.device("cpu"))
    optimizer = make_optimizer(module, config)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (batch_size, side[1], side[0], 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 2, batch_size).astype(np.float32))
    parts = {"augment": 0.0, "forward": 0.0, "backward": 0.0, "step": 0.0}
    for i in range(steps + 5):
        t0 = time.perf_counter()
        x = images_to_tensor(augment_pixels(pixels, generator, augment).to(torch.uint8).numpy(), mean, std)
        t1 = time.perf_counter()
        with autocast:
            logits = module(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        loss.item()
        t4 = time.perf_counter()
        if i >= 5:
            for key, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                parts[key] += b - a
    return {key: value / steps for key, value in parts.items()}


def time_rounds(module, config, augment, mean, std, side, batch_size: int, steps: int, rounds: int,
                steps_per_epoch: int) -> tuple[dict[str, float], list[float]]:
    """Per-phase median seconds over ``rounds`` rounds of steps, and each round's projected seconds per epoch."""
    timed = [time_steps(module, config, augment, mean, std, side, batch_size, steps) for _ in range(rounds)]
    parts = {key: statistics.median(t[key] for t in timed) for key in timed[0]}
    return parts, [sum(t.values()) * steps_per_epoch for t in timed]


def time_cascade_embeddings(card: dict, threads: int, n_images: int) -> dict:
    """A ``clip-cascade`` run also embeds its head images and the band images of validation and test with CLIP, one
    image per call: 552 s of the shipped 2.0.0's 21 min 17 s, which the CNN's steps alone leave out."""
    import numpy as np

    from synthdetect.models.clip_cascade import clip_views
    from synthdetect.models.view_features import get_extractor

    cascade, split = card["cascade"], card["training"]["split"]
    band_share = float(cascade["band_share"])
    n_embed = int(cascade["head"]["images"]) + round(band_share * (split["validation"]["n"] + split["test"]["n"]))
    extractor = get_extractor(cascade["encoder"]["name"])
    rng = np.random.default_rng(0)
    views = clip_views(rng.integers(0, 256, (max(n_images, 1) + 1, *card["input"]["size"], 3), dtype=np.uint8))
    extractor.features(views[:1])  # warm-up: session start and first-call allocations
    seconds = []
    for view in views[1:]:
        t0 = time.perf_counter()
        extractor.features([view])
        seconds.append(time.perf_counter() - t0)
    per_image = statistics.median(seconds)
    return {"member": "clip embeddings", "encoder": cascade["encoder"]["name"], "threads": threads,
            "embeddings": n_embed, "embeddings_rule": "head images + band share x (validation + test images)",
            "embed_ms": [round(v * 1000, 1) for v in seconds],
            "projected_min": round(per_image * n_embed / 60, 1),
            "projected_min_slowest": round(max(seconds) * n_embed / 60, 1)}


def main() -> None:
    from synthdetect.models.cnn import LAYOUTS, SmallCNN
    from synthdetect.train.trainer import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifake-cnn", help="card whose architecture and recipe are timed")
    parser.add_argument("--width", type=int, help="override the small CNN's first-block width")
    parser.add_argument("--depth", type=int, help="override the small CNN's number of blocks")
    parser.add_argument("--layout", choices=LAYOUTS, help="override the small CNN's block layout")
    parser.add_argument("--batch-size", type=int, help="override the card's batch size")
    parser.add_argument("--epochs", type=int, help="override the small CNN's epoch count")
    parser.add_argument("--hard-fraction", type=float, help="override the selective-backprop share (1 = off)")
    parser.add_argument("--hard-after", type=int, help="override the full epochs before selection starts")
    parser.add_argument("--precision", choices=PRECISIONS, help="override the training arithmetic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round (after 5 warm-up steps)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of timed steps; the slowest decides the fit")
    parser.add_argument("--budget-min", type=float, default=30.0, help="the run's time bound, in minutes")
    parser.add_argument("--clip-images", type=int, default=5,
                        help="CLIP embeddings timed for a clip-cascade card (after one warm-up)")
    args = parser.parse_args()
    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, not {args.steps}")

    from synthdetect.models import find_package
    from synthdetect.train.augment import AugmentConfig
    from synthdetect.train.trainer import TrainConfig, set_threads

    card = find_package(args.model).card
    training = card["training"]
    pair = card["kind"] == "small-pair"
    arch = dict(card["architecture"]["cnn"] if pair else card["architecture"])
    arch.update({k: v for k, v in (("width", args.width), ("depth", args.depth),
                                                            ("layout", args.layout)) if v is not None})

    def config_of(raw: dict) -> TrainConfig:
        return TrainConfig(**{k: v for k, v in raw.items() if k in TrainConfig.__dataclass_fields__})

    config = config_of(training["members"]["cnn"]["config"] if pair else training["config"])
    batch_size = args.batch_size or config.batch_size
    epochs = args.epochs or config.epochs
    config = dataclasses.replace(config, epochs=epochs,
                                 **{k: v for k, v in (("hard_fraction", args.hard_fraction),
                                                      ("hard_after", args.hard_after),
                                                      ("precision", args.precision)) if v is not None})
    n_train = training["split"]["train"]["n"]
    steps_per_epoch = -(-n_train // batch_size)
    epoch_equivalents = config.epoch_equivalents(n_train)
    side = card["input"]["size"]
    augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in training["augment"].items()})
    mean, std = card["input"]["mean"], card["input"]["std"]

    threads = set_threads(args.threads)
    module = SmallCNN(**arch)
    rounds = max(args.rounds, 1)
    parts, round_epoch_s = time_rounds(module, config, augment, mean, std, side, batch_size, args.steps, rounds,
                                       steps_per_epoch)
    epoch_s = statistics.median(round_epoch_s)
    run_min = epoch_s * epoch_equivalents / 60
    slowest_min = max(round_epoch_s) * epoch_equivalents / 60
    members = []
    if pair:
        from synthdetect.models.efficientnet_lite import LITE_MEAN, LITE_STD, EfficientNetLiteDetector

        lite_arch = card["architecture"]["lite"]
        lite_config = config_of(training["members"]["lite"]["config"])
        lite = EfficientNetLiteDetector(lite_arch["variant"], lite_arch["image_size"])  # ImageNet init: same cost
        lite_parts, lite_rounds = time_rounds(lite, lite_config, augment, LITE_MEAN, LITE_STD, side,
                                              batch_size, args.steps, rounds, steps_per_epoch)
        lite_epoch_s = statistics.median(lite_rounds)
        members.append({"member": "lite", "variant": lite_arch["variant"], "epochs": lite_config.epochs,
                        "step_ms": {k: round(v * 1000, 1) for k, v in lite_parts.items()},
                        "projected_epoch_s": round(lite_epoch_s, 1),
                        "projected_epoch_s_rounds": [round(v, 1) for v in lite_rounds],
                        "projected_min": round(lite_epoch_s * lite_config.epochs / 60, 1),
                        "projected_min_slowest": round(max(lite_rounds) * lite_config.epochs / 60, 1)})
    if card["kind"] == "clip-cascade":
        members.append(time_cascade_embeddings(card, threads, args.clip_images))
    total_min = run_min + sum(m["projected_min"] for m in members)
    slowest_total_min = slowest_min + sum(m["projected_min_slowest"] for m in members)
    print(json.dumps({
        "model": args.model, "kind": card["kind"], "architecture": arch,
        "parameters": sum(p.numel() for p in module.parameters()),
        "batch_size": batch_size, "epochs": epochs, "hard_fraction": config.hard_fraction,
        "hard_after": config.hard_after, "precision": config.precision, "epoch_equivalents": round(epoch_equivalents, 2),
        "train_images": n_train, "threads": threads, "host": host_facts(),
        "load_average_1min": round(os.getloadavg()[0], 2), "step_ms": {k: round(v * 1000, 1) for k, v in parts.items()},
        "projected_epoch_s": round(epoch_s, 1), "projected_epoch_s_rounds": [round(v, 1) for v in round_epoch_s],
        "projected_cnn_min": round(run_min, 1), "other_members": members,
        "projected_run_min": round(total_min, 1), "projected_run_min_slowest": round(slowest_total_min, 1),
        "overhead_min": OVERHEAD_MIN, "budget_min": args.budget_min,
        "fits_budget": slowest_total_min + OVERHEAD_MIN < args.budget_min,
    }, indent=1))


if __name__ == "__main__":
    main()
