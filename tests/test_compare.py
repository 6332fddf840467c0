"""``synthdetect compare``: several models on one dataset, reports, side-by-side table, agreement, ensemble."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synth_data import write_folder
from synthdetect.cli import app
from synthdetect.evaluate.compare import (
    ENSEMBLE_NAME, agreement_matrix, calibrated_mean, calibration_split, compare_models,
)
from synthdetect.train.datasets import open_dataset


class EdgeEnergy(torch.nn.Module):
    """Two logits (human, ai) from mean neighbour difference: the synthetic AI class has a fine checkerboard."""

    def __init__(self, scale: float, centre: float):
        super().__init__()
        self.scale, self.centre = scale, centre

    def forward(self, x):
        energy = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
        ai = self.scale * (energy - self.centre)
        return torch.stack([torch.zeros_like(ai), ai], dim=1)


def export(module: torch.nn.Module, path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.rand(1, 3, 24, 24),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    path.with_name(path.name + ".json").write_text(json.dumps({"input": {"size": 24}, "labels": ["human", "ai"]}))
    return f"onnx:{path}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = write_folder(root / "data", n_per_class=20)
    sharp = export(EdgeEnergy(40.0, 0.15), root / "sharp.onnx")  # confident and well centred
    timid = export(EdgeEnergy(3.0, 0.33), root / "timid.onnx")  # under-confident, calls AI human
    return {"data": data, "models": [sharp, timid], "root": root}


def test_compare_writes_reports_table_and_agreement(setup, tmp_path):
    records = open_dataset(setup["data"])
    summary = compare_models(setup["models"], records, tmp_path / "out", data_name="synthetic", progress=False)
    out = tmp_path / "out"
    for name in ("comparison.json", "comparison.csv", "comparison.md", "comparison.html"):
        assert (out / name).is_file()
    reports = [out / m["report"] for m in summary["models"]]
    assert len(reports) == 2 and all(r.is_file() and (r.parent / "metrics.json").is_file() for r in reports)
    assert len({r.parent for r in reports}) == 2
    rows = summary["table"]
    assert [r["model"] for r in rows] == setup["models"] and all(r["split"] == "all" for r in rows)
    for row, report in zip(rows, reports):  # the table repeats the per-model report's numbers
        overall = json.loads((report.parent / "metrics.json").read_text())["overall"]
        for key in ("accuracy", "roc_auc", "tpr_at_fpr_0.05", "ece"):
            assert row[key] == pytest.approx(overall[key])
        assert row["n"] == row["scored"] == 40 and row["images_per_s"] > 0
    assert rows[0]["roc_auc"] == 1.0  # the checkerboard is trivially separable by edge energy
    agreement = summary["agreement"]
    assert agreement["agreement"][0][0] == agreement["agreement"][1][1] == 1.0
    assert agreement["agreement"][0][1] == agreement["agreement"][1][0]
    assert agreement["agreement"][0][1] < 1.0  # the timid model calls some AI images human at 0.5
    with open(out / "comparison.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_agreement_counts_only_images_both_scored():
    a = np.array([0.9, 0.2, np.nan, 0.7])
    b = np.array([0.8, 0.6, 0.1, np.nan])
    m = agreement_matrix(["a", "b"], [a, b])
    assert m["n_both_scored"][0][1] == 2 and m["agreement"][0][1] == 0.5


def test_ensemble_is_the_mean_of_platt_calibrated_models_fitted_on_the_calibration_split():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    p1 = np.clip(0.5 + 0.45 * (labels - 0.5) * 2 * rng.random(100), 0.001, 0.999)
    p2 = np.clip(rng.random(100) * 0.5 + 0.3 * labels, 0.001, 0.999)
    p2[3] = np.nan  # a model that could not score one image
    calib = np.zeros(100, bool)
    calib[::3] = True
    mean, fitted = calibrated_mean([p1, p2], labels, calib)
    expected = []
    for p in (p1, p2):
        use = calib & ~np.isnan(p)
        z = np.log(p / (1 - p))
        x, y = z[use].reshape(-1, 1), labels[use]
        if y[x[:, 0] > 0].all() and not y[x[:, 0] < 0].any():
            # p1 separates the classes: no finite plain fit exists, so Platt's smoothed targets are fitted,
            # i.e. each image once as AI with weight t and once as human with weight 1 - t
            t = np.where(y == 1, (y.sum() + 1) / (y.sum() + 2), 1 / ((1 - y).sum() + 2))
            lr = LogisticRegression(C=1e6, max_iter=1000, tol=1e-10).fit(
                np.vstack([x, x]), np.r_[np.ones_like(y), np.zeros_like(y)], sample_weight=np.r_[t, 1 - t])
        else:
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)
        expected.append(lr.predict_proba(np.nan_to_num(z).reshape(-1, 1))[:, 1])
    reference = (expected[0] + expected[1]) / 2
    reference[3] = expected[0][3]  # only the model that scored it
    assert np.allclose(mean, reference, atol=1e-4)
    assert [f["fitted_on"] for f in fitted] == [34, 33]
    assert [f["fit"]["separable"] for f in fitted] == [True, False]


def test_a_model_that_cannot_be_calibrated_is_left_out_of_the_ensemble():
    labels = np.repeat([0, 1], 10)
    scored = np.where(labels == 1, 0.8, 0.3) + np.linspace(-0.1, 0.1, 20)
    silent = np.full(20, np.nan)  # e.g. a router that answered "uncertain" for every image
    calib = np.zeros(20, bool)
    calib[::2] = True
    mean, fitted = calibrated_mean([scored, silent], labels, calib)
    assert "excluded" in fitted[1] and "fitted_on" in fitted[0]
    alone, _ = calibrated_mean([scored], labels, calib)
    assert np.allclose(mean, alone)
    with pytest.raises(ValueError, match="none can be calibrated"):
        calibrated_mean([silent], labels, calib)


def test_calibration_split_is_stratified_and_reproducible():
    records = [type("R", (), {"label": i % 2})() for i in range(40)]
    mask = calibration_split(records, 0.25, seed=1)
    assert mask.sum() == 10 and sum(r.label for r, m in zip(records, mask) if m) == 5
    assert np.array_equal(mask, calibration_split(records, 0.25, seed=1))
    with pytest.raises(ValueError, match="between 0 and 1"):
        calibration_split(records, 1.0, seed=1)


def test_cli_compare_with_ensemble(setup, tmp_path):
    out = tmp_path / "report"
    args = ["compare", str(setup["data"]), "-o", str(out), "--ensemble", "--calibration-fraction", "0.5"]
    for model in setup["models"]:
        args += ["--model", model]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ensemble" in result.stdout and "agreement" in result.stdout
    summary = json.loads((out / "comparison.json").read_text())
    held = [r for r in summary["table"] if r["split"] != "all"]
    assert [r["model"] for r in held] == [*setup["models"], ENSEMBLE_NAME]
    assert all(r["n"] == 20 for r in held)  # 50% of 40 held out from calibration
    assert summary["ensemble"]["calibration_split"] == {"fraction": 0.5, "seed": 0, "stratified_by": "class",
                                                        "n": 20, "evaluated_on": 20}
    ensemble = held[-1]
    assert ensemble["roc_auc"] == 1.0
    assert ensemble["ece"] < held[1]["ece"]  # calibration repairs the timid model's lean
    assert (out / "ensemble" / "report.html").is_file() and (out / "ensemble" / "metrics.json").is_file()


def test_cli_compare_bad_model_fails_fast_with_one_line(setup, tmp_path):
    result = CliRunner().invoke(app, ["compare", str(setup["data"]), "-o", str(tmp_path / "r"),
                                      "--model", setup["models"][0], "--model", f"onnx:{tmp_path}/missing.onnx"])
    assert result.exit_code == 2
    assert "missing.onnx: file not found" in result.output
    assert not (tmp_path / "r" / "models").exists()  # nothing was run before the bad name was found


def test_a_pipe_in_a_model_name_stays_inside_its_markdown_cell():
    """``onnx:/m|v2.onnx`` ended the model cell early and shifted every number one column right in comparison.md."""
    import re

    from synthdetect.evaluate.compare import TABLE_COLUMNS, markdown_agreement, markdown_table

    row = {"model": "onnx:/m|v2.onnx", "split": "all", "n": 4, "scored": 4, "accuracy": 0.5}
    lines = markdown_table([row]).splitlines()
    cells = lambda line: re.split(r"(?<!\\)\|", line.strip())[1:-1]  # noqa: E731 - split on unescaped pipes
    assert len(cells(lines[2])) == len(TABLE_COLUMNS) and cells(lines[2])[0].strip() == r"onnx:/m\|v2.onnx"
    agreement = {"models": ["a|b", "c"], "agreement": [[1.0, 0.5], [0.5, 1.0]], "n_both_scored": [[4, 4], [4, 4]]}
    assert all(len(cells(line)) == 3 for line in markdown_agreement(agreement).splitlines())


def test_an_inverted_calibration_is_said_in_the_markdown_and_html_not_only_the_json(setup, tmp_path):
    """A model that ranks the calibration split backwards is flattened to one constant p_ai; comparison.json
    recorded ``inverted`` but comparison.md and .html, which people read, did not say it."""
    backwards = export(EdgeEnergy(-40.0, 0.15), setup["root"] / "backwards.onnx")
    records = open_dataset(setup["data"])
    summary = compare_models([setup["models"][0], backwards], records, tmp_path / "out", data_name="synthetic",
                             progress=False, ensemble=True, calibration_fraction=0.5)
    warning = summary["ensemble"]["calibration_warnings"][backwards]
    assert warning.startswith("the model ranks the validation images backwards")
    assert f"Calibration of {backwards}: {warning}." in (tmp_path / "out" / "comparison.md").read_text()
    assert "ranks the validation images backwards" in (tmp_path / "out" / "comparison.html").read_text()
