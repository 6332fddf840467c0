"""`synthdetect explain IMAGE... -o FOLDER`: one figure per image, a bad file is one line and the batch goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from synthdetect.cli import app
from tiny_model import png_bytes, write_tiny_cnn


@pytest.fixture()
def batch(tmp_path: Path) -> tuple[Path, Path]:
    package = write_tiny_cnn(tmp_path / "tiny")
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(seed=1))
    (folder / "b.png").write_bytes(png_bytes(seed=2))
    (folder / "sub" / "A.png").write_bytes(png_bytes(seed=3))  # the same stem as a.png but for its case
    (folder / "bad.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not judged")
    return package, folder


def _run(*args: str):
    return CliRunner().invoke(app, ["explain", *args])


def test_a_folder_gets_one_figure_per_image_and_a_bad_file_does_not_stop_it(batch, tmp_path: Path):
    package, folder = batch
    out = tmp_path / "why"
    result = _run(str(folder), "-o", str(out), "--model", str(package), "--method", "ela", "--maps")
    assert result.exit_code == 3, result.output  # some failed, as detect says it
    assert sorted(p.name for p in out.iterdir()) == [
        "A-2.why.ela.png", "A-2.why.png", "a.why.ela.png", "a.why.png", "b.why.ela.png", "b.why.png"]
    assert all(Image.open(p).format == "PNG" for p in out.iterdir())
    assert f"error: {folder / 'bad.jpg'}: not an image" in result.output
    assert "1 non-image file(s) in the folders were not explained, e.g." in result.output
    assert f"4 images: 3 explained" in result.output and "1 failed" in result.output
    assert result.output.count("(model: tiny-cnn)") == 3


def test_json_lists_every_image_with_what_was_written_or_why_not(batch, tmp_path: Path):
    package, folder = batch
    out = tmp_path / "why"
    images = [str(folder / "a.png"), str(folder / "bad.jpg"), str(folder / "b.png")]
    result = _run(*images, "-o", str(out), "--model", str(package), "--method", "ela", "--json")
    assert result.exit_code == 3, result.output
    rows = json.loads(result.stdout)
    assert [row["file"] for row in rows] == images  # in the order given, the failure in its place
    assert rows[1]["error_kind"] == "not_an_image" and "not an image" in rows[1]["error"]
    assert rows[0]["written"] == {"figure": str(out / "a.why.png")} and rows[0]["replaced"] == []
    assert rows[2]["verdict"]["file"] == images[2] and Path(rows[2]["written"]["figure"]).is_file()
    again = json.loads(_run(images[0], images[2], "-o", str(out), "--model", str(package), "--method", "ela",
                            "--json").stdout)
    assert again[0]["replaced"] == [str(out / "a.why.png")]  # said, as the one-image form says it


def test_a_batch_refuses_an_output_that_is_a_picture_or_a_file_before_the_model_loads(batch, tmp_path: Path):
    _, folder = batch
    missing_model = str(tmp_path / "no-such-model")
    result = _run(str(folder), "-o", str(tmp_path / "why.png"), "--model", missing_model)
    assert result.exit_code == 2 and "names one picture" in result.output and "give a folder for -o" in result.output
    taken = tmp_path / "taken"
    taken.write_text("x")
    result = _run(str(folder / "a.png"), str(folder / "b.png"), "-o", str(taken), "--model", missing_model)
    assert result.exit_code == 2 and f"-o {taken}: is a file" in result.output
    assert not (tmp_path / "why.png").exists()


def test_pictures_of_an_earlier_batch_inside_the_folder_are_not_explained_again(batch):
    package, folder = batch
    out = folder / "why"
    first = _run(str(folder), "-o", str(out), "--model", str(package), "--method", "ela")
    assert first.exit_code == 3, first.output
    second = _run(str(folder), "-o", str(out), "--model", str(package), "--method", "ela")
    assert f"3 file(s) inside the output folder {out} were not explained" in second.output
    assert "4 images: 3 explained" in second.output
    assert sorted(p.name for p in out.iterdir()) == ["A-2.why.png", "a.why.png", "b.why.png"]


def test_the_one_image_form_is_unchanged(batch, tmp_path: Path):
    package, folder = batch
    result = _run(str(folder / "a.png"), "-o", str(tmp_path / "one.png"), "--model", str(package),
                  "--method", "ela")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one.png").is_file() and "wrote figure: " in result.output and "images:" not in result.output
    result = _run(str(tmp_path / "missing.png"), "-o", str(tmp_path / "m.png"), "--model", str(package))
    assert result.exit_code == 3 and "missing.png" in result.output  # a missing file: said as before


def test_one_image_into_a_folder_and_an_image_named_inside_it(batch):
    package, folder = batch
    result = _run(str(folder / "a.png"), "-o", str(folder), "--model", str(package), "--method", "ela")
    assert result.exit_code == 0, result.output  # named on the command line: explained, though inside -o
    assert (folder / "a.why.png").is_file() and "1 image: 1 explained" in result.output
