"""``compare`` stopped part way keeps the current model's judged rows; a failed ``--ensemble`` keeps the models'
comparison.  New names are looked up inside each test, so this file also runs (and fails) on the code before them."""

from __future__ import annotations

import csv
import json
import signal

import pytest

from judging_faults import fail_detect_from_batch, run_compare
from synth_data import write_manifest
from tiny_model import write_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare_audit_s26")
    manifest = write_manifest(root / "data", {"s1": (3, 3)}, size=24)
    return manifest, [str(write_tiny_cnn(root / "a", seed=0)), str(write_tiny_cnn(root / "b", seed=1))]





def _slug(model: str) -> str:
    from synthdetect.evaluate.compare import report_slug

    return report_slug(model, set())


@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt(), 130), (KeyboardInterrupt(signal.SIGTERM), 143)])
def test_a_stopped_compare_keeps_the_current_models_judged_rows(setup, tmp_path, monkeypatch, interrupt, code):
    """Before: stopped after 4 of 6 images of the second model, its 4 judged rows were lost (nothing in its folder)."""
    manifest, models = setup
    fail_detect_from_batch(monkeypatch, 3 + 2 + 1, interrupt)  # model a: 3 batches; model b: 2 of 3
    out = tmp_path / "r"
    result = run_compare(manifest, models, out)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    second = out / "models" / _slug(models[1])
    assert "4 of 6 images judged" in line and f"this run wrote predictions.partial.csv to {second} (the rows" in line
    assert "no comparison was written" in line, line
    rows = list(csv.DictReader((second / "predictions.partial.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and all(r["perturbation"] == "none" and r["p_ai"] for r in rows)
    assert not any((second / name).exists() for name in ("predictions.csv", "metrics.json", "report.html"))
    assert (out / "models" / _slug(models[0]) / "report.html").is_file()  # the finished model's report stays
    assert not any((out / name).exists() for name in ("comparison.csv", "comparison.json", "comparison.html"))


def test_a_stop_before_any_image_is_judged_writes_no_partial_file(setup, tmp_path, monkeypatch):
    manifest, models = setup
    fail_detect_from_batch(monkeypatch, 1, KeyboardInterrupt())
    out = tmp_path / "r"
    result = run_compare(manifest, models, out)
    assert result.exit_code == 130, result.output
    assert "0 of 6 images judged" in result.output and "no comparison was written" in result.output
    assert not list(out.rglob("predictions.partial.csv"))


def test_a_finished_model_removes_an_earlier_stopped_runs_partial_file(setup, tmp_path):
    manifest, models = setup
    out = tmp_path / "r"
    folder = out / "models" / _slug(models[0])
    folder.mkdir(parents=True)
    (folder / "predictions.partial.csv").write_text("perturbation,file\n", encoding="utf-8")
    result = run_compare(manifest, models[:1], out)
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").is_file() and not (folder / "predictions.partial.csv").exists()


def test_a_failed_ensemble_keeps_the_models_comparison_and_says_so(setup, tmp_path, monkeypatch):
    """Before: every model was judged and reported, but no comparison.* was written: the table was lost."""
    import synthdetect.evaluate.compare as compare

    def cannot(*args, **kwargs):
        raise ValueError("no model scored images of both classes in the calibration split, so none can be calibrated")

    monkeypatch.setattr(compare, "calibrated_mean", cannot)
    manifest, models = setup
    out = tmp_path / "r"
    result = run_compare(manifest, models, out, "--ensemble", "--calibration-fraction", "0.5")
    assert result.exit_code == 2, result.output  # the ensemble asked for is not there: not a success
    assert "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert "none can be calibrated" in line and f"{out / 'comparison.html'}" in line and "without an ensemble" in line
    summary = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert [row["model"] for row in summary["table"]] == models and "ensemble" not in summary
    assert "none can be calibrated" in summary["ensemble_not_written"]
    assert "No ensemble" in (out / "comparison.md").read_text(encoding="utf-8")
    assert "No ensemble" in (out / "comparison.html").read_text(encoding="utf-8")
    assert not (out / "ensemble").exists()
