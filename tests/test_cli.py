"""The CLI: formats, exit codes, models registry, --help on every command."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from badinputs import EXPECTED, make_corpus, natural_image, refuse_listing
from synthdetect import __version__
from synthdetect.cli import EXIT_SOME_FAILED, app

runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    for s in range(3):
        natural_image(32, 32, seed=s).save(root / f"img{s}.png")
    (root / "sub").mkdir()
    natural_image(32, 32, seed=9).save(root / "sub" / "deep.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"synthdetect {__version__}"


def test_every_command_has_help():
    for args in ([], ["detect"], ["models"], ["models", "list"], ["models", "show"], ["train"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_detect_jsonl_folder_recursive(images):
    result = invoke("-q", "detect", str(images), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    files = sorted(r["file"] for r in rows)
    assert files == sorted(str(p) for p in images.rglob("*") if p.suffix in (".png", ".jpg"))
    assert all(r["schema"] == "synthdetect.verdict/1" for r in rows)


def test_detect_json_and_glob(images):
    result = invoke("-q", "detect", str(images / "img*.png"), "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and {r["label"] for r in rows} <= {"ai", "human", "uncertain"}


def test_detect_csv(images):
    result = invoke("-q", "detect", str(images / "img0.png"), "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 1 and rows[0]["file"] == str(images / "img0.png")
    assert float(rows[0]["p_ai"]) >= 0 and rows[0]["model"] == "cifake-cnn"


def test_detect_table_mentions_every_file(images):
    result = invoke("detect", str(images / "img1.png"), str(images / "img2.png"))
    assert result.exit_code == 0
    assert "img1.png" in result.stdout and "img2.png" in result.stdout and "p_ai" in result.stdout


def test_bad_files_get_rows_and_distinct_exit_code(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    result = invoke("-q", "detect", str(tmp_path / "corpus"), str(tmp_path / "missing.jpg"), "--format", "jsonl",
                    "--all-files")
    assert result.exit_code == EXIT_SOME_FAILED
    rows = {json.loads(line)["file"]: json.loads(line) for line in result.stdout.splitlines()}
    assert len(rows) == len(corpus) + 1
    for name, expected in EXPECTED.items():
        row = rows[str(corpus[name])]
        assert (row["error_kind"] if row["error"] else None) == expected, row
    assert rows[str(tmp_path / "missing.jpg")]["error"].endswith("file not found")


def test_non_image_files_in_folders_are_reported_not_silently_skipped(images):
    result = invoke("detect", str(images), "--format", "jsonl")
    assert "1 non-image file(s)" in result.stderr
    assert "1 non-image file(s)" in invoke("-q", "detect", str(images), "--format", "jsonl").stderr
    result = invoke("-q", "detect", str(images), "--format", "jsonl", "--all-files")
    assert result.exit_code == EXIT_SOME_FAILED
    assert any(json.loads(l)["error_kind"] == "not_an_image" for l in result.stdout.splitlines())


def test_a_folder_that_cannot_be_listed_is_an_error_row_not_a_silent_skip(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    natural_image(48, 40, seed=3).save(tmp_path / "a.png")
    refuse_listing(monkeypatch, "locked")
    result = invoke("-q", "detect", str(tmp_path), "--format", "jsonl", "--no-evidence")
    rows = {json.loads(line)["file"]: json.loads(line) for line in result.stdout.splitlines()}
    assert result.exit_code == EXIT_SOME_FAILED
    locked = rows[str(tmp_path / "locked")]
    assert locked["error_kind"] == "unreadable" and "folder could not be read (Permission denied)" in locked["error"]
    assert rows[str(tmp_path / "a.png")]["error"] is None


def test_a_glob_that_matches_a_folder_walks_it_and_each_file_is_judged_once(tmp_path):
    from synthdetect.api import expand_paths

    (tmp_path / "photos" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "inner").mkdir(parents=True)
    for name in ("photos/a.jpg", "photos/sub/b.png"):
        natural_image(40, 32, seed=1).save(tmp_path / name)
    (tmp_path / "photos" / "sub" / "notes.txt").write_text("no image suffix")
    star, over = expand_paths([str(tmp_path / "photos" / "*")])
    assert [p for p, _ in star] == [str(tmp_path / "photos" / "a.jpg"), str(tmp_path / "photos" / "sub" / "b.png")]
    assert over == [str(tmp_path / "photos" / "sub" / "notes.txt")]  # passed over inside the matched folder
    double, over = expand_paths([str(tmp_path / "photos" / "**")])
    assert len(double) == len({p for p, _ in double}) == 3 and over == []  # a file the glob names is judged
    assert expand_paths([str(tmp_path / "empty" / "*")])[0] == [(str(tmp_path / "empty" / "*"),
                                                                 ("not_found", "no files match this pattern"))]


def test_unknown_model_is_a_usage_error(images):
    result = invoke("detect", str(images / "img0.png"), "--model", "nonesuch")
    assert result.exit_code == 2 and "unknown model 'nonesuch'" in result.stderr


def test_models_list_and_show():
    result = invoke("models", "list", "--format", "json")
    assert result.exit_code == 0
    names = [m["name"] for m in json.loads(result.stdout)]
    assert "default" in names and "cifake-cnn" in names
    held = {m["name"]: m["held_out"] for m in json.loads(result.stdout)}
    assert held["cifake-cnn"].startswith("accuracy 0.97") and "test split" in held["cifake-cnn"]
    assert "leave-one-source-out" in held["wild-v3"] and held["default"] == "see the routed models"
    shown = json.loads(invoke("models", "show", "cifake-cnn", "--format", "json").stdout)
    assert shown["kind"] == "clip-cascade" and "metrics" in shown
    table = invoke("models", "show", "default")
    assert table.exit_code == 0 and "router" in table.stdout
    assert invoke("models", "show", "nonesuch").exit_code == 2


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "synthdetect.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_table_keeps_square_brackets_from_files(tmp_path):
    # Rich markup must not swallow text from the file (model names such as "[deliberate_v2]").
    path = tmp_path / "odd [name].png"
    natural_image(32, 32).save(path)
    result = invoke("detect", str(path))
    assert result.exit_code == 0
    assert "[name]" in result.stdout


def test_csv_streams_batches_with_one_header(images):
    result = invoke("-q", "detect", str(images), "--format", "csv", "--batch-size", "2")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("file,label") and sum(l.startswith("file,label") for l in lines) == 1
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 4


def test_a_bad_thread_setting_is_one_line_before_any_image_is_judged(tmp_path):
    """Models load with their first image, so the setting is checked when the command starts, not mid-batch."""
    result = runner.invoke(app, ["detect", str(tmp_path)], env={"SYNTHDETECT_THREADS": "two"})
    assert result.exit_code == 2
    assert result.output.strip() == "error: SYNTHDETECT_THREADS must be a whole number of threads, not 'two'"


def test_an_image_piped_to_standard_input_is_judged_in_its_place(images):
    png = (images / "img1.png").read_bytes()
    result = runner.invoke(app, ["-q", "detect", str(images / "img0.png"), "-", "--format", "jsonl"], input=png)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(images / "img0.png"), "<stdin>"]
    alone = json.loads(invoke("-q", "detect", str(images / "img1.png"), "--format", "jsonl").stdout)
    assert rows[1]["sha256"] == alone["sha256"] and rows[1]["p_ai"] == alone["p_ai"]  # the same bytes, the same verdict


def test_standard_input_that_is_not_an_image_or_too_large_is_an_error_row(images):
    text = runner.invoke(app, ["-q", "detect", "-", "--format", "jsonl"], input=b"hello, not an image")
    assert text.exit_code == EXIT_SOME_FAILED
    row = json.loads(text.stdout)
    assert row["file"] == "<stdin>" and row["error"].startswith("<stdin>: ") and row["label"] is None
    png = (images / "img1.png").read_bytes()
    big = runner.invoke(app, ["-q", "detect", "-", "--format", "jsonl", "--max-bytes", "100"], input=png)
    assert big.exit_code == EXIT_SOME_FAILED
    row = json.loads(big.stdout)
    assert row["error_kind"] == "too_large" and f"({len(png):,} bytes > limit 100)" in row["error"]


def test_files_from_a_list_judges_each_listed_path_and_names_the_missing_one(images, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images / 'img0.png'}\n\n# a comment\n{images / 'sub'}\ngone.png\n")  # relative: to the list
    result = invoke("-q", "detect", "--files-from", str(listing), str(images / "img2.png"), "--format", "jsonl")
    assert result.exit_code == EXIT_SOME_FAILED
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(images / "img2.png"), str(images / "img0.png"),
                                         str(images / "sub" / "deep.jpg"), str(tmp_path / "gone.png")]
    assert rows[-1]["error_kind"] == "not_found" and all(r["error"] is None for r in rows[:-1])
    piped = runner.invoke(app, ["-q", "detect", "--files-from", "-", "--format", "jsonl"],
                          input=f"{images / 'img0.png'}\n")
    assert piped.exit_code == 0 and json.loads(piped.stdout)["file"] == str(images / "img0.png")


def test_standard_input_misuse_is_a_one_line_usage_error(tmp_path):
    twice = invoke("detect", "-", "-")
    assert twice.exit_code == 2 and "only once" in twice.output
    both = runner.invoke(app, ["detect", "-", "--files-from", "-"], input=b"x")
    assert both.exit_code == 2 and "both an image" in both.output
    missing = invoke("detect", "--files-from", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 2 and "nope.txt" in missing.output and len(missing.output.strip().splitlines()) == 1
    nothing = invoke("detect")
    assert nothing.exit_code == 2 and "no files to judge" in nothing.output


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--batch-size", "-1"), ("--max-pixels", "0"),
                                           ("--max-bytes", "-5")])
def test_numeric_options_below_one_are_usage_errors(images, option, value):
    result = invoke("detect", str(images / "img0.png"), option, value)
    assert result.exit_code == 2 and "Invalid value" in result.output and option in result.output


def test_models_show_prints_card_text_literally_and_refuses_malformed_cards(tiny_package):
    card_path = tiny_package.root / "model.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "description": "trained on [/bold] data [cifake]"}))
    result = invoke("models", "show", str(tiny_package.root))
    assert result.exit_code == 0, result.output
    assert "trained on [/bold] data [cifake]" in result.stdout
    del card["files"]["weights"]["sha256"]
    card_path.write_text(json.dumps(card))
    result = invoke("models", "show", str(tiny_package.root))
    assert result.exit_code == 2 and "malformed card (files entry 'weights' has no sha256)" in result.stderr
    card_path.write_bytes(b'{"name": "caf\xe9", "kind": "small-cnn"}')
    result = invoke("models", "show", str(tiny_package.root))
    assert result.exit_code == 2 and "malformed card (not UTF-8 text" in result.stderr


def test_models_commands_print_only_the_formats_they_support():
    lines = invoke("models", "list", "-f", "jsonl").stdout.strip().splitlines()
    assert len(lines) >= 2 and all(json.loads(line)["name"] for line in lines)  # one object per line
    shown = invoke("models", "show", "cifake-cnn", "-f", "jsonl").stdout.strip().splitlines()
    assert len(shown) == 1 and json.loads(shown[0])["name"] == "cifake-cnn"
    for args in (("models", "list", "-f", "csv"), ("models", "show", "cifake-cnn", "-f", "csv")):
        result = invoke(*args)
        assert result.exit_code == 2 and "'csv' is not one of" in result.output


def _linked_tree(tmp_path):
    """top/own.png and top/album -> ../elsewhere (two images, and a link back up to tmp_path: a loop)."""
    (tmp_path / "top").mkdir()
    (tmp_path / "elsewhere").mkdir()
    natural_image(32, 32, seed=1).save(tmp_path / "top" / "own.png")
    for s in (2, 3):
        natural_image(32, 32, seed=s).save(tmp_path / "elsewhere" / f"e{s}.png")
    (tmp_path / "top" / "album").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "up").symlink_to(tmp_path / "top", target_is_directory=True)
    return tmp_path / "top"


def test_links_to_folders_are_noted_or_followed_each_real_folder_once(tmp_path):
    top = _linked_tree(tmp_path)
    plain = invoke("-q", "detect", str(top), "--format", "jsonl", "--no-evidence")
    assert plain.exit_code == 0
    assert [json.loads(l)["file"] for l in plain.stdout.splitlines()] == [str(top / "own.png")]
    assert ("1 symbolic link(s) to folders were not followed (--follow-links follows them)"
            in " ".join(plain.stderr.split()))  # was silent
    followed = invoke("-q", "detect", str(top), "--follow-links", "--format", "jsonl", "--no-evidence")
    assert followed.exit_code == 0, followed.output
    assert [json.loads(l)["file"] for l in followed.stdout.splitlines()] == [
        str(top / "album" / "e2.png"), str(top / "album" / "e3.png"), str(top / "own.png")]
    assert "1 folder(s) reached again through a symbolic link were walked only once" in " ".join(followed.stderr.split())
    inspected = invoke("inspect", str(top), "-L", "--format", "jsonl", "--probe", "exif")
    assert len(inspected.stdout.splitlines()) == 3


def test_a_file_reached_twice_is_judged_once_and_a_listed_folder_is_walked_as_scan_does(images, tmp_path):
    twice = invoke("-q", "detect", str(images), str(images / "img0.png"), f"{images}/./sub/deep.jpg",
                   "--format", "jsonl", "--no-evidence")
    files = [json.loads(l)["file"] for l in twice.stdout.splitlines()]
    assert len(files) == len(set(files)) == 4  # the folder's four images, each once (was six rows)
    listing = tmp_path / "find.txt"  # what `find DIR` prints: the folder, its subfolder, then every file
    listing.write_text("\n".join([str(images), str(images / "sub"), str(images / "sub" / "deep.jpg"),
                                  str(images / "img0.png"), str(images / "notes.txt")]) + "\n")
    listed = invoke("-q", "detect", "--files-from", str(listing), "--format", "jsonl", "--no-evidence")
    assert listed.exit_code == 0, listed.output  # notes.txt was an error row: find lists it, the walk notes it
    files = [json.loads(l)["file"] for l in listed.stdout.splitlines()]
    assert sorted(files) == sorted([str(images / f"img{s}.png") for s in range(3)] + [str(images / "sub" / "deep.jpg")])
    assert "1 non-image file(s)" in listed.stderr


def test_file_names_with_square_brackets_reach_notes_and_errors_intact(tmp_path):
    folder = tmp_path / "[red]y"
    folder.mkdir()
    (folder / "[draft]notes.md").write_text("not an image")
    natural_image(32, 32, seed=4).save(folder / "a.png")
    (folder / "[b]album").symlink_to(tmp_path, target_is_directory=True)
    result = invoke("-q", "detect", str(tmp_path / "[red]y"), "--format", "jsonl", "--no-evidence")
    assert result.exit_code == 0, result.output
    notes = result.stderr.splitlines()
    assert len(notes) == 2  # one line each, however long the path
    assert notes[0].endswith(str(folder / "[draft]notes.md")) and notes[1].endswith(str(folder / "[b]album"))
    missing = invoke("detect", "--files-from", str(tmp_path / "[b]list.txt"))
    assert missing.exit_code == 2 and f"--files-from {tmp_path / '[b]list.txt'}: No such file" in missing.stderr


def test_quiet_and_verbose_work_after_the_command_too(tmp_path):
    from synthdetect.cli import hoist_global_flags

    assert hoist_global_flags(["detect", "-q", "a.jpg"]) == ["-q", "detect", "a.jpg"]
    assert hoist_global_flags(["-v", "models", "list", "--quiet"]) == ["-v", "--quiet", "models", "list"]
    assert hoist_global_flags(["detect", "--", "-q"]) == ["detect", "--", "-q"]  # after --, -q is a file name
    assert hoist_global_flags(["--version"]) == ["--version"]
    natural_image(32, 32, seed=5).save(tmp_path / "a.png")
    exe = [sys.executable, "-c", "from synthdetect.cli import main; main()"]
    result = subprocess.run([*exe, "detect", str(tmp_path / "a.png"), "-q", "-m", "cifake-cnn", "--no-evidence"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr  # was "No such option: -q", exit 2
    assert "a.png" in result.stdout and "1 files:" not in result.stderr  # quiet: no summary line


def test_a_reader_that_goes_away_ends_detect_with_the_sigpipe_code_and_no_traceback(tmp_path):
    """`detect ... | head` under `set -o pipefail` must not look like a crash (it exited 1, the unexpected-failure code)."""
    from synthdetect.cli import EXIT_READER_GONE

    for s in range(120):  # about 85 KB of JSON lines: more than a pipe holds, so a write meets the closed pipe
        natural_image(32, 32, seed=s).save(tmp_path / f"img{s:03d}.png")
    exe = [sys.executable, "-c", "from synthdetect.cli import main; main()"]
    proc = subprocess.Popen([*exe, "detect", str(tmp_path), "-m", "cifake-cnn", "--format", "jsonl", "--no-evidence"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does once it has its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_READER_GONE == 141, stderr
    assert json.loads(first)["file"].endswith("img000.png")
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_named_paths_that_cannot_be_judged_carry_the_kind_their_problem_has(tmp_path):
    """The kind comes with the problem, not from reading its text back."""
    (tmp_path / "loopa.png").symlink_to(tmp_path / "loopb.png")
    (tmp_path / "loopb.png").symlink_to(tmp_path / "loopa.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    names = [str(tmp_path / n) for n in ("loopa.png", "dangling.png", "absent.png", "none-*.png")]
    result = CliRunner().invoke(app, ["detect", *names, "-m", "cifake-cnn", "--format", "jsonl"])
    rows = {r["file"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert result.exit_code == EXIT_SOME_FAILED
    assert {Path(f).name: (r["error_kind"], r["error"].removeprefix(f + ": ")) for f, r in rows.items()} == {
        "loopa.png": ("not_a_file", "symbolic link loop"),
        "dangling.png": ("not_found", "broken symbolic link (its target does not exist)"),
        "absent.png": ("not_found", "file not found"),
        "none-*.png": ("not_found", "no files match this pattern"),
    }


def test_a_librarys_warning_is_one_line_on_the_command_line(tmp_path):
    """Pillow's warnings on damaged EXIF came as Python's two lines (the warning, then Pillow's source line)."""
    import struct

    from PIL import Image

    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x010E, 2, 100, 5000) + struct.pack("<I", 0)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd  # a description said to lie past the end
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (120, 30, 60)).save(buffer, "JPEG", exif=exif)
    (tmp_path / "x.jpg").write_bytes(buffer.getvalue())
    run = subprocess.run([sys.executable, "-m", "synthdetect.cli", "detect", str(tmp_path / "x.jpg"), "-f", "jsonl",
                          "--no-evidence"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    warning_lines = [line for line in run.stderr.splitlines() if "Skipping tag" in line or "warnings.warn" in line]
    assert warning_lines == ["warning: Tag data larger than file. Skipping tag 270 (PIL, UserWarning)"]


def test_a_folder_given_that_holds_no_files_is_said_not_passed_over_silently(tmp_path):
    """`detect empty/ photo.png` said nothing of empty/ (a mistyped or unmounted folder looked judged)."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    natural_image(32, 32).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["-q", "detect", str(tmp_path / "empty"), str(tmp_path / "a.png"), "-f", "jsonl",
                                      "--no-evidence", "-m", "cifake-cnn"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"note: 1 folder(s) given held no files at all, e.g. {tmp_path / 'empty'}"
    assert len(result.stdout.splitlines()) == 1


def test_images_a_dataset_leaves_out_are_said_even_with_quiet(tmp_path):
    """-q set logging to errors only, so "N image file(s) are under no class folder and were left out" was hidden
    and `train -q` or `dataset summary -q` dropped those images without a word."""
    for folder in ("ai", "human", "misc"):
        (tmp_path / "ds" / folder).mkdir(parents=True)
        for i in range(2):
            natural_image(16, 16, seed=i + len(folder)).save(tmp_path / "ds" / folder / f"{i}.png")
    run = subprocess.run([sys.executable, "-m", "synthdetect.cli", "-q", "dataset", "summary", str(tmp_path / "ds")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "2 image file(s) are under no class folder and were left out, e.g. misc/0.png" in run.stderr


def test_an_empty_path_is_refused_instead_of_walking_the_working_folder(tmp_path, monkeypatch):
    from synthdetect.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG not really")
    result = CliRunner().invoke(app, ["detect", ""])
    assert result.exit_code == 2 and 'an empty path ("") names no file or folder' in result.output
    assert "photo.png" not in result.output  # the working folder was walked and judged
