"""Does CLIP see what a CIFAKE model misses?  Validation split only, printed as JSON.

Nine small-CNN recipes level off at 97.2-97.6% held out and share most of
their misses, which look semantic (studio-like real photos, snapshot-like AI
images).  CLIP image features are the semantic signal not yet tried there.
This embeds a seeded sample of validation images and of training images
(32 px enlarged bicubic to 224, one image per ``session.run`` because the
encoder is dynamically quantised), fits a logistic-regression head on the
training embeddings (C by 5-fold CV on them), and compares, on the validation
sample: the package alone (its p_ai through the Detector), the CLIP head alone,
and a two-feature logistic stack of their logits (5-fold CV on the sample).
It never reads the held-out split.  At 126 ms per embedding on 2 cores the
default sizes take about six minutes.

    .venv/bin/python benchmarks/cifake_clip_complement.py [cifake-cnn] [--val 1200] [--train 1500]

``--cascade`` measures a cascade instead, on the whole validation split: the
package decides the images it is sure of, and in its least-confident band
(|logit| below the ``--band`` quantile of the validation images' |logit|,
chosen without labels) a logistic head on [CLIP embedding, package logit]
decides.  The head is fitted on up to ``--train`` training images inside the
same band, found by scoring a seeded sample of ``--train-sample`` training
images.  ``--cache FILE`` keeps embeddings between runs (an .npz keyed by
record).  Measured 2026-12-05 (docs/cifake-cnn-attempts.md): +14 validation
images for 1.1.0, +11 for the 18-epoch run.

    .venv/bin/python benchmarks/cifake_clip_complement.py PACKAGE --cascade [--band 0.15] [--train 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-train-80k.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="cifake-cnn", help="package name or directory trained on the zip")
    parser.add_argument("--data", type=Path, default=DEFAULT_ZIP, help="the dataset the package was trained on")
    parser.add_argument("--val", type=int, default=1200, help="validation images to embed (seed 13)")
    parser.add_argument("--train", type=int, help="training images for the CLIP head (seed 14; default 1500, or "
                                                  "3000 band images with --cascade)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cascade", action="store_true", help="measure the band cascade on all validation images")
    parser.add_argument("--band", type=float, default=0.15, help="cascade: share of validation images in the band")
    parser.add_argument("--train-sample", type=int, default=24000, help="cascade: training images scored (seed 14)")
    parser.add_argument("--cache", type=Path, help="an .npz of embeddings by record, read and extended")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"benchmark needs {args.data}")

    import numpy as np
    from PIL import Image
    from rich.console import Console
    from rich.progress import track
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from synthdetect import Detector
    from synthdetect.images import load_image
    from synthdetect.models import find_package
    from synthdetect.models.clip_onnx import ClipEncoder
    from synthdetect.train.datasets import RECORD_ERRORS, open_dataset, read_record_bytes, record_error
    from synthdetect.train.splits import rebuild_card_split
    from synthdetect.train.trainer import set_threads

    set_threads(args.threads)
    records = open_dataset(args.data)
    package = find_package(args.model)
    split = rebuild_card_split(records, package.card["training"]["split"], copies="exclude")
    detector = Detector.load(args.model, use_evidence=False)
    not_judged: list[str] = []

    def scored(part):
        """The records the package judged and their logits (of its calibrated p_ai); the others are listed."""
        verdicts = detector.detect([read_record_bytes(r) for r in part], names=[r.ref for r in part])
        # The scorers are compared on the same images: one the model cannot judge is left out of all and listed.
        not_judged.extend(v.error for v in verdicts if v.p_ai is None)
        kept = [(r, v.p_ai) for r, v in zip(part, verdicts) if v.p_ai is not None]
        if not kept:
            sys.exit(f"{args.model} judged none of the {len(part)} images, e.g. {not_judged[-1]}")
        p_ai = np.clip([p for _, p in kept], 1e-7, 1 - 1e-7)
        return [r for r, _ in kept], np.log(p_ai / (1 - p_ai)), np.array([r.label for r, _ in kept])

    encoder = ClipEncoder(threads=args.threads)
    progress_console = Console(stderr=True)  # stdout carries the JSON only
    cache = dict(np.load(args.cache)) if args.cache and args.cache.exists() else {}

    def embed(part, name):
        """Unit-norm embeddings of the records that decode, their labels, and which of ``part`` they are."""
        rows, kept = [], []
        for i, record in enumerate(track(part, description=f"CLIP {name}", console=progress_console)):
            if record.ref not in cache:
                try:
                    small = load_image(read_record_bytes(record), name=record.ref).rgb
                except RECORD_ERRORS as exc:
                    not_judged.append(record_error(record, exc))
                    continue
                cache[record.ref] = encoder.embed(small.resize((224, 224), Image.BICUBIC))
            rows.append(cache[record.ref])
            kept.append(i)
        if args.cache:
            np.savez(args.cache, **cache)
        rows = np.stack(rows)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True), np.array([part[i].label for i in kept]), kept

    def right(logit, labels):
        return int(((logit >= 0) == (labels == 1)).sum())

    if args.cascade:
        print(json.dumps(cascade(args, split, scored, embed, right, not_judged), indent=2))
        return
    val = [split.val[i] for i in np.random.default_rng(13).choice(len(split.val), args.val, replace=False)]
    train = [split.train[i] for i in np.random.default_rng(14).choice(len(split.train), args.train or 1500,
                                                                      replace=False)]
    val, model_logit, val_labels = scored(val)
    train_emb, train_labels, _ = embed(train, "train")
    val_emb, _, kept = embed(val, "validation")
    model_logit, val_labels = model_logit[kept], val_labels[kept]
    head = LogisticRegressionCV(Cs=np.logspace(-2, 3, 11), cv=5, max_iter=5000).fit(train_emb, train_labels)
    clip_logit = head.decision_function(val_emb)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    stack_logit = cross_val_predict(LogisticRegression(C=1e4, max_iter=5000), np.c_[model_logit, clip_logit],
                                    val_labels, cv=folds, method="decision_function")
    model_wrong = (model_logit >= 0) != (val_labels == 1)
    clip_wrong = (clip_logit >= 0) != (val_labels == 1)
    print(json.dumps({
        "model": args.model, "validation_images": len(val_labels), "train_images": len(train_labels),
        "not_judged": not_judged,
        "clip_head_C": float(head.C_[0]),
        "right": {"model": right(model_logit, val_labels), "clip_head": right(clip_logit, val_labels),
                  "stack_cv": right(stack_logit, val_labels)},
        "model_misses": int(model_wrong.sum()),
        "clip_head_also_wrong_on_model_misses": int((clip_wrong & model_wrong).sum()),
    }, indent=2))


def cascade(args, split, scored, embed, right, not_judged) -> dict:
    """The package outside its least-confident band, a CLIP head on [embedding, package logit] inside it."""
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV

    val, val_logit, val_labels = scored(split.val)
    tau = float(np.quantile(np.abs(val_logit), args.band))  # from the validation scores alone, no labels
    sample = [split.train[i] for i in np.random.default_rng(14).choice(len(split.train), args.train_sample,
                                                                       replace=False)]
    sample, sample_logit, _ = scored(sample)
    in_band = np.flatnonzero(np.abs(sample_logit) < tau)[: args.train or 3000]
    train_emb, train_labels, kept = embed([sample[i] for i in in_band], "train band")
    features = np.c_[train_emb, sample_logit[in_band][kept]]
    head = LogisticRegressionCV(Cs=np.logspace(-2, 3, 11), cv=5, max_iter=5000).fit(features, train_labels)
    band = np.flatnonzero(np.abs(val_logit) < tau)
    band_emb, band_labels, kept = embed([val[i] for i in band], "validation band")
    band = band[kept]
    head_logit = head.decision_function(np.c_[band_emb, val_logit[band]])
    cascade_logit = val_logit.copy()
    cascade_logit[band] = head_logit
    misses = (val_logit >= 0) != (val_labels == 1)
    return {
        "model": args.model, "validation_images": len(val_labels), "band_share": args.band, "band_tau": tau,
        "band_images": len(band), "model_misses": int(misses.sum()),
        "model_misses_in_band": int(misses[band].sum()),
        "train_sample": len(sample), "train_band_images": len(train_labels), "head_C": float(head.C_[0]),
        "right": {"model": right(val_logit, val_labels), "cascade": right(cascade_logit, val_labels),
                  "in_band_model": right(val_logit[band], band_labels),
                  "in_band_head": right(head_logit, band_labels)},
        "not_judged": not_judged,
    }


if __name__ == "__main__":
    main()
