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
    parser.add_argument("--train", type=int, default=1500, help="training images for the CLIP head (seed 14)")
    parser.add_argument("--threads", type=int, default=2)
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
    val = [split.val[i] for i in np.random.default_rng(13).choice(len(split.val), args.val, replace=False)]
    train = [split.train[i] for i in np.random.default_rng(14).choice(len(split.train), args.train, replace=False)]
    detector = Detector.load(args.model, use_evidence=False)
    verdicts = detector.detect([read_record_bytes(r) for r in val], names=[r.ref for r in val])
    # The three scorers are compared on the same images: one the model cannot judge is left out of all three
    # and listed, as is a training image that does not decode for the CLIP head.
    not_judged = [v.error for v in verdicts if v.p_ai is None]
    if len(not_judged) == len(val):
        sys.exit(f"{args.model} judged none of the {len(val)} validation images, e.g. {not_judged[0]}")
    val, verdicts = zip(*[(r, v) for r, v in zip(val, verdicts) if v.p_ai is not None])
    p_ai = np.clip([v.p_ai for v in verdicts], 1e-7, 1 - 1e-7)
    model_logit = np.log(p_ai / (1 - p_ai))
    val_labels = np.array([r.label for r in val])

    encoder = ClipEncoder(threads=args.threads)
    progress_console = Console(stderr=True)  # stdout carries the JSON only

    def embed(part, name):
        rows, kept = [], []
        for record in track(part, description=f"CLIP {name}", console=progress_console):
            try:
                small = load_image(read_record_bytes(record), name=record.ref).rgb
            except RECORD_ERRORS as exc:
                not_judged.append(record_error(record, exc))
                continue
            rows.append(encoder.embed(small.resize((224, 224), Image.BICUBIC)))
            kept.append(record.label)
        rows = np.stack(rows)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True), np.array(kept)

    (train_emb, train_labels), (val_emb, _) = embed(train, "train"), embed(val, "validation")
    head = LogisticRegressionCV(Cs=np.logspace(-2, 3, 11), cv=5, max_iter=5000).fit(train_emb, train_labels)
    clip_logit = head.decision_function(val_emb)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    stack_logit = cross_val_predict(LogisticRegression(C=1e4, max_iter=5000), np.c_[model_logit, clip_logit],
                                    val_labels, cv=folds, method="decision_function")

    def wrong(logit):
        return (logit >= 0) != (val_labels == 1)

    model_wrong = wrong(model_logit)
    print(json.dumps({
        "model": args.model, "validation_images": len(val), "train_images": len(train_labels),
        "not_judged": not_judged,
        "clip_head_C": float(head.C_[0]),
        "right": {"model": int((~model_wrong).sum()), "clip_head": int((~wrong(clip_logit)).sum()),
                  "stack_cv": int((~wrong(stack_logit)).sum())},
        "model_misses": int(model_wrong.sum()),
        "clip_head_also_wrong_on_model_misses": int((wrong(clip_logit) & model_wrong).sum()),
    }, indent=2))


if __name__ == "__main__":
    main()
