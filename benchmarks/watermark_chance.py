"""Chance-level bit accuracy of the dwtDct watermark decoder on images that carry no mark.

Prints JSON: for each mark, the distribution of the best bit accuracy (over
all encoder variants, as the probe decodes) on wild-dev real photos.  The
probe's thresholds (``synthdetect.evidence.watermark.THRESHOLDS``) must sit
well above the maximum seen here.

    .venv/bin/python benchmarks/watermark_chance.py [WILD_DEV_DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from synthdetect.evidence.watermark import MIN_SIDE, THRESHOLDS, chance_tail, scan_marks
from synthdetect.images import ImageLoadError, load_image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/wild-dev"))
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.root)
    if not (root / "manifest.csv").is_file():
        sys.exit(f"no manifest at {root / 'manifest.csv'} (wild-dev from ../shared is needed)")
    rows = [r for r in csv.DictReader(open(root / "manifest.csv", newline="")) if r["label"] == "real"]
    if args.limit:
        rows = rows[: args.limit]
    accuracies: dict[str, list[float]] = {name: [] for name in THRESHOLDS}
    skipped = 0
    for row in rows:
        try:
            loaded = load_image(root / row["path"])
        except ImageLoadError:
            skipped += 1
            continue
        if loaded.short_side < MIN_SIDE:
            skipped += 1
            continue
        for name, result in scan_marks(loaded.array()).items():
            accuracies[name].append(result["bit_accuracy"])
    if skipped == len(rows):
        sys.exit(f"none of the {len(rows)} real images under {root} is readable and at least {MIN_SIDE} px")
    report = {"images": len(rows) - skipped, "skipped_small_or_unreadable": skipped, "marks": {}}
    for name, values in accuracies.items():
        arr = np.array(values)
        bits = 136 if name == "StableDiffusionV1" else 48
        report["marks"][name] = {
            "mean": round(float(arr.mean()), 4), "std": round(float(arr.std()), 4),
            "p99": round(float(np.quantile(arr, 0.99)), 4), "max": round(float(arr.max()), 4),
            "threshold": THRESHOLDS[name], "above_threshold": int((arr >= THRESHOLDS[name]).sum()),
            "binomial_tail_at_threshold_one_order": chance_tail(THRESHOLDS[name], bits),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
