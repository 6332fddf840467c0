"""Which cifake-cnn recipe deserves the one 30-minute CPU run?  Validation only, printed as JSON lines.

A CPU run of the shipped recipe takes 20-28 minutes on 2 cores, so recipes cannot be compared there with more than
one seed each, and one seed moves validation accuracy by about 0.1-0.15%: more than most changes are worth.  This
script runs ``synthdetect train`` for several recipes x seeds at once on a CUDA GPU (``--device cuda``, one process
per run, one CPU thread each) and reports each run's *validation* result without copies: images right of N, loss,
ROC-AUC.  The trainer also writes held-out numbers on each card; they are never read here, so recipes are chosen on
validation alone and the held-out split stays a test.

Every recipe must cost no more training arithmetic than the baseline (the 1.1.0 command): epoch-equivalents
(selective backprop's part-epochs at their share) times multiply-accumulates per image.  The cost is computed from
the recipe's own arguments and the network it builds, and a recipe over the baseline is refused.

The zip is decoded once, in parallel, with the trainer's own ``decode_records``; each run's decode step then reads
those arrays (same records, same pixels) instead of decoding 80,000 JPEGs again.  ``--seed`` also draws the split,
so runs of one seed share their validation set and recipes are compared seed by seed (paired).

    python benchmarks/cifake_recipe_sweep.py ZIP --out DIR [--recipes baseline,lr0.2] [--seeds 0,1,2]
        [--workers 12] [--deadline-s 540] [--device cuda] [--list]

The zip (81 MB) is larger than what a call of the lent GPU machine may carry (64 MiB), but its 80,171 JPEGs share
their headers, so ``--pack DIR`` writes them as one xz tar (25 MB) with a checksum of every member's name and bytes,
and ``--from-tar DIR/cifake.tar.xz`` rebuilds ZIP there with the same members (checked) before the runs; the split
reads members in name order, so seed s draws the same split as from the original.
``benchmarks/cifake_recipe_sweep_device.sh`` is the whole device call.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

#: The 1.1.0 command (README, "Training cifake-cnn") without --out, --name, --seed and --threads.
BASELINE = ["--model", "small-cnn", "--epochs", "14", "--patience", "14", "--augment", "flip", "--optimizer", "sgd",
            "--lr", "0.1", "--label-smoothing", "0.2", "--option", "depth=4", "--option", "tta_hflip=true",
            "--hard-fraction", "0.5", "--hard-after", "3"]

#: Changes to the baseline; a later flag overrides an earlier one, as Typer reads them.
RECIPES: dict[str, list[str]] = {
    "baseline": [],
    "lr0.2": ["--lr", "0.2"],
    "lr0.05": ["--lr", "0.05"],
    "ls0.1": ["--label-smoothing", "0.1"],
    "ls0.3": ["--label-smoothing", "0.3"],
    "wd1e-3": ["--weight-decay", "0.001"],
    "wd2.5e-4": ["--weight-decay", "0.00025"],
    "hard0.4x16": ["--hard-fraction", "0.4", "--epochs", "16", "--patience", "16"],
    "hard0.33x19": ["--hard-fraction", "0.33", "--epochs", "19", "--patience", "19"],
    "after2x15": ["--hard-after", "2", "--epochs", "15", "--patience", "15"],
    "flipalt": ["--augment", "flip:alt"],
    "shift1": ["--augment", "flip,shift:1"],
    "shift3": ["--augment", "flip,shift:3"],
    "batch256": ["--batch-size", "256", "--lr", "0.2"],
    "width24x26": ["--width", "24", "--epochs", "26", "--patience", "26"],
    "full8": ["--hard-fraction", "1", "--epochs", "8", "--patience", "8"],
}


def member_digest(names_and_bytes) -> str:
    """sha256 over every member's name and bytes, in name order: equal digests mean the same dataset."""
    import hashlib

    digest = hashlib.sha256()
    count = 0
    for name, data in names_and_bytes:
        digest.update(name.encode())
        digest.update(data)
        count += 1
    return f"{count} {digest.hexdigest()}"


def pack(zip_path: str, folder: Path) -> str:
    """The zip's files as one xz tar (a 192 MiB window finds the repeated JPEG headers) plus their digest."""
    import lzma
    import tarfile
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/"))
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 192 << 20}]
        def members():  # each member read once: into the tar, then into the digest
            with lzma.open(folder / "cifake.tar.xz", "wb", format=lzma.FORMAT_XZ, filters=filters) as raw, \
                    tarfile.open(fileobj=raw, mode="w") as tar:
                for name in names:
                    data = archive.read(name)
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    yield name, data

        digest = member_digest(members())
    (folder / "members.sha256").write_text(digest + "\n")
    return digest


def unpack(tar_path: Path, zip_path: str) -> str:
    """Rebuild the zip from ``pack``'s tar and refuse it unless its digest matches the one packed beside it."""
    import tarfile
    import zipfile

    expected = (tar_path.parent / "members.sha256").read_text().strip()
    Path(zip_path).parent.mkdir(parents=True, exist_ok=True)
    members = []
    with tarfile.open(tar_path, "r:xz") as tar, zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        for info in tar:
            data = tar.extractfile(info).read()
            archive.writestr(info.name, data)
            members.append((info.name, data))
    got = member_digest(sorted(members))
    if got != expected:
        raise SystemExit(f"error: {zip_path} rebuilt from {tar_path} does not match: {got} != {expected}")
    return got


def flag(args: list[str], name: str, default: str) -> str:
    """The last value given for ``name`` (Typer keeps the last of a repeated option)."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]
    return values[-1] if values else default


def macs_per_image(args: list[str]) -> int:
    """Multiply-accumulates of one forward pass of the network these arguments build, counted with hooks."""
    import torch

    from synthdetect.train.commands import parse_options
    from synthdetect.train.small_image import small_cnn_from_options

    options = {"width": int(flag(args, "--width", "32")),
               **parse_options([args[i + 1] for i, a in enumerate(args[:-1]) if a == "--option"])}
    module = small_cnn_from_options(options, (32, 32), tta_hflip=False).eval()
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            total += output.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, torch.nn.Linear):
            total += layer.in_features * layer.out_features

    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            layer.register_forward_hook(count)
    with torch.no_grad():
        module(torch.zeros(1, 3, 32, 32))
    return total


def cost(args: list[str]) -> dict[str, float]:
    """Training arithmetic in full-epoch equivalents and in multiply-accumulates per training image."""
    from synthdetect.train.trainer import TrainConfig

    config = TrainConfig(epochs=int(flag(args, "--epochs", "12")),
                         hard_fraction=float(flag(args, "--hard-fraction", "1")),
                         hard_after=int(flag(args, "--hard-after", "3")))
    equivalents = config.epoch_equivalents(10**6)
    macs = macs_per_image(args)
    return {"epoch_equivalents": equivalents, "mmac_per_image": macs / 1e6, "cost": equivalents * macs / 1e6}


def decode_all(zip_path: str, workers: int):
    """Every record of the zip decoded once, as the trainer decodes it (32 px, bicubic), keyed by ``ref``."""
    import numpy as np

    from synthdetect.train.datasets import open_dataset

    records = open_dataset(zip_path)
    chunks = [records[i::workers] for i in range(workers)]
    with mp.get_context("fork").Pool(workers) as pool:
        decoded = pool.map(_decode_chunk, chunks)
    arrays = np.empty((len(records), 32, 32, 3), dtype=np.uint8)
    rows: dict[str, int] = {}
    errors: dict[str, str] = {}
    for i, (chunk_arrays, chunk_errors) in enumerate(decoded):
        positions = range(i, len(records), workers)
        for position, record, array in zip(positions, chunks[i], chunk_arrays):
            arrays[position] = array
            rows[record.ref] = position
        errors.update(chunk_errors)
    return records, arrays, rows, errors


def _decode_chunk(chunk):
    """A chunk in one call; if any image fails, again one at a time so each failure is tied to its record."""
    import numpy as np

    from synthdetect.train.trainer import decode_records

    errors: dict[str, str] = {}
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        arrays, _, failed = decode_records(chunk, (32, 32))
        if not failed:
            return arrays, errors
        arrays = np.zeros((len(chunk), 32, 32, 3), dtype=np.uint8)
        for i, record in enumerate(chunk):
            decoded, _, failed = decode_records([record], (32, 32))
            if failed:
                errors[record.ref] = failed[0]
            else:
                arrays[i] = decoded[0]
    return arrays, errors


_CACHE: dict = {}


def cached_decode_records(records, size, *, resample="bicubic", description="decode", transform=None):
    """Stands in for ``decode_records`` inside each run: the same pixels, read from the arrays decoded up front."""
    import numpy as np

    if tuple(size) != (32, 32) or transform is not None or resample != "bicubic":
        raise ValueError("the sweep decodes 32 px bicubic images only")
    arrays, rows, errors = _CACHE["arrays"], _CACHE["rows"], _CACHE["errors"]
    good = [r for r in records if r.ref not in errors]
    index = np.array([rows[r.ref] for r in good], dtype=np.int64)
    labels = np.array([r.label for r in good], dtype=np.float32)
    return arrays[index], labels, [errors[r.ref] for r in records if r.ref in errors]


def run_one(task: tuple[str, int, list[str], str, str, str]) -> dict:
    """Train one recipe at one seed in this (forked) process; return its validation numbers only."""
    name, seed, args, zip_path, out_root, device = task
    import synthdetect.train.small_image as small_image
    from synthdetect.cli import app

    small_image.decode_records = cached_decode_records
    out = Path(out_root) / f"{name}-s{seed}"
    command = ["train", zip_path, "--out", str(out), "--name", "cifake-cnn", "--seed", str(seed), "--threads", "1",
               "--device", device, *BASELINE, *args]
    started = time.time()
    log = Path(out_root) / f"{name}-s{seed}.log"
    with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        try:
            code = app(command, standalone_mode=False)
        except BaseException as exc:  # noqa: BLE001 - a failed run is reported, not fatal to the sweep
            return {"recipe": name, "seed": seed, "error": f"{type(exc).__name__}: {exc}", "log": str(log)}
    if code or not (out / "model.json").exists():  # the command refused it (exit 2): its error is the log's end
        said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return {"recipe": name, "seed": seed, "error": said[-1] if said else f"exit {code}", "log": str(log)}
    card = json.loads((out / "model.json").read_text())
    val = card["metrics"]["validation"]
    matrix = val["confusion_matrix"]["rows_true_cols_pred"]
    return {"recipe": name, "seed": seed, "val_correct": matrix[0][0] + matrix[1][1], "val_n": val["n"],
            "val_accuracy": val["accuracy"], "val_loss": val["loss"], "val_roc_auc": val["roc_auc"],
            "best_epoch": card["training"]["best_epoch"], "epochs_run": card["training"]["epochs_run"],
            "train_seconds": card["training"]["seconds"], "wall_seconds": round(time.time() - started, 1)}


def summarise(results: list[dict]) -> list[dict]:
    """Per recipe: seeds done and the paired gain over the baseline in validation images right."""
    base = {r["seed"]: r["val_correct"] for r in results if r["recipe"] == "baseline" and "val_correct" in r}
    rows = []
    for name in RECIPES:
        mine = {r["seed"]: r["val_correct"] for r in results if r["recipe"] == name and "val_correct" in r}
        paired = [mine[s] - base[s] for s in sorted(mine) if s in base]
        rows.append({"recipe": name, "seeds": sorted(mine), "val_correct": [mine[s] for s in sorted(mine)],
                     "paired_gain": paired, "mean_gain": statistics.mean(paired) if paired else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", nargs="?", help="cifake-train-80k.zip")
    parser.add_argument("--out", type=Path, help="folder for the runs' packages and logs")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--deadline-s", type=float, default=540.0, help="stop starting and waiting after this")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--results", type=Path, help="JSON lines file (default OUT/results.jsonl)")
    parser.add_argument("--list", action="store_true", help="print each recipe's cost and exit")
    parser.add_argument("--extra", default="", help="more train arguments for every run (tests: --epochs 1)")
    parser.add_argument("--pack", type=Path, metavar="DIR", help="write ZIP as DIR/cifake.tar.xz + digest and exit")
    parser.add_argument("--from-tar", type=Path, metavar="TAR", help="rebuild ZIP from a --pack tar first")
    ns = parser.parse_args(argv)
    started = time.time()
    if ns.pack:
        print(json.dumps({"packed": str(ns.pack / "cifake.tar.xz"), "members": pack(ns.zip, ns.pack),
                          "bytes": (ns.pack / "cifake.tar.xz").stat().st_size}))
        return 0
    if ns.from_tar:
        print(json.dumps({"rebuilt": ns.zip, "members": unpack(ns.from_tar, ns.zip),
                          "seconds": round(time.time() - started, 1)}), flush=True)
    names = [n for n in ns.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    base_cost = cost(BASELINE)["cost"]
    costs = {n: cost(BASELINE + RECIPES[n]) for n in names}
    over = [n for n in names if costs[n]["cost"] > base_cost * 1.0001]
    if ns.list or over:
        for n in names:
            print(json.dumps({"recipe": n, **costs[n], "vs_baseline": round(costs[n]["cost"] / base_cost, 3),
                              "args": RECIPES[n]}))
        if over:
            print(f"error: recipe(s) {', '.join(over)} cost more training arithmetic than the baseline",
                  file=sys.stderr)
            return 2
        return 0
    if not ns.zip or not ns.out:
        parser.error("ZIP and --out are needed to run")
    ns.out.mkdir(parents=True, exist_ok=True)
    results_path = ns.results or ns.out / "results.jsonl"
    records, arrays, rows, errors = decode_all(ns.zip, max(1, ns.workers))
    _CACHE.update(arrays=arrays, rows=rows, errors=errors)
    print(json.dumps({"decoded": len(records), "decode_errors": len(errors),
                      "seconds": round(time.time() - started, 1)}), flush=True)
    seeds = [int(s) for s in ns.seeds.split(",")]
    extra = ns.extra.split()
    tasks = [(n, s, RECIPES[n] + extra, ns.zip, str(ns.out), ns.device) for s in seeds for n in names]
    results: list[dict] = []
    pool = mp.get_context("fork").Pool(ns.workers, maxtasksperchild=1)
    pending = pool.imap_unordered(run_one, tasks)
    with open(results_path, "a") as sink:
        for _ in tasks:
            left = ns.deadline_s - (time.time() - started)
            try:
                result = pending.next(timeout=max(left, 0.1))
            except mp.TimeoutError:
                print(json.dumps({"deadline": ns.deadline_s, "finished": len(results), "of": len(tasks)}), flush=True)
                break
            results.append(result)
            sink.write(json.dumps(result) + "\n")
            sink.flush()
            print(json.dumps(result), flush=True)
    pool.terminate()
    for row in summarise(results):
        if row["seeds"]:
            print(json.dumps({"summary": row["recipe"], **row, "cost_vs_baseline":
                              round(costs[row["recipe"]]["cost"] / base_cost, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
