"""`synthdetect scan --engine ray` on a local Ray: same rows as the local engine, and it resumes the same way."""

from __future__ import annotations

import json
import sqlite3

import pytest

from synthdetect.scan import ScanOptions, run_scan
from tiny_model import png_bytes, write_tiny_cnn

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'synthdetect[ray]')")

COMPARED = ("path", "sha256", "size", "label", "p_ai", "reasons", "model", "raw_logit", "model_p_ai", "evidence",
            "width", "height", "format", "error", "error_kind", "fingerprint")


def rows(db):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    out = {r["path"]: {k: r[k] for k in COMPARED} for r in conn.execute("SELECT * FROM results")}
    conn.close()
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_equals_local_engine(tmp_path, local_ray):
    from synthdetect.scan.ray_engine import run_ray_scan

    tiny = write_tiny_cnn(tmp_path / "tiny")
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(24):
        (folder / f"{i:03d}.png").write_bytes(png_bytes((32 + i % 3, 32), seed=i))
    for i in range(3):
        (folder / "sub" / f"{i}.jpg").write_bytes(png_bytes((120, 96), seed=50 + i, fmt="JPEG"))
    (folder / "sub" / "bad.png").write_bytes(b"no pixels here")

    options = ScanOptions(model=str(tiny), workers=2, batch_size=8)
    local = run_scan([str(folder)], tmp_path / "local.sqlite", options)
    distributed = run_ray_scan([str(folder)], tmp_path / "ray.sqlite", options)
    assert distributed["engine"] == "ray" and distributed["judged"] == 28
    assert distributed["labels"] == local["labels"] and distributed["errors_by_kind"] == local["errors_by_kind"]
    assert rows(tmp_path / "ray.sqlite") == rows(tmp_path / "local.sqlite")

    # Resume works across engines: the local engine's rows count as done for Ray.
    again = run_ray_scan([str(folder)], tmp_path / "local.sqlite", options)
    assert again["skipped_unchanged"] == 28 and again["judged"] == 0
    verdict = json.loads(sqlite3.connect(tmp_path / "ray.sqlite").execute(
        "SELECT verdict FROM results WHERE path LIKE '%000.png'").fetchone()[0])
    assert verdict["schema"] == "synthdetect.verdict/1"
