"""Autopilot audit (session 24): what a user is told when no candidate wins, bad split fractions, a killed worker,
and the printed leaderboard with a long failure reason.  No test trains a model: workers are stand-ins."""

from __future__ import annotations

import json
import sys

import pytest

from test_autopilot import make_dataset, tiny_cnn
from synthdetect.train import autopilot
from synthdetect.train.autopilot import FINISHED, AutopilotError, Candidate, run_autopilot
from synthdetect.train.datasets import open_dataset

FAILURE = ("failed: the training split needs both AI and human images (32 of its images are under 32 px on the "
           "short side or longer than 6:1, which this model answers uncertain)")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("audit-data"), sources=4, per_class=4)


def _no_winner_candidates(*args, **kwargs):
    """Stands in for the workers: one candidate failed, one finished without scoring a held-out image."""
    rows = args[1]
    rows.append({"candidate": "broken", "kind": "small-cnn", "status": FAILURE,
                 "error": "TrainerError: ..."})
    rows.append({"candidate": "abstains", "kind": "handcrafted", "status": FINISHED, "roc_auc": None,
                 "n_scored": 0, "n_test": 8})


def test_no_winner_says_why_instead_of_blaming_the_budget(manifest, tmp_path, monkeypatch):
    """Before: "no candidate finished within 30 s" (and "Autopilot: no candidate finished" in report.html) while
    the table said one had finished and the other had failed after seconds."""
    from typer.testing import CliRunner

    from synthdetect.cli import app

    monkeypatch.setattr(autopilot, "_run_candidates", _no_winner_candidates)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["autopilot", str(manifest), "-o", str(out), "--budget", "30s",
                                      "--kind", "small-cnn", "--val-fraction", "0.25", "--test-fraction", "0.25"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert "within 30 s" not in said
    assert ("no candidate was ranked: abstains finished, but roc_auc could not be computed on its held-out images "
            "(it needs scored images of both classes; see 'scored'); broken failed (the reason is in its status and "
            "train.log); nothing exported") in said
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["no_winner"].startswith("no candidate was ranked: abstains finished")
    rows = {r["candidate"]: r for r in saved["leaderboard"]}
    assert rows["abstains"]["error"] == ("not ranked: no roc_auc on its held-out images (scored 0 of 8; it needs "
                                         "scored images of both classes)")
    page = (out / "report.html").read_text()
    assert "<h1>Autopilot: no candidate was ranked</h1>" in page and "no candidate finished" not in page


def test_bad_split_fractions_are_refused_before_anything_runs(manifest, tmp_path):
    """Before: --val-fraction 0 ran anyway (the source split still gave a validation source), and --test-fraction -1
    was refused as "the held-out sources need both AI and human images"."""
    from typer.testing import CliRunner

    from synthdetect.cli import app

    runner = CliRunner()
    out = tmp_path / "o"
    for option, value, expected in (("--val-fraction", "0", "--val-fraction 0: expected above 0 and below 1"),
                                    ("--test-fraction", "-1", "--test-fraction -1: expected above 0 and below 1"),
                                    ("--test-fraction", "0.9", "--val-fraction 0.15 + --test-fraction 0.9 leave "
                                                               "nothing to train on")):
        result = runner.invoke(app, ["autopilot", str(manifest), "-o", str(out), "--budget", "1s",
                                     "--kind", "small-cnn", option, value])
        assert result.exit_code == 2, (option, value, result.output)
        assert expected in " ".join(result.stderr.split())
        assert not out.exists()
    # named held-out sources make --test-fraction unused: 0 is fine there; the Python API refuses as the CLI does
    assert autopilot.fraction_problems(0.25, 0.0, ["s3"]) == []
    with pytest.raises(AutopilotError, match="--val-fraction 1.5"):
        run_autopilot(open_dataset(manifest), out, budget_s=5, candidates=[Candidate("ghost", "no-such-kind")],
                      val_fraction=1.5, progress=False)


def test_a_killed_worker_is_reported_as_killed(manifest, tmp_path, monkeypatch):
    """Before: "failed: worker exited with code -9", which did not say it was killed (nor what usually does it)."""
    real_popen = autopilot.subprocess.Popen

    def killed_worker(args, **kwargs):  # a worker that dies as the kernel's OOM killer ends one
        return real_popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                          **kwargs)

    monkeypatch.setattr(autopilot.subprocess, "Popen", killed_worker)
    result = run_autopilot(open_dataset(manifest), tmp_path / "run", budget_s=60, candidates=[tiny_cnn("oom", 1)],
                           val_fraction=0.25, test_fraction=0.25, progress=False, reserve_s=0.5)
    row = result.rows[0]
    assert row["status"] == "failed: worker killed by SIGKILL (the system may have run out of memory)"
    assert row["train_seconds"] is not None and row["error"].endswith("train.log")
    assert "oom failed" in result.summary["no_winner"]


def test_a_long_failure_reason_leaves_the_printed_leaderboard_readable():
    """Before: the one-line reason took the whole width: names cut to two letters, every number column gone."""
    from rich.console import Console

    from synthdetect.train.autopilot import leaderboard_table

    rows = [{"rank": 1, "candidate": "ela-cnn-96", "kind": "ela-cnn", "status": FINISHED, "roc_auc": 0.805,
             "tpr_at_fpr_0.05": 0.5, "ece": 0.262, "accuracy": 0.339, "n_scored": 118, "train_seconds": 208.2,
             "images_per_second": 5.28, "size_mb": 0.087},
            {"rank": None, "candidate": "handcrafted", "kind": "handcrafted", "status": FAILURE}]
    console = Console(width=140, record=True)
    console.print(leaderboard_table(rows, "roc_auc"))
    text = console.export_text()
    assert "handcrafted" in text and "ela-cnn-96" in text
    for number in ("0.805", "0.262", "208.200", "5.280", "0.087"):
        assert number in text, number
    assert "answers uncertain)" in text  # the reason is wrapped, not cut
    assert max(len(line) for line in text.splitlines()) <= 140


def test_a_budget_too_small_for_any_candidate_says_so(manifest, tmp_path):
    """Before: "skipped: budget spent" with 0 s used, and "no candidate finished within 5 s": the 3 s kept back for
    the results had taken what was left, which nothing said."""
    result = run_autopilot(open_dataset(manifest), tmp_path / "run", budget_s=1.0, candidates=[tiny_cnn("tiny", 1)],
                           val_fraction=0.25, test_fraction=0.25, progress=False, reserve_s=0.5)
    assert result.best is None and result.rows[0]["status"] == autopilot.SKIPPED
    assert result.summary["no_winner"] == (
        "no candidate was ranked: tiny never started: the 1 s budget left too little time once 0.5 s are kept for "
        "the leaderboard, export and report; give a larger --budget")


def test_images_a_candidate_could_not_read_are_named_in_its_result():
    """Before: an undecodable training image was left out with a word only in the candidate's card and train.log;
    the run's output and leaderboard row said nothing.  The row (and a console note) now carry this line."""
    card = {"training": {"split": {"train": {"n": 24, "unreadable": 1}, "validation": {"n": 12},
                                   "test": {"n": 12, "unreadable": 1}},
                         "images_failed": ["data/a/bad.png: not an image (the file contains text)"]}}
    assert autopilot.unreadable_note(card) == ("1 training, 1 held-out image(s) could not be read and were left out "
                                               "(first: data/a/bad.png: not an image (the file contains text))")
    assert autopilot.unreadable_note({"training": {"split": {"train": {"n": 24}}}}) is None
    assert autopilot.unreadable_note({}) is None


def test_the_printed_table_shows_the_metric_the_ranking_used_on_common_images():
    """Before: ranked on the images every candidate scored, the table hid the 'metric' column the note pointed to:
    rank 1 showed AUC 0.875 under rank 2's 0.889, with nothing showing the 1.000 it was ranked by."""
    from rich.console import Console

    from synthdetect.train.autopilot import leaderboard_table, rank_rows

    rows = rank_rows([{"candidate": "judges-all", "status": FINISHED, "roc_auc": 0.875, "common_metric": 1.0},
                      {"candidate": "abstains", "status": FINISHED, "roc_auc": 8 / 9, "common_metric": 0.8}],
                     "roc_auc")
    console = Console(width=160, record=True)
    console.print(leaderboard_table(rows, "roc_auc"))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "candidate" in line)
    assert "metric" in header.split("┃")[5]  # after #, candidate, kind, status
    first = next(line for line in lines if "judges-all" in line)
    assert "1.000" in first and "0.875" in first
    # without a common-image ranking the column still repeats nothing
    plain = Console(width=160, record=True)
    plain.print(leaderboard_table(rank_rows([{"candidate": "a", "status": FINISHED, "roc_auc": 0.7}], "roc_auc"),
                                  "roc_auc"))
    assert " metric " not in plain.export_text()


def test_two_sources_are_refused_with_what_the_split_needs(tmp_path):
    """Before: "naming at least two sources" for one source, then, with two, the split's "no source is left for
    training": training, validation and held-out each need a source."""
    two = open_dataset(make_dataset(tmp_path / "d", sources=2, per_class=2))
    with pytest.raises(AutopilotError) as caught:
        run_autopilot(two, tmp_path / "o", budget_s=5, candidates=[Candidate("ghost", "no-such-kind")],
                      progress=False, data="d/manifest.csv")
    assert str(caught.value) == ("d/manifest.csv: holding out whole sources needs a CSV manifest with a 'source' "
                                 "column naming at least three sources (path,label,source): one or more for training, "
                                 "one for validation, one held out; found 2 sources (s0, s1)")
    assert not (tmp_path / "o").exists()


def test_the_data_path_in_leaderboard_json_is_absolute(manifest, tmp_path, monkeypatch):
    """The README says paths in leaderboard.json are absolute; DATA was kept as typed ("d/manifest.csv")."""
    monkeypatch.chdir(manifest.parent.parent)
    relative = f"{manifest.parent.name}/{manifest.name}"
    run_autopilot(open_dataset(relative), tmp_path / "run", budget_s="3s", candidates=[Candidate("g", "no-such-kind")],
                  data=relative, val_fraction=0.25, test_fraction=0.25, progress=False, reserve_s=0.5)
    assert json.loads((tmp_path / "run" / "leaderboard.json").read_text())["data"] == str(manifest)


def test_a_winner_no_better_than_chance_is_exported_with_a_warning(tmp_path):
    """Before: ranked by --metric ece, a small-cnn answering ~0.5 for every image (held-out ROC-AUC 0.000, ECE 0.001)
    beat a handcrafted model with ROC-AUC 1.000 and was exported as "best" without a word."""
    from tiny_model import write_tiny_cnn

    from synthdetect.models.package import load_package

    row = {"candidate": "flat", "kind": "small-cnn", "status": FINISHED, "roc_auc": 0.0, "ece": 0.001, "rank": 1}
    warning = autopilot.chance_warning(row, "ece")
    assert warning == ("the winner flat separates AI from human held-out images no better than chance (ROC-AUC "
                       "0.000): it is the best of these candidates by ece, not a working detector")
    assert autopilot.chance_warning({**row, "roc_auc": 0.81}, "ece") is None
    assert autopilot.chance_warning({**row, "roc_auc": None}, "ece") is None
    summary = {"metric": "ece", "split": {"test_sources": ["s2"]}, "budget_s": 60.0, "elapsed_s": 12.0,
               "warning": warning}
    package = write_tiny_cnn(tmp_path / "pkg")
    autopilot._record_win(package, row, summary, [row])
    assert load_package(package).card["autopilot"]["warning"] == warning  # the exported card carries it
    assert f"Warning: {warning}." in autopilot.leaderboard_html([row], summary, tmp_path)


def test_a_negative_seed_is_refused_in_one_line(manifest, tmp_path):
    """Before: `autopilot --seed -1` ended in numpy's traceback ("expected non-negative integer") from the split,
    and `distill --seed -1` in that line without naming --seed."""
    from typer.testing import CliRunner

    from synthdetect.cli import app

    for command in (["autopilot", str(manifest), "-o", str(tmp_path / "o"), "--kind", "small-cnn", "--budget", "1s"],
                    ["distill", str(manifest), "--teacher", "default", "-o", str(tmp_path / "o")]):
        result = CliRunner().invoke(app, command + ["--seed", "-1"])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--seed'" in result.output and "Traceback" not in result.output
    with pytest.raises(AutopilotError, match="seed -1: expected a whole number at least 0"):
        run_autopilot(open_dataset(manifest), tmp_path / "o", budget_s=5, candidates=[Candidate("g", "no-such-kind")],
                      seed=-1, val_fraction=0.25, test_fraction=0.25, progress=False)
    assert not (tmp_path / "o").exists()
