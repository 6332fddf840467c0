"""The report on the edges: undefined rates are null with the reason, never 0; a failing page loses no data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from synthdetect.evaluate.report import Predictions, write_report
from synthdetect.train.datasets import Record


def _predictions(labels: list[int], p_ai: list[float]) -> Predictions:
    records = [Record(ref=f"/x/{i}.png", label=label, source="s") for i, label in enumerate(labels)]
    return Predictions(records=records, p_ai=np.array(p_ai, dtype=float), labels=np.array(labels),
                       errors=[None] * len(labels), model_name="m", seconds=1.0,
                       verdicts=["human" if p < 0.5 else "ai" for p in p_ai], images=[{} for _ in labels])


def test_precision_is_undefined_when_no_image_is_called_ai(tmp_path):
    labels, p_ai = [1, 1, 0, 0], [0.4, 0.3, 0.2, 0.1]  # ranks perfectly, yet calls everything human at 0.5
    write_report(_predictions(labels, p_ai), tmp_path)
    overall = json.loads((tmp_path / "metrics.json").read_text())["overall"]
    assert overall["precision"] is None
    assert overall["undefined"] == {"precision": "no image was called AI (p_ai >= 0.5)"}
    pred = (np.array(p_ai) >= 0.5).astype(int)
    assert overall["recall"] == skm.recall_score(labels, pred) == 0.0 and overall["f1"] == 0.0
    assert overall["roc_auc"] == 1.0
    page = (tmp_path / "report.html").read_text()
    assert "precision<b>–</b><span class='note'>no image was called AI (p_ai &gt;= 0.5)</span>" in page


def test_recall_and_f1_are_undefined_without_ai_images(tmp_path):
    write_report(_predictions([0, 0, 0], [0.1, 0.2, 0.3]), tmp_path)
    overall = json.loads((tmp_path / "metrics.json").read_text())["overall"]
    assert overall["precision"] is None and overall["recall"] is None and overall["f1"] is None
    assert overall["accuracy"] == 1.0


def test_defined_rates_match_scikit_learn(tmp_path):
    labels, p_ai = [1, 1, 0, 0, 1], [0.9, 0.3, 0.6, 0.1, 0.7]
    write_report(_predictions(labels, p_ai), tmp_path)
    overall = json.loads((tmp_path / "metrics.json").read_text())["overall"]
    pred = (np.array(p_ai) >= 0.5).astype(int)
    assert overall["precision"] == skm.precision_score(labels, pred)
    assert overall["recall"] == skm.recall_score(labels, pred) and overall["f1"] == skm.f1_score(labels, pred)
    assert "undefined" not in overall


def test_predictions_and_metrics_are_on_disk_even_when_the_page_fails(tmp_path, monkeypatch):
    from synthdetect.evaluate import report

    def broken_page(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "render_html", broken_page)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(_predictions([1, 0, 1], [0.9, 0.2, 0.4]), tmp_path)
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["n_scored"] == 3


def test_a_group_with_no_scored_image_says_so(tmp_path):
    predictions = _predictions([1, 0, 1, 1], [0.9, 0.2, 0.4, 0.6])
    predictions.records[2:] = [Record(ref=f"/x/gone{i}.png", label=1, source="lost") for i in range(2)]
    predictions.p_ai[2:] = np.nan
    predictions.errors[2:] = ["/x/gone0.png: missing", "/x/gone1.png: missing"]
    predictions.verdicts[2:] = [None, None]
    metrics = write_report(predictions, tmp_path)
    lost = next(row for row in metrics["per_source"] if row["group"] == "lost")
    assert lost["n"] == 2 and lost["scored"] == 0 and lost["note"] == "none of its 2 images was scored (see Not scored)"
    assert "none of its 2 images was scored" in (tmp_path / "report.html").read_text()


def test_reports_are_utf8_whatever_the_locale(tmp_path):
    """The pages declare UTF-8; written in the locale's encoding they crashed (ASCII) or garbled (cp1252)."""
    import os
    import subprocess
    import sys

    script = f"""
import numpy as np
from pathlib import Path
from synthdetect.evaluate.compare import write_comparison
from synthdetect.evaluate.report import Predictions, write_report
from synthdetect.train.datasets import Record
records = [Record(ref="/x/写真.png", label=1, source="café"), Record(ref="/x/b.png", label=0, source="café")]
write_report(Predictions(records=records, p_ai=np.array([np.nan, 0.2]), labels=np.array([1, 0]),
             errors=["/x/写真.png: not an image", None], model_name="modèle", seconds=1.0,
             verdicts=[None, "human"], images=[{{}}, {{}}]), Path({str(tmp_path / 'r')!r}))
write_comparison({{"data": "données", "n_records": 2, "n_ai": 1, "n_human": 1, "use_evidence": False,
                  "models": [{{"name": "modèle", "report": "models/m/report.html"}}],
                  "agreement": {{"models": ["modèle"], "agreement": [[1.0]], "n_both_scored": [[1]]}},
                  "table": [{{"model": "modèle", "split": "all", "n": 2, "scored": 1}}]}}, Path({str(tmp_path)!r}))
"""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "utf-8"}
    program = tmp_path / "write_reports.py"  # a file, not -c: an ASCII locale cannot pass non-ASCII in argv
    program.write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, str(program)], env=env, capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "/x/写真.png: not an image" in (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "modèle" in (tmp_path / "comparison.html").read_text(encoding="utf-8")
    assert "modèle" in (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert "modèle" in (tmp_path / "comparison.csv").read_text(encoding="utf-8")
