"""`synthdetect scan` on hostile inputs: odd names, globs, special files, bad options, overlaps, signals."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.images import LoadLimits
from synthdetect.scan import ScanOptions, export, run_scan
from synthdetect.scan.decode import decode_file
from synthdetect.scan.sources import PassedOver, iter_candidates
from synthdetect.scan.store import FileStamp, ResultStore
from tiny_model import png_bytes, write_tiny_cnn

SYNTHDETECT = Path(sys.executable).with_name("synthdetect")
#: b"bad\xff.png" as Python names it on Linux: the byte that is not UTF-8 becomes a surrogate.
LATIN1_NAME = os.fsdecode(b"bad\xff.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def options(tiny: Path, **kw) -> ScanOptions:
    return ScanOptions(model=str(tiny), workers=1, batch_size=4, **kw)


def images(folder: Path, n: int, prefix: str = "img") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i}.png"
        path.write_bytes(png_bytes((32, 32), seed=i))
        paths.append(str(path))
    return paths


def one_image(path: Path, seed: int) -> str:
    """One more 32 px PNG, beside what ``images`` made; returns its path as the scan names it."""
    path.write_bytes(png_bytes((32, 32), seed=seed))
    return str(path)


def column_by_path(db: Path, column: str) -> dict[str, object]:
    """``{path: column}`` over the database's result rows."""
    return dict(sqlite3.connect(db).execute(f"SELECT path, {column} FROM results").fetchall())


def row_paths(db: Path) -> list[str]:
    with ResultStore(db) as store:
        return sorted(row["path"] for row in store.rows())


def scan_cli(*args: str):
    return CliRunner().invoke(app, ["-q", "scan", *args])


class FifoReleaser:
    """Keeps a writer on a FIFO so a reader that (wrongly) blocks on it gets end-of-file instead of hanging."""

    def __init__(self, fifo: Path):
        self.fifo = fifo
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.stop = False
        self.thread.start()

    def _write(self) -> None:
        while not self.stop:
            fd = os.open(self.fifo, os.O_WRONLY)  # blocks until someone opens the FIFO to read
            os.close(fd)

    def close(self) -> None:
        self.stop = True
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets a writer blocked in open() return
        time.sleep(0.05)
        os.close(fd)
        self.thread.join(timeout=2)


# 1 -------------------------------------------------------------------------------------------------------------
def test_names_that_are_not_utf8_get_rows_resume_and_export(tmp_path, tiny):
    folder = tmp_path / "imgs"
    good = images(folder, 1)
    weird = one_image(folder / LATIN1_NAME, 5)
    listing = tmp_path / "latin1.txt"
    listing.write_bytes(b"imgs/bad\xff.png\nimgs/img0.png\n")
    db = tmp_path / "r.sqlite"

    summary = run_scan([str(folder)], db, options(tiny))
    assert summary["judged"] == 2 and summary["errors"] == 0
    assert row_paths(db) == sorted([*good, weird])  # the name comes back exactly, bytes and all
    assert [c.path for c in iter_candidates([str(listing)])] == [weird, good[0]]  # a Latin-1 list is read
    again = run_scan([str(listing)], db, options(tiny))
    assert again["skipped_unchanged"] == 2 and again["judged"] == 0  # the byte-named row is found again

    shown = str(folder / "bad\\xff.png")  # text formats hold UTF-8: the byte is written as \xff
    assert export(db, tmp_path / "r.csv") == 2
    assert shown in (tmp_path / "r.csv").read_text(encoding="utf-8")
    assert export(db, tmp_path / "r.jsonl") == 2
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["path"] for r in records) == sorted([good[0], shown])
    pytest.importorskip("pyarrow")
    assert export(db, tmp_path / "r.parquet") == 2


# 2 -------------------------------------------------------------------------------------------------------------
def test_a_glob_walks_the_folders_it_matches_and_one_matching_nothing_is_an_error_row(tmp_path, tiny):
    files = images(tmp_path / "B" / "x", 2) + images(tmp_path / "B" / "y", 2)
    found = sorted(c.path for c in iter_candidates([str(tmp_path / "B" / "*")]))
    assert found == sorted(files)
    assert sorted(c.path for c in iter_candidates([str(tmp_path / "B" / "**")])) == sorted(files)  # each once

    pattern = str(tmp_path / "nothing" / "*.jpg")
    db = tmp_path / "r.sqlite"
    result = scan_cli(pattern, "--out", str(db), "-m", str(tiny), "--workers", "1")
    assert result.exit_code == 3, result.output  # like detect: a pattern that matches nothing is a failure
    (row,) = sqlite3.connect(db).execute("SELECT path, error_kind, error FROM results").fetchall()
    assert row == (pattern, "not_found", f"{pattern}: no files match this pattern")


# 3 -------------------------------------------------------------------------------------------------------------
def test_a_resume_retries_error_rows_a_second_try_may_fix_but_not_content_errors(tmp_path, tiny):
    good = images(tmp_path / "imgs", 2)
    text = tmp_path / "imgs" / "notes.png"
    text.write_text("not an image")
    db = tmp_path / "r.sqlite"
    run_scan([str(tmp_path / "imgs")], db, options(tiny))
    with sqlite3.connect(db) as conn:  # as if the first scan had found img0 unreadable (chmod 000, since fixed)
        conn.execute("UPDATE results SET label = NULL, error = 'cannot read file (Permission denied)', "
                     "error_kind = 'unreadable' WHERE path = ?", (good[0],))
    again = run_scan([str(tmp_path / "imgs")], db, options(tiny))
    assert again["judged"] == 1 and again["skipped_unchanged"] == 2  # img0 again; img1 and notes.png skipped
    kinds = column_by_path(db, "error_kind")
    assert kinds == {good[0]: None, good[1]: None, str(text): "not_an_image"}


# 4 -------------------------------------------------------------------------------------------------------------
def test_only_regular_files_are_opened_and_every_other_one_is_reported(tmp_path, tiny):
    folder = tmp_path / "imgs"
    good = images(folder, 1)
    os.mkfifo(folder / "fifo.jpg")
    os.symlink(tmp_path / "missing.jpg", folder / "broken.jpg")
    os.symlink(folder / "loopb.jpg", folder / "loopa.jpg")
    os.symlink(folder / "loopa.jpg", folder / "loopb.jpg")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", folder / "linked")
    releaser = FifoReleaser(folder / "fifo.jpg")  # without the fix the scan would block on the FIFO forever
    try:
        summary = run_scan([str(folder)], tmp_path / "r.sqlite", options(tiny))
        race = decode_file(str(folder / "fifo.jpg"), FileStamp(0, 0), LoadLimits())  # became a FIFO after discovery
        detected = CliRunner().invoke(app, ["-q", "detect", str(folder), "-m", str(tiny), "-f", "jsonl"])
    finally:
        releaser.close()
    rows = column_by_path(tmp_path / "r.sqlite", "error")
    assert rows == {
        good[0]: None,
        str(folder / "fifo.jpg"): f"{folder / 'fifo.jpg'}: is a named pipe (FIFO), not a regular file",
        str(folder / "broken.jpg"): f"{folder / 'broken.jpg'}: broken symbolic link (its target does not exist)",
        str(folder / "loopa.jpg"): f"{folder / 'loopa.jpg'}: symbolic link loop",
        str(folder / "loopb.jpg"): f"{folder / 'loopb.jpg'}: symbolic link loop",
    }
    assert summary["errors_by_kind"] == {"not_a_file": 3, "not_found": 1}
    # every row is the verdict detect gives for that file: a loop was "unreadable" here and "not_found" there,
    # a FIFO "not an image file" here and "not a regular file" there
    kinds = column_by_path(tmp_path / "r.sqlite", "error_kind")
    verdicts = {v["file"]: (v["error"], v["error_kind"]) for v in map(json.loads, detected.stdout.splitlines())}
    assert verdicts == {path: (rows[path], kinds[path]) for path in rows}
    assert summary["passed_over"]["linked_folders"] == 1  # not followed, but said
    assert any("symbolic link(s) to folders" in line for line in PassedOver.lines_of(summary["passed_over"]))
    assert race.error is not None and race.error.kind == "not_a_file"


# 5 -------------------------------------------------------------------------------------------------------------
def test_counts_below_their_minimum_are_refused_as_usage_errors(tmp_path, tiny):
    images(tmp_path / "imgs", 1)
    base = [str(tmp_path / "imgs"), "--out", str(tmp_path / "r.sqlite"), "-m", str(tiny)]
    # --threads 100000 reached torch.set_num_threads and ended in a traceback, then a segfault (exit 139, audit)
    for bad in (["--threads", "-1"], ["--threads", "100000"], ["--batch-size", "0"], ["--workers", "-1"],  # workers -1 hung
                ["--max-pixels", "0"], ["--max-bytes", "-5"]):  # these had made every file an error row
        result = scan_cli(*base, *bad)
        assert result.exit_code == 2 and "Invalid value" in result.output, (bad, result.output)
    with pytest.raises(ValueError, match="workers must be at least 0"):
        ScanOptions(workers=-1)


# 6 -------------------------------------------------------------------------------------------------------------
def test_bad_output_paths_are_one_line_errors_before_any_scanning(tmp_path, tiny):
    images(tmp_path / "imgs", 1)
    db = tmp_path / "r.sqlite"
    not_a_db = tmp_path / "photo.png"
    not_a_db.write_bytes(png_bytes((8, 8)))
    scan = [str(tmp_path / "imgs"), "-m", str(tiny), "--workers", "1"]
    cases = {
        "is a folder": ["scan", *scan, "--out", str(tmp_path)],
        "is not a folder": ["scan", *scan, "--out", str(not_a_db / "r.sqlite")],
        "folder nodir does not exist": ["scan", *scan, "--out", str(db), "--export", "nodir/x.csv"],
        f"{tmp_path / 'nodir'} does not exist": ["scan-export", str(not_a_db), str(tmp_path / "nodir" / "x.csv")],
        "not a synthdetect scan database": ["scan-export", str(not_a_db), str(tmp_path / "x.csv")],
    }
    for message, args in cases.items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "error:" in result.stderr and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not db.exists()  # the --export check came before the scan
    assert not (tmp_path / "x.csv").exists()


# 7 -------------------------------------------------------------------------------------------------------------
def test_the_scan_leaves_its_own_database_out(tmp_path, tiny):
    files = images(tmp_path / "imgs", 2)
    db = tmp_path / "imgs" / "results.sqlite"
    for _ in range(2):  # the second run finds the database, its -wal and -shm in the folder
        summary = run_scan([str(tmp_path / "imgs")], db, options(tiny, all_files=True))
        assert summary["errors"] == 0, summary["errors_by_kind"]
    listing = tmp_path / "all.txt"
    listing.write_text(f"{db}\n{db}-wal\n{files[0]}\n")
    run_scan([str(listing)], db, options(tiny))
    assert row_paths(db) == files


# 8 -------------------------------------------------------------------------------------------------------------
def test_one_file_is_one_row_however_it_is_spelled_and_however_often_named(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = images(Path("B"), 3)
    overlap = run_scan(["B", "B/img0.png", "./B/"], "r.sqlite", options(tiny))
    assert overlap["judged"] == 3 and overlap["discovered"] == 3  # named three times, judged once
    again = run_scan(["./B"], "r.sqlite", options(tiny))
    assert again["skipped_unchanged"] == 3 and again["judged"] == 0
    assert row_paths(tmp_path / "r.sqlite") == sorted(files)


# 9 -------------------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _rows_once_at_least(proc: subprocess.Popen, db: Path, wanted: int, seconds: float = 120) -> int:
    """Rows in a running scan's database, polled until there are ``wanted``, the scan ends or time runs out."""
    deadline = time.monotonic() + seconds
    rows = 0
    while rows < wanted and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                rows = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.Error:
            rows = 0
    return rows


def _start_scan(tmp_path: Path, tiny: Path, name: str) -> tuple[subprocess.Popen, list[int], Path]:
    """A real scan with two decode workers, once it has committed some rows."""
    folder = tmp_path / "imgs"
    if not folder.exists():
        images(folder, 300)
    db = tmp_path / f"{name}.sqlite"
    proc = subprocess.Popen([str(SYNTHDETECT), "-q", "scan", str(folder), "--out", str(db), "-m", str(tiny),
                             "--workers", "2", "--batch-size", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    rows = _rows_once_at_least(proc, db, 4)
    assert proc.poll() is None and rows >= 4, "the scan ended before it could be signalled"
    workers = _children(proc.pid)
    assert len(workers) >= 2
    return proc, workers, db


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(map(_alive, pids)):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.slow
def test_sigterm_ends_a_scan_like_ctrl_c_and_no_worker_outlives_its_scan(tmp_path, tiny):
    proc, workers, db = _start_scan(tmp_path, tiny, "term")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    left = _wait_gone(workers)
    for pid in left:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, "decode workers outlived a SIGTERM-ed scan"
    assert code == 128 + signal.SIGTERM
    assert "interrupted" in proc.stderr.read().decode()
    assert json.loads(sqlite3.connect(db).execute("SELECT summary FROM runs").fetchone()[0])["interrupted"]

    proc, workers, _ = _start_scan(tmp_path, tiny, "kill")
    proc.kill()  # no handler runs: the workers must notice on their own
    proc.wait(timeout=60)
    left = _wait_gone(workers)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "decode workers outlived a SIGKILL-ed scan"


# 10 ------------------------------------------------------------------------------------------------------------
def test_prune_drops_the_rows_of_deleted_files(tmp_path, tiny):
    files = images(tmp_path / "imgs", 3)
    db = tmp_path / "r.sqlite"
    run_scan([str(tmp_path / "imgs")], db, options(tiny))
    os.remove(files[1])
    kept = run_scan([str(tmp_path / "imgs")], db, options(tiny))
    assert kept["pruned"] == 0 and len(row_paths(db)) == 3  # only on request
    result = scan_cli(str(tmp_path / "imgs"), "--out", str(db), "-m", str(tiny), "--workers", "1", "--prune",
                      "--summary-json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["pruned"] == 1 and summary["pruned_example"] == files[1]
    assert row_paths(db) == [files[0], files[2]]


# 11 ------------------------------------------------------------------------------------------------------------
def test_follow_links_walks_each_real_folder_once_and_a_list_walks_its_folders(tmp_path, tiny):
    top = tmp_path / "top"
    own = images(top, 1, "own")
    album = images(tmp_path / "elsewhere", 2, "e")
    os.symlink(tmp_path / "elsewhere", top / "album")
    os.symlink(top, tmp_path / "elsewhere" / "up")  # a loop back to the top
    plain = PassedOver()
    assert [c.path for c in iter_candidates([str(top)], passed_over=plain)] == own
    assert plain.linked_folders == 1
    followed = PassedOver()
    paths = [c.path for c in iter_candidates([str(top)], passed_over=followed, follow_links=True)]
    assert paths == own + [str(top / "album" / Path(p).name) for p in album]
    assert followed.repeat_folders == 1 and followed.linked_folders == 0
    assert any("walked only once" in line for line in PassedOver.lines_of(followed.to_dict()))
    run_scan([str(top)], tmp_path / "r.sqlite", options(tiny, follow_links=True))
    rows = [r[0] for r in sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT path FROM results")]
    assert sorted(rows) == sorted(paths)

    listing = tmp_path / "find.txt"  # `find elsewhere` output: the folder first, then what is inside it
    listing.write_text(f"elsewhere\n{album[0]}\nelsewhere/up\n{album[1]}\n")
    listed = [c for c in iter_candidates([str(listing)])]
    assert [c.path for c in listed] == album and all(c.problem is None for c in listed)  # a folder was an error row


# 12 ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_decode_worker_killed_while_idle_is_replaced_and_the_scan_finishes(tmp_path, tiny):
    """An idle worker used to wait for tasks holding the task queue's shared read lock; killed there (the OOM
    killer, `kill`), it left the lock taken and the scan hung for ever."""
    files = images(tmp_path / "imgs", 3)
    db = tmp_path / "r.sqlite"
    # RESUME_CHUNK = 1: each listed path is queued as soon as it is read, not once 256 have come.
    scan = ("import sys, json; import synthdetect.scan.engine as e; e.RESUME_CHUNK = 1; "
            "print(json.dumps(e.run_scan(['-'], sys.argv[1], e.ScanOptions(model=sys.argv[2], workers=1))))")
    proc = subprocess.Popen([sys.executable, "-c", scan, str(db), str(tiny)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        proc.stdin.write(f"{files[0]}\n".encode())  # a slow list: the worker judges this file, then waits
        proc.stdin.flush()
        rows = _rows_once_at_least(proc, db, 1)
        assert rows == 1 and proc.poll() is None, "the scan did not get to its first row"
        time.sleep(0.5)  # the worker is back waiting for its next task
        (worker,) = _children(proc.pid)
        os.kill(worker, signal.SIGKILL)
        time.sleep(1.5)  # replaced
        try:
            out, err = proc.communicate("".join(f"{f}\n" for f in files[1:]).encode(), timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the scan hung after a decode worker was killed while idle")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["judged"] == 3 and summary["errors"] == 0
    assert row_paths(db) == files


# 13 ------------------------------------------------------------------------------------------------------------
def test_a_model_failure_on_a_file_alone_in_its_batch_is_an_error_row_not_the_end_of_the_scan(tmp_path, tiny,
                                                                                            monkeypatch):
    from synthdetect.scan import engine

    files = images(tmp_path / "imgs", 2)
    boom = one_image(tmp_path / "imgs" / "boom.png", 99)
    load = engine.load_detector

    def failing_on_boom(opts):  # as a model (or its runtime) failing on one input
        detector = load(opts)
        conclude = detector.conclude

        def conclude_or_fail(items):
            if any(getattr(item, "file", None) == boom for item in items):
                raise RuntimeError("model exploded")
            return conclude(items)

        detector.conclude = conclude_or_fail
        return detector

    monkeypatch.setattr(engine, "load_detector", failing_on_boom)
    summary = run_scan([str(tmp_path / "imgs")], tmp_path / "r.sqlite", ScanOptions(model=str(tiny), workers=1,
                                                                                    batch_size=1))
    assert summary["judged"] == 3 and summary["errors_by_kind"] == {"model_error": 1}
    kinds = column_by_path(tmp_path / "r.sqlite", "error_kind")
    assert kinds == {files[0]: None, files[1]: None, boom: "model_error"}


# 14 ------------------------------------------------------------------------------------------------------------
def test_exporting_a_database_of_another_schema_is_one_clear_error(tmp_path, tiny):
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as conn:  # a results table without the columns this synthdetect exports
        conn.execute("CREATE TABLE results (path TEXT PRIMARY KEY, sha256 TEXT, label TEXT, verdict TEXT)")
        conn.execute("INSERT INTO results VALUES ('a.png', 'x', 'human', '{}')")
    newer = tmp_path / "newer.sqlite"
    run_scan([], newer, options(tiny))
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    for db, message in ((old, "not a synthdetect scan database (no such column"), (newer, "scan database schema 2")):
        result = CliRunner().invoke(app, ["scan-export", str(db), str(tmp_path / "x.csv")])
        assert result.exit_code == 2, (db, result.output, result.exception)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "x.csv").exists()


# 15 ------------------------------------------------------------------------------------------------------------
def test_jsonl_export_writes_a_names_stray_byte_as_xNN_inside_the_verdict_too(tmp_path, tiny):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / LATIN1_NAME).write_text("not an image")
    db = tmp_path / "r.sqlite"
    run_scan([str(folder)], db, options(tiny))
    assert export(db, tmp_path / "r.jsonl") == 1
    line = (tmp_path / "r.jsonl").read_text(encoding="utf-8")
    assert "\\udc" not in line  # a lone surrogate escape: invalid Unicode, refused by strict JSON readers
    record = json.loads(line)
    shown = str(folder / "bad\\xff.png")
    assert record["error"].startswith(shown) and record["verdict"]["error"].startswith(shown)


# 16 ------------------------------------------------------------------------------------------------------------
def test_a_decode_worker_that_dies_on_a_file_gives_that_file_an_error_row_and_the_scan_goes_on(tmp_path, tiny,
                                                                                             monkeypatch):
    from synthdetect.scan import engine

    files = images(tmp_path / "imgs", 3)
    crash = one_image(tmp_path / "imgs" / "crash.png", 7)
    decode = engine.decode_file

    def dying_on_crash(path, *args, **kw):  # as a decoder library crashing the process on one file
        if path == crash:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode(path, *args, **kw)

    monkeypatch.setattr(engine, "decode_file", dying_on_crash)  # forked workers inherit it
    db = tmp_path / "r.sqlite"
    summary = run_scan([str(tmp_path / "imgs")], db, ScanOptions(model=str(tiny), workers=2, batch_size=1))
    assert summary["judged"] == 4 and summary["errors_by_kind"] == {"decoder_crashed": 1}
    rows = column_by_path(db, "error")
    assert sorted(rows) == sorted([*files, crash])
    assert rows[crash] == f"{crash}: decoder process died on this file (exit code -9)"
    assert all(rows[f] is None for f in files)


# 17 ------------------------------------------------------------------------------------------------------------
MID_SEND_KILL = """
import json, os, pickle, signal, sys, threading, time
from pathlib import Path
import synthdetect.scan.engine as engine
from synthdetect.scan.decode import Decoded

db, model, folder, marker = sys.argv[1:5]
victim = os.path.join(folder, "a-victim.png")
to_bytes, judge_batch = Decoded.to_bytes, engine.judge_batch

def slow_judge(detector, batch):  # the model busy with a batch: nothing reads results meanwhile
    Path(marker).touch()
    time.sleep(1.5)
    return judge_batch(detector, batch)

def big_then_killed(self):  # a full-size model's input, and the OOM killer arriving while it is sent
    data = to_bytes(self)
    if self.path != victim:
        return data
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return data + bytes(64 << 20)  # pickle.loads ignores what follows the pickle

engine.judge_batch, Decoded.to_bytes = slow_judge, big_then_killed
print(json.dumps(engine.run_scan([folder], db, engine.ScanOptions(model=model, workers=2, batch_size=1))))
"""


@pytest.mark.slow
def test_a_decode_worker_killed_while_sending_a_large_result_does_not_hang_the_scan(tmp_path, tiny):
    """Every worker sent through one queue whose pipe a lock guarded; killed mid-send, a worker left the lock
    taken and half a message in the pipe, and the scan waited for ever."""
    folder = tmp_path / "imgs"
    files = images(folder, 3, "b")
    victim = one_image(folder / "a-victim.png", 5)
    db = tmp_path / "r.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", MID_SEND_KILL, str(db), str(tiny), str(folder),
                             str(tmp_path / "judging")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the scan hung after a decode worker was killed while sending its result")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["judged"] == 4 and set(summary["errors_by_kind"]) <= {"decoder_crashed"}
    kinds = column_by_path(db, "error_kind")
    assert sorted(kinds) == sorted([*files, victim])  # every file once, none lost
    assert sum(kind == "decoder_crashed" for kind in kinds.values()) <= 1  # only the file a worker died on
