"""Evaluation through the Detector: metrics.json, a self-contained report.html, perturbation sweeps, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synth_data import make_image, write_manifest
from synthdetect.api import Detector
from synthdetect.cli import app
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.evaluate.perturb import parse_perturbations
from synthdetect.evaluate.report import predict_records, worst_errors, write_report
from synthdetect.train.datasets import open_dataset
from tiny_model import write_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    manifest = write_manifest(root / "data", {"s1": (6, 5), "s2": (4, 7)}, size=24, broken=1)
    model = write_tiny_cnn(root / "tiny")
    return manifest, model


def test_predict_records_goes_through_the_detector_and_survives_bad_files(setup):
    manifest, model = setup
    records = open_dataset(manifest)
    detector = Detector.load(str(model), use_evidence=False)
    predictions = predict_records(detector, records, batch_size=5, progress=False)
    broken = [i for i, r in enumerate(records) if "broken" in r.ref]
    assert np.isnan(predictions.p_ai[broken]).all() and all(predictions.errors[i] for i in broken)
    ok = [i for i in range(len(records)) if i not in broken]
    direct = detector.detect([r.ref for r in (records[i] for i in ok)])
    assert np.allclose(predictions.p_ai[ok], [v.p_ai for v in direct])
    assert [predictions.verdicts[i] for i in ok] == [v.label for v in direct]
    assert predictions.model_name == "tiny-cnn" and predictions.images[ok[0]]["format"] == "PNG"


def test_write_report_metrics_and_self_contained_html(setup, tmp_path: Path):
    manifest, model = setup
    records = open_dataset(manifest)
    detector = Detector.load(str(model), use_evidence=False)
    predictions = predict_records(detector, records, progress=False)
    jpeg = parse_perturbations("jpeg:50")[0]
    perturbed = {"jpeg:50": predict_records(detector, records, transform=jpeg, progress=False)}
    metrics = write_report(predictions, tmp_path, title="tiny test", perturbations=perturbed)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n_records"] == len(records) and saved["n_unscored"] == 1
    ok = predictions.scored
    expected = binary_metrics(predictions.p_ai[ok], predictions.labels[ok])
    for key in ("accuracy", "roc_auc", "average_precision", "ece", "loss", "tpr_at_fpr_0.01", "tpr_at_fpr_0.05"):
        assert saved["overall"][key] == pytest.approx(expected[key])
    assert [row["group"] for row in saved["per_source"]] == ["broken", "s1", "s2"]
    assert saved["per_source"][1]["n"] == 11 and saved["per_source"][1]["ai"] == 6
    assert {row["class"] for row in saved["per_class_format"]} == {"ai", "human"}
    assert [row["perturbation"] for row in saved["robustness_table"]] == ["none", "jpeg:50"]
    assert metrics["overall"] == saved["overall"]
    page = (tmp_path / "report.html").read_text()
    assert "tiny test" in page and "Robustness sweep" in page and "Per generator" in page
    # self-contained: every image inline, nothing fetched from anywhere
    sources = re.findall(r"src=['\"]([^'\"]+)", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=['\"]?(https?:)?//", page)
    assert page.count("<figure>") == len(worst_errors(predictions))


def test_worst_errors_are_the_most_confident_mistakes(setup):
    manifest, model = setup
    records = open_dataset(manifest)[:4]
    from synthdetect.evaluate.report import Predictions

    p = Predictions(records=records, p_ai=np.array([0.9, 0.2, np.nan, 0.6]), labels=np.array([0, 0, 1, 0]),
                    errors=[None, None, "x", None], model_name="m", seconds=0.0)
    assert worst_errors(p) == [0, 3]
    # a served "ai" verdict on a human image leads the gallery even when its score is below 0.5
    p.p_ai, p.verdicts = np.array([0.9, 0.45, np.nan, 0.6]), ["uncertain", "ai", None, "uncertain"]
    assert worst_errors(p) == [1, 0, 3]


@pytest.mark.parametrize("spec,check", [
    ("jpeg:70", lambda im, orig: im.format == "JPEG" and im.size == orig.size),
    ("webp:80", lambda im, orig: im.format == "WEBP"),
    ("resize:0.5", lambda im, orig: im.size == (orig.width // 2, orig.height // 2)),
    ("crop:0.5", lambda im, orig: im.size == (orig.width // 2, orig.height // 2)),
    ("blur:2.0", lambda im, orig: im.format == "PNG" and im.size == orig.size),
    ("noise:5", lambda im, orig: im.format == "PNG"),
])
def test_perturbations_rewrite_the_file(spec, check):
    import io

    original = make_image(1, seed=3, size=40)
    buffer = io.BytesIO()
    original.save(buffer, format="PNG")
    (perturbation,) = parse_perturbations(spec)
    out = perturbation(buffer.getvalue())
    assert out != buffer.getvalue()
    assert check(Image.open(io.BytesIO(out)), original)


def test_parse_perturbations_rejects_nonsense():
    with pytest.raises(ValueError, match="unknown perturbation 'rotate'"):
        parse_perturbations("rotate:10")
    with pytest.raises(ValueError, match="jpeg must be between"):
        parse_perturbations("jpeg:500")
    assert [p.name for p in parse_perturbations("jpeg:90, resize:0.5")] == ["jpeg:90", "resize:0.5"]


def test_evaluate_and_dataset_summary_cli(setup, tmp_path: Path):
    manifest, model = setup
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r"),
                                 "--perturb", "jpeg:70,resize:0.5", "--source", "s1", "--no-evidence"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["n_records"] == 11 and len(saved["robustness_table"]) == 3
    assert "jpeg:70" in result.output and (tmp_path / "r" / "report.html").is_file()
    result = runner.invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r2"), "--source", "zz"])
    assert result.exit_code == 2 and "unknown source" in result.output
    result = runner.invoke(app, ["dataset", "summary", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["records"] == 23 and summary["unreadable_count"] == 1
    assert set(summary["per_source"]) == {"broken", "s1", "s2"}


def test_evaluate_refuses_a_file_as_out_and_names_missing_sources(setup, tmp_path: Path):
    from synth_data import write_folder

    manifest, model = setup
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "afile")])
    assert result.exit_code == 2 and f"error: {tmp_path / 'afile'}: exists and is a file, not a directory" in result.output
    folders = write_folder(tmp_path / "f", n_per_class=2)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(folders), "-o", str(tmp_path / "r"), "--source", "x"])
    assert result.exit_code == 2 and "None" not in result.output
    assert "the data records no sources; --source needs a CSV manifest with a 'source' column" in " ".join(result.output.split())
