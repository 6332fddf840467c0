"""Audit (s23) of ``synthdetect detect``, the Python API and fusion: honest reasons, interruptions."""

from __future__ import annotations

import json
import signal

import pytest
from typer.testing import CliRunner

from synthdetect.api import Detector
from synthdetect.cli import app
from tiny_model import png_bytes


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(seed=1))
    return path


def test_reasons_do_not_say_no_provenance_found_when_none_was_looked_for(tiny_package, photo):
    """``--no-evidence`` (``use_evidence=False``) ran no probe, yet every reason began "no provenance found" -- a
    claim about C2PA, EXIF and generator parameters nobody had read.  A chosen subset names what it left out."""
    off = Detector.load(tiny_package.root, use_evidence=False)(photo)
    assert off.reasons[0].startswith("provenance not checked (evidence probes off); model tiny-cnn p_ai"), off.reasons
    only_ela = Detector.load(tiny_package.root, probes=["ela"])(photo)
    assert only_ela.reasons[0].startswith("provenance not checked (only ela ran); "), only_ela.reasons
    some = Detector.load(tiny_package.root, probes=["c2pa", "exif"])(photo)
    assert some.reasons[0].startswith("no provenance found by the probes run (not checked: genparams, metadata, "
                                      "watermark); "), some.reasons
    full = Detector.load(tiny_package.root)(photo)
    assert full.reasons[0].startswith("no provenance found; model tiny-cnn p_ai"), full.reasons


def _interrupt_on_second_batch(monkeypatch, exc: BaseException):
    real = Detector.detect
    calls = []

    def detect(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", detect)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_json_keeps_the_judged_rows_and_says_how_far_it_got(tiny_package, tmp_path, monkeypatch, signum):
    """Ctrl-C (or SIGTERM) during ``detect -f json`` or the table printed nothing and said nothing (exit 130):
    every verdict judged so far was lost.  Now the judged rows are printed and one line says how many were not."""
    for seed in range(3):
        (tmp_path / f"img{seed}.png").write_bytes(png_bytes(seed=seed))
    interrupt = KeyboardInterrupt() if signum == signal.SIGINT else KeyboardInterrupt(signum)  # as sigterm_raises
    _interrupt_on_second_batch(monkeypatch, interrupt)
    result = CliRunner().invoke(app, ["-q", "detect", str(tmp_path / "img*.png"), "-m", str(tiny_package.root),
                                      "-f", "json", "--batch-size", "1", "--no-evidence"])
    assert result.exit_code == 128 + signum, result.output
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [str(tmp_path / "img0.png")] and rows[0]["label"] in ("ai", "human",
                                                                                                 "uncertain")
    assert "interrupted: 1 of 3 files judged (0 failed), their rows printed; the other 2 were not judged" in \
        " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_interrupted_jsonl_counts_only_the_rows_written(tiny_package, tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    for seed in range(3):
        (tmp_path / "imgs" / f"img{seed}.png").write_bytes(png_bytes(seed=seed))
    _interrupt_on_second_batch(monkeypatch, KeyboardInterrupt())
    result = CliRunner().invoke(app, ["-q", "detect", str(tmp_path / "imgs"), "-m", str(tiny_package.root),
                                      "-f", "jsonl", "--batch-size", "2", "--no-evidence"])
    assert result.exit_code == 130, result.output
    assert len(result.stdout.splitlines()) == 2
    assert "interrupted: 2 of 3 files judged" in " ".join(result.stderr.split())


def test_a_model_failing_to_load_mid_run_keeps_the_rows_already_judged(tiny_package, tmp_path, monkeypatch):
    """A routed model loads with its first image; when it could not load, the table or JSON array of every image
    judged before was lost and the one line did not say that some had been judged."""
    from synthdetect.models import ModelPackageError

    (tmp_path / "imgs").mkdir()
    for seed in range(3):
        (tmp_path / "imgs" / f"img{seed}.png").write_bytes(png_bytes(seed=seed))
    _interrupt_on_second_batch(monkeypatch, ModelPackageError("routed model big-one: weights.pt sha256 mismatch"))
    result = CliRunner().invoke(app, ["-q", "detect", str(tmp_path / "imgs"), "-m", str(tiny_package.root),
                                      "-f", "json", "--batch-size", "2", "--no-evidence"])
    assert result.exit_code == 2, result.output
    assert len(json.loads(result.stdout)) == 2
    assert ("error: routed model big-one: weights.pt sha256 mismatch (2 of 3 files judged (0 failed), their rows "
            "printed; the other 1 were not judged)") in " ".join(result.stderr.split())


def test_an_in_memory_image_does_not_claim_its_file_records_were_checked(tiny_package):
    """A PIL image reaches the probes without its file's bytes (no C2PA manifest, no XMP packet to read), yet the
    reason said "no provenance found" as for a file whose records had all been read."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png_bytes(seed=2)))
    verdict = Detector.load(tiny_package.root)(image)
    assert verdict.sha256 is None
    assert verdict.reasons[0].startswith("no provenance found in an in-memory image (no file bytes, so no C2PA or XMP "
                                         "record could be read); model tiny-cnn"), verdict.reasons
    assert Detector.load(tiny_package.root)(png_bytes(seed=2)).reasons[0].startswith("no provenance found; model")


def test_pipeline_order_follows_p_ai_even_when_the_rounded_scores_tie():
    """The README: the top label is ``human`` whenever p_ai < 0.5.  Scores are rounded to 6 decimals, and at p_ai
    0.4999996 both read 0.5, so the sort by rounded score put ``ai`` first."""
    from synthdetect.verdict import Verdict

    assert [d["label"] for d in Verdict("x.jpg", "uncertain", 0.4999996).scores] == ["human", "ai"]
    assert [d["label"] for d in Verdict("x.jpg", "uncertain", 0.5).scores] == ["ai", "human"]
    assert [d["label"] for d in Verdict("x.jpg", "ai", 0.97).pipeline()] == ["ai", "human"]


def test_limits_as_a_dict_are_applied_and_a_wrong_one_is_refused_at_once(tiny_package, photo):
    """``Detector.load(..., limits={"max_pixels": 100})`` was kept as a dict: every image then failed with
    "cannot read input (AttributeError: 'dict' object has no attribute 'max_bytes')"."""
    verdict = Detector.load(tiny_package.root, limits={"max_pixels": 100})(photo)
    assert verdict.error_kind == "too_many_pixels", verdict.error
    with pytest.raises(TypeError, match=r"limits: unknown key\(s\) 'max_pixel' \(known: max_pixels, max_bytes"):
        Detector.load(tiny_package.root, limits={"max_pixel": 100})
    with pytest.raises(TypeError, match="limits takes a LoadLimits or a dict of its fields, not str"):
        Detector.load(tiny_package.root, limits="80MP")


def test_an_empty_model_name_is_refused_as_such():
    """``-m ''`` (an unset shell variable) read as the working directory: ".: not a model package (no model.json)"."""
    with pytest.raises(ValueError, match=r"no model given \(an empty name\)"):
        Detector.load("")
    result = CliRunner().invoke(app, ["detect", "x.png", "-m", ""])
    assert result.exit_code == 2 and "error: no model given (an empty name)" in result.stderr, result.output


def test_a_full_disk_is_one_line_not_a_traceback(tiny_package, photo, monkeypatch):
    """``detect ... > results.jsonl`` on a full disk (ENOSPC) ended, after all the judging, in a traceback."""
    import errno

    import synthdetect.cli as cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "render_verdicts", full)
    for fmt in ("jsonl", "json"):
        result = CliRunner().invoke(app, ["-q", "detect", str(photo), "-m", str(tiny_package.root), "-f", fmt,
                                          "--no-evidence"])
        assert result.exit_code == 1, result.output
        assert ("error: cannot write the verdicts to standard output (No space left on device): the output is "
                "incomplete (1 of 1 files judged so far)") in " ".join(result.stderr.split())
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_closed_standard_output_is_refused_before_judging(tiny_package, photo):
    """``detect ... >&-`` judged every file, then ended in "AttributeError: 'NoneType' object has no attribute
    'write'" (a traceback)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from synthdetect.cli import main; sys.argv = ['synthdetect'] + sys.argv[1:]; main()")
    proc = subprocess.run([sys.executable, "-c", code, "detect", str(photo), "-m", str(tiny_package.root)],
                          preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error: standard output is closed: there is nowhere to write the verdicts" in proc.stderr
    assert "Traceback" not in proc.stderr
