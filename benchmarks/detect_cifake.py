"""Images per second of `detect` on CIFAKE images (32 px JPEGs), printed as JSON.

Measures (1) the Python API (`Detector.detect` on file paths: read, decode, probes,
routing, model, fusion) and (2) the `synthdetect detect` CLI end to end on the
same folder, process start-up included.

    .venv/bin/python benchmarks/detect_cifake.py [--n 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNTHDETECT = Path(sys.executable).with_name("synthdetect")
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-train-80k.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.n < 1 or args.threads < 1 or args.batch_size < 1:
        sys.exit("--n, --threads and --batch-size must be at least 1")
    if not args.zip.exists():
        sys.exit(f"benchmark needs {args.zip}")

    os.environ["SYNTHDETECT_THREADS"] = str(args.threads)  # ONNX Runtime sessions, as torch below
    import torch

    from synthdetect import Detector

    torch.set_num_threads(args.threads)
    with zipfile.ZipFile(args.zip) as archive, tempfile.TemporaryDirectory() as tmp:
        names = [n for n in archive.namelist() if n.lower().endswith(".jpg")]
        random.Random(0).shuffle(names)
        paths = []
        for i, name in enumerate(names[: args.n]):
            path = Path(tmp) / f"{i:05d}.jpg"
            path.write_bytes(archive.read(name))
            paths.append(str(path))
        results = {"images": len(paths), "threads": args.threads, "batch_size": args.batch_size,
                   "cpu_count": os.cpu_count()}
        for evidence in (True, False):
            detector = Detector.load("default", use_evidence=evidence)
            detector.detect(paths[:64])  # warm-up
            start = time.perf_counter()
            failed = []
            for i in range(0, len(paths), args.batch_size):
                failed += [v for v in detector.detect(paths[i : i + args.batch_size]) if not v.ok]
            elapsed = time.perf_counter() - start
            if failed:  # an error verdict is no judged image: a rate counting it would mislead
                member = names[paths.index(failed[0].file)]
                sys.exit(f"{len(failed)} of {len(paths)} images from {args.zip} could not be judged, "
                         f"e.g. {member}: {failed[0].error}")
            key = "api_images_per_s" + ("" if evidence else "_no_evidence")
            results[key] = round(len(paths) / elapsed, 1)
        cli = [str(SYNTHDETECT), "-q", "detect", tmp, "--format", "jsonl"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        start = time.perf_counter()
        done = subprocess.run(cli, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:  # error rows are not judged images: a rate counting them would mislead
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            sys.exit(f"synthdetect detect exited {done.returncode} on {len(paths)} images from {args.zip}: {last}")
        rows = done.stdout.count("\n")
        results["cli_images_per_s"] = round(rows / elapsed, 1)
        results["cli_seconds"] = round(elapsed, 2)
        results["cli_rows"] = rows
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
