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


def _fake_predictions(tmp_path: Path):
    from synthdetect.evaluate.report import Predictions
    from synthdetect.train.datasets import Record

    rng = np.random.default_rng(0)
    records, p, verdicts = [], [], []
    plan = [("mixed", 1, "gen-a", 30), ("mixed", 0, None, 30), ("only-ai", 1, "gen-b", 10), ("only-human", 0, None, 12)]
    for source, label, generator, count in plan:
        for _ in range(count):
            records.append(Record(ref=str(tmp_path / f"{source}_{len(records)}.png"), label=label, source=source,
                                  generator=generator))
            score = float(np.clip(rng.normal(0.7 if label else 0.3, 0.2), 0, 1))
            p.append(score)
            verdicts.append("ai" if score >= 0.8 else "human" if score < 0.2 else "uncertain")
    return Predictions(records=records, p_ai=np.array(p), labels=np.array([r.label for r in records]),
                       errors=[None] * len(records), model_name="m", seconds=0.0, verdicts=verdicts,
                       images=[{} for _ in records])


def test_metrics_carry_intervals_and_the_fpr_really_measured(tmp_path: Path):
    from synthdetect.evaluate.metrics import ECE_BINS

    predictions = _fake_predictions(tmp_path)
    metrics = write_report(predictions, tmp_path / "r")
    overall = metrics["overall"]
    assert overall["ece_bins"] == ECE_BINS and len(metrics["reliability"]) == ECE_BINS
    assert "on fewer than 200 images ECE is mostly noise" in overall["ece_note"]
    assert 0 < overall["ece_if_calibrated"]["mean"] < 0.2
    ci = overall["ci95"]
    for key in ("roc_auc", "accuracy", "ece", "tpr_at_fpr_0.01", "tpr_at_fpr_0.05"):
        assert ci[key][0] <= overall[key] <= ci[key][1], key
    point = overall["at_fpr"]["0.01"]
    assert point["n_human"] == 42 and point["false_positives"] == 0 and "too few human images (42)" in point["note"]
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"ECE ({ECE_BINS} bins)" in page and "FPR achieved" in page and "0 of 42" in page
    assert "Clopper-Pearson" in page and "percentile bootstrap" in page


def test_single_class_groups_show_verdict_shares_not_accuracy(tmp_path: Path):
    from synthdetect.evaluate.report import compute_metrics

    predictions = _fake_predictions(tmp_path)
    metrics = compute_metrics(predictions)
    rows = {r["group"]: r for r in metrics["per_source"]}
    assert rows["mixed"]["roc_auc"] is not None and "note" not in rows["mixed"]
    for name in ("only-ai", "only-human"):
        row = rows[name]
        assert row["accuracy"] is None and row["roc_auc"] is None and row["ece"] is None
        assert "need both classes" in row["note"]
        assert row["called_ai"] + row["called_human"] + row["called_uncertain"] == pytest.approx(1.0)
    idx = [i for i, r in enumerate(predictions.records) if r.source == "only-ai"]
    assert rows["only-ai"]["called_ai"] == pytest.approx(np.mean([predictions.verdicts[i] == "ai" for i in idx]))
    generators = {r["group"]: r for r in metrics["per_generator"]}
    from sklearn.metrics import roc_auc_score

    human = predictions.p_ai[predictions.labels == 0]
    gen_b = predictions.p_ai[idx]
    assert generators["gen-b"]["roc_auc_vs_all_human"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(gen_b.size), np.zeros(human.size)], np.r_[gen_b, human]))
    assert generators["(human images)"]["roc_auc_vs_all_human"] is None


def test_predictions_csv_has_one_row_per_image_and_recomputes_the_metrics(setup, tmp_path: Path):
    import csv

    manifest, model = setup
    records = open_dataset(manifest)
    detector = Detector.load(str(model), use_evidence=False)
    predictions = predict_records(detector, records, progress=False)
    perturbed = {"jpeg:50": predict_records(detector, records, transform=parse_perturbations("jpeg:50")[0],
                                            progress=False)}
    metrics = write_report(predictions, tmp_path, perturbations=perturbed)
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["perturbation", "file", "label", "source", "generator", "p_ai", "verdict", "error"]
    base = [r for r in rows if r["perturbation"] == "none"]
    assert len(base) == len(records) and len(rows) == 2 * len(records)
    assert [r["file"] for r in base] == [r.ref for r in records]
    broken = [r for r in base if r["source"] == "broken"]
    assert broken and broken[0]["p_ai"] == "" and broken[0]["error"]
    ok = [r for r in base if r["p_ai"]]
    recomputed = binary_metrics(np.array([float(r["p_ai"]) for r in ok]), np.array([r["label"] == "ai" for r in ok]))
    assert recomputed["roc_auc"] == metrics["overall"]["roc_auc"] and recomputed["ece"] == metrics["overall"]["ece"]


def test_parse_perturbations_rejects_fractional_qualities_and_duplicates():
    with pytest.raises(ValueError, match=r"jpeg quality must be a whole number \(e.g. jpeg:70\)"):
        parse_perturbations("jpeg:70.9")
    with pytest.raises(ValueError, match="given twice"):
        parse_perturbations("jpeg:70,resize:0.5,jpeg:70")
    with pytest.raises(ValueError, match="given twice"):
        parse_perturbations("blur:1,blur:1.0")
    assert [p.name for p in parse_perturbations("webp:80.0")] == ["webp:80"]


def test_evaluate_cli_warns_when_a_perturbation_leaves_images_unscored(setup, tmp_path: Path):
    manifest, model = setup
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r"),
                                      "--perturb", "resize:0.1", "--source", "s1", "--no-evidence"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    scored = saved["perturbations"]["resize:0.1"]["n_scored"]
    assert scored < saved["n_scored"]
    assert f"warning: resize:0.1: {scored} of 11 images scored" in result.output
    assert "TPR@1%FPR" in result.output and "0 of 5 human images called AI" in result.output
    assert (tmp_path / "r" / "predictions.csv").is_file()


class _NonFiniteDetector:
    """Serves every image "uncertain" with a NaN or infinite p_ai, as a model with diverged weights does."""

    name = "diverged"

    def detect(self, payloads, names):
        from synthdetect.verdict import Verdict

        return [Verdict(file=n, label="uncertain", p_ai=float("nan") if k % 2 else float("inf"),
                        image={"format": "PNG", "width": 24, "height": 24}) for k, n in enumerate(names)]


def test_a_non_finite_score_is_an_unscored_image_with_its_reason(setup, tmp_path: Path):
    from synthdetect.evaluate.commands import warning_lines

    manifest, _ = setup
    records = [r for r in open_dataset(manifest) if r.source == "s1"]
    predictions = predict_records(_NonFiniteDetector(), records, progress=False)
    assert np.isnan(predictions.p_ai).all()
    assert all("non-finite score" in e for e in predictions.errors)
    metrics = write_report(predictions, tmp_path)
    assert metrics["n_unscored"] == len(records) == len(metrics["unscored_examples"])
    lines = warning_lines(metrics)  # raised IndexError when NaN scores left no example to name
    assert lines[0].startswith(f"{len(records)} of {len(records)} images were not scored") and "non-finite" in lines[0]
    import csv

    with open(tmp_path / "predictions.csv", newline="") as handle:
        assert all(row["p_ai"] == "" and row["error"] for row in csv.DictReader(handle))


def test_parse_perturbations_refuses_nan_and_inf_with_one_line():
    for spec in ("jpeg:inf", "jpeg:nan", "webp:-inf"):
        with pytest.raises(ValueError, match="must be between"):  # was OverflowError / "cannot convert float NaN"
            parse_perturbations(spec)


def test_a_human_image_at_exactly_half_is_a_worst_error_as_the_confusion_matrix_counts_it(setup):
    from synthdetect.evaluate.report import Predictions, compute_metrics

    records = open_dataset(setup[0])[:3]
    p = Predictions(records=records, p_ai=np.array([0.5, 0.5, 0.2]), labels=np.array([0, 1, 0]),
                    errors=[None] * 3, model_name="m", seconds=0.0, verdicts=["uncertain"] * 3,
                    images=[{}] * 3)
    assert compute_metrics(p)["overall"]["confusion_matrix"]["rows_true_cols_pred"] == [[1, 1], [0, 1]]
    assert worst_errors(p) == [0]


def test_group_verdict_shares_count_every_served_verdict_like_the_overall_summary(tmp_path: Path):
    from synthdetect.evaluate.report import Predictions, compute_metrics

    predictions = _fake_predictions(tmp_path)
    # two images of 'only-human' were out of the model's domain: not scored, but served "uncertain"
    idx = [i for i, r in enumerate(predictions.records) if r.source == "only-human"][:2]
    predictions.p_ai[idx] = np.nan
    for i in idx:
        predictions.errors[i], predictions.verdicts[i] = "not scored: too small", "uncertain"
    metrics = compute_metrics(predictions)
    rows = {r["group"]: r for r in metrics["per_source"]}
    group = [i for i, r in enumerate(predictions.records) if r.source == "only-human"]
    served = [predictions.verdicts[i] for i in group]
    assert rows["only-human"]["called_uncertain"] == pytest.approx(served.count("uncertain") / len(served))
    assert sum(r["uncertain"] for r in rows.values()) == pytest.approx(
        metrics["verdicts"]["fraction_uncertain"] * len(predictions.records))
    # verdicts are optional in a Predictions: without them the tables have no shares, and no IndexError
    bare = Predictions(records=predictions.records, p_ai=predictions.p_ai, labels=predictions.labels,
                       errors=predictions.errors, model_name="m", seconds=0.0)
    assert all("called_ai" not in r for r in compute_metrics(bare)["per_source"])


def test_dataset_summary_table_shows_source_names_and_paths_with_square_brackets(setup, tmp_path: Path):
    manifest, _ = setup
    renamed = manifest.with_name("[b]manifest.csv")
    renamed.write_text(manifest.read_text().replace(",s1,", ",[i]s1,"))
    result = CliRunner().invoke(app, ["dataset", "summary", str(renamed)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[i]s1" in result.output and "[b]manifest.csv" in result.output  # rich had read both as markup
    assert f"e.g. {manifest.parent}" in " ".join(result.output.split())  # the unreadable file, named in full


def test_dataset_summary_table_has_every_column_filled(setup):
    """A comment placed inside the call swallowed the formats cell: every column after it moved left, the file-size
    column stayed empty and the short-side numbers sat under "formats"."""
    manifest, _ = setup
    result = CliRunner().invoke(app, ["dataset", "summary", str(manifest)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ ALL") and "│ ai " in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert len(cells) == 6 and cells[3].startswith("PNG") and "/" in cells[4] and cells[5], cells
