"""Per-image cost of each evidence probe on wild-dev images (decode excluded).

Prints JSON: median / p90 / mean milliseconds per probe and for the default
set that ``Detector`` runs, over ``--limit`` images spread across wild-dev;
wall-clock and process CPU time (CPU time is the fairer number on a shared
machine; probes are single-threaded NumPy/PyWavelets/c2pa-rs work).  Each
probe runs once, untimed, on the first image first: its imports and first-call
set-up are start-up cost, not per-image cost.

    .venv/bin/python benchmarks/evidence_cost.py [WILD_DEV_DIR] [--limit 40]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from synthdetect.evidence import probe_names, run_probes
from synthdetect.images import ImageLoadError, load_image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/wild-dev"))
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    root = Path(args.root)
    if args.limit < 1:
        sys.exit(f"--limit must be at least 1, not {args.limit}")
    if not (root / "manifest.csv").is_file():
        sys.exit(f"no manifest at {root / 'manifest.csv'} (wild-dev from ../shared is needed)")
    rows = list(csv.DictReader(open(root / "manifest.csv", newline="")))
    step = max(len(rows) // args.limit, 1)
    chosen = rows[::step][: args.limit]
    names, defaults = probe_names(), probe_names(include_on_request=False)
    cost: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    default_total, default_cpu, pixels, unreadable = [], [], [], []
    warmed = False
    for row in chosen:
        try:
            loaded = load_image(root / row["path"])
        except ImageLoadError as exc:
            unreadable.append(f"{row['path']}: {exc}")
            continue
        if not warmed:
            run_probes(loaded, names)
            warmed = True
        pixels.append(loaded.size[0] * loaded.size[1] / 1e6)
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            run_probes(loaded, [name])
            cost[name].append((time.perf_counter() - t0) * 1000)
            cpu[name].append((time.process_time() - c0) * 1000)
        default_total.append(sum(cost[n][-1] for n in defaults))
        default_cpu.append(sum(cpu[n][-1] for n in defaults))

    def summary(values: list[float]) -> dict[str, float]:
        arr = np.array(values)
        return {"median_ms": round(float(np.median(arr)), 2), "p90_ms": round(float(np.quantile(arr, 0.9)), 2),
                "mean_ms": round(float(arr.mean()), 2)}

    if not default_total:
        sys.exit(f"none of the {len(chosen)} chosen images under {root} could be read")
    print(json.dumps({
        "images": len(default_total), "unreadable": unreadable, "megapixels_median": round(float(np.median(pixels)), 2),
        "default_probes": defaults, "default_total_wall": summary(default_total),
        "default_total_cpu": summary(default_cpu),
        "per_probe_wall": {n: summary(v) for n, v in cost.items()},
        "per_probe_cpu": {n: summary(v) for n, v in cpu.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
