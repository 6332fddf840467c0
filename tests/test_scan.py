"""The streaming scan: rows equal `detect`, resume and cache, bad files, exports, and a SIGKILL mid-scan."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.api import Detector
from synthdetect.cli import app
from synthdetect.images import LoadLimits, load_image
from synthdetect.scan import ScanOptions, export, run_scan
from synthdetect.scan.engine import draft_size_for
from synthdetect.scan.sources import PassedOver, iter_candidates
from badinputs import refuse_listing
from tiny_model import png_bytes, write_tiny_cnn

REPO = Path(__file__).resolve().parents[1]
SYNTHDETECT = Path(sys.executable).with_name("synthdetect")

#: What must agree between a scan row and `detect` (timings legitimately differ).
COMPARED = ("file", "sha256", "label", "p_ai", "reasons", "models", "evidence", "error", "error_kind")


def make_folder(root: Path, n_png: int = 12, n_jpeg: int = 4) -> list[str]:
    """Small PNGs, a few larger JPEGs (routed 'uncertain' by the tiny model) and two bad files."""
    (root / "sub" / "deeper").mkdir(parents=True)
    paths = []
    for i in range(n_png):
        p = root / f"img{i:04d}.png"
        p.write_bytes(png_bytes((32 + i % 5, 32), seed=i))
        paths.append(p)
    for i in range(n_jpeg):
        p = root / "sub" / f"photo{i}.jpg"
        p.write_bytes(png_bytes((160 + 8 * i, 120), seed=100 + i, fmt="JPEG"))
        paths.append(p)
    bad = root / "sub" / "deeper" / "notes.jpg"
    bad.write_text("this is not an image\n")
    truncated = root / "sub" / "deeper" / "cut.png"
    truncated.write_bytes(png_bytes((32, 32), seed=7)[:120])
    (root / "readme.md").write_text("not judged: no image suffix")
    return sorted(str(p) for p in [*paths, bad, truncated])


def db_rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = {r["path"]: dict(r) for r in conn.execute("SELECT * FROM results")}
    n = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    conn.close()
    assert n == len(rows)
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def options(tiny: Path, **kw) -> ScanOptions:
    return ScanOptions(model=str(tiny), workers=kw.pop("workers", 1), batch_size=4, **kw)


def test_scan_rows_equal_detect_and_bad_files_become_error_rows(tmp_path, tiny):
    files = make_folder(tmp_path / "imgs")
    summary = run_scan([str(tmp_path / "imgs")], tmp_path / "r.sqlite", options(tiny, workers=2))
    rows = db_rows(tmp_path / "r.sqlite")
    assert sorted(rows) == files  # one row per image file, the .md passed over
    assert summary["judged"] == len(files) and summary["errors"] == 2
    assert summary["errors_by_kind"] == {"not_an_image": 1, "truncated": 1}
    assert summary["passed_over"]["non_image_files"] == 1  # the .md: counted, never skipped silently
    assert summary["passed_over"]["non_image_example"].endswith("readme.md")

    expected = {v.file: v.to_dict() for v in Detector.load(str(tiny)).detect(files, names=files)}
    for path, row in rows.items():
        verdict = json.loads(row["verdict"])
        assert {k: verdict[k] for k in COMPARED} == {k: expected[path][k] for k in COMPARED}, path
        assert row["label"] == expected[path]["label"]
        assert row["sha256"] == (expected[path]["sha256"] or row["sha256"])
        assert row["size"] == os.path.getsize(path)
    assert rows[str(tmp_path / "imgs/sub/deeper/cut.png")]["error"].endswith("truncated image data")
    labels = {r["label"] for r in rows.values() if not r["error"]}
    assert "uncertain" in labels  # the JPEGs are larger than the tiny model's max_short_side


def test_rerun_skips_unchanged_cache_reuses_identical_bytes_and_rescore_forces(tmp_path, tiny):
    files = make_folder(tmp_path / "imgs", n_png=6, n_jpeg=1)
    db = tmp_path / "r.sqlite"
    run_scan([str(tmp_path / "imgs")], db, options(tiny))
    first = db_rows(db)

    again = run_scan([str(tmp_path / "imgs")], db, options(tiny))
    assert again["skipped_unchanged"] == len(files) and again["judged"] == 0

    touched = Path(files[0])
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    changed = Path(files[1])
    changed.write_bytes(png_bytes((33, 33), seed=999))
    copy = tmp_path / "imgs" / "copy-of-0.png"
    copy.write_bytes(touched.read_bytes())
    third = run_scan([str(tmp_path / "imgs")], db, options(tiny))
    assert third["from_cache"] == 2 and third["judged"] == 1  # touched + copy from cache, changed rescored
    rows = db_rows(db)
    assert len(rows) == len(files) + 1
    assert rows[str(copy)]["p_ai"] == first[files[0]]["p_ai"]
    assert json.loads(rows[str(copy)]["verdict"])["file"] == str(copy)
    assert rows[files[1]]["sha256"] != first[files[1]]["sha256"]

    forced = run_scan([str(tmp_path / "imgs")], db, options(tiny, rescore=True))
    assert forced["judged"] == len(files) + 1 and forced["from_cache"] == 0
    assert len(db_rows(db)) == len(files) + 1


def test_list_files_globs_and_missing_paths(tmp_path, tiny):
    files = make_folder(tmp_path / "imgs", n_png=3, n_jpeg=0)
    listing = tmp_path / "files.txt"
    listing.write_text("# scan these\n" + "\n".join([files[0], "imgs/img0001.png", "imgs/gone.png", ""]))
    glob_pattern = str(tmp_path / "imgs" / "img*.png")
    found = [c.path for c in iter_candidates([str(listing), glob_pattern])]
    assert found[:3] == [files[0], str(tmp_path / "imgs/img0001.png"), str(tmp_path / "imgs/gone.png")]
    # The glob's matches follow, less the two the list already named: each file is queued once per run.
    assert sorted(found[3:]) == sorted(f for f in files if Path(f).name.startswith("img") and f not in found[:3])

    summary = run_scan([str(listing)], tmp_path / "r.sqlite", options(tiny))
    rows = db_rows(tmp_path / "r.sqlite")
    assert len(rows) == 3 and summary["errors_by_kind"] == {"not_found": 1}
    assert rows[str(tmp_path / "imgs/gone.png")]["error"].endswith("file not found")


def test_exports_csv_jsonl_parquet(tmp_path, tiny):
    files = make_folder(tmp_path / "imgs", n_png=3, n_jpeg=1)
    db = tmp_path / "r.sqlite"
    run_scan([str(tmp_path / "imgs")], db, options(tiny))
    assert export(db, tmp_path / "r.csv") == len(files)
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["path", "sha256", "size"] and "verdict" not in header
    assert export(db, tmp_path / "r.jsonl") == len(files)
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in records) == files
    assert all(r["verdict"]["schema"] == "synthdetect.verdict/1" for r in records)
    pq = pytest.importorskip("pyarrow.parquet")
    assert export(db, tmp_path / "r.parquet") == len(files)
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.num_rows == len(files) and sorted(table.column("path").to_pylist()) == files
    with pytest.raises(ValueError, match="unknown export format"):
        export(db, tmp_path / "r.xlsx")


def test_draft_size_keeps_routing_boundaries(tiny, tmp_path):
    model = Detector.load(str(tiny)).model
    assert draft_size_for(model) == (65, 65)  # max_short_side 64 must still be told apart
    # Draft decoding a 640x480 JPEG for the tiny model stays above its size boundary.
    jpeg = tmp_path / "big.jpg"
    jpeg.write_bytes(png_bytes((640, 480), seed=3, fmt="JPEG"))
    loaded = load_image(str(jpeg), LoadLimits(), draft_size=draft_size_for(model))
    assert loaded.original_size == (640, 480) and min(loaded.size) > 64 and loaded.size[0] < 640
    assert any("draft" in note for note in loaded.notes)


def test_draft_factor_asks_for_a_multiple_of_the_model_input_and_keeps_boundaries(tiny):
    model = Detector.load(str(tiny)).model
    side = max(model.card["input"]["size"])
    assert draft_size_for(model, 1) == draft_size_for(model)
    for factor in (2, 3, 8):
        needed = max(factor * side, 65)
        assert draft_size_for(model, factor) == (needed, needed)
    with pytest.raises(ValueError, match="at least 1"):
        draft_size_for(model, 0)


def test_cli_scan_summary_and_exit_code(tmp_path, tiny):
    files = make_folder(tmp_path / "imgs", n_png=2, n_jpeg=0)
    db = tmp_path / "r.sqlite"
    result = CliRunner().invoke(app, [
        "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny), "--workers", "1",
        "--summary-json", "--export", str(tmp_path / "r.csv")])
    assert result.exit_code == 3, result.output  # two bad files: exit 3, like detect
    summary = json.loads(result.stdout)
    assert summary["judged"] == len(files) and summary["errors"] == 2
    assert "errors: not_an_image 1, truncated 1" in result.stderr
    assert (tmp_path / "r.csv").read_text().count("\n") == len(files) + 1
    quiet = CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny),
                                     "--workers", "1"])
    assert "1 non-image file(s) in the folders were not judged" in quiet.stderr  # even with -q


def test_a_list_of_paths_on_standard_input_is_scanned_as_a_list_file_is(tmp_path, tiny):
    files = make_folder(tmp_path / "imgs", n_png=2, n_jpeg=0)
    db = tmp_path / "r.sqlite"
    gone = str(tmp_path / "gone.png")
    listing = f"# from find\n{files[0]}\n\n{files[1]}\n{gone}\n"
    result = CliRunner().invoke(app, ["-q", "scan", "-", "--out", str(db), "-m", str(tiny), "--workers", "1",
                                      "--summary-json"], input=listing)
    assert result.exit_code == 3, result.output  # the missing path is an error row, as in a list file
    summary = json.loads(result.stdout)
    assert summary["judged"] == 3 and summary["errors_by_kind"] == {"not_found": 1}
    assert sorted(db_rows(db)) == sorted([files[0], files[1], gone])


def test_folders_that_cannot_be_read_are_reported(tmp_path, monkeypatch):
    (tmp_path / "open").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "open" / "a.png").write_bytes(png_bytes((32, 32), seed=1))
    (tmp_path / "open" / "notes.txt").write_text("no image suffix")
    refuse_listing(monkeypatch, "locked")
    passed_over = PassedOver()
    found = [c.path for c in iter_candidates([str(tmp_path)], passed_over=passed_over)]
    assert found == [str(tmp_path / "open" / "a.png")]
    report = passed_over.to_dict()
    assert report["non_image_files"] == 1 and report["unreadable_folders"] == 1
    assert report["unreadable_folder_examples"] == [f"{tmp_path / 'locked'}: Permission denied"]
    notes = PassedOver.lines_of(report)
    assert len(notes) == 2 and "1 folder(s) could not be read" in notes[1]


@pytest.mark.slow
def test_sigkill_mid_scan_then_rerun_gives_every_file_exactly_once(tmp_path, tiny):
    """Kill -9 a real `synthdetect scan` while it is writing, rerun it, compare row for row."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    n = 400
    for i in range(n):
        (folder / f"f{i:05d}.png").write_bytes(png_bytes((32, 32), seed=i))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    expected = sorted(str(p) for p in folder.iterdir())
    db = tmp_path / "scan.sqlite"
    command = [str(SYNTHDETECT), "-q", "scan", str(folder), "--out", str(db), "-m", str(tiny),
               "--workers", "1", "--batch-size", "4"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    rows_at_kill = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    rows_at_kill = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                rows_at_kill = 0  # tables not created yet
            if rows_at_kill >= 40:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the scan and its decode workers, mid-write
    proc.wait()
    assert 0 < rows_at_kill < len(expected), f"the kill did not land mid-scan ({rows_at_kill} rows)"

    rerun = subprocess.run(command + ["--summary-json"], capture_output=True, text=True, timeout=900)
    assert rerun.returncode in (0, 3), rerun.stderr  # 3 when broken.png was judged in this run
    summary = json.loads(rerun.stdout)
    assert summary["skipped_unchanged"] >= rows_at_kill
    rows = db_rows(db)
    assert sorted(rows) == expected
    assert rows[str(folder / "broken.png")]["error_kind"] in ("corrupt", "truncated", "not_an_image")

    # Row for row, the resumed database holds what `detect` says about every file.
    reference = {v.file: v.to_dict() for v in Detector.load(str(tiny)).detect(expected, names=expected)}
    for path in expected:
        verdict = json.loads(rows[path]["verdict"])
        assert {k: verdict[k] for k in COMPARED} == {k: reference[path][k] for k in COMPARED}, path


def test_workers_hand_on_the_examined_input_not_the_decoded_image(tmp_path, tiny):
    """What crosses from a decode worker is the model's resized input plus evidence, and judges the same."""
    from synthdetect.scan.decode import Decoded, decode_file
    from synthdetect.scan.engine import judge_batch
    from synthdetect.scan.store import FileStamp

    path = tmp_path / "big.png"
    path.write_bytes(png_bytes((60, 50), seed=3))
    detector = Detector.load(str(tiny))
    decoded = decode_file(str(path), FileStamp(path.stat().st_size, 0), LoadLimits()).examine(detector)
    assert decoded.image is None and decoded.error is None
    assert decoded.examined.prepared.shape == (32, 32, 3)  # the tiny model's input, not 60x50 RGB
    assert decoded.payload_bytes == 32 * 32 * 3
    shipped = Decoded.from_bytes(decoded.to_bytes())
    (row,) = judge_batch(detector, [shipped])
    (expected,) = detector.detect([str(path)], names=[str(path)])
    assert {k: row[k] for k in COMPARED} == {k: expected.to_dict()[k] for k in COMPARED}
    assert row["timing_ms"]["load"] > 0  # the worker's decode time is reported, not lost


def test_draft_mode_cache_hits_keep_the_stored_image_size(tmp_path, tiny):
    """A copy answered from the content-hash cache gets the original's width and height, not the draft decode's."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(png_bytes((640, 480), seed=1, fmt="JPEG"))
    db = tmp_path / "r.sqlite"
    run_scan([str(folder)], db, options(tiny, draft=True))
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes())
    again = run_scan([str(folder)], db, options(tiny, draft=True))
    assert again["from_cache"] == 1 and again["skipped_unchanged"] == 1
    rows = db_rows(db)
    assert [(r["width"], r["height"]) for r in rows.values()] == [(640, 480), (640, 480)]
