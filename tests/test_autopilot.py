"""Autopilot: budget parsing and sharing, leaderboard ordering, real budget enforcement, export.

The budget tests run real candidates (the small-cnn trainer) in real worker
processes: one that cannot finish (100000 epochs) must be killed at its
share of the budget and recorded as ``stopped: budget``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synth_data import write_manifest_rows
from synthdetect.train.autopilot import (
    FINISHED, SKIPPED, STOPPED, AutopilotError, Candidate, _slice_for, default_candidates, parse_budget, rank_rows,
    run_autopilot,
)
from synthdetect.train.datasets import open_dataset

#: Seconds a run may exceed its budget: killing a worker (SIGTERM, then SIGKILL after 2 s) and writing files.
TOLERANCE_S = 6.0


def make_dataset(root: Path, sources: int = 4, per_class: int = 8, size: int = 16, seed: int = 0) -> Path:
    """AI images bright and smooth, human images dark and noisy, in ``sources`` sources holding both classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sources):
        for label in ("ai", "human"):
            for i in range(per_class):
                if label == "ai":
                    arr = rng.uniform(150, 230) + rng.normal(0, 4, (size, size, 3))
                else:
                    arr = rng.uniform(30, 110) + rng.normal(0, 30, (size, size, 3))
                path = root / f"s{s}" / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
                rows.append({"path": path.relative_to(root).as_posix(), "label": label, "source": f"s{s}",
                             "generator": f"gen{s % 2}" if label == "ai" else ""})
    return write_manifest_rows(root, rows)


def tiny_cnn(name: str, epochs: int, weight: float = 1.0) -> Candidate:
    return Candidate(name, "small-cnn", options={"input_size": 16, "width": 4, "max_short_side": 0},
                     config={"epochs": epochs, "patience": epochs, "batch_size": 16}, weight=weight)


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    # Import the trainer registry (torch) now, so the budgets below measure scheduling, not this test's imports.
    from synthdetect.train.autopilot import available

    assert available("small-cnn") is None
    return open_dataset(make_dataset(tmp_path_factory.mktemp("autopilot-data")))


# -- pure functions ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [("20m", 1200), ("90s", 90), ("1h30m", 5400), ("45", 45), ("2.5m", 150),
                                          ("1h 5m 10s", 3910), ("20min", 1200), ("90sec", 90), ("1h30min", 5400)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "20x", "0m", "m20", "1h30", "20m 30", "30 20m"])
def test_parse_budget_rejects_nonsense(text):
    with pytest.raises(AutopilotError):
        parse_budget(text)


def test_budget_shares_follow_weights_and_roll_over():
    cands = [tiny_cnn("a", 1, weight=1), tiny_cnn("b", 1, weight=3)]
    assert _slice_for(cands, 0, 100.0) == pytest.approx(25.0)
    # whatever the first candidate left is all the last one's
    assert _slice_for(cands, 1, 90.0) == pytest.approx(90.0)


def test_leaderboard_ordering_by_metric_then_ties_then_unfinished():
    rows = [
        {"candidate": "slow-stopped", "status": STOPPED},
        {"candidate": "b", "status": FINISHED, "roc_auc": 0.80, "tpr_at_fpr_0.05": 0.3, "ece": 0.05},
        {"candidate": "a", "status": FINISHED, "roc_auc": 0.90, "tpr_at_fpr_0.05": 0.2, "ece": 0.10},
        {"candidate": "c-tie-better-tpr", "status": FINISHED, "roc_auc": 0.80, "tpr_at_fpr_0.05": 0.5, "ece": 0.2},
        {"candidate": "failed", "status": "failed: boom"},
        {"candidate": "not-installed", "status": "unavailable"},
        {"candidate": "no-auc", "status": FINISHED, "roc_auc": None},
    ]
    ranked = rank_rows(rows, "roc_auc")
    assert [r["candidate"] for r in ranked] == ["a", "c-tie-better-tpr", "b", "slow-stopped", "failed", "no-auc",
                                                "not-installed"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, None, None, None, None]
    # a lower-is-better metric reverses the order
    by_ece = rank_rows(rows, "ece")
    assert [r["candidate"] for r in by_ece][:3] == ["b", "a", "c-tie-better-tpr"]
    with pytest.raises(AutopilotError):
        rank_rows(rows, "vibes")


def test_candidates_that_scored_different_images_are_ranked_on_the_images_all_of_them_scored(tmp_path):
    """A candidate abstaining on the hard images scored higher on the easy rest and won against one that judged all."""
    from synthdetect.train.autopilot import rank_on_common_images

    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    p_ai = {"judges-all": [0.9, 0.8, 0.7, 0.3, 0.1, 0.2, 0.6, 0.4],  # ROC-AUC 0.875 on all 8
            "abstains": [0.9, 0.45, 0.7, None, 0.1, 0.5, None, 0.4]}  # 0.889 on its own 6, the hard two left out
    for name, p in p_ai.items():
        (tmp_path / "candidates" / name).mkdir(parents=True)
        (tmp_path / "candidates" / name / "predictions.json").write_text(json.dumps({"p_ai": p}))
    rows = [{"candidate": "judges-all", "status": FINISHED, "roc_auc": 0.875, "n_scored": 8},
            {"candidate": "abstains", "status": FINISHED, "roc_auc": 8 / 9, "n_scored": 6}]
    assert rank_rows([dict(r) for r in rows], "roc_auc")[0]["candidate"] == "abstains"  # what the ranking was
    note = rank_on_common_images(rows, tmp_path, labels, "roc_auc")
    assert note == ("finished candidates scored 6-8 of 8 held-out images; roc_auc in the 'metric' column (and the "
                    "ranking) is on the 6 images every one of them scored")
    ranked = rank_rows(rows, "roc_auc")
    assert [(r["candidate"], r["metric"]) for r in ranked] == [("judges-all", 1.0), ("abstains", pytest.approx(8 / 9))]
    assert ranked[0]["roc_auc"] == 0.875  # each candidate's own held-out numbers stay as they were

    same = [{"candidate": n, "status": FINISHED, "roc_auc": 0.5} for n in ("judges-all", "judges-all-too")]
    (tmp_path / "candidates" / "judges-all-too").mkdir()
    (tmp_path / "candidates" / "judges-all-too" / "predictions.json").write_text(json.dumps({"p_ai": [0.5] * 8}))
    assert rank_on_common_images(same, tmp_path, labels, "roc_auc") is None and "common_metric" not in same[0]


def test_default_candidates_select_by_name_or_kind():
    assert [c.name for c in default_candidates(["small-cnn", "clip-head"])] == ["small-cnn-96", "clip-head"]
    assert default_candidates(["some-new-kind"])[0].kind == "some-new-kind"


# -- real runs -----------------------------------------------------------------------------------


def test_tiny_budget_stops_on_time_with_partial_leaderboard(tiny_records, tmp_path):
    """A candidate that cannot finish is killed at the budget; the next is skipped; files still written."""
    budget = 4.0
    started = time.monotonic()
    result = run_autopilot(tiny_records, tmp_path / "run", budget_s=budget, val_fraction=0.25, test_fraction=0.25,
                           candidates=[tiny_cnn("endless", 100_000, weight=100), tiny_cnn("never", 1, weight=1)],
                           threads=1, progress=False, reserve_s=0.5)
    elapsed = time.monotonic() - started
    assert elapsed <= budget + TOLERANCE_S, f"autopilot took {elapsed:.1f} s for a {budget:.0f} s budget"
    status = {r["candidate"]: r["status"] for r in result.rows}
    assert status == {"endless": STOPPED, "never": SKIPPED}
    assert result.best is None and not (tmp_path / "run" / "model").exists()
    saved = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert [r["status"] for r in saved["leaderboard"]] == [STOPPED, SKIPPED]
    assert (tmp_path / "run" / "leaderboard.csv").read_text().count("\n") == 3
    assert "stopped: budget" in (tmp_path / "run" / "report.html").read_text()


def test_unavailable_kind_is_listed_not_fatal(tiny_records, tmp_path):
    result = run_autopilot(tiny_records, tmp_path / "run", budget_s=3, val_fraction=0.25, test_fraction=0.25,
                           candidates=[Candidate("ghost", "no-such-kind")], progress=False, reserve_s=0.5)
    assert result.rows[0]["status"] == "unavailable" and "no-such-kind" in result.summary["unavailable"][0]


@pytest.mark.slow
def test_budget_stops_one_candidate_and_exports_the_finished_one(tiny_records, tmp_path, monkeypatch):
    """The endless candidate is killed at its share; the quick one finishes, ranks first, is exported and loads."""
    from synthdetect.api import Detector

    budget = 60.0
    started = time.monotonic()
    monkeypatch.chdir(tmp_path)
    result = run_autopilot(  # a relative OUT, as `-o run` gives
        tiny_records, "run", budget_s=budget, val_fraction=0.25, test_fraction=0.25, threads=1,
        candidates=[tiny_cnn("endless", 100_000, weight=1), tiny_cnn("quick", 2, weight=11)], progress=False,
    )
    elapsed = time.monotonic() - started
    assert elapsed <= budget + TOLERANCE_S
    rows = {r["candidate"]: r for r in result.rows}
    endless, quick = rows["endless"], rows["quick"]
    assert endless["status"] == STOPPED
    assert endless["train_seconds"] <= endless["slice_seconds"] + TOLERANCE_S
    assert quick["status"] == FINISHED, quick
    assert [r["candidate"] for r in result.rows] == ["quick", "endless"] and quick["rank"] == 1
    for key in ("roc_auc", "tpr_at_fpr_0.05", "ece", "images_per_second", "size_mb", "train_seconds"):
        assert quick[key] is not None, key
    saved = {r["candidate"]: r for r in json.loads((tmp_path / "run" / "leaderboard.json").read_text())["leaderboard"]}
    assert saved["quick"]["package"] == str(tmp_path / "run" / "candidates" / "quick" / "package")  # not relative
    # held-out means whole sources the candidates never trained on
    split = result.summary["split"]
    assert split["method"] == "source" and split["test_sources"]
    assert not set(split["test_sources"]) & set(split["validation_sources"])
    # the export is a normal package, with how it won on its card
    det = Detector.load(str(result.best))
    assert det.model.card["autopilot"]["rank"] == 1
    assert det.model.card["autopilot"]["held_out_sources"] == split["test_sources"]
    img = tiny_records[0].ref
    assert det(img).p_ai is not None
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Autopilot leaderboard" in page and "quick" in page and "stopped: budget" in page


def test_cli_autopilot_rejects_bad_budget(tmp_path):
    from typer.testing import CliRunner

    from synthdetect.cli import app

    manifest = make_dataset(tmp_path / "d", sources=2, per_class=2)
    result = CliRunner().invoke(app, ["autopilot", str(manifest), "-o", str(tmp_path / "o"), "--budget", "soon"])
    assert result.exit_code == 2
    assert "cannot read budget" in result.output


def test_linear_head_candidates_are_judged_like_the_detector(tiny_records, tmp_path, monkeypatch):
    """The feature-cache shortcut for linear-head kinds gives the Detector's p_ai and verdicts."""
    from synthdetect.api import Detector
    from synthdetect.evaluate.report import predict_records
    from synthdetect.models import load_model
    from synthdetect.train.autopilot import judge_held_out
    from synthdetect.train.registry import TrainRequest
    from synthdetect.train.splits import split_records
    from synthdetect.train.wild_trainers import train_handcrafted

    monkeypatch.setenv("SYNTHDETECT_CACHE", str(tmp_path / "cache"))
    # 40 px: linear-head kinds decline images under 32 px; two 24 px images check that they are declined alike
    records = open_dataset(make_dataset(tmp_path / "d", per_class=4, size=40))
    small = make_dataset(tmp_path / "small", sources=1, per_class=1, size=24)
    split = split_records(records, "source", holdout_sources=["s3"], val_fraction=0.25, seed=0)
    split.test.extend(open_dataset(small))
    package = train_handcrafted(TrainRequest(train=split.train, val=split.val, test=split.test,
                                             out=tmp_path / "hc", name="hc"))
    model = load_model(str(package.root))
    predictions, speed, how = judge_held_out(model, split.test, "hc", sample=4)
    served = predict_records(Detector(model, use_evidence=False), split.test, progress=False)
    assert np.isfinite(served.p_ai[:-2]).all() and np.isnan(served.p_ai[-2:]).all()
    np.testing.assert_allclose(predictions.p_ai, served.p_ai, rtol=1e-6, atol=1e-9)
    assert predictions.verdicts == served.verdicts
    assert how.startswith("feature cache") and speed > 0


def test_cli_autopilot_refuses_unknown_kinds_sourceless_data_and_a_file_as_out(tmp_path):
    """Each used to run (or fail after the work) and end with a misleading message."""
    from typer.testing import CliRunner

    from synth_data import write_folder
    from synthdetect.cli import app

    manifest = make_dataset(tmp_path / "d", sources=2, per_class=2)
    runner = CliRunner()
    result = runner.invoke(app, ["autopilot", str(manifest), "-o", str(tmp_path / "o"), "--kind", "bogus"])
    assert result.exit_code == 2 and "unknown --kind bogus (blueprints and model kinds: " in result.output
    assert "small-cnn-96" in result.output and not (tmp_path / "o").exists()
    folders = write_folder(tmp_path / "f", n_per_class=2)
    result = runner.invoke(app, ["autopilot", str(folders), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs a CSV manifest with a 'source' column" in " ".join(result.output.split())
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, ["autopilot", str(manifest), "-o", str(tmp_path / "afile")])
    assert result.exit_code == 2 and "exists and is a file, not a directory" in result.output


def test_leaderboard_prints_names_and_paths_with_square_brackets_as_text():
    from rich.console import Console

    from synthdetect.train.autopilot import leaderboard_table

    console = Console(width=200, record=True)
    console.print(leaderboard_table([{"candidate": "[b]mine", "kind": "small-cnn", "rank": None,
                                      "status": "failed: see /runs/[i]x/train.log"}], "roc_auc"))
    text = console.export_text()
    assert "[b]mine" in text and "/runs/[i]x/train.log" in text  # rich had read them as markup and dropped them


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that this container may not have counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_stop_kills_what_the_worker_started_even_when_it_ignores_sigterm():
    """_stop returned as soon as the worker died of SIGTERM; a child that ignored SIGTERM trained on, unowned."""
    import os
    import signal
    import subprocess
    import sys

    from synthdetect.train.autopilot import _stop

    grandchild = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print('ready', flush=True); time.sleep(120)")
    worker = ("import subprocess, sys, time; "
              f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], stdout=subprocess.PIPE, text=True); "
              "p.stdout.readline(); print(p.pid, flush=True); time.sleep(120)")
    process = subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    pid = int(process.stdout.readline())
    try:
        assert _alive(pid)
        _stop(process)
        assert process.poll() is not None
        time.sleep(0.2)
        assert not _alive(pid), "the worker's own child outlived the candidate's stop"
    finally:
        for target in (process.pid, pid):
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.stdout.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ctrl_c_stops_the_running_worker_and_writes_the_leaderboard(tiny_records, tmp_path, monkeypatch):
    """Workers run in their own session, so Ctrl-C at the terminal never reached them: the run died and the
    worker trained on with no leaderboard written.  Now it is killed and its row says so."""
    import os
    import signal
    import subprocess
    import threading

    from synthdetect.train import autopilot

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    done, sent = threading.Event(), threading.Event()

    def press_ctrl_c():
        waited = time.monotonic()
        while not started and time.monotonic() - waited < 60:  # a loaded machine is slow to start the worker
            time.sleep(0.05)
        time.sleep(1.0)
        if started and not done.is_set():  # never interrupt whatever pytest runs next
            os.kill(os.getpid(), signal.SIGINT)
            sent.set()

    # A shell without job control starts background commands with SIGINT ignored (`bash .ci/run &`): Python then
    # keeps it ignored, this test's Ctrl-C was lost and the worker trained its whole slice.  A person at a terminal
    # has Ctrl-C, so the test gives itself Python's own handler for its duration.
    sigint_before = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(autopilot.subprocess, "Popen", recording_popen)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    caught = None
    try:
        run_autopilot(tiny_records, tmp_path / "run", budget_s=120, val_fraction=0.25, test_fraction=0.25, threads=1,
                      candidates=[tiny_cnn("endless", 100_000), tiny_cnn("next", 1)], progress=False, reserve_s=0.5)
    except KeyboardInterrupt as exc:
        caught = exc
    finally:
        done.set()
        signal.signal(signal.SIGINT, sigint_before)
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the old code left it running: do not leak it
                process.wait()
                pytest.fail("the worker was still running after Ctrl-C")
    assert started and sent.is_set(), "Ctrl-C was never sent: no worker started within 60 s"
    assert caught is not None
    assert signal.getsignal(signal.SIGTERM) == sigterm_before
    saved = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert saved["interrupted"] == "SIGINT"
    assert [(r["candidate"], r["status"]) for r in saved["leaderboard"]] == [
        ("endless", "stopped: interrupted"), ("next", "skipped: interrupted")]
    assert caught.result.rows[0]["status"] == "stopped: interrupted" and caught.signum == signal.SIGINT


def test_a_rerun_without_a_winner_leaves_no_earlier_winner_in_out(tiny_records, tmp_path):
    """OUT/model (and a skipped candidate's folder) from an earlier run stayed, passing for this run's winner."""
    out = tmp_path / "run"
    for stale in (out / "model", out / "candidates" / "never" / "package"):
        stale.mkdir(parents=True)
        (stale / "model.json").write_text("{}")
    result = run_autopilot(tiny_records, out, budget_s=1.0, val_fraction=0.25, test_fraction=0.25,
                           candidates=[tiny_cnn("never", 1)], progress=False, reserve_s=0.5)
    assert [r["status"] for r in result.rows] == [SKIPPED] and result.best is None
    assert not (out / "model").exists()
    assert not (out / "candidates" / "never").exists()


def test_nan_metric_is_unranked_not_a_winner():
    rows = [{"candidate": "nan", "status": FINISHED, "roc_auc": float("nan"), "tpr_at_fpr_0.05": 0.9}]
    assert rank_rows([dict(r) for r in rows], "roc_auc")[0]["rank"] is None
    ranked = rank_rows([dict(rows[0]), {"candidate": "ok", "status": FINISHED, "roc_auc": 0.6}], "roc_auc")
    assert [(r["candidate"], r["rank"]) for r in ranked] == [("ok", 1), ("nan", None)]


def test_run_autopilot_refuses_a_nan_budget_and_reads_budget_text(tiny_records, tmp_path):
    """A NaN budget made every deadline comparison false: candidates would have run without any deadline."""
    ghost = [Candidate("ghost", "no-such-kind")]
    for bad in (float("nan"), 0.0, -5.0):
        with pytest.raises(AutopilotError, match="budget"):
            run_autopilot(tiny_records, tmp_path / "run", budget_s=bad, candidates=ghost, progress=False,
                          val_fraction=0.25, test_fraction=0.25, reserve_s=0.5)
    result = run_autopilot(tiny_records, tmp_path / "run", budget_s="3s", candidates=ghost, progress=False,
                           val_fraction=0.25, test_fraction=0.25, reserve_s=0.5)
    assert result.summary["budget_s"] == 3.0


def test_an_earlier_runs_candidates_in_out_are_named_and_kept(tiny_records, tmp_path):
    """OUT/candidates kept an earlier run's candidates of other names without a word, beside this run's."""
    import io

    from rich.console import Console

    out = tmp_path / "run"
    (out / "candidates" / "old-one").mkdir(parents=True)
    (out / "candidates" / "ghost").mkdir()
    shown = io.StringIO()
    run_autopilot(tiny_records, out, budget_s="3s", candidates=[Candidate("ghost", "no-such-kind")],
                  console=Console(file=shown, width=300), val_fraction=0.25, test_fraction=0.25, reserve_s=0.5)
    assert (f"note: {out / 'candidates'} also holds old-one from an earlier run; they are not part of this run and "
            "stay as they are") in shown.getvalue()
    assert (out / "candidates" / "old-one").is_dir()


def test_cli_autopilot_interrupted_shows_what_finished_and_exits_130(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from synthdetect.cli import app
    from synthdetect.train import autopilot

    manifest = make_dataset(tmp_path / "d", sources=2, per_class=2)

    def interrupted_run(records, out, **kwargs):
        rows = [{"candidate": "done", "kind": "small-cnn", "status": FINISHED, "rank": 1, "roc_auc": 0.75},
                {"candidate": "cut", "kind": "ela-cnn", "status": "stopped: interrupted", "rank": None}]
        summary = {"split": {"test_sources": ["s1"]}, "unavailable": [], "best": "done"}
        result = autopilot.AutopilotResult(rows=rows, summary=summary, out=out, best=out / "model", elapsed_s=3.0)
        raise autopilot.AutopilotInterrupted(result)

    monkeypatch.setattr(autopilot, "run_autopilot", interrupted_run)
    result = CliRunner().invoke(app, ["autopilot", str(manifest), "-o", str(tmp_path / "o")])
    assert result.exit_code == 130, result.output
    assert "stopped: interrupted" in result.output and "0.750" in result.output
    assert "interrupted: the running candidate was stopped; best so far: done" in " ".join(result.output.split())


def test_sigterm_while_the_results_are_written_says_what_is_there(tiny_records, tmp_path, monkeypatch):
    """After the candidates ran, Ctrl-C gave Typer's bare "Aborted!" and SIGTERM ended the process without a word,
    possibly with a cut leaderboard.csv; now every file is whole and the command says what may be an earlier run's."""
    import os
    import signal

    from typer.testing import CliRunner

    from synthdetect.cli import app
    from synthdetect.train import autopilot

    out = tmp_path / "run"
    out.mkdir()
    (out / "report.html").write_text("earlier report")

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(autopilot, "write_autopilot_report", terminated)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(autopilot.FinishInterrupted) as caught:
        run_autopilot(tiny_records, out, budget_s="3s", candidates=[Candidate("ghost", "no-such-kind")],
                      progress=False, val_fraction=0.25, test_fraction=0.25, reserve_s=0.5)
    assert caught.value.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) == sigterm_before
    assert json.loads((out / "leaderboard.json").read_text())["leaderboard"][0]["candidate"] == "ghost"
    assert (out / "report.html").read_text() == "earlier report"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]  # no temporary file left

    def stopped_run(records, out, **kwargs):
        raise autopilot.FinishInterrupted(out, signal.SIGTERM)

    monkeypatch.setattr(autopilot, "run_autopilot", stopped_run)
    manifest = make_dataset(tmp_path / "d", sources=2, per_class=2)
    result = CliRunner().invoke(app, ["autopilot", str(manifest), "-o", str(tmp_path / "o")])
    assert result.exit_code == 143, result.output
    assert result.stderr.strip() == (
        f"error: interrupted while writing the results into {tmp_path / 'o'}: each file there is whole, but the "
        f"model, leaderboard and report may still be an earlier run's; this run's candidates, each with its package "
        f"and report, are in {tmp_path / 'o' / 'candidates'}")


def test_a_refused_run_leaves_no_empty_out_folder(tiny_records, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(AutopilotError, match="candidate names must be unique"):
        run_autopilot(tiny_records, out, budget_s=30, candidates=[tiny_cnn("a", 1), tiny_cnn("a", 1)],
                      progress=False)
    one_class = [r for r in tiny_records if not (r.source == "s3" and r.label == 0)]
    with pytest.raises(AutopilotError, match="held-out sources need both AI and human images"):
        run_autopilot(one_class, out, budget_s=30, candidates=[tiny_cnn("a", 1)], holdout_sources=["s3"],
                      progress=False)
    # training or validation sources of one class: every candidate failed on it, each after its start-up
    ai_only_elsewhere = [r for r in tiny_records if r.source == "s3" or r.label == 1]
    with pytest.raises(AutopilotError, match=r"the training sources need both AI and human images, and hold 0 human"):
        run_autopilot(ai_only_elsewhere, out, budget_s=30, candidates=[tiny_cnn("a", 1)], holdout_sources=["s3"],
                      progress=False)
    assert not out.exists()


def test_a_candidate_that_raises_is_reported_by_its_first_line(tmp_path, monkeypatch):
    """The leaderboard quotes one line of the error (library messages span many, or none)."""
    import json

    from synthdetect.train import autopilot

    def explode(job):
        raise RuntimeError("\n\nout of memory in conv2\nfull trace follows\n")

    monkeypatch.setattr(autopilot, "run_candidate_job", explode)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"workdir": str(tmp_path)}))
    assert autopilot._worker_main(str(job)) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == {"status": "failed: out of memory in conv2", "error": "RuntimeError: out of memory in conv2"}

    monkeypatch.setattr(autopilot, "run_candidate_job", lambda job: (_ for _ in ()).throw(KeyError()))
    autopilot._worker_main(str(job))
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed: KeyError"
