"""Audit of ``synthdetect distill``, ``models show`` and ``dataset summary`` as a demanding user meets them.

Each test names what a user saw before.  All are unit-level or stop before any training (teachers are the
transparent brightness stand-ins of test_distill.py), so none trains a network.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from test_autopilot import make_dataset
from test_distill import BRIGHTNESS_KIND, BrightnessTeacher, write_teacher
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.models import load_model
from synthdetect.models.base import register_kind
from synthdetect.models.package import write_package
from synthdetect.train.datasets import open_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 sources x (4 AI + 4 human) images of 16 px; AI bright, human dark."""
    return make_dataset(tmp_path_factory.mktemp("s23-distill-data"), sources=4, per_class=4)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("s23-teachers")
    good = write_teacher(root / "good", "good", 1.0, ["s0"])
    # declines every 16 px image: its card's size range starts at 64 px
    big_only = root / "big-only"
    write_package(big_only, {"name": "big-only", "version": "0.0.1", "kind": BRIGHTNESS_KIND, "sign": 1.0,
                             "calibration": {"method": "identity"}, "input": {"min_side": 64, "max_aspect": 4.0},
                             "decision": {"ai_at_or_above": 0.8, "human_below": 0.2}}, {})
    # calls everything human with p_ai = sigmoid(-6)
    never_ai = root / "never-ai"
    write_package(never_ai, {"name": "never-ai", "version": "0.0.1", "kind": BRIGHTNESS_KIND, "sign": 1.0,
                             "calibration": {"method": "platt", "a": 0.0, "b": -6.0},
                             "input": {"min_side": 8, "max_aspect": 4.0},
                             "decision": {"ai_at_or_above": 0.8, "human_below": 0.2}}, {})
    return {"good": good, "big-only": big_only, "never-ai": never_ai}


def _distill(data: Path, out: Path, *teachers: Path, extra: tuple[str, ...] = (), holdout: str = "s3"):
    args = ["distill", str(data), *[a for t in teachers for a in ("--teacher", str(t))], "--holdout-source", holdout,
            "--epochs", "1", "--input-size", "16", "-o", str(out), *extra]
    return CliRunner().invoke(app, args)


def _one_line_error(result, code: int = 2) -> str:
    """The CLI said one ``error:`` line and exited with ``code``: no traceback, no exception left over."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


# -- distill: teachers ---------------------------------------------------------------------------


def test_distill_refuses_a_teacher_given_twice(teachers):
    """``--teacher t --teacher ./t/`` loaded it twice: two rows for one model, and double weight under mean."""
    from synthdetect.train.distill import DistillError, load_teachers

    good = teachers["good"]
    for again in (str(good), f"{good}/", str(good / "model.json"), str(good / ".." / good.name)):
        with pytest.raises(DistillError, match="is given twice"):
            load_teachers([str(good), str(teachers["big-only"]), again])
    assert len(load_teachers([str(good), str(teachers["big-only"])])) == 2  # two packages: both kept


def test_a_teacher_that_declines_every_training_image_is_counted_said_and_kept_in_the_card(data, teachers):
    """A teacher whose size range missed the data gave no soft label at all, and nothing said so: its cells in
    soft_labels.csv were silently empty, and the card did not say how many images each teacher voted on."""
    from synthdetect.train.distill import Teacher, VoteCount, _write_soft_labels, teacher_votes

    records = open_dataset(data)[:6]
    loaded = [Teacher(name, name, load_model(str(teachers[name]))) for name in ("good", "big-only")]
    votes = []
    matrix = []
    for teacher in loaded:
        p_ai, reasons = teacher_votes(teacher, records)
        matrix.append(p_ai)
        votes.append(VoteCount.of(p_ai, reasons))
    assert votes[0].voted == 6 and votes[0].line("good") is None
    assert votes[1].voted == 0 and votes[1].by_kind() == {"outside its domain": 6}
    line = votes[1].line("big-only")
    assert line.startswith("warning: teacher big-only gave no vote on any of the 6 training images "
                           "(6 outside its domain), so it adds nothing to the soft labels; e.g. ")
    assert records[0].ref in line and "\n" not in line
    entry = votes[1].card_entry()
    assert entry["training_images_voted"] == 0 and entry["training_images_without_vote"] == {"outside its domain": 6}
    json.dumps(entry)  # goes on the card
    # a teacher that voted on some: counted, with the kinds
    partial = VoteCount.of(np.array([0.2, np.nan, np.nan]), [None, "failed: x: boom", "unreadable: y: bad"])
    assert partial.line("t") == "teacher t: no vote on 2 of 3 training images (1 failed, 1 unreadable); e.g. x: boom"
    # soft_labels.csv keeps the reason beside the empty cell
    matrix = np.stack(matrix)
    soft = np.nanmax(matrix, axis=0)
    path = data.parent / "soft_labels_s23.csv"
    _write_soft_labels(path, records, loaded, matrix, soft, soft, votes)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["p_ai:big-only"] == "" and row["no_vote"].startswith("big-only: outside its domain: ")
               for row in rows)


def test_distill_says_in_one_line_when_the_teachers_outvote_every_label_of_a_class(data, teachers, tmp_path):
    """Teachers that call every image human, with the default alpha 0.7, put every target below 0.5: the
    CNN trainer refused with a traceback ending "training needs images of both classes, and has 16 human, 0 ai",
    though the data held both classes."""
    result = _distill(data, tmp_path / "o", teachers["never-ai"])
    line = _one_line_error(result)
    assert "every training target is on the human side of 0.5" in line
    assert "lower --alpha below 0.5" in line
    # the soft labels that explain it are on disk
    assert (tmp_path / "o" / "soft_labels.csv").is_file()


def test_distill_refuses_a_training_part_of_one_class_in_one_line(teachers, tmp_path):
    """Sources a (AI only), b (human only), c (AI only), t (both, held out): validation takes a and b, training
    keeps only c; the trainer refused with a traceback after the teachers had scored everything."""
    from test_autopilot import write_manifest_rows

    from PIL import Image

    rows = []
    for source, label, shade in [("a", "ai", 200), ("b", "human", 60), ("c", "ai", 210), ("t", "ai", 205),
                                 ("t", "human", 50)]:
        for i in range(4):
            path = tmp_path / "d" / source / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (shade + i,) * 3).save(path)
            rows.append({"path": path.relative_to(tmp_path / "d").as_posix(), "label": label, "source": source,
                         "generator": ""})
    manifest = write_manifest_rows(tmp_path / "d", rows)
    line = _one_line_error(_distill(manifest, tmp_path / "o", teachers["good"], extra=("--alpha", "0.3"),
                                      holdout="t"))
    assert "the training sources need both AI and human images, and hold 4 AI and 0 human" in line


# -- distill: interruptions and resume -----------------------------------------------------------


def test_ctrl_c_while_the_student_trains_says_what_is_kept_and_how_to_resume(data, teachers, tmp_path, monkeypatch):
    """Ctrl-C ended distill with status 130 and not a word: nothing said the epochs were kept, or where."""
    import synthdetect.train.distill as distill

    out = tmp_path / "o"

    def interrupted(kind, request, targets):
        work = out / "student" / "_work"  # as the trainer leaves it after an epoch
        work.mkdir(parents=True, exist_ok=True)
        (work / "checkpoint.pt").write_bytes(b"epochs")
        raise KeyboardInterrupt

    monkeypatch.setattr(distill, "train_student", interrupted)
    result = _distill(data, out, teachers["good"])
    assert result.exit_code == 130
    said = [line for line in result.output.splitlines() if line.startswith("interrupted:")]
    assert said == [f"interrupted: no student was written; {out / 'student' / '_work' / 'checkpoint.pt'} holds the "
                    f"student's epochs finished so far; run the same command again to resume them (the teachers "
                    f"score the training images again first)"]


def test_interrupt_messages_name_what_each_stage_leaves(tmp_path):
    from synthdetect.train.distill import DistillInterrupted, explained_interrupts

    with pytest.raises(DistillInterrupted) as caught:
        with explained_interrupts(tmp_path, "small-cnn"):
            raise KeyboardInterrupt
    assert caught.value.signum == 2
    assert caught.value.message.startswith("the teachers were scoring the training images, so no student was trained;")
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "model.json").write_text("{}")
    with pytest.raises(DistillInterrupted) as caught:
        with explained_interrupts(tmp_path, "handcrafted") as stage:
            stage.now = "student"
            raise KeyboardInterrupt(15)  # SIGTERM, as synthdetect.interrupts raises it
    assert caught.value.signum == 15
    assert "nothing to resume" in caught.value.message
    assert caught.value.message.endswith(f"{tmp_path / 'student'} holds an earlier run's student, not this run's")
    with pytest.raises(DistillInterrupted) as caught:
        with explained_interrupts(tmp_path, "small-cnn") as stage:
            stage.now = "compare"
            raise KeyboardInterrupt
    assert caught.value.message.startswith(f"the student is complete in {tmp_path / 'student'}, but the comparison")


def test_a_resumed_student_is_announced_with_its_epochs(data, teachers, tmp_path, monkeypatch):
    """A retry resumed the checkpoint without a word; the first sign was an epoch counter starting at 4."""
    import torch

    import synthdetect.train.distill as distill

    out = tmp_path / "o"
    (out / "student" / "_work").mkdir(parents=True)
    torch.save({"epoch": 2}, out / "student" / "_work" / "checkpoint.pt")  # three epochs done, no fingerprint

    def stop(kind, request, targets):
        raise KeyboardInterrupt

    monkeypatch.setattr(distill, "train_student", stop)
    buffer = io.StringIO()
    with pytest.raises(distill.DistillInterrupted):
        distill.run_distillation([str(teachers["good"])], "small-cnn", open_dataset(data), out,
                                 holdout_sources=["s3"], input_size=16, epochs=1, threads=1,
                                 console=Console(file=buffer, width=400))
    assert (f"resuming the student from {out / 'student' / '_work' / 'checkpoint.pt'} (3 epochs finished); the "
            f"teachers score the training images again first") in buffer.getvalue()


def test_a_checkpoint_cut_short_is_one_line_not_a_torch_traceback(data, teachers, tmp_path):
    """A run stopped while torch.save wrote the checkpoint left a truncated zip; every retry then ended in
    "RuntimeError: PytorchStreamReader failed locating file data.pkl" with a traceback."""
    import torch

    whole = io.BytesIO()
    torch.save({"epoch": 1, "model": {"w": torch.zeros(1000)}}, whole)
    checkpoint = tmp_path / "o" / "student" / "_work" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    line = _one_line_error(_distill(data, tmp_path / "o", teachers["good"]))
    assert line.startswith(f"error: {checkpoint} cannot be read (")
    assert line.endswith("delete it to train the student from the start")


# -- models show ---------------------------------------------------------------------------------


def test_models_show_prints_card_text_without_terminal_escapes(tmp_path):
    """A card's text went to the terminal raw: an ESC sequence in a downloaded card's name cleared the screen or
    retitled the window, and a newline in a value forged a line of its own."""
    root = tmp_path / "pkg"
    write_package(root, {"name": "x\x1b[2Jy", "version": "1", "kind": BRIGHTNESS_KIND, "sign": 1.0,
                         "description": "ok\x1b]0;owned\x07", "notes": "line\nforged: yes", "k\u202eey": "v"}, {})
    result = CliRunner().invoke(app, ["models", "show", str(root)])
    assert result.exit_code == 0, result.output
    assert not any(ch in result.output for ch in "\x1b\x07\u202e"), repr(result.output)
    lines = result.output.splitlines()
    assert lines[0] == "x\\x1b[2Jy 1  kind=" + BRIGHTNESS_KIND
    assert lines[1] == "ok\\x1b]0;owned\\x07"
    assert "notes: line\\nforged: yes" in lines and "k\\u202eey: v" in lines
    # JSON keeps the card exactly
    shown = CliRunner().invoke(app, ["models", "show", str(root), "-f", "json"])
    assert json.loads(shown.output)["name"] == "x\x1b[2Jy"


# -- dataset summary -----------------------------------------------------------------------------


def test_dataset_summary_table_counts_unreadable_files_beside_the_formats(tmp_path):
    """The table said "count 3" beside "PNG 2": the unreadable file was in the count but nowhere in the row."""
    root = tmp_path / "d"
    make_dataset(root, sources=1, per_class=2)
    (root / "broken.png").write_text("not an image")
    with open(root / "manifest.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["broken.png", "human", "s0", ""])
    result = CliRunner().invoke(app, ["dataset", "summary", str(root / "manifest.csv")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│ human" in line]
    assert rows and all("PNG 2, unreadable 1" in row for row in rows), result.output
    assert "manifest.csv: 5 files (1 unreadable)" in " ".join(result.output.split())  # the title said "5 images"


def test_models_show_of_a_partial_package_shows_the_card_then_refuses(tmp_path):
    """A package whose weights are missing (a partial download) printed only "weight file missing": the card, which
    lists every file the package needs and its sha256, could not be seen at all."""
    from tiny_model import write_tiny_cnn

    root = write_tiny_cnn(tmp_path / "pkg")
    (root / "weights.pt").unlink()
    for fmt in ("table", "json"):
        result = CliRunner().invoke(app, ["models", "show", str(root), "-f", fmt])
        assert result.exit_code == 2
        assert result.stderr.strip() == (f"error: tiny-cnn: weight file missing: {root / 'weights.pt'} (the card is "
                                         f"shown unverified; the model cannot be loaded)")
        assert "weights.pt" in result.stdout and "tiny-cnn" in result.stdout
    assert json.loads(result.stdout)["files"]["weights"]["path"] == "weights.pt"


@pytest.mark.parametrize("option,value", [("--epochs", "0"), ("--input-size", "7"), ("--threads", "-2")])
def test_distill_refuses_impossible_numbers_before_any_work(data, teachers, tmp_path, option, value):
    """--epochs 0 ended in "FileNotFoundError: .../_work/best.pt" and --input-size 7 in a torch RuntimeError
    ("Output size is too small"), both as tracebacks after the teachers had scored every image."""
    args = ["distill", str(data), "--teacher", str(teachers["good"]), "--holdout-source", "s3", "--alpha", "0.3",
            "-o", str(tmp_path / "o"), option, value]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "o").exists()


PICKY_KIND = "test-s23-fails-above-16px"


class _FailsAbove16(BrightnessTeacher):
    """Raises on any batch holding an image wider than 16 px, as an adapter may on a size it cannot take."""

    def logits(self, images):
        if any(np.asarray(im.rgb).shape[1] > 16 for im in images):
            raise RuntimeError("cannot take this size")
        return super().logits(images)


@register_kind(PICKY_KIND)
def _load_picky(package):
    return _FailsAbove16(package.card)


def test_a_teacher_failing_on_every_held_out_image_gets_an_empty_row_not_the_run_ended(tmp_path, monkeypatch):
    """The comparison runs after the student is trained and written; a teacher that raised on every held-out image
    ended the run there ("fails on every image (teacher ...: held-out)"), with no comparison or report at all."""
    from PIL import Image

    import synthdetect.train.distill as distill
    from synthdetect.models.package import load_package

    manifest = make_dataset(tmp_path / "d", sources=4, per_class=4)
    for path in (tmp_path / "d" / "s3").rglob("*.png"):  # the held-out source is larger
        Image.open(path).resize((24, 24)).save(path)
    picky = tmp_path / "picky"
    write_package(picky, {"name": "picky", "version": "0.0.1", "kind": PICKY_KIND, "sign": 1.0,
                          "calibration": {"method": "identity"}, "input": {"min_side": 8, "max_aspect": 4.0},
                          "decision": {"ai_at_or_above": 0.8, "human_below": 0.2}}, {})

    def instant_student(kind, request, targets):  # a transparent student: no training in this test
        write_package(request.out, {"name": "student", "version": "0.0.1", "kind": BRIGHTNESS_KIND, "sign": 1.0,
                                    "calibration": {"method": "identity"}, "input": {"min_side": 8, "max_aspect": 4.0},
                                    "decision": {"ai_at_or_above": 0.8, "human_below": 0.2}}, {})
        return load_package(request.out), list(request.train)

    monkeypatch.setattr(distill, "train_student", instant_student)
    buffer = io.StringIO()
    result = distill.run_distillation([str(picky)], "small-cnn", open_dataset(manifest), tmp_path / "o",
                                      holdout_sources=["s3"], alpha=0.3, threads=1,
                                      console=Console(file=buffer, width=400))
    rows = {row["model"]: row for row in result.rows}
    assert rows["picky"]["n_scored"] == 0 and rows["student"]["n_scored"] == 8
    said = buffer.getvalue()
    assert ("warning: teacher picky scored none of the 8 held-out images (8 failed); e.g. " in said
            and "model failed (RuntimeError: cannot take this size)" in said), said
    assert (tmp_path / "o" / "comparison.csv").is_file() and (tmp_path / "o" / "report.html").is_file()


def test_models_show_json_is_strict_json_when_a_card_holds_nan(tmp_path):
    """A card value of NaN or Infinity was printed as NaN/Infinity, which strict JSON readers (jq, JSON.parse)
    reject."""
    import json as jsonlib

    from typer.testing import CliRunner

    from synthdetect.cli import app
    from tiny_model import write_tiny_cnn

    package = write_tiny_cnn(tmp_path / "pkg")
    card = jsonlib.loads((package / "model.json").read_text())
    card["metrics"] = {"validation": {"roc_auc": float("nan"), "ece": float("inf")}}
    (package / "model.json").write_text(jsonlib.dumps(card))
    for fmt in ("json", "jsonl"):
        result = CliRunner().invoke(app, ["models", "show", str(package), "-f", fmt])
        assert result.exit_code == 0, result.output
        shown = jsonlib.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
        assert shown["metrics"]["validation"] == {"roc_auc": None, "ece": None}
