"""Odd inputs found by the 2026-12-05 audit of training on one's own data: folder names holding ``!``."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from synth_data import write_manifest_rows
from synthdetect.cli import app
from tiny_model import write_tiny_cnn


def test_evaluate_refuses_a_manifest_under_a_bang_folder_whose_files_all_are_missing(tmp_path: Path):
    """A ``!`` in a folder name made every path look like a zip member, so the up-front check was skipped."""
    model = write_tiny_cnn(tmp_path / "tiny")
    (tmp_path / "team!data").mkdir()
    manifest = write_manifest_rows(tmp_path / "team!data", [
        {"path": "images/ai_0001.png", "label": "ai", "source": "s1", "generator": ""},
        {"path": "images/real_0002.png", "label": "real", "source": "s1", "generator": ""}])
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert (f"{manifest}: none of the 2 listed files exists, e.g. {tmp_path / 'team!data' / 'images/ai_0001.png'}"
            in " ".join(result.output.split())), result.output
    assert not (tmp_path / "r").exists()


def test_summary_warns_when_every_source_holds_one_class(tmp_path: Path):
    """The strongest source shortcut (each source one class) was the one case that got no warning."""
    from synth_data import write_manifest
    from synthdetect.train.dataset_summary import summarize_dataset
    from synthdetect.train.datasets import open_dataset

    sources = {"sd15": (3, 0), "mj": (3, 0), "camera": (0, 3), "flickr": (0, 3)}
    warnings = summarize_dataset(open_dataset(write_manifest(tmp_path / "d", sources, size=8)))["warnings"]
    assert ("all 4 sources hold one class only (camera, flickr, mj, sd15): with a random split a model can score "
            "well by recognising the source; use --split source or loso") in warnings
    many = {f"s{i:02d}": (2, 0) if i % 2 else (0, 2) for i in range(14)} | {"mixed": (1, 1)}
    warnings = summarize_dataset(open_dataset(write_manifest(tmp_path / "m", many, size=8)))["warnings"]
    assert [w for w in warnings if "one class only" in w] == [
        "14 of 15 sources hold one class only (s00, s01, s02, s03, s04, s05, s06, s07, s08, s09 and 4 more): with a "
        "random split a model can score well by recognising the source; use --split source or loso"]


def test_a_source_named_twice_is_held_out_once(tmp_path: Path):
    from synth_data import write_manifest
    from synthdetect.train.datasets import open_dataset
    from synthdetect.train.splits import split_records

    records = open_dataset(write_manifest(tmp_path, {"a": (4, 4), "b": (5, 5), "c": (6, 6), "d": (3, 3)}, size=8))
    for copies in ("keep", "exclude"):
        split = split_records(records, "source", holdout_sources=["a", "a"], val_fraction=0.2, copies=copies)
        assert len(split.test) == 8 and split.held_out_sources == ["a"] and not split.unscored
        assert sorted(r.ref for r in split.train + split.val + split.test) == sorted(r.ref for r in records)


def test_decoding_names_the_record_behind_each_unreadable_file(tmp_path: Path):
    """So that a card can count per split what could not be read (the lines of all splits arrive as one list)."""
    from synth_data import encode, make_image
    from synthdetect.train.datasets import AI, HUMAN, Record
    from synthdetect.train.trainer import decode_records

    (tmp_path / "ok.png").write_bytes(encode(make_image(1, 0, 16)))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    good, bad, gone = (Record(str(tmp_path / "ok.png"), AI), Record(str(tmp_path / "bad.png"), HUMAN),
                       Record(str(tmp_path / "gone.png"), AI))
    arrays, labels, errors = decode_records([good, bad, gone], (8, 8))
    assert len(arrays) == 1 and [e.record for e in errors] == [bad, gone]
    assert errors[1] == f"{gone.ref}: No such file or directory"


def test_a_retry_with_the_manifest_rows_reordered_resumes_the_same_run(tmp_path: Path):
    """The split no longer follows the rows' order, so neither does the dataset's identity in the checkpoint."""
    import csv

    from synth_data import write_manifest

    manifest = write_manifest(tmp_path / "data", {"a": (12, 12)}, size=16)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    reordered = manifest.with_name("reordered.csv")
    with open(reordered, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[::-1])
    out = tmp_path / "pkg"

    def train(data: Path):
        return CliRunner().invoke(app, [
            "train", str(data), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
            "--input-size", "16", "--threads", "1", "--val-fraction", "0.3", "--test-fraction", "0.2",
            "--option", "keep_workdir=true"])

    first = train(manifest)
    assert first.exit_code == 0, first.output
    again = train(reordered)
    assert again.exit_code == 0, again.output
    assert "belongs to a different run" not in again.output


def test_dataset_summary_shows_progress_on_a_terminal(tmp_path: Path, monkeypatch, capsys):
    """Reading and hashing every file of an 80k-image zip took 2 minutes with nothing on the screen."""
    from rich.console import Console

    from synth_data import write_manifest

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    monkeypatch.setenv("COLUMNS", "120")
    result = CliRunner().invoke(app, ["dataset", "summary", str(write_manifest(tmp_path / "d", {"a": (3, 3)}, size=8))])
    assert result.exit_code == 0, result.output
    assert "read headers" in result.output and "6/6" in result.output


def test_a_dataset_of_one_source_gets_each_shortcut_warning_once(tmp_path: Path):
    """Class folders have no sources: every class warning came twice, the second as 'source (no source): ...'."""
    from synth_data import write_folder
    from synthdetect.train.dataset_summary import summarize_dataset
    from synthdetect.train.datasets import open_dataset

    summary = summarize_dataset(open_dataset(write_folder(tmp_path / "d", n_per_class=3, fmt=("PNG", "JPEG"))))
    assert [w for w in summary["warnings"] if "file format" in w] == [summary["warnings"][0]]
    assert not summary["warnings"][0].startswith("source ")
