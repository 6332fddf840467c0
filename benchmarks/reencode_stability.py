"""Does re-encoding, stripping metadata or shrinking a real photo push the default detector towards ``ai``?  JSON.

Takes the first ``--per-source`` real images of every wild-dev source, in
manifest order (a fixed rule, not a pick by score), and judges each with the
``default`` detector (evidence on, as users run it) as it is, and again as PNG,
WebP q80, JPEG q95/q75/q50 (all without the original metadata), and shrunk to
a 512 px (JPEG q90), 256 px (PNG) and 48 px (JPEG q90; the small-image route)
short side.  Reported per variant: how many real images are called ``ai``,
how many change label against the original, and how far p_ai moves when the
same model judged both (``n`` of them; null when none did, as at 48 px); files
the detector could not judge are listed in ``not_judged``.  The
full-size model (wild-v3; wild-v2 before it) was fitted on all of wild-dev, so
for larger variants this measures stability in-sample, not accuracy.

    .venv/bin/python benchmarks/reencode_stability.py --per-source 8 --out reports/reencode_stability.json
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wild_peers import emit, parse_wild_dev_args, wild_dev_parser  # noqa: E402


def main() -> None:
    parser = wild_dev_parser(__doc__)
    parser.add_argument("--per-source", type=int, default=8)
    parser.add_argument("--model", default="default")
    args = parse_wild_dev_args(parser)
    from synthdetect import Detector
    from synthdetect.evaluate.perturb import SHRUNK_COPIES, reencodings
    from synthdetect.images import load_image

    detector = Detector.load(args.model)
    root = args.manifest.parent
    picked: dict[str, list[Path]] = defaultdict(list)
    for row in csv.DictReader(open(args.manifest)):
        if row["label"] == "real" and len(picked[row["source"]]) < args.per_source:
            picked[row["source"]].append(root / row["path"])
    per_variant: dict[str, dict] = defaultdict(lambda: {"n": 0, "called_ai": 0, "label_changed": 0, "dp": [],
                                                        "examples": [], "called_ai_files": []})
    originals = {"n": 0, "called_ai": 0, "labels": defaultdict(int)}
    not_judged = []  # originals and variants with an error verdict: listed, never silently left out
    for source, paths in sorted(picked.items()):
        for path in paths:
            original = detector(str(path))
            if original.error:
                not_judged.append(f"{source}/{path.name}: {original.error}")
                continue
            originals["n"] += 1
            originals["labels"][original.label] += 1
            originals["called_ai"] += original.label == "ai"
            rgb = load_image(path).rgb  # what the detector saw: EXIF orientation applied, as a platform keeps it
            for name, data in reencodings(rgb, (*SHRUNK_COPIES, (48, "JPEG", {"quality": 90}))).items():
                v = detector(data)
                if v.error:  # not a label change: listed instead
                    not_judged.append(f"{source}/{path.name} as {name}: {v.error}")
                    continue
                row = per_variant[name]
                row["n"] += 1
                row["called_ai"] += v.label == "ai"
                if v.label == "ai":
                    row["called_ai_files"].append(f"{source}/{path.name}: p_ai {v.p_ai} ({v.reasons[0]})")
                if v.label != original.label:
                    row["label_changed"] += 1
                    row["examples"].append(f"{source}/{path.name}: {original.label} -> {v.label} "
                                           f"(p_ai {original.p_ai} -> {v.p_ai})")
                if v.p_ai is not None and original.p_ai is not None and v.models and original.models \
                        and v.models[0]["model"] == original.models[0]["model"]:
                    row["dp"].append(abs(v.p_ai - original.p_ai))
    out = {"model": args.model, "real_images": originals["n"],
           "sources": {s: len(p) for s, p in sorted(picked.items())},
           "original": {"called_ai": originals["called_ai"], "labels": dict(originals["labels"])},
           "not_judged": not_judged, "variants": {}}
    for name, row in per_variant.items():
        dp = np.asarray(row["dp"])  # none when every copy went to another model (the 48 px route): null, not 0
        out["variants"][name] = {"n": row["n"], "called_ai": row["called_ai"], "label_changed": row["label_changed"],
                                 "abs_p_change_same_model": {"n": int(dp.size),
                                                             "mean": round(float(dp.mean()), 4) if dp.size else None,
                                                             "max": round(float(dp.max()), 4) if dp.size else None},
                                 "called_ai_files": row["called_ai_files"], "examples": row["examples"][:5]}
    emit(out, args.out)


if __name__ == "__main__":
    main()
