"""``synthdetect evaluate`` / ``compare`` on odd inputs: one-line errors before any work, nothing silently lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth_data import write_manifest, write_manifest_rows
from synthdetect.api import Detector
from synthdetect.cli import app
from synthdetect.evaluate.compare import compare_models
from synthdetect.evaluate.report import predict_records, write_report
from synthdetect.train.datasets import open_dataset
from tiny_model import write_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_inputs")
    manifest = write_manifest(root / "data", {"s1": (3, 3)}, size=24)
    model = write_tiny_cnn(root / "tiny")
    return manifest, model


def _one_line_error(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and needle in " ".join(result.output.split()), result.output


def test_a_file_listed_twice_is_refused_not_scored_twice(setup, tmp_path):
    manifest, model = setup
    images = manifest.parent / "images" / "s1"
    rows = [{"path": str(images / "ai_0001.png"), "label": "ai", "source": "s1", "generator": ""},
            {"path": str(images / "real_0004.png"), "label": "real", "source": "s1", "generator": ""},
            {"path": f"{images}/./ai_0001.png", "label": "real", "source": "s1", "generator": ""}]
    (tmp_path / "dup").mkdir()
    dup = write_manifest_rows(tmp_path / "dup", rows)
    for command in (["evaluate", str(model), str(dup)], ["compare", str(dup), "-m", str(model)]):
        result = CliRunner().invoke(app, [*command, "-o", str(tmp_path / "r")])
        _one_line_error(result, "ai_0001.png is listed 2 times (labelled ai and human); list each image once")
    assert not (tmp_path / "r").exists()


def test_an_empty_manifest_is_an_error_not_an_empty_report(setup, tmp_path):
    _, model = setup
    (tmp_path / "empty").mkdir()
    empty = write_manifest_rows(tmp_path / "empty", [])
    result = CliRunner().invoke(app, ["evaluate", str(model), str(empty), "-o", str(tmp_path / "r")])
    _one_line_error(result, f"{empty}: lists no images")
    assert not (tmp_path / "r").exists()


def test_a_manifest_that_is_not_utf8_names_the_file(setup, tmp_path):
    _, model = setup
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\nété.png,ai\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["evaluate", str(model), str(latin), "-o", str(tmp_path / "r")])
    _one_line_error(result, f"{latin}: not UTF-8 text (byte 0xe9 at position 11); save the manifest as UTF-8")


def test_batch_size_below_one_is_refused(setup, tmp_path):
    manifest, model = setup
    for command in (["evaluate", str(model), str(manifest)], ["compare", str(manifest), "-m", str(model)]):
        result = CliRunner().invoke(app, [*command, "-o", str(tmp_path / "r"), "--batch-size", "0"])
        assert result.exit_code == 2 and "--batch-size" in result.output and "Traceback" not in result.output
    detector = Detector.load(str(model), use_evidence=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):  # -1 used to judge no image at all
        predict_records(detector, open_dataset(manifest), batch_size=-1, progress=False)


def test_compare_refuses_an_out_path_that_is_a_file(setup, tmp_path):
    manifest, model = setup
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(model), "-o", str(tmp_path / "afile")])
    _one_line_error(result, f"error: {tmp_path / 'afile'}: exists and is a file, not a directory")


def test_compare_checks_the_calibration_fraction_before_running_any_model(setup, tmp_path):
    manifest, _ = setup
    loaded = []
    with pytest.raises(ValueError, match="--calibration-fraction must be between 0 and 1, got 1.5"):
        compare_models(["a"], open_dataset(manifest), tmp_path / "r", ensemble=True, calibration_fraction=1.5,
                       load=lambda name, **_: loaded.append(name))
    assert loaded == [] and not (tmp_path / "r").exists()


def test_markup_in_a_data_path_is_printed_not_parsed(setup, tmp_path):
    manifest, model = setup
    data = tmp_path / "d[" / "x]"  # the path "d[/x]" reads as a closing rich markup tag
    shutil.copytree(manifest.parent, data)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(data / "manifest.csv"), "-o", str(tmp_path / "r")],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "d[/x]/manifest.csv" in result.output


def test_markup_in_a_model_path_is_printed_not_parsed(setup, tmp_path):
    manifest, model = setup
    odd_model = tmp_path / "m[" / "x]"
    shutil.copytree(model, odd_model)
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(odd_model), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "comparison.json").is_file()


def test_cli_states_coverage_and_accuracy_of_the_served_verdicts(setup, tmp_path):
    manifest, model = setup
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    verdicts = json.loads((tmp_path / "r" / "metrics.json").read_text())["verdicts"]
    decided = sum(verdicts[f"{c}_images"][k] for c in ("ai", "human") for k in ("ai", "human"))
    uncertain = sum(verdicts[f"{c}_images"]["uncertain"] for c in ("ai", "human"))
    line = next(x for x in result.output.splitlines() if x.startswith("served verdicts"))
    assert f"{decided} of {decided + uncertain} decided" in line and f"{uncertain} uncertain" in line


def test_report_says_where_the_unscored_files_beyond_the_first_twenty_are(setup, tmp_path):
    _, model = setup
    manifest = write_manifest(tmp_path / "data", {"s": (2, 2)}, size=24, broken=22)
    predictions = predict_records(Detector.load(str(model), use_evidence=False), open_dataset(manifest),
                                  progress=False)
    metrics = write_report(predictions, tmp_path / "r")
    assert metrics["n_unscored"] == 22 and len(metrics["unscored_examples"]) == 20
    page = (tmp_path / "r" / "report.html").read_text()
    assert "The first 20 of 22; every one, with its reason, is in predictions.csv" in page
    rows = (tmp_path / "r" / "predictions.csv").read_text().splitlines()
    assert sum("broken_" in r and "corrupt image header (PNG" in r for r in rows) == 22


def test_a_manifest_whose_files_all_are_missing_fails_before_any_work(setup, tmp_path):
    manifest, model = setup
    (tmp_path / "elsewhere").mkdir()
    moved = write_manifest_rows(tmp_path / "elsewhere", [  # paths meant for another folder
        {"path": "images/s1/ai_0001.png", "label": "ai", "source": "s1", "generator": ""},
        {"path": "images/s1/real_0004.png", "label": "real", "source": "s1", "generator": ""}])
    result = CliRunner().invoke(app, ["evaluate", str(model), str(moved), "-o", str(tmp_path / "r")])
    _one_line_error(result, f"{moved}: none of the 2 listed files exists, e.g. "
                            f"{tmp_path / 'elsewhere' / 'images/s1/ai_0001.png'} (paths are read relative to the "
                            "manifest's folder)")
    assert not (tmp_path / "r").exists()
    rows = [{"path": str(manifest.parent / "images/s1/ai_0001.png"), "label": "ai", "source": "s1", "generator": ""},
            {"path": "missing.png", "label": "real", "source": "s1", "generator": ""}]
    (tmp_path / "some").mkdir()
    partly = write_manifest_rows(tmp_path / "some", rows)  # some missing: judged, counted and reported
    result = CliRunner().invoke(app, ["evaluate", str(model), str(partly), "-o", str(tmp_path / "r2")])
    assert result.exit_code == 0, result.output
    assert "1 of 2 images were not scored" in " ".join(result.output.split())


def test_compare_refuses_a_model_given_twice_before_loading_it(setup, tmp_path):
    manifest, model = setup
    loaded = []
    with pytest.raises(ValueError, match="is given more than once"):
        compare_models(["a", "b", "a"], open_dataset(manifest), tmp_path / "r",
                       load=lambda name, **_: loaded.append(name))
    assert loaded == []
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", str(model), "-m", str(model),
                                      "-o", str(tmp_path / "c")])
    _one_line_error(result, f"--model {model} is given more than once; give each model once")


def test_progress_is_logged_as_lines_when_no_terminal_shows_the_bar(setup, tmp_path):
    manifest, model = setup
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r"),
                                      "--batch-size", "2", "--perturb", "jpeg:50"])
    assert result.exit_code == 0, result.output
    lines = [x for x in result.output.splitlines() if " images done, " in x]  # "6 of 6 judged, 6 unscored" read oddly
    assert [x.split(",")[0] for x in lines] == [f"{name}: {k} of 6 images done"
                                               for name in ("evaluate", "jpeg:50") for k in (2, 4, 6)]


def test_the_ensemble_report_keeps_why_an_image_was_not_scored(setup, tmp_path):
    _, model = setup
    manifest = write_manifest(tmp_path / "data", {"s": (6, 6)}, size=24, broken=3)
    twin = shutil.copytree(model, tmp_path / "twin")
    summary = compare_models([str(model), str(twin)], open_dataset(manifest), tmp_path / "c", ensemble=True,
                             calibration_fraction=0.5, progress=False)
    assert summary["ensemble"]["calibration_split"]["evaluated_on"] >= 1
    examples = json.loads((tmp_path / "c" / "ensemble" / "metrics.json").read_text())["unscored_examples"]
    assert examples and all(e.startswith("no model scored this image: ") and "corrupt image header (PNG" in e for e in examples)


def test_compare_refuses_an_ensemble_split_that_cannot_work_before_running_any_model(setup, tmp_path):
    manifest, _ = setup
    loaded = []
    two = [r for r in open_dataset(manifest)][:1] + [r for r in open_dataset(manifest) if r.label == 0][:1]
    with pytest.raises(ValueError, match=r"leaves 0 for calibration and 2 to evaluate; the ensemble needs both"):
        compare_models(["a", "b"], two, tmp_path / "r", ensemble=True, load=lambda name, **_: loaded.append(name))
    assert loaded == [] and not (tmp_path / "r").exists()


def test_compare_names_reports_left_in_its_folder_by_an_earlier_run(setup, tmp_path):
    manifest, model = setup
    twin = shutil.copytree(model, tmp_path / "twin")
    runner = CliRunner()
    first = runner.invoke(app, ["compare", str(manifest), "-m", str(model), "-m", str(twin), "--ensemble",
                                "--calibration-fraction", "0.5", "-o", str(tmp_path / "c")])
    assert first.exit_code == 0, first.output
    assert "earlier run" not in first.output
    second = runner.invoke(app, ["compare", str(manifest), "-m", str(model), "-o", str(tmp_path / "c")])
    assert second.exit_code == 0, second.output
    summary = json.loads((tmp_path / "c" / "comparison.json").read_text())
    twin_report = next(f"models/{d.name}" for d in (tmp_path / "c" / "models").iterdir() if d.name.endswith("twin"))
    assert summary["earlier_reports"] == ["ensemble", twin_report]
    assert (f"warning: {tmp_path / 'c'} also holds 2 report(s) from an earlier run that are not part of this "
            f"comparison: ensemble, {twin_report}") in " ".join(second.output.split())


def test_a_run_in_which_no_image_could_be_judged_exits_3_with_its_report(setup, tmp_path):
    """Every file undecodable wrote a report of nothing and exited 0, which a CI job reads as success."""
    _, model = setup
    (tmp_path / "broken").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "broken" / name).write_bytes(b"not an image")
    rows = [{"path": "a.png", "label": "ai", "source": "s1", "generator": ""},
            {"path": "b.png", "label": "real", "source": "s1", "generator": ""}]
    manifest = write_manifest_rows(tmp_path / "broken", rows)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(tmp_path / "r")])
    assert result.exit_code == 3, result.output
    assert "none of the 2 images could be judged" in result.output
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "predictions.csv").is_file()
