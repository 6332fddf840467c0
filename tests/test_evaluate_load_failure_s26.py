"""A routed model that cannot load part way through ``evaluate`` or ``compare`` (a router loads each route's model at
its first image) keeps the rows judged before it as ``predictions.partial.csv``, as Ctrl-C does; exit 2 as before."""

from __future__ import annotations

import csv

import pytest

from judging_faults import fail_detect_from_batch, run_compare, run_evaluate
from synth_data import write_manifest
from synthdetect.models import ModelPackageError
from tiny_model import write_tiny_cnn

MESSAGE = "wild-v3: weights.npz is missing"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("load_failure_s26")
    manifest = write_manifest(root / "data", {"s1": (3, 3)}, size=24)
    return manifest, [str(write_tiny_cnn(root / "a", seed=0)), str(write_tiny_cnn(root / "b", seed=1))]


def _error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def _partial_rows(folder) -> list[dict]:
    return list(csv.DictReader((folder / "predictions.partial.csv").open(encoding="utf-8")))


REPORT = ("predictions.csv", "metrics.json", "report.html")


def test_evaluate_keeps_the_rows_judged_before_a_model_failed_to_load(setup, tmp_path, monkeypatch):
    """Before: "error: wild-v3: weights.npz is missing; this run wrote nothing to OUT" and the 4 judged rows lost."""
    manifest, models = setup
    fail_detect_from_batch(monkeypatch, 3, ModelPackageError(MESSAGE))
    out = tmp_path / "r"
    result = run_evaluate(manifest, models[0], out)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert line.startswith(f"error: {MESSAGE}; this run wrote predictions.partial.csv to {out} (the rows of the 4 "
                           "images judged; partial: no metrics, no report)"), line
    rows = _partial_rows(out)
    assert len(rows) == 4 and all(r["perturbation"] == "none" and r["p_ai"] for r in rows)
    assert not any((out / name).exists() for name in REPORT)


def test_evaluate_keeps_the_unperturbed_run_when_a_perturbed_one_fails_to_load(setup, tmp_path, monkeypatch):
    """A router may send a perturbed image (e.g. re-encoded as JPEG) to a route not used before."""
    manifest, models = setup
    # unperturbed: 3 batches; jpeg: 1 judged, then the failure
    fail_detect_from_batch(monkeypatch, 3 + 2, ModelPackageError(MESSAGE))
    out = tmp_path / "r"
    result = run_evaluate(manifest, models[0], out, "--perturb", "jpeg:75")
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert MESSAGE in line and f"this run wrote predictions.partial.csv to {out}" in line, line
    rows = _partial_rows(out)
    assert [r["perturbation"] for r in rows] == ["none"] * 6 + ["jpeg:75"] * 2
    assert not any((out / name).exists() for name in REPORT)


def test_evaluate_failing_at_the_first_batch_writes_no_partial_file(setup, tmp_path, monkeypatch):
    manifest, models = setup
    fail_detect_from_batch(monkeypatch, 1, ModelPackageError(MESSAGE))
    out = tmp_path / "r"
    result = run_evaluate(manifest, models[0], out)
    assert result.exit_code == 2, result.output
    assert _error_line(result.output) == f"error: {MESSAGE}; this run wrote nothing to {out}"
    assert not (out / "predictions.partial.csv").exists()


def test_compare_keeps_the_current_models_rows_judged_before_it_failed_to_load(setup, tmp_path, monkeypatch):
    """Before: "...; no comparison was written to OUT" and the second model's 2 judged rows lost."""
    from synthdetect.evaluate.compare import report_slug

    manifest, models = setup
    # model a: 3 batches; model b: 1 judged, then the failure
    fail_detect_from_batch(monkeypatch, 3 + 2, ModelPackageError(MESSAGE))
    out = tmp_path / "r"
    result = run_compare(manifest, models, out)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    second = out / "models" / report_slug(models[1], set())
    assert line.startswith(f"error: {MESSAGE}; "), line
    assert f"no comparison was written to {out}; this run wrote predictions.partial.csv to {second} (the rows" in line
    rows = _partial_rows(second)
    assert len(rows) == 2 and all(r["perturbation"] == "none" and r["p_ai"] for r in rows)
    assert not any((second / name).exists() for name in REPORT)
    assert (out / "models" / report_slug(models[0], set()) / "report.html").is_file()
    assert not any((out / name).exists() for name in ("comparison.csv", "comparison.json", "comparison.html"))
