"""Evaluate a detector on labelled records and write ``metrics.json`` plus a self-contained ``report.html``.

Predictions come from :meth:`Detector.detect`, the same path the CLI and the
server take, so the numbers describe exactly what is served (evidence,
routing, calibration and the ``uncertain`` band included).  The HTML page
embeds every plot and thumbnail as base64 PNG: it opens offline.

Other commands (``synthdetect compare``) build on the two public functions::

    predictions = predict_records(detector, records)
    metrics = write_report(predictions, "report_dir", title="my model on my data")
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from synthdetect.atomic import write_atomically
from synthdetect.interrupts import signal_number
from synthdetect.evaluate.metrics import (
    ECE_BINS,
    ECE_MIN_RELIABLE_N,
    REPORTED_FPRS,
    auc_against,
    binary_metrics,
    bootstrap_ci,
    ece_if_calibrated,
    group_metrics,
    reliability_bins,
)
from synthdetect.train.datasets import Record, read_record_bytes

#: A perturbation maps encoded image bytes to new encoded bytes (see perturb.py).
BytesTransform = Callable[[bytes], bytes]


@dataclass
class Predictions:
    """What a detector said about each record; ``p_ai`` is NaN where no score was given."""

    records: list[Record]
    p_ai: np.ndarray
    labels: np.ndarray
    errors: list[str | None]
    model_name: str
    seconds: float
    #: the verdict label per record (``ai``/``human``/``uncertain``; None for a failed file)
    verdicts: list[str | None] = field(default_factory=list)
    #: decoded image facts per record (format, width, height, bytes); empty dict for a failed file
    images: list[dict[str, Any]] = field(default_factory=list)
    #: the verdict's ``error_kind`` per record (``model_error`` when the model failed on it), None when judged
    error_kinds: list[str | None] = field(default_factory=list)

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.p_ai)


def predict_records(
    detector: Any,
    records: Sequence[Record],
    batch_size: int = 32,
    *,
    transform: BytesTransform | None = None,
    progress: bool = True,
    description: str = "evaluate",
) -> Predictions:
    """Judge every record with ``detector.detect`` (bytes in, verdicts out); failures never stop the run.

    ``transform`` (a robustness perturbation) rewrites each file's bytes
    before the detector sees them.  Ctrl-C raises :class:`JudgingInterrupted`; a model that cannot load part way
    (a routed one) raises its ``ModelPackageError`` unchanged but for ``partial`` and ``description`` attributes,
    as :class:`JudgingInterrupted` holds them, so the rows judged before it can be kept.
    """
    from rich.markup import escape

    from synthdetect.models import ModelPackageError
    from synthdetect.train.trainer import progress_bar

    if batch_size < 1:  # range() would raise on 0 and, on a negative step, judge nothing at all
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    records = list(records)
    p_ai = np.full(len(records), np.nan)
    errors: list[str | None] = [None] * len(records)
    verdicts: list[str | None] = [None] * len(records)
    error_kinds: list[str | None] = [None] * len(records)
    images: list[dict[str, Any]] = [{} for _ in records]
    started = time.perf_counter()
    bar = progress_bar(transient=True) if progress else None
    log_progress = _ProgressLines(description, len(records), started)
    # the bar's column reads markup, and a model path such as "m[/x]" is a name, not markup
    task = bar.add_task(escape(description), total=len(records), status="") if bar else None
    if bar:
        bar.start()
    done = 0  # records whose batch is finished: what an interrupted run can still hand back

    def judged(n: int) -> Predictions:
        return Predictions(
            records=records[:n], p_ai=p_ai[:n].copy(), labels=np.array([r.label for r in records[:n]], dtype=int),
            errors=errors[:n], model_name=getattr(detector, "name", "model"), seconds=time.perf_counter() - started,
            verdicts=verdicts[:n], images=images[:n], error_kinds=error_kinds[:n],
        )

    try:
        for start in range(0, len(records), batch_size):
            chunk = list(range(start, min(start + batch_size, len(records))))
            payloads, names, where = [], [], []
            for i in chunk:
                try:
                    data = read_record_bytes(records[i])
                    if transform is not None:
                        data = transform(data)
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop an evaluation
                    errors[i] = f"{records[i].ref}: {exc}"
                    error_kinds[i] = getattr(exc, "kind", "unreadable")
                    continue
                payloads.append(data)
                names.append(records[i].ref)
                where.append(i)
            for i, verdict, data in zip(where, detector.detect(payloads, names=names), payloads):
                verdicts[i] = verdict.label
                if verdict.error:
                    errors[i], error_kinds[i] = verdict.error, verdict.error_kind
                    continue
                images[i] = {**{k: verdict.image.get(k) for k in ("format", "width", "height")}, "bytes": len(data)}
                if verdict.p_ai is None:
                    errors[i] = f"{records[i].ref}: not scored: " + ("; ".join(verdict.reasons) or "no model score")
                elif not math.isfinite(verdict.p_ai):
                    # NaN reads as "not scored" everywhere below, so it must say why like any other unscored image
                    errors[i] = f"{records[i].ref}: not scored: the model gave a non-finite score ({verdict.p_ai})"
                else:
                    p_ai[i] = verdict.p_ai
            done = chunk[-1] + 1
            if bar:
                unscored = f"{sum(e is not None for e in errors)} unscored"
                bar.update(task, completed=chunk[-1] + 1, status=unscored)
                if not bar.console.is_terminal:
                    log_progress(chunk[-1] + 1, unscored)
    except KeyboardInterrupt as exc:
        raise JudgingInterrupted(description, done, len(records), signal_number(exc),
                                 partial=judged(done)) from None
    except ModelPackageError as exc:
        # A routed model loads at its first image, so it can fail part way: the error stays as it was (its type and
        # message), and carries the rows judged before it as a stop does, so they can still be put on disk.
        exc.partial, exc.description = judged(done), description
        raise
    finally:
        if bar:
            bar.stop()
    return judged(len(records))


class JudgingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, as ``signum``) while judging: how far the run of ``description`` got, and in ``partial``
    the predictions of the ``done`` records judged, so a stopped run can still put them on disk."""

    def __init__(self, description: str, done: int, total: int, signum: int | None, *,
                 partial: Predictions | None = None) -> None:
        super().__init__(*(() if signum is None else (signum,)))
        self.description, self.done, self.total, self.signum = description, done, total, signum
        self.partial = partial

    def __str__(self) -> str:
        return f"interrupted while judging ({self.description}): {self.done} of {self.total} images judged"


class _ProgressLines:
    """Plain progress lines on stderr where the live bar draws nothing (a log file, CI, nohup): at every tenth of
    the run and at least once a minute, so a run of hours is never silent."""

    def __init__(self, description: str, total: int, started: float, every_s: float = 60.0) -> None:
        self.description, self.total, self.started, self.every_s = description, total, started, every_s
        self.tenths_done, self.last = 0, started

    def __call__(self, done: int, status: str) -> None:
        now = time.perf_counter()
        tenths = done * 10 // max(self.total, 1)
        if tenths > self.tenths_done or now - self.last >= self.every_s:
            self.tenths_done, self.last = tenths, now
            print(f"{self.description}: {done} of {self.total} images done, {status}, {now - self.started:.0f} s",
                  file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# metrics


def _verdict_summary(predictions: Predictions) -> dict[str, Any]:
    """How the served three-way verdict (ai / human / uncertain) fares, per true class."""
    out: dict[str, Any] = {}
    decided = correct = 0
    for cls, name in ((1, "ai_images"), (0, "human_images")):
        counts = Counter(v for v, y in zip(predictions.verdicts, predictions.labels) if y == cls and v is not None)
        out[name] = {k: counts.get(k, 0) for k in ("ai", "human", "uncertain")}
        truth = "ai" if cls == 1 else "human"
        decided += counts.get("ai", 0) + counts.get("human", 0)
        correct += counts.get(truth, 0)
    total = sum(v is not None for v in predictions.verdicts)
    out["accuracy_when_decided"] = correct / decided if decided else None
    out["fraction_uncertain"] = (total - decided) / total if total else None
    out["false_ai_on_human_images"] = out["human_images"]["ai"]
    return out


def _group_table(predictions: Predictions, key: Callable[[Record], str | None], *,
                 auc_against_all_human: bool = False) -> list[dict[str, Any]]:
    """Metrics per group.  A group of one class has no ROC-AUC or ECE (its "accuracy" would be a recall and its
    "ECE" its mean score), so it gets the share of served verdicts instead, with the reason.  With
    ``auc_against_all_human`` a group of AI images is ranked against every scored human image of the data."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(predictions.records):
        groups[key(record) or "(none)"].append(i)
    scored_all = predictions.scored
    human_p = np.sort(predictions.p_ai[scored_all & (predictions.labels == 0)])  # sorted once for every group
    rows = []
    for name in sorted(groups):
        idx = np.array(groups[name])
        scored = idx[predictions.scored[idx]]
        y, p = predictions.labels[scored], predictions.p_ai[scored]
        row: dict[str, Any] = {"group": name, "n": int(idx.size), "scored": int(scored.size),
                               "ai": int((predictions.labels[idx] == 1).sum()),
                               "human": int((predictions.labels[idx] == 0).sum())}
        # Every verdict served, as in the overall summary: an image left unscored (out of domain) is still served
        # "uncertain"; only failed files (no verdict) are left out.
        served = [v for v in (predictions.verdicts[i] if i < len(predictions.verdicts) else None for i in idx)
                  if v is not None]
        if served:
            for label in ("ai", "human", "uncertain"):
                row[f"called_{label}"] = sum(v == label for v in served) / len(served)
            row["uncertain"] = sum(v == "uncertain" for v in served)
        if scored.size:
            row["mean_p_ai"] = float(p.mean())
            if len(np.unique(y)) == 2:
                row.update(group_metrics(p, y))
            else:
                row.update({"accuracy": None, "roc_auc": None, "ece": None,
                            "note": f"{'AI' if y[0] == 1 else 'human'} images only: ROC-AUC and ECE need both "
                                    "classes; see the share of verdicts"})
            if auc_against_all_human:
                both = (y == 1).all() and human_p.size
                row["roc_auc_vs_all_human"] = auc_against(p, human_p) if both else None
        else:  # an empty row would read as a group with nothing in it
            row["note"] = f"none of its {idx.size} images was scored (see Not scored)"
        rows.append(row)
    return rows


def _class_format_table(predictions: Predictions) -> list[dict[str, Any]]:
    """Format and size of each class: a model that learned "JPEG vs PNG" is not a detector."""
    rows = []
    for cls, name in ((1, "ai"), (0, "human")):
        facts = [predictions.images[i] for i in range(len(predictions.images))  # optional in a Predictions
                 if predictions.labels[i] == cls and predictions.images[i]]
        formats = Counter(f.get("format") or "?" for f in facts)
        short = np.array([min(f["width"], f["height"]) for f in facts if f.get("width")], dtype=float)
        size = np.array([f["bytes"] for f in facts], dtype=float)
        rows.append({
            "class": name, "n": len(facts),
            "formats": dict(formats.most_common()),
            "short_side_px": _quantiles(short), "file_kb": _quantiles(size / 1024),
        })
    return rows


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    q = np.percentile(values, [0, 50, 100])
    return {"min": round(float(q[0]), 1), "median": round(float(q[1]), 1), "max": round(float(q[2]), 1)}


#: Why a rate has no value, by the metric left undefined.
_UNDEFINED = {"precision": "no image was called AI (p_ai >= 0.5)", "recall": "there are no AI images",
              "f1": "no AI image, and none called AI"}


def _mark_undefined_rates(overall: dict[str, Any], y: np.ndarray, called_ai: np.ndarray) -> None:
    """Precision with no image called AI (recall, F1 with no AI image) is undefined: null with the reason, not
    scikit-learn's zero_division 0, which reads as "every AI call was wrong"."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    for name, score in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        if np.isnan(score(y, called_ai.astype(int), zero_division=np.nan)):
            overall[name] = None
            overall.setdefault("undefined", {})[name] = _UNDEFINED[name]
    if len(np.unique(y)) < 2:  # a ranking needs both classes: say why ROC-AUC, AP and TPR at FPR have no value
        only = "AI" if y[0] == 1 else "human"
        which = f"all {y.size} scored images are" if y.size > 1 else "the one scored image is"
        why = f"needs both classes; {which} {only}"
        for name in ("roc_auc", "average_precision", *(f"tpr_at_fpr_{fpr:g}" for fpr in REPORTED_FPRS)):
            overall[name] = None
            overall.setdefault("undefined", {})[name] = why


def compute_metrics(predictions: Predictions, threshold: float = 0.5) -> dict[str, Any]:
    """Every number the report shows, as plain JSON-ready values."""
    scored = predictions.scored
    y, p = predictions.labels[scored], predictions.p_ai[scored]
    out: dict[str, Any] = {
        "model": predictions.model_name,
        "n_records": len(predictions.records),
        "n_scored": int(scored.sum()),
        "n_unscored": int((~scored).sum()),
        "seconds": round(predictions.seconds, 2),
    }
    if scored.any():
        out["overall"] = overall = binary_metrics(p, y, threshold)
        _mark_undefined_rates(overall, y, p >= threshold)
        floor = ece_if_calibrated(p)
        overall["ece_if_calibrated"] = floor
        overall["ece_note"] = (
            f"ECE over {ECE_BINS} equal-width bins on {y.size} images; a perfectly calibrated model would score "
            f"{floor['mean']:.3f} on average on these scores (95% of the time at most {floor['p95']:.3f})"
            + (f"; on fewer than {ECE_MIN_RELIABLE_N} images ECE is mostly noise" if y.size < ECE_MIN_RELIABLE_N
               else ""))
        overall["saturated_scores"] = int(((p == 0.0) | (p == 1.0)).sum())
        if len(np.unique(y)) == 2:
            points = overall["at_fpr"]
            overall["ci95"] = bootstrap_ci(p, y, threshold=threshold, fpr_thresholds={
                f"tpr_at_fpr_{k}": v["threshold"] for k, v in points.items()})
        if len(np.unique(y)) == 2:
            from sklearn.metrics import precision_recall_curve, roc_curve

            fpr, tpr, _ = roc_curve(y, p)
            prec, rec, _ = precision_recall_curve(y, p)
            out["curves"] = {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
                             "pr": {"precision": prec.tolist(), "recall": rec.tolist()}}
        out["reliability"] = reliability_bins(p, y, n_bins=ECE_BINS)
    out["verdicts"] = _verdict_summary(predictions)
    out["per_source"] = _group_table(predictions, lambda r: r.source)
    out["per_generator"] = _group_table(predictions, lambda r: r.generator if r.label == 1 else "(human images)",
                                        auc_against_all_human=True)
    out["per_class_format"] = _class_format_table(predictions)
    errors = [e for e in predictions.errors if e]
    out["unscored_examples"] = errors[:20]
    return out


# ---------------------------------------------------------------------------------------------
# plots (matplotlib, Agg backend, inlined as base64 PNG)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _figure()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_curves(metrics: dict[str, Any]) -> str | None:
    curves = metrics.get("curves")
    if not curves:
        return None
    plt = _figure()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    overall = metrics["overall"]
    a.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], lw=2, label=f"AUC {overall['roc_auc']:.3f}")
    a.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    for fpr in (0.01, 0.05):
        a.axvline(fpr, c="tab:red", ls=":", lw=1)
    a.set(xlabel="false-positive rate (human called AI)", ylabel="true-positive rate", title="ROC")
    a.legend(loc="lower right")
    b.plot(curves["pr"]["recall"], curves["pr"]["precision"], lw=2, label=f"AP {overall['average_precision']:.3f}")
    b.axhline(overall["n_ai"] / max(overall["n"], 1), c="grey", ls="--", lw=1, label="chance")
    b.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    b.legend(loc="lower left")
    return _png(fig)


def _plot_reliability(predictions: Predictions, metrics: dict[str, Any]) -> str | None:
    bins = metrics.get("reliability")
    if not bins:
        return None
    plt = _figure()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    centres = [(r["lo"] + r["hi"]) / 2 for r in bins]
    observed = [r["frac_ai"] if r["frac_ai"] is not None else np.nan for r in bins]
    a.bar(centres, observed, width=0.9 / len(bins), alpha=0.7, edgecolor="k", label="observed share of AI images")
    a.plot([0, 1], [0, 1], ls="--", c="grey", label="perfect calibration")
    a.set(xlabel="predicted p_ai", ylabel="share that is AI", xlim=(0, 1), ylim=(0, 1),
          title=f"reliability (ECE {metrics['overall']['ece']:.3f}, {len(bins)} bins)")
    a.legend(loc="upper left", fontsize=8)
    scored = predictions.scored
    for cls, name, colour in ((0, "human", "tab:green"), (1, "ai", "tab:red")):
        sel = scored & (predictions.labels == cls)
        b.hist(predictions.p_ai[sel], bins=20, range=(0, 1), alpha=0.6, color=colour, label=f"{name} images")
    b.set(xlabel="p_ai", ylabel="images", title="score distribution per class")
    b.legend()
    return _png(fig)


def _thumbnail(record: Record, size: int = 160) -> str | None:
    from PIL import Image

    from synthdetect.images import load_image

    try:
        im: Image.Image = load_image(read_record_bytes(record), name=record.ref).rgb.copy()
    except Exception:  # noqa: BLE001 - a thumbnail is a nicety; the row still shows the file name
        return None
    im.thumbnail((size, size))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def worst_errors(predictions: Predictions, k: int = 12) -> list[int]:
    """Wrong served verdicts first (whatever their score), then scores on the wrong side of 0.5, by confidence."""
    scored = np.flatnonzero(predictions.scored)

    def served_wrong(i: int) -> bool:
        verdict = predictions.verdicts[i] if i < len(predictions.verdicts) else None
        return verdict in ("ai", "human") and verdict != ("ai" if predictions.labels[i] == 1 else "human")

    def score_wrong(i: int) -> bool:  # the confusion matrix's cut: p_ai >= 0.5 is AI, so a human at 0.5 is wrong
        return bool((predictions.p_ai[i] >= 0.5) != (predictions.labels[i] == 1))

    wrong = [int(i) for i in scored if served_wrong(i) or score_wrong(i)]
    wrong.sort(key=lambda i: (not served_wrong(i), -abs(predictions.p_ai[i] - predictions.labels[i])))
    return wrong[:k]


# ---------------------------------------------------------------------------------------------
# HTML


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return html.escape(str(value))


#: Short column headings so wide tables fit a laptop screen; accuracy is at p_ai 0.5, not at a model's served
#: thresholds, and its heading says so.
_HEADINGS = {"n_scored": "n", "accuracy": "accuracy @0.5", "average_precision": "AP", "roc_auc": "ROC-AUC",
             "tpr_at_fpr_0.01": "TPR @1% FPR", "tpr_at_fpr_0.05": "TPR @5% FPR",
             "fraction_uncertain": "share uncertain",
             "false_ai_on_human_images": "human called AI", "mean_p_ai": "mean p_ai", "ece": f"ECE ({ECE_BINS} bins)",
             "short_side_px": "short side (px)", "file_kb": "file size (kB)",
             "roc_auc_vs_all_human": "ROC-AUC vs all human images", "called_ai": "share called ai",
             "called_human": "share called human", "called_uncertain": "share called uncertain"}


def _ci(interval: Any) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""


def operating_point_rows(overall: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per reported FPR: the threshold, what FPR it really gave (k of n) and the intervals."""
    ci = overall.get("ci95") or {}
    rows = []
    for key, point in (overall.get("at_fpr") or {}).items():
        rows.append({"target FPR": f"{point['fpr_target']:.0%}", "threshold on p_ai": point["threshold"],
                     "human called AI": f"{point['false_positives']} of {point['n_human']}",
                     "FPR achieved": point["fpr_achieved"], "FPR exact 95% CI": _ci(point.get("fpr_ci95")),
                     "TPR": point["tpr"], "TPR 95% CI": _ci(ci.get(f"tpr_at_fpr_{key}")),
                     "note": point.get("note", "")})
    return rows


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(_HEADINGS.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


PERTURBATION_COLUMNS = ["perturbation", "n_scored", "accuracy", "roc_auc", "average_precision", "ece",
                        "tpr_at_fpr_0.01", "tpr_at_fpr_0.05", "fraction_uncertain", "false_ai_on_human_images"]


def perturbation_row(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    overall = metrics.get("overall", {})
    verdicts = metrics.get("verdicts", {})
    return {"perturbation": name, "n_scored": metrics["n_scored"],
            **{k: overall.get(k) for k in PERTURBATION_COLUMNS[2:8]},
            "fraction_uncertain": verdicts.get("fraction_uncertain"),
            "false_ai_on_human_images": verdicts.get("false_ai_on_human_images")}


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1180px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px} .card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:1.4em} .note{color:#666;font-size:.9em}
.gallery{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;width:170px;font-size:.75em;word-break:break-all}
figure img{max-width:160px;max-height:160px;border:1px solid #ccc} .bad{color:#b00} .scroll{overflow-x:auto}
"""


def render_html(predictions: Predictions, metrics: dict[str, Any], *, title: str,
                perturbations: dict[str, dict[str, Any]] | None = None) -> str:
    overall = metrics.get("overall", {})
    verdicts = metrics["verdicts"]
    cm = overall.get("confusion_matrix", {}).get("rows_true_cols_pred", [[0, 0], [0, 0]])
    ci = overall.get("ci95") or {}
    undefined = overall.get("undefined") or {}
    # (heading, metric key): a value that cannot be computed shows "–" with the reason from overall["undefined"]
    headings = [("loss", "loss"), ("accuracy @0.5", "accuracy"), ("precision", "precision"), ("recall", "recall"),
                ("F1", "f1"), ("ROC-AUC", "roc_auc"), ("avg precision", "average_precision"),
                (f"ECE ({ECE_BINS} bins)", "ece"), ("TPR @1% FPR", "tpr_at_fpr_0.01"),
                ("TPR @5% FPR", "tpr_at_fpr_0.05")]
    cards = [("images", metrics["n_records"], None, None), ("scored", metrics["n_scored"], None, None)] + [
        (heading, overall.get(key), ci.get(key), undefined.get(key, "")) for heading, key in headings]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>model <b>{html.escape(predictions.model_name)}</b>; {metrics['n_records']} images, "
             f"{metrics['n_scored']} scored, {metrics['n_unscored']} not scored; "
             f"{metrics['seconds']:.1f} s. Accuracy, precision, recall and F1 call an image AI when its calibrated "
             f"p_ai &ge; 0.5; ROC-AUC, AP and TPR at a fixed FPR need no threshold (TPR at 1% FPR is measured "
             f"on these images, so it is optimistic next to the card's validation thresholds). "
             f"The served verdicts below use the model's own thresholds and its uncertain band.</p>",
             "<div class='cards'>" + "".join(
                 f"<div class='card'>{html.escape(k)}<b>{_fmt(v)}</b><span class='note'>"
                 f"{html.escape(why or '') if v is None else _ci(c)}</span></div>"
                 for k, v, c, why in cards) + "</div>"]
    if ci:
        parts.append(f"<p class='note'>Brackets: {html.escape(ci['method'])}.</p>")
    points = operating_point_rows(overall)
    if points:
        parts.append("<h2>TPR at a fixed FPR: the thresholds and the FPR they really give</h2><p class='note'>The "
                     "threshold is the lowest that lets at most floor(target &times; n) of these human images "
                     "score at or above it; the FPR interval is exact (Clopper-Pearson).</p>"
                     + _table(points, list(points[0])))
    parts.append("<h2>Confusion matrix (p_ai &ge; 0.5)</h2>" + _table(
        [{"true \\ predicted": "human", "human": cm[0][0], "ai": cm[0][1]},
         {"true \\ predicted": "ai", "human": cm[1][0], "ai": cm[1][1]}], ["true \\ predicted", "human", "ai"]))
    parts.append("<h2>Served verdicts (model thresholds, with the uncertain band)</h2>" + _table(
        [{"true class": "human", **verdicts["human_images"]}, {"true class": "ai", **verdicts["ai_images"]}],
        ["true class", "human", "uncertain", "ai"])
        + f"<p>accuracy when decided: {_fmt(verdicts['accuracy_when_decided'])}; "
          f"share uncertain: {_fmt(verdicts['fraction_uncertain'])}</p>")
    curves = _plot_curves(metrics)
    if curves:
        parts.append(f"<h2>ROC and precision-recall</h2><img alt='ROC and PR curves' src='{curves}'>")
    reliability = _plot_reliability(predictions, metrics)
    if reliability:
        parts.append(f"<h2>Calibration</h2><img alt='reliability diagram' src='{reliability}'>"
                     f"<p class='note'>{html.escape(overall.get('ece_note', ''))}</p>")
    if perturbations:
        rows = [perturbation_row(name, m) for name, m in perturbations.items()]
        parts.append("<h2>Robustness sweep</h2><p class='note'>The same images, perturbed before the detector "
                     "sees them.</p>" + _table(rows, PERTURBATION_COLUMNS))
    group_cols = ["group", "n", "ai", "human", "scored", "accuracy", "roc_auc", "ece", "mean_p_ai", "called_ai",
                  "called_human", "called_uncertain", "note"]
    group_note = ("<p class='note'>Accuracy, ROC-AUC and ECE need both classes; a group of one class shows the "
                  "share of served verdicts (model thresholds) instead.</p>")
    parts.append("<h2>Per source</h2>" + group_note + _table(metrics["per_source"], group_cols))
    parts.append("<h2>Per generator</h2><p class='note'>ROC-AUC vs all human images ranks the generator's images "
                 "against every scored human image of the data.</p>"
                 + _table(metrics["per_generator"], group_cols[:8] + ["roc_auc_vs_all_human"] + group_cols[8:]))
    parts.append("<h2>Format and size per class</h2><p class='note'>When the classes differ in format or size, "
                 "a model can score well by learning the difference instead of generation artefacts.</p>"
                 + _table(metrics["per_class_format"], ["class", "n", "formats", "short_side_px", "file_kb"]))
    worst = worst_errors(predictions)
    figures = []
    for i in worst:
        record = predictions.records[i]
        thumb = _thumbnail(record)
        img = f"<img src='{thumb}' alt=''>" if thumb else "<div>(no preview)</div>"
        truth = "ai" if record.label == 1 else "human"
        figures.append(f"<figure>{img}<figcaption><span class='bad'>true {truth}, p_ai "
                       f"{predictions.p_ai[i]:.3f}</span> ({html.escape(str(predictions.verdicts[i]))})<br>"
                       f"{html.escape(record.source or '')}<br>{html.escape(Path(record.ref).name)}</figcaption></figure>")
    parts.append("<h2>Worst errors</h2><p class='note'>Wrong served verdicts first, then the most confident scores on "
                 "the wrong side of 0.5; the verdict served is in brackets.</p>" + (f"<div class='gallery'>{''.join(figures)}</div>" if figures
                                             else "<p>No image scored on the wrong side of 0.5.</p>"))
    if metrics["unscored_examples"]:
        items = "".join(f"<li>{html.escape(e)}</li>" for e in metrics["unscored_examples"])
        shown = len(metrics["unscored_examples"])
        more = (f"<p class='note'>The first {shown} of {metrics['n_unscored']}; every one, with its reason, is in "
                f"predictions.csv (column <code>error</code>).</p>" if metrics["n_unscored"] > shown else "")
        parts.append(f"<h2>Not scored ({metrics['n_unscored']})</h2>{more}<ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


class ReportNotWritten(OSError):
    """A report file could not be written (a full disk, a folder in the way): one line naming the file, the reason,
    and which files of this run are on disk beside it, and which there are an earlier run's.  An ``OSError``, so
    callers that catch one still do."""


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) while the report was being written; ``message`` says what is on disk.  Its args stay
    the signal number, as callers that tell SIGTERM from Ctrl-C read it."""

    def __init__(self, message: str, signum: int | None) -> None:
        super().__init__(*(() if signum is None else (signum,)))
        self.message, self.signum = message, signum

    def __str__(self) -> str:
        return self.message


REPORT_FILES = ("predictions.csv", "metrics.json", "report.html")
#: What an interrupted ``evaluate`` leaves: the rows judged so far, named so it is never taken for a whole run.
PARTIAL_PREDICTIONS = "predictions.partial.csv"


def on_disk(out_dir: Path, written: Sequence[str] = (), detail: str = "") -> str:
    """What ``out_dir`` holds after a run that did not finish: this run's files (``detail`` said after the folder),
    and an earlier run's."""
    earlier = [name for name in (*REPORT_FILES, PARTIAL_PREDICTIONS) if name not in written
               and (out_dir / name).is_file()]
    said = f"this run wrote {' and '.join(written) or 'nothing'} to {out_dir}{detail}"
    if earlier:
        said += f"; {' and '.join(earlier)} there {'is' if len(earlier) == 1 else 'are'} an earlier run's"
    return said


def out_dir_unwritable(out_dir: Path, names: Sequence[str] = REPORT_FILES) -> str | None:
    """Why the report cannot be written into ``out_dir``, said before any judging rather than after it: a folder
    where a report file goes, or a nearest existing folder that this user cannot write into."""
    out_dir = Path(out_dir)
    for name in names:
        if (out_dir / name).is_dir():
            return f"{out_dir / name}: is a folder, and the report writes a file of that name"
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        return f"{out_dir}: cannot write into {existing} (permission denied, or a read-only file system)"
    return None


def write_report(
    predictions: Predictions,
    out_dir: str | Path,
    *,
    title: str | None = None,
    perturbations: dict[str, Predictions] | None = None,
) -> dict[str, Any]:
    """Write ``predictions.csv``, ``metrics.json`` and ``report.html`` into ``out_dir``; return the metrics.

    Each file is written whole or not at all.  A file that cannot be written raises :class:`ReportNotWritten`, and
    Ctrl-C :class:`ReportInterrupted`; either says which files are this run's.  A finished report removes an earlier
    stopped run's ``predictions.partial.csv``.
    """
    out_dir = Path(out_dir)
    written: list[str] = []

    def write(name: str, body: Callable[[TextIO], None] | None) -> None:
        """Write one file (``body`` None: make the folder); an OSError here is this file's, said as such."""
        try:
            if body is None:
                out_dir.mkdir(parents=True, exist_ok=True)
                return
            write_atomically(out_dir / name, body)
        except OSError as exc:
            raise ReportNotWritten(f"{exc.filename or out_dir / name}: could not {'write' if body else 'create'} "
                                   f"it ({exc.strerror or exc}); {on_disk(out_dir, written)}") from None
        written.append(name)

    try:
        write("", None)
        # The raw predictions first, then the numbers, then the page: if a later step fails, an hour of judging is
        # still on disk and every number can be recomputed from predictions.csv.
        write("predictions.csv", lambda stream: write_predictions_rows(
            stream, {"none": predictions, **(perturbations or {})}))
        metrics = compute_metrics(predictions)
        perturbed = {name: compute_metrics(p) for name, p in (perturbations or {}).items()}
        if perturbed:
            metrics["perturbations"] = {name: {k: v for k, v in m.items() if k != "curves"}
                                        for name, m in perturbed.items()}
            metrics["robustness_table"] = [perturbation_row("none", metrics)] + [
                perturbation_row(name, m) for name, m in perturbed.items()]
        title = title or f"{predictions.model_name}: evaluation"
        table = {"none": metrics, **perturbed} if perturbed else None
        text = json.dumps(metrics, indent=2, default=_json_default) + "\n"
        write("metrics.json", lambda stream: stream.write(text))
        page = render_html(predictions, metrics, title=title, perturbations=table)
        write("report.html", lambda stream: stream.write(page))  # UTF-8, as its <meta> says, whatever the locale
    except KeyboardInterrupt as exc:
        raise ReportInterrupted(f"interrupted while writing the report: {on_disk(out_dir, written)} (each file "
                                "whole)", signal_number(exc)) from None
    # an earlier stopped run's rows beside this finished report would read as this run's
    (out_dir / PARTIAL_PREDICTIONS).unlink(missing_ok=True)
    return metrics


PREDICTION_COLUMNS = ["perturbation", "file", "label", "source", "generator", "p_ai", "verdict", "error"]


def write_partial_predictions(out_dir: str | Path, predictions: dict[str, Predictions]) -> tuple[list[str], str]:
    """The rows judged before Ctrl-C, as ``predictions.partial.csv`` (the columns of ``predictions.csv``, whole or
    not at all); no metrics or report, which would read as a finished run.  Returns the files written (for
    :func:`on_disk`) and what to say after them: how many rows, or why the file could not be written."""
    runs = {name: pred for name, pred in predictions.items() if pred.records}
    if not runs:
        return [], ""
    path = Path(out_dir) / PARTIAL_PREDICTIONS
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda stream: write_predictions_rows(stream, runs))
    except OSError as exc:
        return [], f" ({path} could not be written: {exc.strerror or exc})"
    counts = ", ".join(f"{len(pred.records)} {'unperturbed' if name == 'none' else 'with ' + name}"
                       for name, pred in runs.items())
    n = len(runs["none"].records) if list(runs) == ["none"] else 0
    rows = f"{n} image{'' if n == 1 else 's'} judged" if n else f"images judged: {counts}"
    return [PARTIAL_PREDICTIONS], f" (the rows of the {rows}; partial: no metrics, no report)"


def write_predictions_csv(path: Path, predictions: dict[str, Predictions]) -> None:
    """One row per image (and per perturbation; ``none`` is the unperturbed run): every number is recomputable."""
    write_atomically(Path(path), lambda stream: write_predictions_rows(stream, predictions))


def write_predictions_rows(stream: TextIO, predictions: dict[str, Predictions]) -> None:
    """The rows of ``predictions.csv``.  File, source, generator and error come from the data and are opened in a
    spreadsheet: one that starts like a formula (``=HYPERLINK(...).png``) gets a leading apostrophe, as in
    ``detect --format csv`` (:mod:`synthdetect.csv_cells`); numbers and the fixed words are left as they are."""
    from synthdetect.csv_cells import spreadsheet_text

    writer = csv.writer(stream)
    writer.writerow(PREDICTION_COLUMNS)
    for name, pred in predictions.items():
        for i, record in enumerate(pred.records):
            verdict = pred.verdicts[i] if i < len(pred.verdicts) else None
            p = pred.p_ai[i]
            writer.writerow([name, spreadsheet_text(record.ref), "ai" if pred.labels[i] == 1 else "human",
                             spreadsheet_text(record.source or ""), spreadsheet_text(record.generator or ""),
                             "" if np.isnan(p) else repr(float(p)), verdict or "",
                             spreadsheet_text(pred.errors[i] or "")])


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
