"""benchmarks/near_copies.py finds a re-encoded copy that the byte comparison of `--copies exclude` cannot."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from synth_data import write_manifest, write_manifest_rows

REPO = Path(__file__).resolve().parents[1]


def test_near_copies_finds_a_reencoded_copy(tmp_path: Path):
    manifest = write_manifest(tmp_path, {"a": (12, 12)}, size=32)
    rows = list(csv.DictReader(manifest.open()))
    original = rows[0]
    buffer = io.BytesIO()
    Image.open(tmp_path / original["path"]).save(buffer, format="JPEG", quality=80)  # same picture, other bytes
    (tmp_path / "images" / "copy.jpg").write_bytes(buffer.getvalue())
    write_manifest_rows(tmp_path, rows + [{**original, "path": "images/copy.jpg"}])

    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "near_copies.py"), "--data", str(manifest),
                          "--val-fraction", "0.25", "--test-fraction", "0.25", "--bounds", "0.5", "12"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["images"] == 25
    assert result["by_bound"]["0.5"]["pairs"] == 0  # not the same pixels: a byte comparison misses it too
    assert result["by_bound"]["12.0"]["pairs"] == 1 and result["by_bound"]["12.0"]["labels"] == {"same label": 1}
    (pair,) = result["least_different"]
    assert sorted(Path(f).name for f in pair["files"]) == sorted([Path(original["path"]).name, "copy.jpg"])
    assert 0.5 <= pair["mean_abs_diff"] < 12
