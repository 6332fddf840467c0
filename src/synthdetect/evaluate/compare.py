"""Several detectors on the same images in one run: a report each, one side-by-side table, an agreement matrix.

Each model is judged through its own :class:`Detector` by the evaluation
report's :func:`predict_records`, so its numbers are those ``evaluate`` would
give.  By default evidence probes are off: provenance would answer for every
model alike and hide how the models differ.

The optional ensemble is a calibrated mean.  Models speak on different
scales (one is over-confident, another hugs 0.5), so averaging raw p_ai
would let the loudest one dominate.  Each model is first Platt-calibrated on a
stated, stratified calibration split of DATA; the ensemble is the mean of the
calibrated probabilities of the models that scored an image.  The ensemble
and, for a like-for-like row, every model, are then scored only on the
remaining images, never on the ones the calibration saw.
"""

from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synthdetect.atomic import write_atomically
from synthdetect.evaluate.calibration import Calibration, fit_warning
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.evaluate.report import (
    JudgingInterrupted,
    Predictions,
    ReportInterrupted,
    ReportNotWritten,
    on_disk,
    predict_records,
    write_partial_predictions,
    write_report,
)
from synthdetect.interrupts import signal_number
from synthdetect.train.datasets import Record, stratified_split

#: Table columns: (key in a row, heading).
TABLE_COLUMNS = [
    ("model", "model"), ("split", "evaluated on"), ("n", "images"), ("scored", "scored"),
    ("accuracy", "accuracy @0.5"), ("roc_auc", "ROC-AUC"), ("tpr_at_fpr_0.05", "TPR @5% FPR"),
    ("ece", "ECE"), ("images_per_s", "images/s"),
]
ENSEMBLE_NAME = "ensemble (calibrated mean)"


@dataclass
class ModelRun:
    name: str
    predictions: Predictions
    metrics: dict[str, Any]
    report_dir: Path


def report_slug(name: str, taken: set[str]) -> str:
    """A folder name for a model name such as ``hf:org/name`` that is safe and unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    slug = slug[-80:]
    base, k = slug, 2
    while slug in taken:
        slug, k = f"{base}_{k}", k + 1
    taken.add(slug)
    return slug


def table_row(name: str, split: str, p_ai: np.ndarray, labels: np.ndarray, seconds: float) -> dict[str, Any]:
    """One side-by-side row from per-image p_ai (NaN = not scored)."""
    scored = ~np.isnan(p_ai)
    row: dict[str, Any] = {"model": name, "split": split, "n": int(p_ai.size), "scored": int(scored.sum()),
                           "images_per_s": (p_ai.size / seconds) if seconds > 0 else None}
    if scored.any():
        m = binary_metrics(p_ai[scored], labels[scored])
        row.update({k: m.get(k) for k in ("accuracy", "roc_auc", "tpr_at_fpr_0.05", "ece")})
    return row


def agreement_matrix(names: Sequence[str], p_ai: Sequence[np.ndarray]) -> dict[str, Any]:
    """Share of images, among those both models scored, on which their p_ai >= 0.5 calls agree."""
    k = len(names)
    share: list[list[float | None]] = [[None] * k for _ in range(k)]
    counts = [[0] * k for _ in range(k)]
    for i in range(k):
        for j in range(k):
            both = ~np.isnan(p_ai[i]) & ~np.isnan(p_ai[j])
            counts[i][j] = int(both.sum())
            if both.any():
                share[i][j] = float(np.mean((p_ai[i][both] >= 0.5) == (p_ai[j][both] >= 0.5)))
    return {"models": list(names), "agreement": share, "n_both_scored": counts, "threshold": 0.5}


def calibration_split(records: Sequence[Record], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the records used to fit calibration (stratified by class, fixed seed)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"calibration fraction must be between 0 and 1, got {fraction}")
    calib, _ = stratified_split(records, [fraction, 1.0 - fraction], seed)
    chosen = {id(r) for r in calib}
    return np.array([id(r) in chosen for r in records], dtype=bool)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def calibrated_mean(p_ai: Sequence[np.ndarray], labels: np.ndarray, calib: np.ndarray,
                    method: str = "platt") -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Fit one calibration per model on ``calib``; the mean of calibrated p_ai over models that scored an image.

    A model that scored no images of one class in the calibration split (a
    router answering ``uncertain`` for every large image, say) cannot be
    calibrated; it is left out of the mean, with the reason, rather than
    entering uncalibrated.
    """
    calibrated, fitted = [], []
    for p in p_ai:
        use = calib & ~np.isnan(p)
        if len(np.unique(labels[use])) < 2:
            fitted.append({"excluded": f"scored {int(use.sum())} calibration images, not both classes"})
            continue
        cal = Calibration.fit(_logit(p[use]), labels[use], method=method)
        fitted.append({**cal.to_dict(), "fitted_on": int(use.sum())})
        out = np.full(p.shape, np.nan)
        ok = ~np.isnan(p)
        out[ok] = cal(_logit(p[ok]))
        calibrated.append(out)
    if not calibrated:  # the split holds both classes (checked before any run): the models left one unscored
        raise ValueError("no model scored images of both classes in the calibration split, so none can be "
                         f"calibrated (of {len(p_ai)} model(s), the first {fitted[0]['excluded']}); see each model's "
                         "'Not scored' list, or use more data or a larger --calibration-fraction")
    stack = np.vstack(calibrated)
    any_scored = ~np.all(np.isnan(stack), axis=0)
    mean = np.full(labels.shape, np.nan)
    mean[any_scored] = np.nanmean(stack[:, any_scored], axis=0)
    return mean, fitted


def _fallback_verdicts(p_ai: np.ndarray) -> list[str | None]:
    """Label the ensemble with fusion's default band: it has no validated thresholds of its own."""
    from synthdetect.fusion import FALLBACK_AI_AT, FALLBACK_HUMAN_BELOW

    return [None if np.isnan(p) else "ai" if p >= FALLBACK_AI_AT else "human" if p < FALLBACK_HUMAN_BELOW
            else "uncertain" for p in p_ai]


def compare_models(
    model_names: Sequence[str],
    records: Sequence[Record],
    out_dir: str | Path,
    *,
    data_name: str = "data",
    ensemble: bool = False,
    calibration_fraction: float = 0.3,
    seed: int = 0,
    use_evidence: bool = False,
    batch_size: int = 32,
    progress: bool = True,
    load: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run every model on ``records``; write per-model reports and the comparison; return its summary.

    All models are loaded before any is run, so a bad name fails in seconds, not after an hour of the others.
    """
    if len(model_names) < 1:
        raise ValueError("give at least one --model")
    repeated = sorted({name for name in model_names if list(model_names).count(name) > 1})
    if repeated:  # rows, report links and calibrations are keyed by name: a second copy would overwrite the first
        raise ValueError(f"--model {repeated[0]} is given more than once; give each model once")
    if ensemble and not 0.0 < calibration_fraction < 1.0:  # checked before the models run, not after
        raise ValueError(f"--calibration-fraction must be between 0 and 1, got {calibration_fraction:g}")
    from synthdetect.models import ModelPackageError

    if load is None:
        from synthdetect.api import Detector

        load = Detector.load
    records = list(records)
    labels = np.array([r.label for r in records], dtype=int)
    if ensemble:  # the split depends on the labels only, so a split that cannot work is refused before any run
        calib = calibration_split(records, calibration_fraction, seed)
        if len(np.unique(labels[calib])) < 2 or calib.all():
            raise ValueError(
                f"--calibration-fraction {calibration_fraction:g} of {len(records)} images ({int(labels.sum())} ai, "
                f"{int((1 - labels).sum())} human) leaves {int(calib.sum())} for calibration and "
                f"{int((~calib).sum())} to evaluate; the ensemble needs both classes in the first and images in the "
                "second")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = {p.parent for p in [*out_dir.glob("models/*/report.html"), out_dir / "ensemble" / "report.html"]
               if p.is_file()}
    detectors = [load(name, use_evidence=use_evidence) for name in model_names]
    runs: list[ModelRun] = []
    taken: set[str] = set()
    kept = ""  # where a stopped model's judged rows were kept, said in the one-line message
    try:
        for name, detector in zip(model_names, detectors):
            report_dir = out_dir / "models" / report_slug(name, taken)  # before judging: a stop keeps rows there
            try:
                predictions = predict_records(detector, records, batch_size, progress=progress, description=name)
            except (JudgingInterrupted, ModelPackageError) as exc:
                # as evaluate: the rows judged so far (before a stop, or a routed model that could not load part
                # way), never a report that reads whole
                if getattr(exc, "partial", None) is not None:
                    written, detail = write_partial_predictions(report_dir, {"none": exc.partial})
                    if written or detail:
                        kept = f"; {on_disk(report_dir, written, detail)}"
                raise
            metrics = write_report(predictions, report_dir, title=f"{name} on {data_name}")
            runs.append(ModelRun(name, predictions, metrics, report_dir))
    except (KeyboardInterrupt, ModelPackageError) as exc:  # which reports are whole; no comparison was written
        done = (f"finished reports under {out_dir / 'models'}: {', '.join(r.name for r in runs)}; " if runs else "")
        if isinstance(exc, ModelPackageError):  # a routed model loads at its first image, so it can fail mid-run
            raise ModelPackageError(f"{exc}; {done}no comparison was written to {out_dir}{kept}") from None
        said = str(exc) if isinstance(exc, (JudgingInterrupted, ReportInterrupted)) else "interrupted"
        raise ReportInterrupted(f"{said}; {done}no comparison was written to {out_dir}{kept}",
                                signal_number(exc)) from None
    rows = [table_row(r.name, "all", r.predictions.p_ai, labels, r.predictions.seconds) for r in runs]
    summary: dict[str, Any] = {
        "schema": "synthdetect.compare/1",
        "data": data_name,
        "n_records": len(records),
        "n_ai": int(labels.sum()),
        "n_human": int((1 - labels).sum()),
        "use_evidence": use_evidence,
        "models": [{"name": r.name, "report": str(r.report_dir.relative_to(out_dir) / "report.html"),
                    "card": _card_summary(d), **_judged(r.predictions)} for r, d in zip(runs, detectors)],
        "agreement": agreement_matrix([r.name for r in runs], [r.predictions.p_ai for r in runs]),
    }
    ensemble_failed: str | None = None
    if ensemble:
        held = ~calib
        try:
            mean, fitted = calibrated_mean([r.predictions.p_ai for r in runs], labels, calib)
        except ValueError as exc:  # after every model ran: their comparison is kept, with the ensemble said missing
            ensemble_failed = str(exc)
            summary["ensemble_not_written"] = ensemble_failed
    if ensemble and ensemble_failed is None:
        split = f"held-out {held.sum()} (calibration on {calib.sum()})"
        rows += [table_row(r.name, split, r.predictions.p_ai[held], labels[held], r.predictions.seconds * held.mean())
                 for r in runs]
        seconds = sum(r.predictions.seconds for r in runs) * held.mean()
        rows.append(table_row(ENSEMBLE_NAME, split, mean[held], labels[held], seconds))
        held_records = [rec for rec, h in zip(records, held) if h]
        # why no model scored an image: the first model's own reason (a broken file fails alike in every model)
        reasons = [next((r.predictions.errors[i] for r in runs if r.predictions.errors[i]), None)
                   for i in np.flatnonzero(held)]
        ens_predictions = Predictions(
            records=held_records, p_ai=mean[held], labels=labels[held],
            errors=[None if not np.isnan(p) else f"no model scored this image: {why or rec.ref}"
                    for rec, p, why in zip(held_records, mean[held], reasons)],
            model_name=ENSEMBLE_NAME, seconds=seconds, verdicts=_fallback_verdicts(mean[held]),
            images=[{} for _ in held_records],
        )
        ens_dir = out_dir / "ensemble"
        write_report(ens_predictions, ens_dir, title=f"{ENSEMBLE_NAME} of {len(runs)} models on {data_name}")
        summary["ensemble"] = {
            "method": "mean of per-model Platt-calibrated p_ai over the models that scored the image",
            "calibration_split": {"fraction": calibration_fraction, "seed": seed, "stratified_by": "class",
                                  "n": int(calib.sum()), "evaluated_on": int(held.sum())},
            "calibrations": dict(zip([r.name for r in runs], fitted)),
            "members": [r.name for r, f in zip(runs, fitted) if "excluded" not in f],
            "excluded": {r.name: f["excluded"] for r, f in zip(runs, fitted) if "excluded" in f},
            # an inverted fit enters the mean as one constant p_ai: say so where people read, not only in the JSON
            "calibration_warnings": {r.name: w.removeprefix("calibration: ") for r, f in zip(runs, fitted)
                                     if (w := fit_warning(f.get("fit")))},
            "report": "ensemble/report.html",
            "verdict_band": "default uncertain band (no validated thresholds)",
        }
    summary["table"] = rows
    written = {r.report_dir for r in runs} | ({out_dir / "ensemble"} if "ensemble" in summary else set())
    # reports of an earlier run into the same folder are left alone, but named: they are not part of this one
    summary["earlier_reports"] = sorted(str(d.relative_to(out_dir)) for d in earlier - written)
    write_comparison(summary, out_dir)
    if ensemble_failed is not None:  # the models' comparison is whole; the ensemble the user asked for is not
        raise ValueError(f"--ensemble: {ensemble_failed}; finished reports under {out_dir / 'models'}: "
                         f"{', '.join(r.name for r in runs)}; the comparison of the models alone was written to "
                         f"{out_dir / 'comparison.html'} (and .json/.csv/.md), without an ensemble") from None
    return summary


def _judged(predictions: Predictions) -> dict[str, Any]:
    """How many images a model judged (gave a verdict) and left unscored, with the first reason."""
    first = next((e for e in predictions.errors if e), None)
    return {"n_judged": sum(v is not None for v in predictions.verdicts),
            "n_unscored": int((~predictions.scored).sum()), **({"unscored_example": first} if first else {})}


def _card_summary(detector: Any) -> dict[str, Any]:
    card = getattr(getattr(detector, "model", None), "card", {}) or {}
    return {k: card[k] for k in ("kind", "source", "version", "labels", "positive", "output") if k in card}


def format_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.3f}"
    return str(value)


def markdown_cell(text: str) -> str:
    """A cell's text in a Markdown table: a ``|`` in a model path or name would end the cell and shift the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(markdown_cell(format_cell(r.get(k))) for k, _ in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def agreement_cells(agreement: dict[str, Any]) -> list[list[str]]:
    """``0.812 (n=40)``: a share means little without how many images both models scored."""
    rows = zip(agreement["agreement"], agreement["n_both_scored"])
    return [[format_cell(v) if i == j or v is None else f"{v:.3f} (n={n})" for j, (v, n) in enumerate(zip(share, counts))]
            for i, (share, counts) in enumerate(rows)]


def markdown_agreement(agreement: dict[str, Any]) -> str:
    names = agreement["models"]
    lines = ["| | " + " | ".join(map(markdown_cell, names)) + " |", "|---|" + "---|" * len(names)]
    for name, cells in zip(names, agreement_cells(agreement)):
        lines.append(f"| {markdown_cell(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COMPARISON_FILES = ("comparison.json", "comparison.csv", "comparison.md", "comparison.html")


def write_comparison(summary: dict[str, Any], out_dir: Path) -> None:
    """comparison.json (everything), comparison.csv (the table), comparison.md and comparison.html (both tables);
    each whole or not at all, and a file that cannot be written is a :class:`ReportNotWritten` naming it."""
    written: list[str] = []

    def write(name: str, body: Callable[[Any], Any]) -> None:
        try:
            write_atomically(out_dir / name, body)
        except OSError as exc:
            done = f"this run wrote {' and '.join(written)} there" if written else "no comparison file was written"
            raise ReportNotWritten(f"{exc.filename or out_dir / name}: could not write it "
                                   f"({exc.strerror or exc}); {done}; the per-model reports are under "
                                   f"{out_dir / 'models'}") from None
        written.append(name)

    def table_csv(handle: Any) -> None:
        from synthdetect.csv_cells import spreadsheet_row

        writer = csv.DictWriter(handle, fieldnames=[k for k, _ in TABLE_COLUMNS])
        writer.writeheader()
        for row in summary["table"]:  # a model path such as "@org/m" is text to a spreadsheet, never a formula
            writer.writerow(spreadsheet_row({k: row.get(k) for k, _ in TABLE_COLUMNS}, ("model", "split")))

    write("comparison.json", lambda handle: handle.write(json.dumps(summary, indent=2) + "\n"))
    write("comparison.csv", table_csv)
    head = (f"{summary['n_records']} images ({summary['n_ai']} ai, {summary['n_human']} human) from {summary['data']}; "
            f"evidence probes {'on' if summary['use_evidence'] else 'off'}.")
    md = [f"# Comparison on {summary['data']}", "", head, "", markdown_table(summary["table"]), "",
          "## Agreement (share of images where p_ai >= 0.5 calls agree)", "", markdown_agreement(summary["agreement"])]
    if "ensemble" in summary:
        e = summary["ensemble"]
        md += ["", f"Ensemble: {e['method']}; calibrated on a stratified {e['calibration_split']['fraction']:g} split "
                   f"(seed {e['calibration_split']['seed']}, {e['calibration_split']['n']} images); its row and the "
                   f"held-out model rows use the other {e['calibration_split']['evaluated_on']} images."]
        md += [f"Left out of the ensemble: {name} ({why})." for name, why in e["excluded"].items()]
        md += [f"Calibration of {name}: {why}." for name, why in e.get("calibration_warnings", {}).items()]
    if "ensemble_not_written" in summary:
        md += ["", f"No ensemble: it was asked for but could not be made ({summary['ensemble_not_written']})."]
    write("comparison.md", lambda handle: handle.write("\n".join(md) + "\n"))
    write("comparison.html", lambda handle: handle.write(_html(summary, head)))  # UTF-8, as its <meta> says


def _html(summary: dict[str, Any], head: str) -> str:
    def table(header: list[str], body: list[list[str]]) -> str:
        h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
        b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
        return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"

    reports = {m["name"]: m["report"] for m in summary["models"]}
    if "ensemble" in summary:
        reports[ENSEMBLE_NAME] = summary["ensemble"]["report"]
    body = []
    for row in summary["table"]:
        cells = [html.escape(format_cell(row.get(k))) for k, _ in TABLE_COLUMNS]
        if row["model"] in reports:
            cells[0] = f"<a href='{html.escape(reports[row['model']])}'>{cells[0]}</a>"
        body.append(cells)
    agreement = summary["agreement"]
    agree_rows = [[html.escape(n)] + [html.escape(c) for c in cells]
                  for n, cells in zip(agreement["models"], agreement_cells(agreement))]
    note = ""
    if "ensemble" in summary:
        e = summary["ensemble"]
        note = (f"<p>Ensemble: {html.escape(e['method'])}; calibration on a stratified "
                f"{e['calibration_split']['fraction']:g} split (seed {e['calibration_split']['seed']}); "
                f"evaluated on the other {e['calibration_split']['evaluated_on']} images.</p>")
        note += "".join(f"<p>Left out of the ensemble: {html.escape(n)} ({html.escape(w)}).</p>"
                        for n, w in e["excluded"].items())
        note += "".join(f"<p>Calibration of {html.escape(n)}: {html.escape(w)}.</p>"
                        for n, w in e.get("calibration_warnings", {}).items())
    if "ensemble_not_written" in summary:
        note += (f"<p>No ensemble: it was asked for but could not be made "
                 f"({html.escape(summary['ensemble_not_written'])}).</p>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,"
             "th:first-child{text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>comparison on {html.escape(summary['data'])}"
            f"</title><style>{style}</style></head><body><h1>Comparison on {html.escape(summary['data'])}</h1>"
            f"<p>{html.escape(head)}</p>" + table([h for _, h in TABLE_COLUMNS], body) + note
            + "<h2>Agreement (share of images where p_ai &ge; 0.5 calls agree)</h2>"
            + table([""] + agreement["models"], agree_rows) + "</body></html>\n")
