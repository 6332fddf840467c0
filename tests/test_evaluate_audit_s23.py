"""``evaluate`` and ``compare`` as a demanding user meets them: a report that cannot be written, Ctrl-C and SIGTERM,
many sources, many images, a data set no model could judge, file names that are not one line, one-class data.

New names are imported inside each test, so this file also runs (and fails test by test) on the code before them.
"""

from __future__ import annotations

import json
import signal
import tracemalloc

import numpy as np
import pytest
from sklearn import metrics as skm
from typer.testing import CliRunner

from synth_data import write_manifest, write_manifest_rows
from synthdetect.cli import app
from synthdetect.evaluate.report import Predictions, compute_metrics, write_report
from synthdetect.train.datasets import Record
from tiny_model import write_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_s23")
    manifest = write_manifest(root / "data", {"s1": (3, 3)}, size=24)
    return manifest, write_tiny_cnn(root / "tiny")


def _predictions(labels, p_ai, sources=None) -> Predictions:
    sources = sources or ["s"] * len(labels)
    records = [Record(ref=f"/x/{i}.png", label=int(y), source=s, generator=f"g-{s}" if y else None)
               for i, (y, s) in enumerate(zip(labels, sources))]
    p_ai = np.asarray(p_ai, dtype=float)
    return Predictions(records=records, p_ai=p_ai, labels=np.asarray(labels, dtype=int),
                       errors=[None] * len(labels), model_name="m", seconds=1.0,
                       verdicts=["ai" if p >= 0.5 else "human" for p in p_ai], images=[{} for _ in labels])


def _interrupt_on_read(monkeypatch, after: int, interrupt: BaseException) -> None:
    """Ctrl-C (or SIGTERM, raised as Ctrl-C) while the ``after``-th file is read."""
    from synthdetect.evaluate import report

    real, calls = report.read_record_bytes, [0]

    def read(record):
        calls[0] += 1
        if calls[0] > after:
            raise interrupt
        return real(record)

    monkeypatch.setattr(report, "read_record_bytes", read)


def _one_line(output: str, needle: str) -> None:
    assert "Traceback" not in output and "Aborted" not in output, output
    assert any(needle in line for line in output.splitlines()), output


# ---------------------------------------------------------------------------------------------- writing the report


def test_a_folder_where_a_report_file_goes_is_refused_before_any_judging(setup, tmp_path, monkeypatch):
    """It was a traceback (IsADirectoryError) after every image had been judged."""
    manifest, model = setup
    (tmp_path / "r" / "report.html").mkdir(parents=True)
    from synthdetect.evaluate import report

    monkeypatch.setattr(report, "read_record_bytes", lambda record: pytest.fail("judged before refusing"))
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    _one_line(result.output, f"error: {tmp_path / 'r' / 'report.html'}: is a folder, and the report writes a file "
                             "of that name")


def test_a_report_file_that_cannot_be_written_is_one_line_saying_what_is_on_disk(setup, tmp_path, monkeypatch):
    """A write that fails after the judging (a full disk, something in the way) was a traceback after an hour."""
    manifest, model = setup
    out = tmp_path / "r"
    from synthdetect.evaluate import report

    real_page = report.render_html

    def page_then_blocked(*args, **kwargs):  # the page's file cannot be written once the page is ready
        (out / "report.html").mkdir()
        return real_page(*args, **kwargs)

    monkeypatch.setattr(report, "render_html", page_then_blocked)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(out), "--no-evidence"])
    assert result.exit_code == 1, result.output
    _one_line(result.output, f"error: {out / 'report.html'}: could not write it (Is a directory); this run wrote "
                             f"predictions.csv and metrics.json to {out}")
    assert json.loads((out / "metrics.json").read_text())["n_records"] == 6
    assert not list(out.glob(".*.part"))  # no temporary file left behind


def test_report_files_are_whole_or_the_earlier_ones(tmp_path, monkeypatch):
    """A failing write leaves the earlier run's file whole (not truncated), and the error says it is the earlier
    run's."""
    from synthdetect.evaluate import report
    from synthdetect.evaluate.report import ReportNotWritten

    (tmp_path / "report.html").write_text("<html>earlier run</html>")
    monkeypatch.setattr(report, "render_html", lambda *a, **k: "<html>" + "x" * 10_000)

    def full_disk(stream_write):
        def write(text):
            stream_write(text[:100])
            raise OSError(28, "No space left on device")
        return write

    real_open = open

    def opening(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        if "report.html" in str(path):
            handle.write = full_disk(handle.write)
        return handle

    monkeypatch.setattr("builtins.open", opening)
    with pytest.raises(ReportNotWritten) as caught:
        write_report(_predictions([1, 0], [0.8, 0.3]), tmp_path)
    monkeypatch.undo()
    assert str(caught.value) == (f"{tmp_path / 'report.html'}: could not write it (No space left on device); this "
                                 f"run wrote predictions.csv and metrics.json to {tmp_path}; report.html there is an "
                                 "earlier run's")
    assert isinstance(caught.value, OSError)  # callers that catch OSError (autopilot, distill) still do
    assert (tmp_path / "report.html").read_text() == "<html>earlier run</html>"
    assert not list(tmp_path.glob(".*.part"))


# ---------------------------------------------------------------------------------------------- Ctrl-C and SIGTERM


@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt(), 130), (KeyboardInterrupt(signal.SIGTERM), 143)])
def test_ctrl_c_or_sigterm_while_judging_says_how_far_it_got(setup, tmp_path, monkeypatch, interrupt, code):
    """Ctrl-C ended the run with no word (click's "Aborted!" at best) and exit 1; SIGTERM killed it silently."""
    manifest, model = setup
    _interrupt_on_read(monkeypatch, after=2, interrupt=interrupt)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(out), "--batch-size", "2",
                                      "--no-evidence"])
    assert result.exit_code == code, result.output
    _one_line(result.output, f"error: interrupted while judging (evaluate): 2 of 6 images judged; this run wrote "
                             f"predictions.partial.csv to {out} (the rows of the 2 images judged; partial: no "
                             f"metrics, no report)")


def test_ctrl_c_while_writing_names_what_this_run_wrote_and_what_is_older(tmp_path, monkeypatch):
    from synthdetect.evaluate import report
    from synthdetect.evaluate.report import ReportInterrupted

    (tmp_path / "report.html").write_text("earlier")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_html", interrupted)
    with pytest.raises(ReportInterrupted) as caught:
        write_report(_predictions([1, 0], [0.8, 0.3]), tmp_path)
    assert caught.value.message == (f"interrupted while writing the report: this run wrote predictions.csv and "
                                    f"metrics.json to {tmp_path}; report.html there is an earlier run's (each file "
                                    "whole)")
    assert (tmp_path / "report.html").read_text() == "earlier"


def test_compare_interrupted_names_the_finished_reports_and_writes_no_comparison(setup, tmp_path, monkeypatch):
    manifest, model = setup
    other = write_tiny_cnn(tmp_path / "tiny2", seed=1)
    from synthdetect.api import Detector

    real, batches = Detector.detect, [0]

    def detect(self, *args, **kwargs):  # batches of 3: two for the first model, then the second model's second
        batches[0] += 1
        if batches[0] == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", detect)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(model), "-m", str(other), "-o", str(out),
                                      "--batch-size", "3"])
    assert result.exit_code == 130, result.output
    _one_line(result.output, f"error: interrupted while judging ({other}): 3 of 6 images judged; finished reports "
                             f"under {out / 'models'}: {model}; no comparison was written to {out}")
    assert not (out / "comparison.json").exists()


# ---------------------------------------------------------------------------------------------- compare


def test_compare_says_what_was_not_scored_and_fails_when_no_model_judged_anything(setup, tmp_path):
    """A data set no model could read was an exit 0 with a table of dashes and not one warning."""
    _, model = setup
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"not an image")
    manifest = write_manifest_rows(tmp_path, [{"path": "a.png", "label": "ai", "source": "", "generator": ""},
                                              {"path": "b.png", "label": "real", "source": "", "generator": ""}])
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(model), "-o", str(out)])
    assert result.exit_code == 3, result.output
    _one_line(result.output, f"warning: {model}: 2 of 2 images were not scored (see {out}/models/")
    _one_line(result.output, "error: none of the 2 images could be judged by any model")
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["models"][0]["n_judged"] == 0 and summary["models"][0]["n_unscored"] == 2


def test_compare_refuses_a_folder_where_a_comparison_file_goes_before_any_model_runs(setup, tmp_path, monkeypatch):
    manifest, model = setup
    (tmp_path / "cmp" / "comparison.md").mkdir(parents=True)
    from synthdetect.api import Detector

    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, *a, **k: pytest.fail("loaded before refusing")))
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(model), "-o", str(tmp_path / "cmp")])
    assert result.exit_code == 2, result.output
    _one_line(result.output, f"error: {tmp_path / 'cmp' / 'comparison.md'}: is a folder")


def test_a_comparison_file_that_cannot_be_written_names_it_and_what_was_written(tmp_path):
    from synthdetect.evaluate.compare import write_comparison
    from synthdetect.evaluate.report import ReportNotWritten

    summary = {"n_records": 2, "n_ai": 1, "n_human": 1, "data": "d", "use_evidence": False, "table": [],
               "agreement": {"models": [], "agreement": [], "n_both_scored": []}, "models": []}
    (tmp_path / "comparison.md").mkdir()
    with pytest.raises(ReportNotWritten) as caught:
        write_comparison(summary, tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'comparison.md'}: could not write it (Is a directory); this run "
                                 f"wrote comparison.json and comparison.csv there; the per-model reports are under "
                                 f"{tmp_path / 'models'}")


# ---------------------------------------------------------------------------------------------- names, one-class data


def test_a_file_name_with_a_newline_or_an_escape_stays_on_one_warning_line(setup, tmp_path):
    """A name from the data was printed raw: a newline split the warning, an escape sequence reached the terminal."""
    _, model = setup
    for folder in ("ai", "human"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    from synth_data import encode, make_image

    (tmp_path / "data" / "ai" / "a.png").write_bytes(encode(make_image(1, 1)))
    (tmp_path / "data" / "human" / "h.png").write_bytes(encode(make_image(0, 2)))
    (tmp_path / "data" / "ai" / "bad\x1b[2J\nx.png").write_bytes(b"junk")
    result = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "data"), "-o", str(tmp_path / "r"),
                                      "--no-evidence"])
    assert result.exit_code == 0, result.output
    _one_line(result.output, "bad\\x1b[2J\\nx.png: not an image")


def test_one_class_data_says_why_it_has_no_roc_auc(setup, tmp_path):
    """ROC-AUC, AP and TPR at FPR were a bare "–" in the table, the page and null in metrics.json, with no reason."""
    manifest, model = setup
    only_ai = write_manifest(tmp_path / "ai", {"s1": (3, 0)}, size=24)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(only_ai), "-o", str(tmp_path / "r"),
                                      "--no-evidence"])
    assert result.exit_code == 0, result.output
    _one_line(result.output, "ROC-AUC, AP, TPR@1%FPR, TPR@5%FPR: – (needs both classes; all 3 scored images are AI)")
    overall = json.loads((tmp_path / "r" / "metrics.json").read_text())["overall"]
    assert overall["undefined"]["roc_auc"] == "needs both classes; all 3 scored images are AI"
    assert overall["roc_auc"] is None and overall["tpr_at_fpr_0.05"] is None
    page = (tmp_path / "r" / "report.html").read_text()
    assert "ROC-AUC<b>–</b><span class='note'>needs both classes; all 3 scored images are AI</span>" in page


# ---------------------------------------------------------------------------------------------- many sources, many images


def test_per_group_roc_auc_matches_scikit_learn_with_ties():
    from synthdetect.evaluate.metrics import auc_against, group_metrics

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    p = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 1)  # rounded: many ties
    m = group_metrics(p, y)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["accuracy"] == skm.accuracy_score(y, (p >= 0.5).astype(int))
    assert auc_against(p[y == 1][:7], np.sort(p[y == 0])) == pytest.approx(
        skm.roc_auc_score(np.r_[np.ones(7), np.zeros((y == 0).sum())], np.r_[p[y == 1][:7], p[y == 0]]), abs=1e-12)


def test_many_sources_cost_one_full_metric_computation_not_one_each(monkeypatch):
    """Each per-source and per-generator row ran the whole binary_metrics (operating points, exact intervals,
    scikit-learn's validation): 2,000 sources of 10 images took 35 s; now 2.6 s, with the same numbers."""
    from synthdetect.evaluate import report

    rng = np.random.default_rng(0)
    n, groups = 600, 149  # odd: every group gets both classes
    y = np.tile([0, 1], n // 2)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    predictions = _predictions(y, p, sources=[f"src{i % groups}" for i in range(n)])
    calls = []
    real = report.binary_metrics
    monkeypatch.setattr(report, "binary_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = compute_metrics(predictions)
    assert len(calls) == 1  # the overall row only
    row = metrics["per_source"][0]
    idx = [i for i in range(n) if predictions.records[i].source == row["group"]]
    assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y[idx], p[idx]), abs=1e-12)
    gen = next(r for r in metrics["per_generator"] if r["group"] == "g-src1")
    gen_idx = [i for i in range(n) if predictions.records[i].generator == "g-src1"]
    assert gen["roc_auc_vs_all_human"] == pytest.approx(
        skm.roc_auc_score(np.r_[np.ones(len(gen_idx)), np.zeros((y == 0).sum())], np.r_[p[gen_idx], p[y == 0]]),
        abs=1e-12)


def test_the_calibrated_ece_floor_holds_bounded_memory_and_the_same_numbers(monkeypatch):
    """ece_if_calibrated drew one 500 x n matrix: 0.44 GB at 100,000 images, 0.9 GB at 200,000, at the very end of
    a long run (the bootstrap beside it had been bounded already)."""
    from synthdetect.evaluate import metrics
    from synthdetect.evaluate.metrics import ece_if_calibrated

    rng = np.random.default_rng(0)
    p = rng.random(60_000)
    tracemalloc.start()
    try:
        floor = ece_if_calibrated(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MB"  # one 500 x 60,000 matrix alone is 240 MB
    small = rng.random(500)
    whole = ece_if_calibrated(small)
    monkeypatch.setattr(metrics, "BOOTSTRAP_CELLS", 500 * 7)  # blocks read the same random stream
    assert ece_if_calibrated(small) == whole
    assert 0.0 < floor["mean"] < 0.05


def test_a_routed_model_that_fails_to_load_mid_run_is_one_line(setup, tmp_path, monkeypatch):
    """A router loads each routed model at its first image: one that cannot load ended a run in a traceback."""
    manifest, model = setup
    from synthdetect.api import Detector
    from synthdetect.models import ModelPackageError

    real, batches = Detector.detect, [0]

    def detect(self, *args, **kwargs):
        batches[0] += 1
        if batches[0] == 2:
            raise ModelPackageError("wild-v3: weights.npz is missing")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", detect)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(out), "--batch-size", "3"])
    assert result.exit_code == 2, result.output
    _one_line(result.output, f"error: wild-v3: weights.npz is missing; this run wrote predictions.partial.csv to "
                             f"{out} (the rows of the 3 images judged")  # kept since s26, as on Ctrl-C
    batches[0] = 0
    other = write_tiny_cnn(tmp_path / "tiny2", seed=1)
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(model), "-m", str(other), "-o",
                                      str(tmp_path / "cmp"), "--batch-size", "3"])
    assert result.exit_code == 2, result.output
    _one_line(result.output, "error: wild-v3: weights.npz is missing; no comparison was written to")
