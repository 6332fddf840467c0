"""`synthdetect scan` / `scan-export` audit: NUL-separated lists, odd database names, full disks, read-only media."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.scan import ScanOptions, export, run_scan
from synthdetect.scan.sources import iter_candidates
from synthdetect.scan.store import FileStamp, ResultStore, StoreError, verdict_row
from tiny_model import png_bytes, write_tiny_cnn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def options(tiny: Path, **kw) -> ScanOptions:
    return ScanOptions(model=str(tiny), workers=1, batch_size=4, **kw)


def images(folder: Path, names: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(png_bytes((32, 32), seed=i))
    return [str(folder / name) for name in names]


def paths_in(db: Path) -> list[str]:
    with ResultStore(db) as store:
        return sorted(row["path"] for row in store.rows())


@contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail (EFBIG, Python ignores SIGXFSZ): a full disk for this process alone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def synthetic_database(db: Path, n: int) -> None:
    """A scan database of ``n`` judged rows (with long verdicts), written without a model."""
    with ResultStore(db) as store:
        store.write([verdict_row({"file": f"img{i:03d}.png", "label": "human", "p_ai": 0.1, "error": None,
                                  "reasons": [os.urandom(500).hex()]}, FileStamp(10, 10), "tiny", "fp")
                      for i in range(n)])


# 1 -------------------------------------------------------------------------------------------------------------
def test_a_nul_separated_list_from_find_print0_is_read_names_with_newlines_included(tmp_path, tiny):
    """`find -print0 | scan -` raised 'ValueError: embedded null byte' (a traceback); a list file with NULs too."""
    files = images(tmp_path / "imgs", ["a.png", "two\nlines.png", " lead.png", "#hash.png"])
    listing = b"\0".join(os.fsencode(f) for f in files) + b"\0"
    (tmp_path / "l.txt").write_bytes(listing)
    assert sorted(c.path for c in iter_candidates([str(tmp_path / "l.txt")])) == sorted(files)

    db = tmp_path / "r.sqlite"
    result = CliRunner().invoke(app, ["-q", "scan", "-", "--out", str(db), "-m", str(tiny), "--workers", "1",
                                      "--summary-json"], input=listing)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["judged"] == 4 and summary["errors"] == 0
    assert paths_in(db) == sorted(files)

    # detect reads --files-from with the same byte-stream reader: names holding a newline too, from a file or stdin
    for source, given in ((str(tmp_path / "l.txt"), None), ("-", listing)):
        detected = CliRunner().invoke(app, ["-q", "detect", "--files-from", source, "-m", str(tiny), "-f", "jsonl"],
                                      input=given)
        assert detected.exit_code == 0, detected.output
        assert sorted(json.loads(line)["file"] for line in detected.stdout.splitlines()) == sorted(files)
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(files[:1]).encode() + b"\r\n")
    detected = CliRunner().invoke(app, ["-q", "detect", "--files-from", str(tmp_path / "bom.txt"), "-m", str(tiny),
                                        "-f", "jsonl"])
    assert [json.loads(line)["file"] for line in detected.stdout.splitlines()] == files[:1], detected.output


def test_a_list_saved_with_a_byte_order_mark_names_its_first_file(tmp_path):
    """Notepad's UTF-8 lists start with EF BB BF: the first path became '\\ufeff...' and a not_found row."""
    files = images(tmp_path / "imgs", ["a.png", "b.png"])
    (tmp_path / "l.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(files).encode() + b"\r\n")
    found = list(iter_candidates([str(tmp_path / "l.txt")]))
    assert [c.path for c in found] == files
    assert all(c.problem is None and c.stamp.size for c in found)


# 2 -------------------------------------------------------------------------------------------------------------
def test_a_database_named_with_hash_percent_or_question_mark_is_scanned_resumed_and_exported(tmp_path, tiny):
    """Read-only connections used 'file:{path}?mode=ro': a '#' cut the name (the scan crashed with 'no such table:
    results' after creating an empty stray file), a '%' or '?' named another file."""
    files = images(tmp_path / "imgs", ["a.png", "b.png"])
    for name in ("run#1.sqlite", "100%41.sqlite", "why?.sqlite"):
        db = tmp_path / name
        first = run_scan([str(tmp_path / "imgs")], db, options(tiny))
        assert first["judged"] == 2
        again = run_scan([str(tmp_path / "imgs")], db, options(tiny))
        assert again["skipped_unchanged"] == 2 and again["judged"] == 0
        assert export(db, tmp_path / "out.csv") == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "why").exists()  # no stray databases
    assert paths_in(tmp_path / "run#1.sqlite") == files


# 3 -------------------------------------------------------------------------------------------------------------
def test_a_full_disk_mid_scan_is_one_error_line_and_the_rows_committed_before_are_kept(tmp_path, tiny):
    """A failed commit (full disk, I/O error) ended the scan with an OperationalError traceback."""
    files = images(tmp_path / "imgs", [f"m{i:03d}.png" for i in range(80)])
    db = tmp_path / "r.sqlite"
    args = ["-q", "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny), "--workers", "1",
            "--batch-size", "4"]
    with file_size_limit(96 * 1024):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {db}: cannot write the results database (")
    assert "every row committed before is kept" in errors[0]
    kept = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert 0 < kept < len(files)

    resumed = run_scan([str(tmp_path / "imgs")], db, options(tiny))
    assert resumed["skipped_unchanged"] == kept and resumed["judged"] == len(files) - kept
    assert paths_in(db) == sorted(files)


def test_an_export_that_fails_halfway_leaves_no_partial_file_and_keeps_the_earlier_one(tmp_path):
    """Exports wrote straight to the target: a full disk left a truncated file where the earlier export was."""
    db = tmp_path / "r.sqlite"
    synthetic_database(db, 120)  # about 120 kB as CSV, JSONL or Parquet
    for name in ("r.csv", "r.jsonl", "r.parquet"):
        target = tmp_path / name
        target.write_text("earlier export\n")
        with file_size_limit(48 * 1024), pytest.raises(StoreError, match="cannot write"):
            export(db, target)
        assert target.read_text() == "earlier export\n"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no .part left
        assert export(db, target) == 120


def test_sigterm_during_an_export_leaves_no_partial_file_and_says_how_to_write_it(tmp_path, monkeypatch):
    """SIGTERM's default action ended `scan-export` (and `scan --export`) mid-write: the hidden .part file stayed
    beside the target and nothing said the export was not written."""
    import signal

    import synthdetect.scan.store as store

    db = tmp_path / "r.sqlite"
    synthetic_database(db, 120)
    target = tmp_path / "r.csv"
    target.write_text("earlier export\n")
    real, seen = store._exported, []

    def terminated_halfway(row):
        seen.append(row)
        if len(seen) == 60:
            os.kill(os.getpid(), signal.SIGTERM)  # handled on the main thread, as a batch system's would be
        return real(row)

    monkeypatch.setattr(store, "_exported", terminated_halfway)
    handler_before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["scan-export", str(db), str(target)])
    assert result.exit_code == 143, result.output
    assert result.stderr.strip() == (f"error: interrupted while writing {target}: nothing was written there, and "
                                     f"{db} keeps every row; write it with: synthdetect scan-export {db} {target}")
    assert target.read_text() == "earlier export\n" and len(seen) == 60
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no .part left
    assert signal.getsignal(signal.SIGTERM) == handler_before  # the export's handler is gone again
    monkeypatch.setattr(store, "_exported", real)
    assert CliRunner().invoke(app, ["scan-export", str(db), str(target)]).exit_code == 0
    assert len(target.read_text().splitlines()) == 121


# 4 -------------------------------------------------------------------------------------------------------------
@contextmanager
def unwritable(folder: Path):
    """``folder`` made read-only for this process: by its mode for a user, by a read-only bind mount for root
    (whom modes do not stop); skipped where root may not mount."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    try:
        if not mounted or subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)],
                                         capture_output=True).returncode != 0:
            pytest.skip("root here may not mount a folder read-only")
        yield
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)  # even with a file left open there


def test_a_database_in_a_folder_that_cannot_be_written_is_exported(tmp_path):
    """A WAL database needs its -shm file to be read, which SQLite cannot create on read-only media or in another
    user's folder: the export said 'not a synthdetect scan database (unable to open database file)'."""
    folder = tmp_path / "ro"
    folder.mkdir()
    synthetic_database(folder / "r.sqlite", 3)  # closed cleanly: its -wal is merged and gone
    with unwritable(folder):
        assert export(folder / "r.sqlite", tmp_path / "r.csv") == 3
        assert sorted(os.listdir(folder)) == ["r.sqlite"]
    assert (tmp_path / "r.csv").read_text().count("\n") == 4


KILLED_MID_SCAN = """
import os, sys
from synthdetect.scan.store import FileStamp, ResultStore, verdict_row
store = ResultStore(sys.argv[1])
store.write([verdict_row({"file": "late.png", "label": "ai", "p_ai": 0.9, "error": None}, FileStamp(1, 1), "t", "fp")])
os._exit(0)  # as kill -9 does: the committed row is in the -wal file only
"""


def test_a_database_in_an_unwritable_folder_with_an_unmerged_log_says_so_instead_of_dropping_rows(tmp_path):
    """Rows still in a -wal file (a killed scan) are not in the main file: reading that alone would lose them."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "r.sqlite"
    synthetic_database(db, 3)
    subprocess.run([sys.executable, "-c", KILLED_MID_SCAN, str(db)], check=True, timeout=60)
    assert os.path.getsize(f"{db}-wal") > 0
    with unwritable(folder):
        assert export(db, tmp_path / "r.csv") == 4  # its -shm is there too: SQLite reads the log
    os.remove(f"{db}-shm")
    with unwritable(folder):
        with pytest.raises(StoreError, match="r.sqlite-wal holds rows not yet merged"):
            export(db, tmp_path / "r.csv")
    assert export(db, tmp_path / "r.csv") == 4  # once writable, every row


# 5 -------------------------------------------------------------------------------------------------------------
def test_summary_json_still_reports_an_interrupted_scan(tmp_path, tiny, monkeypatch):
    """Ctrl-C or SIGTERM (a batch system's time limit) printed no JSON at all, so a script could not tell what the
    run had done; the summary, with "interrupted": true, was only in the database's runs table."""
    import synthdetect.scan.engine as engine

    images(tmp_path / "imgs", [f"m{i}.png" for i in range(12)])
    calls = []
    real = engine.judge_batch

    def interrupted_on_the_second_batch(detector, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(detector, batch)

    monkeypatch.setattr(engine, "judge_batch", interrupted_on_the_second_batch)
    db = tmp_path / "r.sqlite"
    result = CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny),
                                      "--workers", "1", "--batch-size", "4", "--summary-json"])
    assert result.exit_code == 130, result.output
    summary = json.loads(result.stdout)
    assert summary["interrupted"] is True and summary["judged"] == 4
    assert summary["database_totals"]["rows"] == 4 == len(paths_in(db))


# 6 -------------------------------------------------------------------------------------------------------------
def test_an_export_never_overwrites_the_scan_database(tmp_path, tiny):
    """`scan --out r.csv --export r.csv` (thinking --out writes CSV) replaced the database with its own export;
    `scan-export r.csv r.csv` did the same to an existing database."""
    images(tmp_path / "imgs", ["a.png"])
    db = tmp_path / "r.csv"
    refused = CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny),
                                       "--workers", "1", "--export", str(db)])
    assert refused.exit_code == 2, refused.output
    assert "the results database is SQLite" in refused.stderr  # a new --out named .csv is refused first
    assert not db.exists()  # refused before any scanning

    run_scan([str(tmp_path / "imgs")], db, options(tiny))  # an existing database that happens to be named .csv
    resumed = CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny),
                                       "--workers", "1", "--export", str(db)])
    assert resumed.exit_code == 2 and resumed.stderr.strip() == (
        f"error: --export {db}: is the scan database itself (or its journal); export to another file")
    again = CliRunner().invoke(app, ["scan-export", str(db), str(db)])
    assert again.exit_code == 2 and "is the scan database itself" in again.stderr
    with pytest.raises(StoreError, match="is the scan database itself"):
        export(db, Path(f"{db}-wal"), fmt="csv")
    assert paths_in(db) == [str(tmp_path / "imgs" / "a.png")]  # still a database, its row intact


def test_a_list_file_that_cannot_be_opened_is_an_error_row_not_the_end_of_the_scan(tmp_path, tiny, monkeypatch):
    """A list this user may not read raised PermissionError out of the discovery thread: a traceback, and the
    folders named beside it were never scanned."""
    import builtins

    import synthdetect.scan.sources as sources

    files = images(tmp_path / "imgs", ["a.png"])
    listing = tmp_path / "secret.txt"
    listing.write_text(files[0] + "\n")

    def guarded_open(path, *args, **kwargs):
        if os.fspath(path) == str(listing):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", guarded_open, raising=False)
    db = tmp_path / "r.sqlite"
    summary = run_scan([str(listing), str(tmp_path / "imgs")], db, options(tiny))
    assert summary["judged"] == 2 and summary["errors_by_kind"] == {"unreadable": 1}
    with ResultStore(db) as store:
        rows = {row["path"]: row for row in store.rows()}
    assert rows[str(listing)]["error"] == f"{listing}: cannot read this list of paths (Permission denied)"
    assert rows[files[0]]["error"] is None


def test_a_closed_standard_input_and_an_export_suffix_on_out_are_one_line_errors(tmp_path, tiny):
    """`scan - <&-` and `detect --files-from - <&-` were TypeError tracebacks; `--out r.csv` made a SQLite file
    named .csv that no spreadsheet opens."""
    import shlex
    import subprocess
    import sys

    exe = f"{shlex.quote(sys.executable)} -c 'from synthdetect.cli import main; main()'"
    for command, message in ((f"scan - --out {tmp_path / 'r.sqlite'} -m {tiny} <&-",
                              "error: - reads the list of paths from standard input, which is closed here"),
                             (f"detect --files-from - -m {tiny} <&-",
                              "error: --files-from -: standard input is closed here; there is no list to read")):
        run = subprocess.run(["bash", "-c", f"{exe} {command}"], capture_output=True, text=True, timeout=120)
        assert (run.returncode, run.stderr.strip()) == (2, message)

    images(tmp_path / "imgs", ["a.png"])
    refused = CliRunner().invoke(app, ["scan", str(tmp_path / "imgs"), "--out", str(tmp_path / "r.csv"), "-m",
                                       str(tiny)])
    assert refused.exit_code == 2 and "with --export" in refused.output
    assert not (tmp_path / "r.csv").exists()
