"""`synthdetect scan` with the shipped `default` model on 1-4 MP photos: images/s and peak memory; prints JSON.

``scan_throughput.py`` measures the scan machinery with a MobileNetV2 stand-in; this is what a person scanning
their own photos with the default detector gets (wild-v3: one float32 CLIP view per photo).  The same generated
JPEGs and the same /proc sampling of the scan's process tree (RSS summed over the processes, and PSS, which
counts pages the decode workers share with the parent once).

    .venv/bin/python benchmarks/scan_default_model.py [--files 120] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import _cpu_name, make_folder, run_scan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/synthdetect-scan-default"))
    parser.add_argument("--files", type=int, default=120, help="JPEGs of 1-4 MP")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    os.sched_setaffinity(0, range(args.cores))
    folder = args.workdir / "jpegs"
    result: dict = {"cores": args.cores, "cpu": _cpu_name(), "load_average_at_start": os.getloadavg(),
                    "data": make_folder(folder, args.files, args.cores)}
    db = args.workdir / "scan.sqlite"
    result["scan_default"] = run_scan(folder, Path("default"), db, args.cores, [])
    result["scan_default_no_evidence"] = run_scan(folder, Path("default"), db, args.cores, ["--no-evidence"])
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
