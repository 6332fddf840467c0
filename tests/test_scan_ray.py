"""`synthdetect scan --engine ray` on a local Ray: the local engine's rows, resume, interruptions and crash rows."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from synthdetect.scan import ScanOptions, run_scan
from tiny_model import png_bytes, write_tiny_cnn

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'synthdetect[ray]')")

TESTS = Path(__file__).resolve().parent
SYNTHDETECT = Path(sys.executable).with_name("synthdetect")
COMPARED = ("path", "sha256", "size", "mtime_ns", "label", "p_ai", "reasons", "model", "raw_logit", "model_p_ai",
            "evidence", "width", "height", "format", "error", "error_kind", "fingerprint")


def rows(db):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    out = {r["path"]: {k: r[k] for k in COMPARED} for r in conn.execute("SELECT * FROM results")}
    conn.close()
    return out


def crash_on_marked_files():
    """Ray worker set-up: an actor dies, as on a decoder or model crash, on files named to do so."""
    from synthdetect.scan import ray_engine

    decode, judge = ray_engine.decode_file, ray_engine.judge_batch

    def decode_file(path, *args, **kw):
        if "kills-the-decoder" in path:
            os._exit(1)
        return decode(path, *args, **kw)

    def judge_batch(detector, batch):
        if any("kills-the-model" in d.path for d in batch):
            os._exit(1)
        return judge(detector, batch)

    ray_engine.decode_file, ray_engine.judge_batch = decode_file, judge_batch


@pytest.fixture(scope="module")
def local_ray():
    pythonpath = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": crash_on_marked_files, "env_vars": {"PYTHONPATH": pythonpath}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def images(folder, n, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{prefix}{i:03d}.png").write_bytes(png_bytes((32, 32), seed=i))
    return sorted(str(folder / f"{prefix}{i:03d}.png") for i in range(n))


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
    os.utime(folder / "001.png", ns=(-10**18, -10**18))  # 1938: a negative mtime is a stamp, not "none"

    options = ScanOptions(model=str(tiny), workers=2, batch_size=8)
    local = run_scan([str(folder)], tmp_path / "local.sqlite", options)
    distributed = run_ray_scan([str(folder)], tmp_path / "ray.sqlite", options)
    assert distributed["engine"] == "ray" and distributed["judged"] == 28
    assert distributed["labels"] == local["labels"] and distributed["errors_by_kind"] == local["errors_by_kind"]
    assert rows(tmp_path / "ray.sqlite") == rows(tmp_path / "local.sqlite")

    # Resume works across engines: the local engine's rows count as done for Ray, and Ray's for Ray.
    again = run_ray_scan([str(folder)], tmp_path / "local.sqlite", options)
    assert again["skipped_unchanged"] == 28 and again["judged"] == 0
    again = run_ray_scan([str(folder)], tmp_path / "ray.sqlite", options)
    assert again["skipped_unchanged"] == 28 and again["judged"] == 0
    verdict = json.loads(sqlite3.connect(tmp_path / "ray.sqlite").execute(
        "SELECT verdict FROM results WHERE path LIKE '%000.png'").fetchone()[0])
    assert verdict["schema"] == "synthdetect.verdict/1"


@pytest.mark.slow
def test_a_file_that_kills_its_actor_is_an_error_row_and_the_scan_ends(tmp_path, local_ray, tiny):
    """Ray restarts a dead actor and retries its task, so a file that crashed its decoder (or the model pass)
    crashed every retry and the scan never ended; now that file alone is an error row, as in the local engine."""
    from synthdetect.scan.ray_engine import run_ray_scan

    folder = tmp_path / "imgs"
    files = images(folder, 6)
    decoder_crash, model_crash = folder / "a-kills-the-decoder.png", folder / "b-kills-the-model.png"
    for path in (decoder_crash, model_crash):
        path.write_bytes(png_bytes((32, 32), seed=9))
    db = tmp_path / "r.sqlite"
    result = {}
    scan = threading.Thread(target=lambda: result.update(run_ray_scan(
        [str(folder)], db, ScanOptions(model=str(tiny), workers=2, batch_size=4))), daemon=True)
    scan.start()
    scan.join(timeout=240)
    assert not scan.is_alive(), "the scan retried the crashing file for ever"
    assert result["errors_by_kind"] == {"decoder_crashed": 1, "model_error": 1} and result["judged"] == 8
    errors = dict(sqlite3.connect(db).execute("SELECT path, error FROM results WHERE error IS NOT NULL"))
    assert errors == {str(decoder_crash): f"{decoder_crash}: decoder process (a Ray actor) died on this file",
                      str(model_crash): f"{model_crash}: model failed (its Ray actor died on this file)"}
    assert sorted(rows(db)) == sorted([*files, str(decoder_crash), str(model_crash)])
    assert not list(Path(tempfile.gettempdir()).glob("synthdetect-ray-*"))  # the crash marks are gone


@pytest.mark.slow
def test_sigterm_ends_a_ray_scan_like_ctrl_c_and_a_rerun_finishes_it(tmp_path, local_ray, tiny):
    """SIGTERM went to Ray's handler (sys.exit, or an abort with a C++ stack in the CLI, exit 134): the run was never
    closed.  Now it ends as in the local engine.  The progress bar also knows the total while the scan runs."""
    from synthdetect.scan.engine import ScanInterrupted
    from synthdetect.scan.ray_engine import run_ray_scan

    files = images(tmp_path / "imgs", 40)
    db = tmp_path / "r.sqlite"
    options = ScanOptions(model=str(tiny), workers=2, batch_size=2)
    seen, terminated = [], []

    def terminate_after_first_rows(counters, discovery_done):
        seen.append((discovery_done, counters.done, counters.queued))
        if counters.done and not terminated:
            terminated.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(ScanInterrupted) as stopped:
        run_ray_scan([str(tmp_path / "imgs")], db, options, progress=terminate_after_first_rows)
    assert stopped.value.signum == signal.SIGTERM
    assert (True, 0, 40) in seen  # a total (and an ETA) from the first update, not only at the end
    committed = len(rows(db))
    assert 0 < committed < 40
    summary = json.loads(sqlite3.connect(db).execute("SELECT summary FROM runs").fetchone()[0])
    assert summary["interrupted"] is True and summary["database_totals"]["rows"] == committed

    rest = run_ray_scan([str(tmp_path / "imgs")], db, options)
    assert rest["skipped_unchanged"] == committed and rest["judged"] == 40 - committed
    assert sorted(rows(db)) == files


def test_a_scan_with_nothing_to_judge_never_starts_ray(tmp_path, tiny, monkeypatch):
    """Starting Ray took 10-25 s on this machine even for an empty folder or a finished scan's resume."""
    from synthdetect.scan import ray_engine

    def no_ray(*args, **kw):
        raise AssertionError("Ray started with nothing to judge")

    monkeypatch.setattr(ray_engine, "init_ray", no_ray)
    (tmp_path / "empty").mkdir()
    summary = ray_engine.run_ray_scan([str(tmp_path / "empty")], tmp_path / "r.sqlite", ScanOptions(model=str(tiny)))
    assert summary["judged"] == summary["discovered"] == 0 and summary["interrupted"] is False


def test_an_unreachable_ray_address_is_a_clear_error_not_a_hang(tmp_path, tiny):
    """ray.init(address=...) waits for ever for a head nobody runs (stopped after 200 s, still waiting)."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    images(tmp_path / "imgs", 1)
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    proc = subprocess.run([str(SYNTHDETECT), "scan", str(tmp_path / "imgs"), "--out", str(tmp_path / "r.sqlite"),
                           "-m", str(tiny), "--engine", "ray"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert any(line.startswith(f"error: RAY_ADDRESS=127.0.0.1:{port}: cannot reach the Ray cluster")
               for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_cli_on_ray_keeps_the_console_to_the_scan_and_leaves_nothing_running(tmp_path, tiny):
    """Ray's start-up lines (token auth, "Started a local Ray instance", "Progress bars disabled") came on every scan,
    even with -q; and the local Ray it started is stopped and its crash marks removed. Ray's own report of an
    actor's death ("(raylet) A worker died ...") came on stdout before --summary-json's JSON; it goes to stderr."""
    folder = tmp_path / "imgs"
    images(folder, 3)
    (folder / "bad.png").write_bytes(b"not an image")
    (folder / "x-kills-the-decoder.png").write_bytes(png_bytes((32, 32), seed=9))
    pythonpath = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    crashing = {"runtime_env": {"worker_process_setup_hook": "test_scan_ray.crash_on_marked_files",
                                "env_vars": {"PYTHONPATH": pythonpath}}}  # Ray reads a job's runtime_env here
    env = {**os.environ, "PYTHONPATH": pythonpath, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(crashing)}
    proc = subprocess.run([str(SYNTHDETECT), "-q", "scan", str(folder), "--out", str(tmp_path / "r.sqlite"),
                           "-m", str(tiny), "--engine", "ray", "--summary-json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["engine"] == "ray" and summary["errors_by_kind"] == {"not_an_image": 1, "decoder_crashed": 1}
    assert "A worker died" in proc.stderr  # Ray's diagnosis is kept, on stderr
    for noise in ("Token authentication", "Started a local Ray instance", "Progress bars disabled", "INFO"):
        assert noise not in proc.stderr
    assert not list(Path(tempfile.gettempdir()).glob("synthdetect-ray-*"))
