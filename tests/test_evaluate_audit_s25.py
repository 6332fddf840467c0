"""``evaluate`` and ``compare`` audit (s25): file names that a spreadsheet would run as formulas, ensemble warnings
that reached only the files, and a ``--perturb resize`` that enlarged past what the detector judges.

New names are imported inside each test, so this file also runs (and fails test by test) on the code before them.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from typer.testing import CliRunner

from synth_data import write_manifest
from synthdetect.cli import app
from synthdetect.evaluate.report import Predictions
from synthdetect.train.datasets import Record
from tiny_model import png_bytes

FORMULAS = ['=HYPERLINK("x","click").png', "@SUM(1+1).png", "+cmd.png", "-2+3.png"]


def test_predictions_csv_cells_that_start_like_a_formula_are_text():
    """``=HYPERLINK("x","click").png`` in a manifest was written to predictions.csv as it is, a live formula in
    Excel or LibreOffice (and so was the error that starts with that name); numbers stay numbers."""
    from synthdetect.evaluate.report import write_predictions_rows

    records = [Record(ref=ref, label=i % 2, source="=src" if i == 0 else "s", generator="@gen" if i % 2 else None)
               for i, ref in enumerate(FORMULAS + ["plain.png"])]
    p_ai = np.array([0.9, 0.1, np.nan, 0.2, 0.7])
    errors = [None, None, f"{FORMULAS[2]}: corrupt image header", None, None]
    predictions = Predictions(records=records, p_ai=p_ai, labels=np.array([r.label for r in records]),
                              errors=errors, model_name="m", seconds=1.0,
                              verdicts=["ai", "human", None, "human", "ai"], images=[{} for _ in records])
    stream = io.StringIO()
    write_predictions_rows(stream, {"none": predictions})
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [row["file"] for row in rows] == ["'" + ref for ref in FORMULAS] + ["plain.png"]
    assert rows[0]["source"] == "'=src" and rows[1]["generator"] == "'@gen" and rows[4]["source"] == "s"
    assert rows[2]["error"] == "'" + errors[2] and rows[2]["p_ai"] == ""
    assert [float(row["p_ai"]) for row in rows if row["p_ai"]] == [0.9, 0.1, 0.2, 0.7]  # not "'0.9"
    assert [row["verdict"] for row in rows] == ["ai", "human", "", "human", "ai"]


def test_comparison_csv_model_names_that_start_like_a_formula_are_text(tmp_path):
    from synthdetect.evaluate.compare import write_comparison

    rows = [{"model": "@org/model", "split": "all", "n": 2, "scored": 2, "accuracy": 0.5, "roc_auc": -0.0},
            {"model": "plain", "split": "all", "n": 2, "scored": 2, "accuracy": 1.0}]
    summary = {"data": "d", "n_records": 2, "n_ai": 1, "n_human": 1, "use_evidence": False, "table": rows,
               "models": [{"name": "@org/model", "report": "models/org_model/report.html"}],
               "agreement": {"models": ["@org/model", "plain"], "agreement": [[1.0, 0.5], [0.5, 1.0]],
                             "n_both_scored": [[2, 2], [2, 2]]}}
    write_comparison(summary, tmp_path)
    with open(tmp_path / "comparison.csv", newline="") as handle:
        got = list(csv.DictReader(handle))
    assert [row["model"] for row in got] == ["'@org/model", "plain"]
    assert got[0]["roc_auc"] == "-0.0"  # a number, even one that starts with "-", is left as it is


def _summary_with_ensemble(excluded: dict, warnings: dict) -> dict:
    row = {"model": "a", "split": "all", "n": 2, "scored": 2}
    return {"n_records": 2, "n_ai": 1, "n_human": 1, "table": [row],
            "agreement": {"models": ["a"], "agreement": [[1.0]], "n_both_scored": [[2]]},
            "earlier_reports": [], "models": [{"name": "a", "report": "models/a/report.html", "n_judged": 2,
                                               "n_unscored": 0}],
            "ensemble": {"excluded": excluded, "calibration_warnings": warnings}}


def test_compare_says_on_the_terminal_which_models_the_ensemble_left_out_or_flattened(tmp_path, monkeypatch):
    """A member left out of the ensemble, or one whose inverted fit enters the mean as one constant p_ai, was said
    only in comparison.md/.html/.json: the terminal showed the ensemble row as the mean of every model."""
    from synthdetect.evaluate import compare

    manifest = write_manifest(tmp_path / "data", {"s": (1, 1)})
    summary = _summary_with_ensemble({"b": "scored 0 calibration images, not both classes"},
                                     {"c": "the model ranks the validation images backwards (AI below human)"})
    monkeypatch.setattr(compare, "compare_models", lambda *args, **kwargs: summary)
    result = CliRunner().invoke(app, ["compare", str(manifest), "-m", "a", "-m", "b", "-m", "c", "--ensemble",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "warning: ensemble: b is left out of the mean (scored 0 calibration images, not both classes)" in lines
    assert ("warning: ensemble: calibration of c: the model ranks the validation images backwards (AI below human)"
            in lines)


def test_a_resize_past_the_pixel_limit_is_refused_before_it_is_made():
    """``resize:4`` of a 6-megapixel photo took 13 s and 0.7 GB to make a 198 MB PNG, which the detector then
    refused as "file too large" under the name of the 3 MB original; it is now refused before resizing, saying
    why (here with a small limit standing in for the 80-megapixel one)."""
    from synthdetect.evaluate.perturb import Perturbation
    from synthdetect.images import ImageLoadError, LoadLimits

    enlarge = Perturbation(name="resize:2", kind="resize", value=2.0, limits=LoadLimits(max_pixels=2000))
    with pytest.raises(ImageLoadError) as caught:
        enlarge(png_bytes((32, 32)))
    assert caught.value.kind == "too_large"
    assert str(caught.value) == ("resize:2: would enlarge 32x32 px to 64x64 = 4,096 px, over the limit of 2,000 px "
                                 "of a file to judge")
    shrink = Perturbation(name="resize:0.5", kind="resize", value=0.5, limits=LoadLimits(max_pixels=2000))
    assert len(shrink(png_bytes((32, 32)))) > 0  # within the limit: made as before


def test_a_perturbed_file_past_the_byte_limit_says_the_perturbation_made_it():
    from synthdetect.evaluate.perturb import Perturbation
    from synthdetect.images import ImageLoadError, LoadLimits

    original = png_bytes((16, 16), fmt="JPEG")
    limit = LoadLimits(max_bytes=len(original))  # the original fits; its 4x enlargement as PNG does not
    with pytest.raises(ImageLoadError) as caught:
        Perturbation(name="resize:4", kind="resize", value=4.0, limits=limit)(original)
    assert caught.value.kind == "too_large"
    assert str(caught.value).startswith("resize:4: made a ")
    assert f"-byte file of this 16x16 px image, over the limit of {len(original):,} bytes" in str(caught.value)


def test_evaluate_names_the_perturbation_that_made_a_file_too_large(tmp_path):
    """Through ``predict_records``, as ``evaluate --perturb`` runs it: the image is unscored, with the reason."""
    from synthdetect.evaluate.perturb import Perturbation
    from synthdetect.evaluate.report import predict_records
    from synthdetect.images import LoadLimits

    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes((32, 32)))

    class NeverCalled:
        name = "m"

        def detect(self, payloads, names):
            assert not payloads, "a refused perturbation must not reach the detector"
            return []

    enlarge = Perturbation(name="resize:2", kind="resize", value=2.0, limits=LoadLimits(max_pixels=2000))
    predictions = predict_records(NeverCalled(), [Record(ref=str(path), label=1)], transform=enlarge, progress=False)
    assert predictions.error_kinds == ["too_large"]
    assert predictions.errors[0] == f"{path}: resize:2: would enlarge 32x32 px to 64x64 = 4,096 px, over the limit " \
                                    "of 2,000 px of a file to judge"


def test_an_ensemble_no_model_can_calibrate_says_why_and_that_the_reports_are_whole(tmp_path, monkeypatch):
    """Every human image too small for the one model: after the run, "use more data or a larger
    --calibration-fraction" (neither helps) and nothing on the per-model report it had written."""
    from synthdetect.evaluate import compare

    records = [Record(ref=f"/x/{i}.png", label=i % 2) for i in range(12)]

    def predict(detector, records, *args, **kwargs):  # the AI images scored, every human one out of domain
        labels = np.array([r.label for r in records])
        return Predictions(records=list(records), p_ai=np.where(labels == 1, 0.8, np.nan), labels=labels,
                           errors=[None if y else "too small to judge" for y in labels], model_name="m",
                           seconds=1.0, verdicts=["ai" if y else "uncertain" for y in labels],
                           images=[{} for _ in records])

    monkeypatch.setattr(compare, "predict_records", predict)
    with pytest.raises(ValueError) as caught:
        compare.compare_models(["m"], records, tmp_path / "out", ensemble=True, progress=False,
                               load=lambda name, **_: object())
    said = str(caught.value)
    assert "none can be calibrated (of 1 model(s), the first scored 2 calibration images, not both classes)" in said
    assert said.startswith("--ensemble: ")
    assert (f"; finished reports under {tmp_path / 'out' / 'models'}: m; the comparison of the models alone was "
            f"written to {tmp_path / 'out' / 'comparison.html'}") in said  # since s26 the models' table is kept
    assert (tmp_path / "out" / "comparison.json").is_file()
    assert (tmp_path / "out" / "models" / "m" / "report.html").is_file()


def test_an_image_too_wide_for_the_perturbation_s_format_is_said_so_under_the_perturbation_s_name():
    """``webp:80`` of a 17000 px wide panorama was "PANO.png: encoding error 5: Image size exceeds WebP limit of
    16383 pixels" (kind ``unreadable``): it read as the original being broken."""
    from PIL import Image

    from synthdetect.evaluate.perturb import parse_perturbations
    from synthdetect.images import ImageLoadError

    buffer = io.BytesIO()
    Image.new("RGB", (17000, 2), (10, 20, 30)).save(buffer, format="PNG")
    webp, jpeg = parse_perturbations("webp:80,jpeg:80")
    with pytest.raises(ImageLoadError) as caught:
        webp(buffer.getvalue())
    assert caught.value.kind == "too_large"
    assert str(caught.value) == "webp:80: WEBP holds at most 16,383 px a side, and this image is 17000x2 px"
    assert jpeg(buffer.getvalue())[:2] == b"\xff\xd8"  # within JPEG's limit: made as before


def test_an_encoder_that_fails_names_the_perturbation(monkeypatch):
    from synthdetect.evaluate import perturb
    from synthdetect.images import ImageLoadError

    def refuse(image, value):
        raise OSError("encoder error -2")

    monkeypatch.setitem(perturb._APPLY, "blur", refuse)
    with pytest.raises(ImageLoadError) as caught:
        perturb.parse_perturbations("blur:1")[0](png_bytes((8, 8)))
    assert str(caught.value) == "blur:1: could not write the perturbed file (encoder error -2)"
