"""``evaluate`` stopped part way (Ctrl-C, SIGTERM) keeps the rows it judged, and its accuracy says its threshold.

New names are imported inside each test, so this file also runs (and fails test by test) on the code before them.
"""

from __future__ import annotations

import csv
import signal

import pytest

from judging_faults import fail_detect_from_batch, run_evaluate
from synth_data import write_manifest
from tiny_model import write_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_s26")
    manifest = write_manifest(root / "data", {"s1": (3, 3)}, size=24)
    return manifest, write_tiny_cnn(root / "tiny")





@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt(), 130), (KeyboardInterrupt(signal.SIGTERM), 143)])
def test_a_stopped_evaluation_keeps_the_rows_it_judged_as_a_partial_file(setup, tmp_path, monkeypatch, interrupt,
                                                                          code):
    """Before: Ctrl-C after 4 of 6 images said "4 of 6 images judged; this run wrote nothing" and left nothing."""
    manifest, model = setup
    fail_detect_from_batch(monkeypatch, 3, interrupt)
    out = tmp_path / "r"
    result = run_evaluate(manifest, model, out)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert "4 of 6 images judged" in line and f"this run wrote predictions.partial.csv to {out} (the rows" in line, line
    rows = list(csv.DictReader((out / "predictions.partial.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and all(r["perturbation"] == "none" and r["p_ai"] for r in rows)
    # nothing that reads as a finished run
    assert not any((out / name).exists() for name in ("predictions.csv", "metrics.json", "report.html"))


def test_a_sweep_stopped_in_a_perturbation_keeps_both_runs_rows(setup, tmp_path, monkeypatch):
    manifest, model = setup
    fail_detect_from_batch(monkeypatch, 5, KeyboardInterrupt())  # 3 batches unperturbed, 1 of jpeg:70
    out = tmp_path / "r"
    result = run_evaluate(manifest, model, out, "--perturb", "jpeg:70")
    assert result.exit_code == 130, result.output
    assert "interrupted while judging (jpeg:70): 2 of 6 images judged" in result.output
    rows = list(csv.DictReader((out / "predictions.partial.csv").open(encoding="utf-8")))
    assert [r["perturbation"] for r in rows] == ["none"] * 6 + ["jpeg:70"] * 2
    assert not (out / "metrics.json").exists()


def test_partial_rows_keep_the_spreadsheet_formula_guard(tmp_path):
    from synthdetect.evaluate.report import write_partial_predictions

    import numpy as np

    from synthdetect.evaluate.report import Predictions
    from synthdetect.train.datasets import Record

    records = [Record(ref="=HYPERLINK(1).png", label=1, source="+s", generator=None)]
    pred = Predictions(records=records, p_ai=np.array([0.7]), labels=np.array([1]), errors=[None], model_name="m",
                       seconds=0.0, verdicts=["ai"], images=[{}])
    written, said = write_partial_predictions(tmp_path, {"none": pred})
    assert written == ["predictions.partial.csv"] and "1 image judged" in said
    row = next(csv.DictReader((tmp_path / "predictions.partial.csv").open(encoding="utf-8")))
    assert row["file"] == "'=HYPERLINK(1).png" and row["source"] == "'+s"


def test_a_partial_file_that_cannot_be_written_says_so_in_the_same_line(tmp_path):
    import numpy as np

    from synthdetect.evaluate.report import Predictions, write_partial_predictions
    from synthdetect.train.datasets import Record

    (tmp_path / "predictions.partial.csv").mkdir()  # a folder in the way
    pred = Predictions(records=[Record(ref="a.png", label=0)], p_ai=np.array([0.2]), labels=np.array([0]),
                       errors=[None], model_name="m", seconds=0.0, verdicts=["human"], images=[{}])
    written, said = write_partial_predictions(tmp_path, {"none": pred})
    assert written == [] and said.startswith(f" ({tmp_path / 'predictions.partial.csv'} could not be written: ") and "\n" not in said


def test_nothing_judged_writes_no_partial_file(tmp_path):
    from synthdetect.evaluate.report import write_partial_predictions

    assert write_partial_predictions(tmp_path / "r", {}) == ([], "")
    assert not (tmp_path / "r").exists()


def test_a_finished_run_removes_an_earlier_stopped_runs_partial_file(setup, tmp_path):
    manifest, model = setup
    out = tmp_path / "r"
    out.mkdir()
    (out / "predictions.partial.csv").write_text("perturbation,file\n", encoding="utf-8")
    result = run_evaluate(manifest, model, out)
    assert result.exit_code == 0, result.output
    assert (out / "predictions.csv").is_file() and not (out / "predictions.partial.csv").exists()


def test_the_accuracy_headline_says_its_threshold(setup, tmp_path):
    """Before: the terminal table's column read "accuracy", beside served verdicts that use other thresholds."""
    manifest, model = setup
    out = tmp_path / "r"
    result = run_evaluate(manifest, model, out, "--perturb", "jpeg:70")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "ROC-AUC" in line and "ECE" in line)
    assert "accuracy @0.5" in header, result.stdout
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>accuracy</th>" not in page and "<th>accuracy @0.5</th>" in page  # robustness and per-source tables


def test_the_interval_line_says_the_threshold_too():
    from synthdetect.evaluate.commands import summary_lines

    lines = summary_lines({"overall": {"ci95": {"roc_auc": [0.5, 0.9], "accuracy": [0.4, 0.8], "ece": [0.0, 0.1]},
                                       "ece_bins": 10, "n": 500}})
    assert any("accuracy @0.5 [0.400, 0.800]" in line for line in lines), lines
