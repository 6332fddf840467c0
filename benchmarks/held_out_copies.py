"""What copies of training files did to a CIFAKE model's card: its accuracy with and without them, as JSON.

CIFAKE's training zip holds 599 pairs of byte-identical AI images.  Cards made
before `synthdetect train` excluded such copies (2026-11-22) scored them: on
the shipped split, 48 validation and 57 held-out images are copies of a file
that came earlier (in training, or earlier in validation/test).  This scores
each package, through the Detector, on the split its card names (rebuilt with
`--copies keep`), and reports accuracy on all images, on the copies, and on
the rest; "rest" is what `--copies exclude` scores.

    .venv/bin/python benchmarks/held_out_copies.py cifake-cnn /work/runs/cifake-cnn-sb-v1 [--data PATH] [--write]

``--write`` adds the "without copies" metrics to each package's card (model.json
and MODEL_CARD.md) as ``validation_without_copies`` and ``test_without_copies``,
leaving the card's original numbers as they were measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-train-80k.zip"
ROUND = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="package names or directories trained on the CIFAKE zip")
    parser.add_argument("--data", type=Path, default=DEFAULT_ZIP, help="the dataset the packages were trained on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="add the numbers without copies to each card")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"benchmark needs {args.data}")

    import numpy as np

    from synthdetect import Detector
    from synthdetect.evaluate.metrics import binary_metrics
    from synthdetect.models import find_package
    from synthdetect.models.package import add_card_metrics
    from synthdetect.train.datasets import open_dataset, read_record_bytes
    from synthdetect.train.splits import rebuild_card_split
    from synthdetect.train.trainer import set_threads

    set_threads(args.threads)
    records = open_dataset(args.data)
    out: dict = {"data": str(args.data), "models": {}}
    for name in args.models:
        package = find_package(name)
        kept = rebuild_card_split(records, package.card["training"]["split"], copies="keep")
        copies = {c.ref for c in kept.without_copies().unscored}
        detector = Detector.load(name, use_evidence=False)
        result = {}
        for part, part_records in (("validation", kept.val), ("test", kept.test)):
            verdicts = detector.detect([read_record_bytes(r) for r in part_records],
                                       names=[r.ref for r in part_records])
            # An image the model could not judge counts as not right (the card's accuracy is over the whole
            # split) and is left out of the score-based metrics, which need a score; each one is listed.
            judged = np.array([v.p_ai is not None for v in verdicts])
            p_ai = np.array([np.nan if v.p_ai is None else v.p_ai for v in verdicts])
            labels = np.array([r.label for r in part_records])
            right = judged & ((p_ai >= 0.5) == (labels == 1))
            is_copy = np.array([r.ref in copies for r in part_records])
            rest = binary_metrics(p_ai[~is_copy & judged], labels[~is_copy & judged])
            result[part] = {
                "all": {"n": len(right), "right": int(right.sum()), "accuracy": round(float(right.mean()), ROUND)},
                "copies": {"n": int(is_copy.sum()), "right": int(right[is_copy].sum())},
                "without_copies": {"right": int(right[~is_copy].sum()),
                                   **{k: (round(v, ROUND) if isinstance(v, float) else v) for k, v in rest.items()}},
                "not_judged": [v.error for v in verdicts if v.p_ai is None],
            }
        out["models"][name] = result
        unjudged = sum(len(result[part]["not_judged"]) for part in result)
        if args.write and unjudged:
            print(json.dumps(out, indent=2))
            sys.exit(f"{name}: {unjudged} image(s) of its split could not be judged (listed under not_judged); "
                     "the card was not changed, since its numbers are over every image")
        if args.write:
            add_card_metrics(package.root, {
                f"{part}_without_copies": {
                    **{k: v for k, v in result[part]["without_copies"].items() if k != "right"},
                    "copies_excluded": result[part]["copies"]["n"], "measured_by": "benchmarks/held_out_copies.py"}
                for part in ("validation", "test")})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
