"""`synthdetect scan --export FILE --summary-json` audit (s26): an export that fails only after the judging still
prints the run's summary JSON (with ``export_error``), says the error in one line and keeps its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.scan import engine, store
from synthdetect.scan.store import ResultStore
from tiny_model import png_bytes, write_tiny_cnn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny")


def _images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        (folder / f"a{i}.png").write_bytes(png_bytes((32, 32), seed=i))
    return folder


def _scan(tmp_path, tiny, *export_args: str):
    return CliRunner().invoke(app, ["-q", "scan", str(tmp_path / "imgs"), "--out", str(tmp_path / "r.sqlite"),
                                    "-m", str(tiny), "--workers", "1", "--summary-json", *export_args])


def _stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_an_export_that_fails_after_judging_still_prints_the_summary_json(tmp_path, tiny, monkeypatch):
    """`scan DIR --out r.sqlite --export out/r.csv --summary-json`, out/r.csv made a folder while the scan ran
    (any export that fails only at the end: its folder removed, a full disk): the run ended with the export's
    error and no JSON on stdout, so a script driving scan learnt nothing of the judged run."""
    _images(tmp_path)
    target = tmp_path / "r.csv"
    real_run_scan = engine.run_scan

    def run_scan_then_block_the_export(*args, **kwargs):
        summary = real_run_scan(*args, **kwargs)
        target.mkdir()  # another process put a folder at the export's name during the scan
        return summary

    monkeypatch.setattr(engine, "run_scan", run_scan_then_block_the_export)
    result = _scan(tmp_path, tiny, "--export", str(target))
    assert result.exit_code == 2, result.output  # a failed export still says failure, as before
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    summary = json.loads(result.stdout)
    assert summary["judged"] == 2 and summary["errors"] == 0
    assert summary["database"] == str(tmp_path / "r.sqlite")
    assert summary["export_error"] == f"{target}: is a folder"
    assert _stderr_lines(result) == [f"error: {target}: is a folder"]
    with ResultStore(tmp_path / "r.sqlite") as db:  # the judged rows are all kept
        assert len(list(db.rows())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "r.csv", "r.sqlite"]  # no stray .part file


def test_an_export_interrupted_after_judging_prints_the_summary_json_and_exits_130(tmp_path, tiny, monkeypatch):
    """Ctrl-C while `scan --export r.csv --summary-json` wrote the export: no JSON either; now the summary names
    the interruption, and the exit code stays 130."""
    _images(tmp_path)
    target = tmp_path / "r.csv"

    def interrupted_export(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "export", interrupted_export)
    result = _scan(tmp_path, tiny, "--export", str(target))
    assert result.exit_code == 130, result.output
    summary = json.loads(result.stdout)
    assert summary["judged"] == 2
    assert summary["export_error"].startswith(f"interrupted while writing {target}: nothing was written there")
    lines = _stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted while writing {target}"), result.stderr
    assert not target.exists()


@pytest.mark.parametrize("name", ["r.xlsx", "missing/r.csv"])
def test_an_export_known_to_fail_is_refused_before_any_judging(tmp_path, tiny, name):
    """An unsupported suffix or a missing folder is refused before the database is made (already so; kept)."""
    _images(tmp_path)
    result = _scan(tmp_path, tiny, "--export", str(tmp_path / name))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = _stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: --export {tmp_path / name}"), result.stderr
    assert not (tmp_path / "r.sqlite").exists()
