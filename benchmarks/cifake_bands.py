"""How each detector's verdict bands fall on the held-out CIFAKE test split, printed as JSON.

The `default` router judges 32 px images with a band fitted on real-world
thumbnails (see the README's "Small images"); this shows what that band costs
on CIFAKE itself, next to `cifake-cnn`'s own CIFAKE band.  The split is the
one `synthdetect train` made for the shipped `cifake-cnn` (stratified, seed 0,
5% validation, 5% test), so these images were never trained on.

    .venv/bin/python benchmarks/cifake_bands.py [--models default cifake-cnn]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-train-80k.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--models", nargs="+", default=["default", "cifake-cnn"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.zip.exists():
        sys.exit(f"benchmark needs {args.zip}")

    from synthdetect import Detector
    from synthdetect.train.datasets import open_dataset, read_record_bytes
    from synthdetect.train.splits import split_records
    from synthdetect.train.trainer import set_threads

    set_threads(args.threads)
    test = split_records(open_dataset(args.zip), "stratified", val_fraction=0.05, test_fraction=0.05, seed=0).test
    images = [read_record_bytes(r) for r in test]
    truth = ["ai" if r.label else "real" for r in test]
    out = {"split": "cifake-cnn's held-out test split (stratified, seed 0)", "images": Counter(truth), "models": {}}
    for name in args.models:
        verdicts = Detector.load(name, use_evidence=False).detect(images)
        counts = Counter(f"{t} called {v.label}" for t, v in zip(truth, verdicts))
        out["models"][name] = dict(sorted(counts.items()))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
