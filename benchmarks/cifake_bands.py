"""How each detector's verdict bands fall on the held-out CIFAKE test split, printed as JSON.

The `default` router judges 32 px images with a band fitted on real-world
thumbnails (see the README's "Small images"); this shows what that band costs
on CIFAKE itself, next to `cifake-cnn`'s own CIFAKE band, with each model's ROC-AUC, accuracy at
p_ai 0.5, ECE and TPR at 1% FPR on the images it scored.  The split is the
one `synthdetect train` made for the shipped `cifake-cnn` (stratified, seed 0,
5% validation, 5% test), less the 57 copies of earlier files (byte-identical
AI images; ``--copies keep`` scores all 4,009 as the README's older counts did),
so these images were never trained on.

    .venv/bin/python benchmarks/cifake_bands.py [--models default cifake-cnn] [--copies keep]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-train-80k.zip"


def main() -> None:
    from synthdetect.train.splits import COPY_RULES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--models", nargs="+", default=["default", "cifake-cnn"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--copies", choices=COPY_RULES, default="exclude",
                        help="score the held-out copies of earlier files too (keep), or not (exclude)")
    args = parser.parse_args()
    if not args.zip.exists():
        sys.exit(f"benchmark needs {args.zip}")

    import numpy as np

    from synthdetect import Detector
    from synthdetect.evaluate.metrics import binary_metrics
    from synthdetect.models import find_package
    from synthdetect.train.datasets import open_dataset, read_record_bytes
    from synthdetect.train.splits import rebuild_card_split
    from synthdetect.train.trainer import set_threads

    set_threads(args.threads)
    recorded = find_package("cifake-cnn").card["training"]["split"]
    test = rebuild_card_split(open_dataset(args.zip), recorded, copies=args.copies).test
    images = [read_record_bytes(r) for r in test]
    truth = ["ai" if r.label else "real" for r in test]
    out = {"split": f"cifake-cnn's held-out test split (stratified, seed 0; copies {args.copies})",
           "images": Counter(truth), "models": {}}
    for name in args.models:
        started = time.perf_counter()
        verdicts = Detector.load(name, use_evidence=False).detect(images, names=[r.ref for r in test])
        seconds = time.perf_counter() - started
        counts = Counter(f"{t} called {v.label or 'error'}" for t, v in zip(truth, verdicts))
        # Ranking and calibration too, so a model can be weighed as the small-image route, not only by its band.
        scored = [(v.p_ai, t == "ai") for t, v in zip(truth, verdicts) if v.p_ai is not None]
        metrics = binary_metrics(np.array([p for p, _ in scored]), np.array([y for _, y in scored]))
        out["models"][name] = {**dict(sorted(counts.items())), "scored": len(scored),
                               **{k: None if metrics.get(k) is None else round(metrics[k], 4)
                                  for k in ("roc_auc", "accuracy", "ece", "tpr_at_fpr_0.01")},
                               "not_judged": [v.error for v in verdicts if v.error],
                               "seconds": round(seconds, 1)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
