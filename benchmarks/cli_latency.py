"""Start-up latency of `synthdetect detect` on one file, the way a person runs it; prints JSON.

Each case is a fresh `synthdetect` process (interpreter start, imports, model load, one verdict), run
``--runs`` times; the JSON gives the median and the fastest wall time, and which heavy libraries the
process imported (read from Python's ``-X importtime`` report of one more, untimed run, so a library
pulled in by accident shows).

    .venv/bin/python benchmarks/cli_latency.py [--runs 5] [--model default]

Cases: ``--version``; ``detect`` on a full-size sample photo; on a 32 px sample; on both at once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNTHDETECT = Path(sys.executable).with_name("synthdetect")
SAMPLES = REPO / "src" / "synthdetect" / "samples"
HEAVY = ("torch", "sklearn", "scipy", "onnx", "onnxruntime", "transformers", "c2pa", "fastapi", "matplotlib")


def imported_heavy(importtime_report: str) -> list[str]:
    """Top-level heavy packages named in a ``-X importtime`` report."""
    found = set()
    for line in importtime_report.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name.split(".")[0] in HEAVY:
                found.add(name.split(".")[0])
    return sorted(found)


def time_case(argv: list[str], runs: int) -> dict:
    def run(env: dict[str, str]) -> subprocess.CompletedProcess:
        done = subprocess.run([str(SYNTHDETECT), *argv], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.splitlines()[-1:]}")
        return done

    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        run(dict(os.environ))
        walls.append(time.perf_counter() - start)
    # one more run, untimed (the report slows imports down), for what it imported
    heavy = imported_heavy(run({**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}).stderr)
    return {"argv": argv, "median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "runs": runs, "heavy_imports": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    if args.runs < 1:
        sys.exit(f"--runs must be at least 1, not {args.runs}")
    full, small = str(SAMPLES / "coffee.png"), str(SAMPLES / "coffee-32px.jpg")
    detect = ["detect", "--format", "json", "--model", args.model]
    cases = {"version": ["--version"], "detect_full_size": [*detect, full], "detect_32px": [*detect, small],
             "detect_both": [*detect, full, small]}
    results = {name: time_case(argv, args.runs) for name, argv in cases.items()}
    print(json.dumps({"benchmark": "cli_latency", "cpus": len(os.sched_getaffinity(0)), "cases": results}, indent=2))


if __name__ == "__main__":
    main()
