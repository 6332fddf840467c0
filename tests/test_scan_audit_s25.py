"""`synthdetect scan` / `scan-export` and `detect --format csv` audit (s25): formulas in CSV cells, `--out -`,
error rows without a sha256, an interrupted Ray `--rescore`, and `scan .` / `find . | scan -` keys."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import OutputFormat, app, render_verdicts
from synthdetect.csv_cells import spreadsheet_row, spreadsheet_text
from synthdetect.scan import ScanOptions, export
from synthdetect.scan.sources import expand_listed, iter_candidates
from synthdetect.scan.store import FLAT_COLUMNS, TEXT_COLUMNS, FileStamp, ResultStore, verdict_row
from synthdetect.verdict import Verdict
from tiny_model import png_bytes, write_tiny_cnn

#: Names an uploader can give a file that a spreadsheet would run as formulas.
FORMULA_NAMES = ['=HYPERLINK("http://x","click").jpg', "@SUM(1+1).png", "+1.png", "-2.png", "\tx.png"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def test_a_cell_a_spreadsheet_would_run_gets_an_apostrophe_and_numbers_stay_numbers():
    for text in ("=1+1", "+1", "-2", "@SUM(A1)", "\t=1", "\r=1"):
        assert spreadsheet_text(text) == "'" + text
    for value in ("ok.png", "", "'=already", -0.35, 3, None):
        assert spreadsheet_text(value) == value
    row = spreadsheet_row({"file": "=x", "raw_logit": "-0.5", "p_ai": -1.0}, ["file"])
    assert row == {"file": "'=x", "raw_logit": "-0.5", "p_ai": -1.0}  # only the named text columns


def test_scan_csv_export_writes_formula_names_as_text_and_jsonl_keeps_them_exact(tmp_path):
    """A moderator's `scan-export r.sqlite r.csv` of uploads named `=HYPERLINK(...).jpg` or `@SUM(1+1).png`
    opened in a spreadsheet as live formulas (in `path` and in `error`, which starts with the name)."""
    assert set(TEXT_COLUMNS) < set(FLAT_COLUMNS)
    db = tmp_path / "r.sqlite"
    verdicts = [{"file": name, "label": "human", "p_ai": 0.1, "error": None, "reasons": ["r"],
                 "models": [{"model": "tiny-cnn", "raw_logit": -0.5, "p_ai": 0.1}]} for name in FORMULA_NAMES]
    verdicts.append({"file": "=bad.png", "label": None, "p_ai": None, "error": "=bad.png: not an image",
                     "error_kind": "not_an_image"})
    with ResultStore(db) as store:
        store.write([verdict_row(v, FileStamp(10, -5), "tiny", "fp") for v in verdicts])

    export(db, tmp_path / "r.csv")
    rows = {row["path"]: row for row in csv.DictReader(open(tmp_path / "r.csv", newline="", encoding="utf-8"))}
    assert set(rows) == {"'" + name for name in FORMULA_NAMES} | {"'=bad.png"}
    assert rows["'=bad.png"]["error"] == "'=bad.png: not an image"
    assert rows["'-2.png"]["raw_logit"] == "-0.5" and rows["'-2.png"]["mtime_ns"] == "-5"  # numbers untouched
    export(db, tmp_path / "r.jsonl")
    exact = [json.loads(line) for line in open(tmp_path / "r.jsonl", encoding="utf-8")]
    assert {r["path"] for r in exact} == set(FORMULA_NAMES) | {"=bad.png"}


def test_detect_csv_writes_formula_names_as_text_and_keeps_negative_logits():
    ok = Verdict(file="@SUM(1+1).png", label="human", p_ai=0.1, sha256="ab",
                 models=[{"model": "tiny-cnn", "raw_logit": -0.5, "p_ai": 0.1}]).to_dict()
    bad = Verdict.failed('=HYPERLINK("http://x","click").jpg',
                         '=HYPERLINK("http://x","click").jpg: not an image', "not_an_image").to_dict()
    out = io.StringIO()
    render_verdicts([ok, bad], OutputFormat.csv, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["file"] for r in rows] == ["'@SUM(1+1).png", "'=HYPERLINK(\"http://x\",\"click\").jpg"]
    assert rows[1]["error"].startswith("'=HYPERLINK(")
    assert rows[0]["raw_logit"] == "-0.5" and rows[0]["p_ai"] == "0.1000"
    out = io.StringIO()
    render_verdicts([ok], OutputFormat.jsonl, out)
    assert json.loads(out.getvalue())["file"] == "@SUM(1+1).png"  # JSON keeps the name exactly


def test_out_dash_is_refused_in_one_line_instead_of_a_database_named_dash(tmp_path, monkeypatch):
    """`scan imgs --out -` wrote a SQLite database called `-` into the working folder, exit 0: --out is the
    database, so standard output cannot be it.  `scan-export r.sqlite -` said "unknown export format ''"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(png_bytes())
    runner = CliRunner()
    result = runner.invoke(app, ["scan", "a.png", "--out", "-", "-m", "no-such-model"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --out -: the results database is a SQLite file")
    assert not (tmp_path / "-").exists()
    result = runner.invoke(app, ["scan-export", "r.sqlite", "-"])
    assert result.exit_code == 2 and "not to standard output" in result.stderr


def test_error_rows_name_the_sha256_of_the_bytes_read(tmp_path, tiny, monkeypatch):
    """Error rows (not an image, truncated, the model failing on the file) had no sha256 though the worker had read
    and hashed the bytes, so a moderator could not match a failed upload to its copies.  The verdict JSON stays
    the one `detect` gives; the row's sha256 column names the bytes."""
    import sqlite3

    from synthdetect.api import Detector
    from synthdetect.scan import run_scan

    (tmp_path / "imgs").mkdir()
    text, truncated = tmp_path / "imgs" / "text.png", tmp_path / "imgs" / "trunc.png"
    text.write_bytes(b"not an image at all")
    truncated.write_bytes(png_bytes((32, 32))[:60])
    db = tmp_path / "r.sqlite"
    run_scan([str(tmp_path / "imgs")], db, ScanOptions(model=str(tiny), workers=1))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT path, error_kind, sha256, verdict FROM results ORDER BY path").fetchall()
    assert [(Path(p).name, kind, sha) for p, kind, sha, _ in rows] == [
        ("text.png", "not_an_image", hashlib.sha256(text.read_bytes()).hexdigest()),
        ("trunc.png", "truncated", hashlib.sha256(truncated.read_bytes()).hexdigest())]
    # the verdicts are the ones detect gives: a truncated file's (whose records were read) names its bytes too
    expected = [v.sha256 for v in Detector.load(str(tiny)).detect([str(text), str(truncated)])]
    assert [json.loads(v)["sha256"] for *_, v in rows] == expected == [None, rows[1][2]]

    (tmp_path / "good").mkdir()
    good = tmp_path / "good" / "good.png"
    good.write_bytes(png_bytes((32, 32)))

    def conclude(self, examined):  # the model cannot take it: a model_error row
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Detector, "conclude", conclude)
    run_scan([str(good.parent)], db, ScanOptions(model=str(tiny), workers=1))
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT error_kind, sha256 FROM results WHERE path = ?", (str(good),)).fetchone()
    assert row == ("model_error", hashlib.sha256(good.read_bytes()).hexdigest())


def test_an_interrupted_ray_rescore_run_again_continues_instead_of_starting_over(tmp_path, tiny, monkeypatch):
    """The local engine continued an interrupted `--rescore` (s24); the Ray engine judged every file again from
    the first, and did not end an unfinished rescore on a scan without it.  Ray itself is stubbed out here: the
    bookkeeping is the driver's."""
    import sqlite3

    from synthdetect.scan import ray_engine
    from synthdetect.scan.engine import ScanInterrupted

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        (folder / f"a{i}.png").write_bytes(png_bytes((32, 32), seed=i))
    db = tmp_path / "r.sqlite"
    sent: list[int] = []
    stop_after: list[int] = []

    def judge_chunk(ray, chunk, first_seq, actors, options, draft_size, fingerprint, run, store, counters,
                    progress, discovered_all):
        sent.append(len(chunk))
        counters.queued += len(chunk)
        for cand in chunk:
            if stop_after and counters.judged >= stop_after[0]:
                raise KeyboardInterrupt
            verdict = {"file": cand.path, "label": "human", "p_ai": 0.1, "error": None, "reasons": ["r"]}
            store.write([verdict_row(verdict, cand.stamp, options.model, fingerprint)])
            counters.judged += 1
            counters.labels["human"] += 1

    monkeypatch.setattr(ray_engine, "_start_ray", lambda cpus: (object(), False))
    monkeypatch.setattr(ray_engine, "_judge_chunk", judge_chunk)
    plain = ScanOptions(model=str(tiny), workers=1)
    rescore = ScanOptions(model=str(tiny), workers=1, rescore=True)
    assert ray_engine.run_ray_scan([str(folder)], db, plain)["judged"] == 6
    old = "2000-01-01T00:00:00+00:00"
    with sqlite3.connect(db) as conn:  # the first scan was long ago
        conn.execute("UPDATE results SET scanned_at = ?", (old,))

    stop_after.append(2)
    with pytest.raises(ScanInterrupted):
        ray_engine.run_ray_scan([str(folder)], db, rescore)
    stop_after.clear()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results WHERE scanned_at > ?", (old,)).fetchone()[0] == 2
        # the rescore began in an earlier second than these rows (a row of that very second is judged again)
        conn.execute("UPDATE meta SET value = ? WHERE key LIKE 'rescore:%'", ("2001-01-01T00:00:00+00:00",))

    sent.clear()
    again = ray_engine.run_ray_scan([str(folder)], db, rescore)
    assert (sent, again["judged"], again["skipped_unchanged"]) == ([4], 4, 2)
    sent.clear()
    assert ray_engine.run_ray_scan([str(folder)], db, rescore)["judged"] == 6  # finished: a new one starts over
    assert sent == [6]


def test_the_working_folder_walked_gives_the_same_keys_as_the_files_named(tmp_path, monkeypatch):
    """`scan .` keyed rows `./a.png` while `scan a.png` and lists key `a.png`, so `find . | synthdetect scan -`
    (which lists `.` first) judged every file twice into two rows, and `scan .` after `scan a.png` did too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [c.path for c in iter_candidates(["."])] == ["a.png", os.path.join("sub", "b.png")]
    assert [c.path for c in iter_candidates([".", "a.png"])] == ["a.png", os.path.join("sub", "b.png")]
    found = [".", "./a.png", "./sub", "./sub/b.png"]  # what `find .` prints, normalised as a list's lines are
    assert [c.path for c in expand_listed(os.path.normpath(p) for p in found)] == ["a.png", os.path.join("sub", "b.png")]
    outside = tmp_path / "sub"
    monkeypatch.chdir(outside)
    assert [c.path for c in expand_listed([".", "../a.png"])] == ["b.png", os.path.join("..", "a.png")]


def test_a_database_written_by_an_older_scan_of_dot_is_rekeyed_not_doubled(tmp_path, tiny, monkeypatch):
    """Before the walk of "." keyed x.jpg, it keyed ./x.jpg: scanning "." again into such a database gave each file
    a second row (each judged again) that --prune could not remove."""
    import sqlite3

    from synthdetect.scan import run_scan

    work = tmp_path / "work"
    work.mkdir()
    for seed in (1, 2):
        (work / f"img{seed}.png").write_bytes(png_bytes((32, 32), seed=seed))
    monkeypatch.chdir(work)
    db = tmp_path / "r.sqlite"
    run_scan(["."], db, ScanOptions(model=str(tiny), workers=1))
    with sqlite3.connect(db) as conn:  # what an older synthdetect wrote
        conn.execute("UPDATE results SET path = './' || path, verdict = json_set(verdict, '$.file', './' || path)")
        conn.execute("DELETE FROM meta WHERE key = 'dot_keys_dropped'")
    summary = run_scan(["."], db, ScanOptions(model=str(tiny), workers=1))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT path, json_extract(verdict, '$.file') FROM results ORDER BY path").fetchall()
    assert rows == [("img1.png", "img1.png"), ("img2.png", "img2.png")]
    assert summary["judged"] == 0  # the old rows were kept under their new keys, not judged again
