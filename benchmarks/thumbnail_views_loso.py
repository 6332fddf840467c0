"""Do more views of the thumbnail help wild-v2?  Leave-one-source-out on wild-dev; prints JSON.

wild-v2 judges CLIP features of one view: the image shrunk to a 48 px short
side (Lanczos), re-encoded as JPEG q90.  Two cheap ways to average out the
quirks of that one rendering, each judged with train-wild's own leave-one-
source-out (nested calibration and thresholds, pooled held-out numbers):

- ``sizes-mean``: the head sees thumbnails at every ``--sizes`` short side
  (training weighs each image once) and an image's logit is the mean over them;
  ``global+sizes-mean`` stacks that with the 48 px member;
- ``flip-mean``: the 48 px view and its mirror image, logits averaged.

``global-48`` is wild-v2's own view, for reference.  Features are cached as for
train-wild (``SYNTHDETECT_CACHE``); the mirrored views are computed each run.
``--extractor`` defaults to the int8 CLIP path the README's numbers were measured
on; ``clip-vit-b16-f32`` asks the same of wild-v3's features.

    .venv/bin/python benchmarks/thumbnail_views_loso.py --out reports/thumbnail_views_loso.json
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wild_peers import emit, parse_wild_dev_args, wild_dev_parser  # noqa: E402

METRICS = ("roc_auc", "tpr_at_fpr_0.05", "tpr_at_fpr_0.01", "ece", "accuracy")


def main() -> None:
    parser = wild_dev_parser(__doc__)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[32, 40, 48, 56, 64])
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extractor", default="clip-vit-b16-int8", help="the CLIP path whose features are used")
    args = parse_wild_dev_args(parser)

    from PIL import ImageOps

    from synthdetect.models.multicrop import CropPolicy
    from synthdetect.models.view_features import get_extractor
    from synthdetect.train.datasets import load_record, open_dataset
    from synthdetect.train.trainer import set_threads
    from synthdetect.train.wild import Candidate, MemberSpec, WildData, public, run_loso
    from synthdetect.train.wild_features import extract_cached

    set_threads(args.threads)
    clip = args.extractor
    started = time.perf_counter()
    records = open_dataset(args.manifest)
    policies = {s: CropPolicy(native_crops=0, global_short_side=s, global_jpeg_quality=args.jpeg_quality)
                for s in sorted(set(args.sizes) | {48})}
    with contextlib.redirect_stdout(sys.stderr):  # extract_cached's progress bar: stdout carries the JSON only
        per_size = {s: WildData.from_cache(extract_cached(records, p, [clip],
                                                          description=f"CLIP, {s} px thumbnails"))
                    for s, p in policies.items()}
    data = per_size[48]
    if any(d.names != data.names for d in per_size.values()):
        sys.exit("an image failed at one thumbnail size but not another; the views would not line up")
    by_ref = {r.ref: r for r in records}
    encoder = get_extractor(clip)
    mirrored = np.stack([encoder.features([ImageOps.mirror(policies[48].global_crop(load_record(by_ref[n]).rgb))])[0]
                         for n in data.names])
    global_key = MemberSpec(clip, "global").key
    views_key = MemberSpec(clip, "crops", "mean").key
    results = {}
    variants = {
        "sizes": [np.stack([per_size[s].global_feats[clip][i] for s in args.sizes]) for i in range(len(data))],
        "flip": [np.stack([data.global_feats[clip][i], mirrored[i]]) for i in range(len(data))],
    }
    for name, views in variants.items():
        data.crop_feats[clip] = views
        cands = [Candidate("global-48", (global_key,)), Candidate(f"{name}-mean", (views_key,))]
        if name == "sizes":
            cands.append(Candidate("global+sizes-mean", (global_key, views_key)))
        _, pooled = run_loso(data, [clip], cands)
        for cand, metrics in pooled.items():
            results[cand] = {m: round(public(metrics)[m], 4) for m in METRICS}
    emit({"manifest": str(args.manifest), "images": len(data), "sizes": args.sizes,
          "jpeg_quality": args.jpeg_quality, "protocol": "train-wild leave-one-source-out, pooled held-out",
          "candidates": results, "seconds": round(time.perf_counter() - started, 1)}, args.out)


if __name__ == "__main__":
    main()
