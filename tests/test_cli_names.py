"""``detect`` with file names a terminal or an encoder trips on: not UTF-8, control characters, bidi overrides."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from typer.testing import CliRunner

from badinputs import natural_image
from synthdetect.cli import app

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file names that are not UTF-8 need a POSIX file system")

runner = CliRunner()
NOT_UTF8 = os.fsdecode(b"bad\xffname.png")  # as os.listdir and find give it: the byte kept as a lone surrogate


@pytest.fixture()
def odd_folder(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    natural_image(32, 32, seed=1).save(folder / NOT_UTF8)
    natural_image(32, 32, seed=2).save(folder / "plain.png")
    return folder


@pytest.fixture()
def shown_name(odd_folder):
    return str(odd_folder / "bad\\xffname.png")


@pytest.mark.parametrize("fmt", ["csv", "table", "json", "jsonl"])
def test_a_name_that_is_not_utf8_is_written_with_its_byte_as_xNN_as_scan_export_writes_it(odd_folder, shown_name, fmt):
    """Under a UTF-8 locale Python's stdout is strict: the name crashed the CSV and the table with a traceback,
    losing every row; JSON carried the lone surrogate ``\\udcff``, which strict JSON readers refuse."""
    result = runner.invoke(app, ["-q", "detect", str(odd_folder), "-f", fmt, "--no-evidence"])
    assert result.exit_code == 0, repr(result.exception)
    text = result.stdout_bytes.decode("utf-8")  # valid UTF-8 throughout
    assert "\\udc" not in text
    wanted = [shown_name, str(odd_folder / "plain.png")]
    if fmt == "csv":
        assert [row["file"] for row in csv.DictReader(io.StringIO(text))] == wanted
    elif fmt == "json":
        assert [row["file"] for row in json.loads(text)] == wanted
    elif fmt == "jsonl":
        assert [json.loads(line)["file"] for line in text.splitlines()] == wanted
    else:
        assert "bad\\xffname.png" in text and "plain.png" in text


@pytest.mark.parametrize("from_stdin", [False, True])
def test_files_from_keeps_a_listed_name_that_is_not_utf8(odd_folder, shown_name, tmp_path, from_stdin):
    """``find`` prints such a name as its bytes; the whole list was refused ("'utf-8' codec can't decode"), exit 2."""
    listing = os.fsencode(odd_folder / NOT_UTF8) + b"\n" + os.fsencode(odd_folder / "plain.png") + b"\n"
    args = ["-q", "detect", "--files-from", "-" if from_stdin else str(tmp_path / "list.txt"), "-f", "jsonl",
            "--no-evidence"]
    (tmp_path / "list.txt").write_bytes(listing)
    result = runner.invoke(app, args, input=listing if from_stdin else None)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [shown_name, str(odd_folder / "plain.png")]
    assert all(r["error"] is None for r in rows)  # the file was found and judged


def test_control_characters_in_names_reach_the_terminal_as_escapes(tmp_path):
    """ESC in a file name cleared the screen (ESC [2J) or set the title when the table or a note printed it; a
    newline split a one-line note in two."""
    folder = tmp_path / "esc"
    folder.mkdir()
    natural_image(32, 32, seed=3).save(folder / "a\x1b[2Jb.png")
    (folder / "notes\nx\x1b]0;TITLE\x07.txt").write_text("not an image")
    result = runner.invoke(app, ["detect", str(folder), "--no-evidence"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert "a\\x1b[2Jb.png" in result.stdout
    note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and note[0].endswith("notes\\nx\\x1b]0;TITLE\\x07.txt")
    jsonl = runner.invoke(app, ["-q", "detect", str(folder), "-f", "jsonl", "--no-evidence"])
    assert json.loads(jsonl.stdout)["file"] == str(folder / "a\x1b[2Jb.png")  # machine formats keep the name


def test_shown_escapes_only_what_a_terminal_acts_on():
    from synthdetect.cli import shown

    assert shown("ünï cødé [b] 猫.png") == "ünï cødé [b] 猫.png"
    assert shown("x\u202egpj.exe") == "x\\u202egpj.exe"  # a bidi override would make it read xexe.jpg
    assert shown("a\tb\x85c\x7f") == "a\\tb\\x85c\\x7f"
    assert shown(NOT_UTF8) == "bad\\xffname.png"


def test_a_listed_name_that_is_gone_is_not_read_as_a_glob(tmp_path):
    """A list names files, as scan reads it: a deleted photo[1].jpg silently judged photo1.jpg in its place."""
    natural_image(32, 32, seed=4).save(tmp_path / "photo1.png")
    (tmp_path / "list.txt").write_text("photo[1].png\nphoto?.png\nphoto1.png\n")
    result = runner.invoke(app, ["-q", "detect", "--files-from", str(tmp_path / "list.txt"), "-f", "jsonl",
                                 "--no-evidence"])
    assert result.exit_code == 3, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["file"], r["error_kind"]) for r in rows] == [
        (str(tmp_path / "photo[1].png"), "not_found"), (str(tmp_path / "photo?.png"), "not_found"),
        (str(tmp_path / "photo1.png"), None)]


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl"])
def test_inspect_writes_odd_names_and_metadata_text_as_detect_does(odd_folder, fmt):
    """``inspect`` crashed on a name that is not UTF-8 (table: traceback, no output) and printed a metadata field's
    ESC sequence raw to the terminal; JSON carried ``\\udcff``."""
    from evidence_fakes import png_with_text, textured_rgb

    parameters = "a cat, Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Model: m\x1b]0;owned\x07"
    (odd_folder / "text.png").write_bytes(png_with_text(textured_rgb(64), {"parameters": parameters}))
    result = runner.invoke(app, ["-q", "inspect", str(odd_folder), "-f", fmt, "-p", "genparams"])
    assert result.exit_code == 0, repr(result.exception)
    text = result.stdout_bytes.decode("utf-8")
    assert "\\udc" not in text
    if fmt == "table":
        assert "bad\\xffname.png" in text and "\x1b" not in text and "\x07" not in text
        assert "m\\x1b]0;owned\\x07" in text  # the model name, shown with its escapes
        return
    rows = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
    assert sorted(os.path.basename(row["file"]) for row in rows) == ["bad\\xffname.png", "plain.png", "text.png"]
