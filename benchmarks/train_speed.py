"""Does a small-cnn recipe fit its training-time bound on this machine today?  Printed as JSON.

Times the training step of the recipe on the shipped `cifake-cnn` card (or with --width/--depth/--layout/
--batch-size/--epochs changed): augmentation, forward, backward and optimizer step on random 32 px images, then
projects seconds per epoch and minutes per run for the card's training-set size.  It needs no dataset, so it answers in
about half a minute what a full run answers in half an hour; the same host ran this recipe at 121-143 s per epoch
one day and 161-192 s another, which decides whether 12 epochs fit 30 minutes.

    .venv/bin/python benchmarks/train_speed.py [--width 16] [--layout pool-mid] [--epochs 22] [--steps 40]
        [--budget-min 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time

#: Decoding the zip, validation after every epoch and the final calibration: a width-16 run projected at 20.0 min
#: of training steps took 20 min 53 s from start to written package.
OVERHEAD_MIN = 1.0


def main() -> None:
    from synthdetect.models.cnn import LAYOUTS, SmallCNN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifake-cnn", help="card whose architecture and recipe are timed")
    parser.add_argument("--width", type=int, help="override the card's first-block width")
    parser.add_argument("--depth", type=int, help="override the card's number of blocks")
    parser.add_argument("--layout", choices=LAYOUTS, help="override the card's block layout")
    parser.add_argument("--batch-size", type=int, help="override the card's batch size")
    parser.add_argument("--epochs", type=int, help="override the card's epoch count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps (after 5 warm-up steps)")
    parser.add_argument("--budget-min", type=float, default=30.0, help="the run's time bound, in minutes")
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from synthdetect.models import find_package
    from synthdetect.models.torch_kinds import images_to_tensor
    from synthdetect.train.augment import AugmentConfig, augment_pixels
    from synthdetect.train.trainer import TrainConfig, make_optimizer, set_threads

    card = find_package(args.model).card
    arch, training = dict(card["architecture"]), card["training"]
    arch.update({k: v for k, v in (("width", args.width), ("depth", args.depth),
                                                            ("layout", args.layout)) if v is not None})
    config = TrainConfig(**{k: v for k, v in training["config"].items() if k in TrainConfig.__dataclass_fields__})
    batch_size = args.batch_size or config.batch_size
    epochs = args.epochs or config.epochs
    n_train = training["split"]["train"]["n"]
    side = card["input"]["size"]
    augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in training["augment"].items()})
    mean, std = card["input"]["mean"], card["input"]["std"]

    threads = set_threads(args.threads)
    module = SmallCNN(**arch).train().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(module, config)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (batch_size, side[1], side[0], 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 2, batch_size).astype(np.float32))
    parts = {"augment": 0.0, "forward": 0.0, "backward": 0.0, "step": 0.0}
    for i in range(args.steps + 5):
        t0 = time.perf_counter()
        x = images_to_tensor(augment_pixels(pixels, generator, augment).to(torch.uint8).numpy(), mean, std)
        t1 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(module(x), labels)
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
    step_ms = {key: round(value / args.steps * 1000, 1) for key, value in parts.items()}
    epoch_s = sum(parts.values()) / args.steps * -(-n_train // batch_size)
    run_min = epoch_s * epochs / 60
    print(json.dumps({
        "model": args.model, "architecture": arch, "parameters": sum(p.numel() for p in module.parameters()),
        "batch_size": batch_size, "epochs": epochs, "train_images": n_train, "threads": threads,
        "load_average_1min": round(os.getloadavg()[0], 2), "step_ms": step_ms,
        "projected_epoch_s": round(epoch_s, 1), "projected_run_min": round(run_min, 1),
        "overhead_min": OVERHEAD_MIN, "budget_min": args.budget_min,
        "fits_budget": run_min + OVERHEAD_MIN < args.budget_min,
    }, indent=1))


if __name__ == "__main__":
    main()
