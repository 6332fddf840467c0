"""Near-copies in a dataset split, beyond the byte-identical files `synthdetect train` leaves unscored, as JSON.

`--copies exclude` compares files by sha256, so a copy re-encoded, recoloured
or with a caption removed is not caught.  This looks for those: a 64-bit
difference hash of each image (grey, 9x8), pairs within a Hamming distance
(found through four 16-bit bands: two hashes within distance 3 share a band,
and most within 4 do), then the mean absolute pixel difference of the pair at
full size.  It reports, per pixel-difference bound, how many pairs there are,
their labels, and how many join the held-out split to training.  The split is
the one `synthdetect train` makes for the same fractions and seed.

    .venv/bin/python benchmarks/near_copies.py [--data ZIP] [--hamming 4] [--bounds 0.5 4 8 12]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-train-80k.zip"
#: a band shared by more images than this is a flat or blank hash, not a copy; skipping it keeps the search linear
BAND_LIMIT = 200


def difference_hash(image) -> int:
    """64 bits: is each pixel of a 9x8 grey thumbnail brighter than its left neighbour (Krawetz's dHash).

    The ImageHash package computes the same; it is not a dependency, and a benchmark is no reason to add one."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(image.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    return int.from_bytes(np.packbits(grey[:, 1:] > grey[:, :-1]).tobytes(), "big")


def close_pairs(hashes: list[int], hamming: int) -> list[tuple[int, int]]:
    bands: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        for k in range(4):
            bands[(k, (h >> (16 * k)) & 0xFFFF)].append(i)
    pairs = set()
    for members in bands.values():
        if 1 < len(members) <= BAND_LIMIT:
            pairs.update((a, b) for n, a in enumerate(members) for b in members[n + 1:]
                         if bin(hashes[a] ^ hashes[b]).count("1") <= hamming)
    return sorted(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--test-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hamming", type=int, default=4)
    parser.add_argument("--bounds", type=float, nargs="+", default=[0.5, 4.0, 8.0, 12.0],
                        help="mean absolute pixel difference (0-255) below which a pair counts")
    parser.add_argument("--list", type=int, default=20, help="pairs to name, least different first")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"benchmark needs {args.data}")

    import numpy as np
    from PIL import Image

    from synthdetect.train.datasets import open_dataset, read_record_bytes
    from synthdetect.train.splits import split_records

    split = split_records(open_dataset(args.data), "stratified", val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, seed=args.seed, copies="keep")
    records = split.train + split.val + split.test
    part = ["train"] * len(split.train) + ["validation"] * len(split.val) + ["test"] * len(split.test)

    def pixels(i: int) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(read_record_bytes(records[i]))).convert("RGB"), dtype=np.float32)

    hashes = [difference_hash(Image.open(io.BytesIO(read_record_bytes(r)))) for r in records]
    scored = []
    for a, b in close_pairs(hashes, args.hamming):
        x, y = pixels(a), pixels(b)
        if x.shape == y.shape:
            scored.append((float(np.abs(x - y).mean()), a, b))
    scored.sort()
    out: dict = {"data": str(args.data), "images": len(records), "hamming": args.hamming, "by_bound": {}}
    for bound in args.bounds:
        chosen = [(a, b) for d, a, b in scored if d < bound]
        out["by_bound"][str(bound)] = {
            "pairs": len(chosen),
            "labels": dict(Counter("same label" if records[a].label == records[b].label else "labels differ"
                                   for a, b in chosen)),
            "parts": dict(Counter(" / ".join(sorted((part[a], part[b]))) for a, b in chosen)),
        }
    out["least_different"] = [{"mean_abs_diff": round(d, 2), "files": [records[a].ref, records[b].ref],
                               "parts": [part[a], part[b]]} for d, a, b in scored[:args.list]]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
