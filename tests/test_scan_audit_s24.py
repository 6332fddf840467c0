"""`synthdetect scan` / `scan-export` audit (s24): damaged or locked databases, an unreadable cache, odd lists,
empty sources, a scan's own exports, an interrupted --rescore, replaced files, and --summary-json's text."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.images import LoadLimits
from synthdetect.scan import export, run_scan, sources
from synthdetect.scan.decode import decode_file
from synthdetect.scan.engine import ScanCounters, resume_filter
from synthdetect.scan.sources import iter_candidates, iter_list_stream
from synthdetect.scan.store import FileStamp, ResultStore, StoreError, connect, verdict_row
from tiny_model import png_bytes, write_tiny_cnn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def synthetic_database(db: Path, n: int, folder: str = "gone") -> None:
    """A scan database of ``n`` judged rows of files that do not exist, written without a model."""
    with ResultStore(db) as store:
        store.write([verdict_row({"file": f"{folder}/img{i:04d}.png", "label": "human", "p_ai": 0.1, "error": None,
                                  "reasons": [os.urandom(200).hex()]}, FileStamp(10, 10), "tiny", "fp")
                     for i in range(n)])


def damage(db: Path, *names: str) -> None:
    """Overwrite the root pages of the named tables or indexes with garbage: 'database disk image is malformed'."""
    conn = sqlite3.connect(db)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = [conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
             for name in names]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(db, "r+b") as handle:
        for root in roots:
            handle.seek((root - 1) * page)
            handle.write(b"\xa5" * page)


def one_error_line(result, *, starts: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    return lines[0]


def test_prune_that_cannot_delete_is_one_store_error(tmp_path):
    """`scan --prune` with the database held by another writer past the timeout (or a full disk) ended with an
    OperationalError traceback: the deletes were the one write not turned into a StoreError."""
    db = tmp_path / "r.sqlite"
    synthetic_database(db, 5)
    with ResultStore(db) as store:
        store.conn.execute("PRAGMA query_only = ON")  # every write fails, as a lock or a full disk makes it
        with pytest.raises(StoreError, match="cannot write the results database .*run the same command"):
            store.prune_missing()
    with ResultStore(db) as store:
        assert store.count() == 5  # nothing was lost


def test_a_damaged_database_is_one_line_for_scan_scan_export_and_the_resume_check(tmp_path):
    """A database with a damaged page ('database disk image is malformed', a disk or copy fault) gave a
    DatabaseError traceback from `scan` (reading its schema version, checking what is done, writing a batch)."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes((32, 32)))

    meta = tmp_path / "meta.sqlite"
    synthetic_database(meta, 50)
    damage(meta, "meta")
    result = CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(meta), "-m", "tiny-absent"])
    line = one_error_line(result, starts=f"error: --out {meta}: the results database is damaged (")
    assert "malformed" in line and "new --out" in line
    with pytest.raises(StoreError, match="damaged"):
        connect(meta)

    rows = tmp_path / "rows.sqlite"
    synthetic_database(rows, 300, folder=str(tmp_path / "imgs"))
    damage(rows, "results", "sqlite_autoindex_results_1")
    found = iter_candidates([str(tmp_path / "imgs")])
    with pytest.raises(StoreError, match="damaged"):  # the resume check, in the discovery thread
        list(resume_filter(found, rows, "fp", False, ScanCounters()))
    with ResultStore(rows) as store, pytest.raises(StoreError, match="damaged"):  # a batch's commit
        store.write([verdict_row({"file": str(tmp_path / "imgs" / "a.png"), "label": "human", "p_ai": 0.1,
                                  "error": None}, FileStamp(1, 1), "tiny", "fp")])
    exported = CliRunner().invoke(app, ["scan-export", str(rows), str(tmp_path / "out.csv")])
    one_error_line(exported, starts=f"error: {rows}: ")
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(StoreError):
        export(rows, tmp_path / "out.jsonl")


def test_a_cache_that_cannot_be_read_is_a_miss_not_a_permanent_decoder_error(tmp_path):
    """A failed content-hash cache look-up became the file's `decoder_error` row, a content error that no resume
    retries: a good image stayed unjudged for good.  The cache only saves work, so its failure is a miss."""
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((32, 32)))
    cache = sqlite3.connect(":memory:")
    cache.close()  # any look-up now raises sqlite3.ProgrammingError
    st = path.stat()
    decoded = decode_file(str(path), FileStamp(st.st_size, st.st_mtime_ns), LoadLimits(), cache=cache,
                          fingerprint="fp")
    assert decoded.error is None and decoded.image is not None
    assert decoded.sha256 is not None


def test_summary_json_writes_a_names_stray_byte_as_xNN_not_a_lone_surrogate(tmp_path, tiny):
    """`--summary-json` printed a non-UTF-8 name passed over in a folder as "\\udcff" (a lone surrogate escape,
    refused by strict JSON readers); the exports already write such a byte as \\xNN."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes((32, 32)))
    (folder / os.fsdecode(b"notes\xff.txt")).write_text("not an image")
    result = CliRunner().invoke(app, ["-q", "scan", str(folder), "--out", str(tmp_path / "r.sqlite"), "-m", str(tiny),
                                      "--workers", "1", "--summary-json"])
    assert result.exit_code == 0, result.output
    assert "\\udc" not in result.stdout
    summary = json.loads(result.stdout)
    assert summary["passed_over"]["non_image_example"] == f"{folder}/notes\\xff.txt"
    assert summary["judged"] == 1


def test_an_empty_source_is_refused_instead_of_scanning_the_working_folder(tmp_path, monkeypatch, tiny):
    """`scan "$DIR"` with DIR unset scanned the working folder (normpath("") is "."), recursively: a home folder's
    every photo, into the database, with exit code 0."""
    (tmp_path / "a.png").write_bytes(png_bytes((32, 32)))
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "r.sqlite"
    result = CliRunner().invoke(app, ["-q", "scan", "", "--out", str(db), "-m", str(tiny), "--workers", "1"])
    line = one_error_line(result, starts='error: an empty SOURCE ("") names no file or folder')
    assert "unset" in line
    assert not db.exists()
    with pytest.raises(ValueError, match="empty source"):
        run_scan([str(tmp_path / "a.png"), ""], db)
    assert not db.exists()


def test_a_rerun_with_all_files_does_not_judge_its_own_export(tmp_path, tiny):
    """`scan DIR --all-files --out DIR/r.sqlite --export DIR/r.csv`: the rerun judged r.csv (written by the first
    run) into a `not_an_image` row, exit code 3 on every resume; its database already was left out."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        (folder / f"a{i}.png").write_bytes(png_bytes((32, 32), seed=i))
    db, csv_out = folder / "r.sqlite", folder / "r.csv"
    args = ["-q", "scan", str(folder), "--all-files", "--out", str(db), "--export", str(csv_out), "-m", str(tiny),
            "--workers", "1"]
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    with ResultStore(db) as store:
        assert sorted(row["path"] for row in store.rows()) == [str(folder / "a0.png"), str(folder / "a1.png")]
    assert len(csv_out.read_text().splitlines()) == 3  # header and two rows


def test_an_image_given_as_the_list_of_paths_is_one_error_row_not_thousands(tmp_path, monkeypatch):
    """`scan - < photo.jpg` (or an image saved as .txt) read the image's bytes as NUL-separated paths: a 375 kB
    JPEG gave 93,777 `not_found` "files" with garbage names.  Now the list is one `unreadable` row, saying why."""
    image = png_bytes((64, 64), seed=3)
    (tmp_path / "photo.txt").write_bytes(image)
    (tmp_path / "a.png").write_bytes(png_bytes((32, 32)))
    found = list(iter_candidates([str(tmp_path / "photo.txt"), str(tmp_path / "a.png")]))
    assert [c.path for c in found] == [str(tmp_path / "photo.txt"), str(tmp_path / "a.png")]
    assert found[0].problem[0] == "unreadable" and "not a list of paths" in found[0].problem[1]
    assert found[1].problem is None

    class Stdin:
        buffer = io.BytesIO(image)

    monkeypatch.setattr(sys, "stdin", Stdin())
    found = list(iter_candidates(["-"]))
    assert len(found) == 1 and found[0].path == "-" and "standard input: not a list" in found[0].problem[1]
    with pytest.raises(sources.NotAListError):  # detect --files-from: one line, as for a list it cannot open
        list(iter_list_stream(io.BytesIO(image)))


def test_a_utf16_list_is_read_and_a_stray_control_byte_in_a_name_is_still_a_name(tmp_path):
    """A list that Windows PowerShell's `>` writes is UTF-16 with a byte-order mark: its zero bytes made it a
    NUL-separated list of one-letter "paths".  A real list whose one name holds a control byte still reads."""
    names = [str(tmp_path / "a.png"), str(tmp_path / "b c.png")]
    listing = ("\r\n".join(names) + "\r\n# a comment\r\n").encode("utf-16")
    assert listing.startswith(b"\xff\xfe")
    assert list(iter_list_stream(io.BytesIO(listing))) == names
    assert list(iter_list_stream(io.BytesIO(listing), chunk=7)) == names  # blocks that split a character
    odd = [str(tmp_path / "a.png"), str(tmp_path / "b\x01c.png"), str(tmp_path / "d\nline.png")]
    assert list(iter_list_stream(io.BytesIO(b"\0".join(map(os.fsencode, odd)) + b"\0"))) == odd


def test_an_interrupted_rescore_run_again_continues_instead_of_starting_over(tmp_path, tiny):
    """`scan --rescore` stopped (Ctrl-C, a batch system's time limit) and run again judged every file from the
    first again, against the help's "run the same command again: it continues": a rescore of a large collection
    under a time limit never finished.  Now it goes on where it stopped; once finished, the next one starts over."""
    from synthdetect.scan import ScanOptions
    from synthdetect.scan.engine import ScanInterrupted

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        (folder / f"a{i}.png").write_bytes(png_bytes((32, 32), seed=i))
    db = tmp_path / "r.sqlite"
    opts = ScanOptions(model=str(tiny), workers=1, batch_size=1)
    assert run_scan([str(folder)], db, opts)["judged"] == 6
    old = "2000-01-01T00:00:00+00:00"
    with sqlite3.connect(db) as conn:  # the first scan was long ago
        conn.execute("UPDATE results SET scanned_at = ?", (old,))

    stopped = []

    def stop_after_two(counters, _discovery_done) -> None:  # Ctrl-C once two files are judged
        if counters.judged >= 2 and not stopped:
            stopped.append(True)
            raise KeyboardInterrupt

    rescore = ScanOptions(model=str(tiny), workers=1, batch_size=1, rescore=True)
    with pytest.raises(ScanInterrupted):
        run_scan([str(folder)], db, rescore, progress=stop_after_two)
    with sqlite3.connect(db) as conn:
        rescored = conn.execute("SELECT COUNT(*) FROM results WHERE scanned_at > ?", (old,)).fetchone()[0]
        # the rescore began in an earlier second than these rows (a row of that very second is judged again)
        conn.execute("UPDATE meta SET value = ? WHERE key LIKE 'rescore:%'", ("2001-01-01T00:00:00+00:00",))
    assert 2 <= rescored < 6

    again = run_scan([str(folder)], db, rescore)
    assert (again["judged"], again["skipped_unchanged"]) == (6 - rescored, rescored)
    assert run_scan([str(folder)], db, rescore)["judged"] == 6  # finished: a new --rescore judges everything


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_judged_again(tmp_path, tiny):
    """The resume check compared size and mtime only: an image replaced by a different one of the same size with
    the same mtime (`cp -p`, `rsync -a`, archives with fixed times, equal-size BMP/TIFF renders) kept the old
    image's verdict and sha256, unnoticed.  The inode change time, which no tool sets back, is compared too."""
    from synthdetect.scan import ScanOptions

    folder = tmp_path / "imgs"
    folder.mkdir()
    target, other = folder / "a.bmp", tmp_path / "other.bmp"
    target.write_bytes(png_bytes((32, 32), seed=1, fmt="BMP"))
    other.write_bytes(png_bytes((32, 32), seed=2, fmt="BMP"))
    assert target.stat().st_size == other.stat().st_size and target.read_bytes() != other.read_bytes()
    fixed = 315532800 * 10**9  # 1980-01-01, as zip archives and reproducible builds set it
    for path in (target, other):
        os.utime(path, ns=(fixed, fixed))
    db = tmp_path / "r.sqlite"
    opts = ScanOptions(model=str(tiny), workers=1, batch_size=4)
    assert run_scan([str(folder)], db, opts)["judged"] == 1
    assert run_scan([str(folder)], db, opts)["skipped_unchanged"] == 1  # unchanged: not opened again

    os.replace(other, target)  # same name, size and mtime; other bytes
    again = run_scan([str(folder)], db, opts)
    assert again["skipped_unchanged"] == 0 and again["judged"] == 1
    with ResultStore(db) as store:
        (row,) = store.rows()
    assert row["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()

    # A database written before the change time was stored: the column is added, its rows compared as before
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE results DROP COLUMN ctime_ns")
    assert run_scan([str(folder)], db, opts)["skipped_unchanged"] == 1
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE results SET ctime_ns = NULL")
    assert run_scan([str(folder)], db, opts)["skipped_unchanged"] == 1  # not every old row judged again
    assert export(db, tmp_path / "out.csv") == 1
    assert "ctime" not in (tmp_path / "out.csv").read_text().splitlines()[0]  # exports keep their columns


def test_a_parquet_export_without_pyarrow_is_refused_before_scanning(tmp_path, tiny, monkeypatch):
    """Without pyarrow, `scan --export r.parquet` scanned every file and only then failed on the import."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes((32, 32)))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    db = tmp_path / "r.sqlite"
    result = CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny),
                                      "--workers", "1", "--export", str(tmp_path / "r.parquet")])
    assert not db.exists(), result.output  # nothing was scanned
    one_error_line(result, starts=f"error: --export {tmp_path / 'r.parquet'}: Parquet export needs pyarrow")
    exported = CliRunner().invoke(app, ["scan-export", str(db), str(tmp_path / "r.parquet")])
    assert exported.exit_code == 2 and "Traceback" not in exported.output
