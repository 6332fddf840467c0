"""EfficientNet-Lite0 fine-tuned on native-resolution crops, judged leave-one-source-out on wild-dev; prints JSON.

Issue 5 names this candidate beside CLIP features.  For each source: start from the
ImageNet weights, fine-tune on the native-resolution crops (four 224 px crops per
image, wild-v1's crop policy) of every *other* source's images, then score the
held-out source; an image's logit is the mean of its crops' logits.  Pooled over
held-out sources: ROC-AUC and TPR at 5% FPR on the raw logits.  No calibration is
fitted here, so there is no ECE; the logits of different folds share one scale
only roughly, which the pooled numbers inherit (the per-source AUCs do not).

On 2 cores a full fine-tune of all nine folds takes hours, so by default the stem
and the first half of the blocks stay frozen (their batch norms too), and training
runs ``--epochs`` passes over the crops with horizontal flips.

    .venv/bin/python benchmarks/effnet_crops_loso.py --epochs 2 --out reports/effnet_crops_loso.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wild_peers import emit, parse_wild_dev_args, wild_dev_parser  # noqa: E402


def main() -> None:
    parser = wild_dev_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frozen-blocks", type=float, default=0.5, help="share of the blocks kept frozen")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_wild_dev_args(parser)

    import torch
    import torch.nn.functional as F
    from rich.console import Console
    from rich.progress import Progress
    from sklearn.metrics import roc_auc_score

    from synthdetect.evaluate.metrics import tpr_at_fpr
    from synthdetect.images import ImageLoadError
    from synthdetect.models.efficientnet_lite import (IMAGENET_MEAN, IMAGENET_STD, EfficientNetLiteDetector,
                                                      load_imagenet_state)
    from synthdetect.models.multicrop import CropPolicy
    from synthdetect.train.datasets import load_record, open_dataset
    from synthdetect.train.duplicates import copies_of
    from synthdetect.train.trainer import images_to_tensor, progress_bar

    torch.set_num_threads(args.threads)
    policy = CropPolicy(size=224, native_crops=4)
    records = open_dataset(str(args.manifest))
    crops, owner, labels, sources, digests, failed = [], [], [], [], [], []
    # the progress bar on stderr: stdout carries the JSON only
    with Progress(*progress_bar().columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("crops", total=len(records), status="")
        for record in records:
            try:
                loaded = load_record(record)
            except (ImageLoadError, OSError) as exc:
                failed.append(f"{record.ref}: {exc}")
                continue
            digests.append(hashlib.sha256(loaded.raw or b"").hexdigest())
            for crop in policy.native_crops_of(loaded.rgb):
                crops.append(np.asarray(crop.convert("RGB").resize((224, 224)), dtype=np.uint8))
                owner.append(len(labels))
            labels.append(record.label)
            sources.append(record.source or "unknown")
            bar.update(task, advance=1)
    x_all, owner = np.stack(crops), np.asarray(owner)
    y_img, src_img = np.asarray(labels, dtype=np.float32), np.asarray(sources)
    state = load_imagenet_state("efficientnet-lite0")
    held_logit = np.full(len(labels), np.nan)
    per_source, started = {}, time.time()
    for source in sorted(set(sources)):
        test_img = src_img == source
        # a copy of a held-out image filed under another source is not trained on (train-wild's rule)
        train_img = ~test_img & ~copies_of(digests, test_img)
        train_crops = np.flatnonzero(train_img[owner])
        torch.manual_seed(args.seed)
        model = EfficientNetLiteDetector("efficientnet-lite0", 224)
        model.load_imagenet(state)
        blocks = model.net._blocks
        frozen = [model.net._conv_stem, model.net._bn0, *blocks[: int(len(blocks) * args.frozen_blocks)]]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad = False
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4)
        generator = torch.Generator().manual_seed(args.seed)
        fold_start = time.time()
        for _ in range(args.epochs):
            model.train()
            for module in frozen:
                module.eval()
            order = train_crops[torch.randperm(len(train_crops), generator=generator).numpy()]
            for start in range(0, len(order), args.batch):
                idx = order[start : start + args.batch]
                batch = x_all[idx]
                flip = torch.rand(len(idx), generator=generator).numpy() < 0.5
                batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
                xb = images_to_tensor(batch, IMAGENET_MEAN, IMAGENET_STD)
                yb = torch.from_numpy(y_img[owner[idx]])
                loss = F.binary_cross_entropy_with_logits(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        test_crops = np.flatnonzero(test_img[owner])
        with torch.inference_mode():
            z = np.concatenate([model(images_to_tensor(x_all[test_crops[i : i + 32]], IMAGENET_MEAN, IMAGENET_STD))
                                .numpy() for i in range(0, len(test_crops), 32)])
        for image in np.flatnonzero(test_img):
            held_logit[image] = float(z[owner[test_crops] == image].mean())
        y_s = y_img[test_img]
        per_source[source] = {"images": int(test_img.sum()), "ai": int(y_s.sum()),
                              "mean_logit_ai": float(held_logit[test_img][y_s == 1].mean()) if y_s.any() else None,
                              "mean_logit_human": float(held_logit[test_img][y_s == 0].mean()) if (y_s == 0).any()
                              else None,
                              "roc_auc": float(roc_auc_score(y_s, held_logit[test_img])) if 0 < y_s.sum() < len(y_s)
                              else None,
                              "seconds": round(time.time() - fold_start, 1)}
        print(json.dumps({source: per_source[source]}), file=sys.stderr, flush=True)
    p = 1 / (1 + np.exp(-held_logit))
    out = {"candidate": "efficientnet-lite0 fine-tuned on native-resolution crops (4 x 224 px, mean of crop logits)",
           "images": len(labels), "unreadable": failed, "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
           "frozen": f"stem and the first {args.frozen_blocks:.0%} of the blocks", "threads": args.threads,
           "pooled_held_out": {"roc_auc": float(roc_auc_score(y_img, held_logit)),
                               "tpr_at_fpr_0.05": float(tpr_at_fpr(p, y_img, 0.05))},
           "per_source": per_source, "seconds": round(time.time() - started, 1)}
    emit(out, args.out)


if __name__ == "__main__":
    main()
