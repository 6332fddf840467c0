"""Autopilot: train every candidate model kind within a time budget, rank them on held-out sources, export the best.

The idea of DataRobot's autopilot, on one small machine and with our honesty
rules:

* Validation holds out **whole sources** (:func:`split_records` with
  ``method="source"``): the leaderboard asks "does it work on a source it
  has never seen?", never "does it work on more images of the same website".
* Every candidate is trained by the kind's own trainer from the registry
  (``synthdetect.train.registry``) into a normal model package, then judged
  on the held-out sources through :class:`~synthdetect.api.Detector` (model
  only: provenance evidence would decide some images whatever the model
  says and hide the difference between models); linear-head kinds read the
  same numbers from the feature cache (:func:`judge_held_out`).
* The budget is enforced from outside: each candidate runs in its own
  process with a hard deadline (its share of what is left) and is killed
  when it overruns.  A trainer cannot overrun the budget by ignoring a
  flag, and a killed candidate still appears on the leaderboard as
  ``stopped: budget``.  Time a candidate does not use rolls over to the
  ones after it.

Python use::

    result = run_autopilot(open_dataset("data/"), "runs/auto", budget_s=1200)
    result.best            # the exported package directory, or None
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdetect.interrupts import interrupt_signal, sigterm_raises
from synthdetect.messages import first_line
from synthdetect.train.datasets import Record

#: Columns of the leaderboard, in the order the table, CSV and HTML show them.
LEADERBOARD_COLUMNS = [
    "rank", "candidate", "kind", "status", "metric", "roc_auc", "tpr_at_fpr_0.05", "ece", "accuracy",
    "n_scored", "train_seconds", "images_per_second", "size_mb",
]
#: Metrics the leaderboard can rank by; True where higher is better.
RANK_METRICS: dict[str, bool] = {
    "roc_auc": True, "average_precision": True, "tpr_at_fpr_0.05": True, "tpr_at_fpr_0.01": True,
    "accuracy": True, "f1": True, "ece": False, "loss": False,
}
#: Short headers for the printed table (the CSV and JSON keep the full names).
HEADERS = {"rank": "#", "metric": "{metric}", "roc_auc": "AUC", "tpr_at_fpr_0.05": "TPR@5%FPR", "ece": "ECE",
           "accuracy": "acc@0.5", "n_scored": "scored", "train_seconds": "train s",
           "images_per_second": "img/s", "size_mb": "MB"}
FINISHED = "finished"
STOPPED = "stopped: budget"
SKIPPED = "skipped: budget spent"
INTERRUPTED = "stopped: interrupted"
SKIPPED_INTERRUPTED = "skipped: interrupted"


class AutopilotError(ValueError):
    pass


class FinishInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM after the candidates ran, while the winner, leaderboard and report were written."""

    def __init__(self, out: Path, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum
        self.message = (f"interrupted while writing the results into {out}: each file there is whole, but the "
                        f"model, leaderboard and report may still be an earlier run's; this run's candidates, each "
                        f"with its package and report, are in {out / 'candidates'}")


class AutopilotInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: raised after the running worker is killed and the leaderboard of what finished is
    written; ``result`` holds it and ``signum`` says which signal, for the exit code."""

    def __init__(self, result: "AutopilotResult", signum: int = signal.SIGINT):
        super().__init__(signum)
        self.result = result
        self.signum = signum


@dataclass
class Candidate:
    """One blueprint: a model kind with its options.  ``weight`` is its expected cost relative to the others,
    used to share the budget (a candidate gets ``weight / sum(weights left)`` of the time left)."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    augment: dict[str, Any] = field(default_factory=dict)  # AugmentConfig fields
    weight: float = 1.0


#: The default blueprints, cheapest first.  Whole-image CNNs at 96 px, 8 channels wide (an epoch of a few
#: hundred images takes seconds on 2 cores), with no upper size limit and aspect ratios up to 4:1, so that
#: full-size photos are in their domain.
DEFAULT_CANDIDATES: list[Candidate] = [
    Candidate("handcrafted", "handcrafted", weight=1.0),
    Candidate("small-cnn-96", "small-cnn",
              options={"input_size": 96, "max_short_side": 0, "max_aspect": 4.0, "width": 8},
              config={"epochs": 12, "patience": 3, "batch_size": 32, "lr": 3e-3}, weight=1.0),
    Candidate("ela-cnn-96", "ela-cnn", options={"input_size": 96, "max_aspect": 4.0, "width": 8},
              config={"epochs": 12, "patience": 3, "batch_size": 32, "lr": 3e-3}, weight=1.5),
    Candidate("efficientnet-lite0", "efficientnet-lite0", weight=2.5),
    Candidate("clip-head", "clip-head", weight=3.0),
]


def default_candidates(kinds: Sequence[str] | None = None) -> list[Candidate]:
    """The default blueprints, or those for ``kinds`` (a candidate name or a model kind each)."""
    if not kinds:
        return [replace(c) for c in DEFAULT_CANDIDATES]
    by_name = {c.name: c for c in DEFAULT_CANDIDATES}
    by_kind = {c.kind: c for c in DEFAULT_CANDIDATES}
    out = []
    for kind in kinds:
        base = by_name.get(kind) or by_kind.get(kind)
        out.append(replace(base) if base else Candidate(kind, kind))
    return out


# longer units first: with "m|min" the regex took the "m" of "20min" and left "in" unread
def refuse_unknown_kinds(kinds: Sequence[str]) -> None:
    """``--kind`` names neither a blueprint nor a registered kind: a typo would otherwise run, fail in its worker
    and end the run blaming the budget."""
    from synthdetect.train.registry import TRAINERS

    blueprints = {c.name for c in DEFAULT_CANDIDATES} | {c.kind for c in DEFAULT_CANDIDATES}
    unknown = [k for k in kinds if k not in blueprints and k not in TRAINERS]
    if unknown:
        known = sorted({c.name for c in DEFAULT_CANDIDATES} | set(TRAINERS.names()))
        raise AutopilotError(f"unknown --kind {', '.join(unknown)} (blueprints and model kinds: {', '.join(known)})")


_BUDGET = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|sec|s)?", re.IGNORECASE)


def parse_budget(text: str) -> float:
    """``"20m"``, ``"90s"``, ``"1h30m"``, ``"45"`` (seconds) -> seconds."""
    text = str(text).strip()
    pos, total, parts, bare = 0, 0.0, 0, False
    units = {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1, None: 1}
    for match in _BUDGET.finditer(text):
        if match.start() != pos and text[pos : match.start()].strip():
            break
        total += float(match.group(1)) * units[(match.group(2) or "").lower() or None]
        pos, parts, bare = match.end(), parts + 1, bare or not match.group(2)
    # a number without a unit is seconds only on its own: "1h30" read as 1 h 30 s lost 29.5 minutes unsaid
    if not text or text[pos:].strip() or total <= 0 or (bare and parts > 1):
        raise AutopilotError(f"cannot read budget '{text}' (examples: 20m, 90s, 1h30m)")
    return total


def require_sources(records: Sequence[Record], data: str | Path, minimum: int = 2) -> None:
    """Whole sources are held out, so records need sources; class folders carry none (a CSV 'source' column does).

    Training, validation and the held-out test each need a source of their own: the message said "at least two",
    and a user who added a second source was then refused by the split ("no source is left for training").
    """
    sources = sorted({r.source for r in records if r.source})
    if len(sources) < minimum:
        found = ("no source" if not sources else f"one source ({sources[0]})" if len(sources) == 1
                 else f"{len(sources)} sources ({', '.join(sources)})")
        raise AutopilotError(f"{data}: holding out whole sources needs a CSV manifest with a 'source' column "
                             f"naming at least three sources (path,label,source): one or more for training, one for "
                             f"validation, one held out; found {found}")


def fraction_problems(val_fraction: float, test_fraction: float, holdout_sources: Sequence[str] = ()) -> list[str]:
    """Fractions the source split cannot honour: the split still gave every part a source, so ``--val-fraction 0``
    ran with a validation source anyway and ``--test-fraction -1`` was refused as a one-class held-out set."""
    problems = []
    if not 0 < val_fraction < 1:
        problems.append(f"--val-fraction {val_fraction:g}: expected above 0 and below 1 (validation sources choose "
                        f"epochs, calibration and thresholds)")
    if holdout_sources:  # the named sources are held out whatever the fraction; only nonsense is refused
        if not 0 <= test_fraction < 1:
            problems.append(f"--test-fraction {test_fraction:g}: expected at least 0 and below 1")
    elif not 0 < test_fraction < 1:
        problems.append(f"--test-fraction {test_fraction:g}: expected above 0 and below 1 (the leaderboard is "
                        f"measured on the held-out sources), or name them with --holdout-source")
    elif 0 < val_fraction < 1 and val_fraction + test_fraction >= 1:
        problems.append(f"--val-fraction {val_fraction:g} + --test-fraction {test_fraction:g} leave nothing to train "
                        f"on (their sum must be below 1)")
    return problems


def no_winner_reason(rows: Sequence[dict[str, Any]], metric: str, budget_s: float,
                     reserve_s: float | None = None) -> str:
    """Why no candidate was ranked, from the rows: the command said "no candidate finished within 30 s" when the
    only candidate had failed after 3 s, or had finished but scored too few held-out images for the metric."""
    def names(selected: list[dict[str, Any]]) -> str:
        return ", ".join(str(r.get("candidate")) for r in selected)

    parts = []
    unscored = [r for r in rows if r.get("status") == FINISHED]
    if unscored:
        parts.append(f"{names(unscored)} finished, but {metric} could not be computed on its held-out images "
                     f"(it needs scored images of both classes; see 'scored')")
    failed = [r for r in rows if str(r.get("status", "")).startswith("failed")]
    if failed:
        parts.append(f"{names(failed)} failed (the reason is in its status and train.log)")
    stopped = [r for r in rows if r.get("status") == STOPPED]
    if stopped:
        parts.append(f"{names(stopped)} did not finish within its share of the {budget_s:g} s budget")
    skipped = [r for r in rows if r.get("status") == SKIPPED]
    if skipped:  # "budget spent" with 0 s used of 5 s: the reserve took what the start-up had left
        kept = f" once {reserve_s:g} s are kept for the leaderboard, export and report" if reserve_s else ""
        parts.append(f"{names(skipped)} never started: the {budget_s:g} s budget left too little time{kept}; "
                     f"give a larger --budget")
    interrupted = [r for r in rows if r.get("status") in (INTERRUPTED, SKIPPED_INTERRUPTED)]
    if interrupted:
        parts.append(f"{names(interrupted)} stopped by the interrupt")
    missing = [r for r in rows if r.get("status") == "unavailable"]
    if missing:
        parts.append(f"{names(missing)} not available here")
    return "no candidate was ranked: " + ("; ".join(parts) if parts else "there were no candidates")


def chance_warning(best_row: dict[str, Any], metric: str) -> str | None:
    """The best of the candidates need not be a working detector: ranked by ECE, a model answering 0.5 for every
    image (ROC-AUC 0.000 here) won and was exported without a word."""
    auc = best_row.get("roc_auc")
    if auc is None or (isinstance(auc, float) and math.isnan(auc)) or auc > 0.5:
        return None
    return (f"the winner {best_row['candidate']} separates AI from human held-out images no better than chance "
            f"(ROC-AUC {auc:.3f}): it is the best of these candidates by {metric}, not a working detector")


def available(kind: str) -> str | None:
    """None when the kind has a trainer here, else why not (unknown kind, missing module)."""
    from synthdetect.train.registry import TrainerError, get_trainer

    try:
        get_trainer(kind)
    except TrainerError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a broken trainer module must not stop the other candidates
        return f"model kind '{kind}' failed to import: {exc}"
    return None


# ---------------------------------------------------------------------------------------------
# leaderboard


def rank_rows(rows: list[dict[str, Any]], metric: str = "roc_auc") -> list[dict[str, Any]]:
    """Finished candidates by ``metric`` (ties: TPR at 5% FPR, then lower ECE, then faster training); the rest after,
    in the order they ran, unavailable kinds last.  Sets ``rank`` (None for candidates without a score)."""
    if metric not in RANK_METRICS:
        raise AutopilotError(f"unknown metric '{metric}' (one of {', '.join(RANK_METRICS)})")
    higher = RANK_METRICS[metric]

    def number(value: Any, worst: float) -> float:
        return worst if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    def ranked_value(row: dict[str, Any]) -> Any:
        return row["common_metric"] if "common_metric" in row else row.get(metric)

    def key(row: dict[str, Any]):
        value = number(ranked_value(row), -math.inf if higher else math.inf)
        return (-value if higher else value, -number(row.get("tpr_at_fpr_0.05"), -math.inf),
                number(row.get("ece"), math.inf), number(row.get("train_seconds"), math.inf))

    # NaN is no score: it sorted last among the scored, yet ranked (and was exported when it stood alone)
    scored = [r for r in rows if r.get("status") == FINISHED and not math.isnan(number(ranked_value(r), math.nan))]
    others = ([r for r in rows if r not in scored and r.get("status") != "unavailable"]
              + [r for r in rows if r.get("status") == "unavailable"])
    ordered = sorted(scored, key=key)
    for i, row in enumerate(ordered, start=1):
        row["rank"] = i
        row["metric"] = ranked_value(row)
    for row in others:
        row["rank"] = None
        row["metric"] = row.get(metric)
    return ordered + others


def rank_on_common_images(rows: list[dict[str, Any]], out: Path, labels: Sequence[int], metric: str) -> str | None:
    """When finished candidates scored different held-out images, put each one's ``metric`` on the images every one
    of them scored into ``common_metric`` (ranked on by :func:`rank_rows`); returns a note saying so.

    A candidate that abstains on the hard images (a size route answering ``uncertain``) scored higher on the easy
    rest and won, although the leaderboard compared it with candidates that judged every image.
    """
    from synthdetect.evaluate.metrics import binary_metrics

    finished = [r for r in rows if r.get("status") == FINISHED]
    scores = {}
    for row in finished:
        try:
            saved = json.loads((out / "candidates" / row["candidate"] / "predictions.json").read_text())
        except (OSError, ValueError):
            return None  # cannot compare what is not there: the own-coverage ranking stands
        scores[row["candidate"]] = np.array([np.nan if v is None else v for v in saved["p_ai"]], dtype=float)
    if len(scores) < 2 or len({len(v) for v in scores.values()}) != 1:
        return None
    common = np.logical_and.reduce([np.isfinite(v) for v in scores.values()])
    if all(np.array_equal(common, np.isfinite(v)) for v in scores.values()):
        return None
    y = np.asarray(labels, dtype=int)
    if len(np.unique(y[common])) < 2:
        return (f"finished candidates scored different held-out images, and the {int(common.sum())} they all "
                f"scored lack one class, so each is ranked on its own images (see 'scored')")
    for row in finished:
        row["common_metric"] = binary_metrics(scores[row["candidate"]][common], y[common]).get(metric)
        row["common_images"] = int(common.sum())
    counts = sorted(int(np.isfinite(v).sum()) for v in scores.values())
    return (f"finished candidates scored {counts[0]}-{counts[-1]} of {y.size} held-out images; {metric} in the "
            f"'metric' column (and the ranking) is on the {int(common.sum())} images every one of them scored")


def format_cell(value: Any) -> str:
    """Table cell text: 3 decimals, and a dash for missing or NaN values."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def leaderboard_table(rows: list[dict[str, Any]], metric: str, title: str = "leaderboard"):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, header_style="bold")
    # the 'metric' column repeats a shown one, unless the ranking was on the images every candidate scored: then the
    # note names it, and without it rank 1 could show a lower AUC than rank 2 and nothing saying why
    common = any("common_metric" in row for row in rows)
    columns = [c for c in LEADERBOARD_COLUMNS if not (c == "metric" and metric in LEADERBOARD_COLUMNS and not common)]
    for col in columns:
        header = "metric" if col == "metric" and common else HEADERS.get(col, col).format(metric=metric)
        # the status wraps at 40 characters: a failure's one-line reason, kept on one line, squeezed every other
        # column to nothing (names cut to two letters, the numbers gone)
        table.add_column(header, justify="left" if col in ("candidate", "kind", "status") else "right",
                         overflow="fold", no_wrap=col in ("candidate", "kind"),
                         max_width=40 if col == "status" else None)
    for row in rows:
        style = "green" if row.get("rank") == 1 else ("dim" if row.get("status") != FINISHED else None)
        table.add_row(*[Text(format_cell(row.get(c))) for c in columns], style=style)  # Text: names are not markup
    return table


def write_leaderboard(rows: list[dict[str, Any]], out: Path, summary: dict[str, Any]) -> None:
    """Both files written whole or not at all: a Ctrl-C while they were written left a cut CSV that read as a
    shorter leaderboard."""
    from synthdetect.models.package import write_text_atomic

    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=LEADERBOARD_COLUMNS + ["package", "report", "error"],
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in writer.fieldnames})
    write_text_atomic(out / "leaderboard.csv", table.getvalue())
    write_text_atomic(out / "leaderboard.json", json.dumps({**summary, "leaderboard": rows}, indent=2, default=str) + "\n")


def leaderboard_html(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> str:
    metric = summary["metric"]
    head = "".join(f"<th>{html.escape(f'{metric} (held-out)' if c == 'metric' else c)}</th>"
                   for c in LEADERBOARD_COLUMNS + ["report"])
    body = []
    for row in rows:
        cells = "".join(f"<td>{html.escape(format_cell(row.get(c)))}</td>" for c in LEADERBOARD_COLUMNS)
        report = row.get("report")
        link = f"<a href='{html.escape(os.path.relpath(report, out))}'>report</a>" if report else "–"
        body.append(f"<tr>{cells}<td>{link}</td></tr>")
    split = summary["split"]
    note = (f"Budget {summary['budget_s']:.0f} s, used {summary['elapsed_s']:.0f} s. Ranked by {html.escape(metric)} "
            f"on held-out sources {html.escape(', '.join(split.get('test_sources', [])))} (never seen in training; "
            f"validation sources {html.escape(', '.join(split.get('validation_sources', [])))} chose epochs, "
            f"calibration and thresholds). Scores are the models' calibrated p_ai without provenance evidence. "
            f"images/s is the served Detector path on one process."
            + (f" Note: {html.escape(summary['coverage_note'])}." if summary.get("coverage_note") else "")
            + (f" <strong>Warning: {html.escape(summary['warning'])}.</strong>" if summary.get("warning") else ""))
    missing = summary.get("unavailable") or []
    extra = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    return (f"<h2>Autopilot leaderboard</h2><p class='note'>{note}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<p>Kinds not available here:</p><ul>{extra}</ul>" if extra else ""))


# ---------------------------------------------------------------------------------------------
# one candidate, in its own process


def _record_dict(record: Record) -> dict[str, Any]:
    return asdict(record)


def _set_phase(workdir: Path, phase: str) -> None:
    (workdir / "phase.txt").write_text(phase)


def package_bytes(card: dict[str, Any], root: Path) -> int:
    """Bytes needed to serve the package: its files, plus the shared CLIP encoder when a member uses it."""
    total = sum(int(f.get("bytes", 0)) for f in (card.get("files") or {}).values())
    if any(m.get("extractor", "").startswith("clip") for m in card.get("members") or []):
        try:
            from synthdetect.models.clip_onnx import encoder_path

            total += encoder_path(verify=False).stat().st_size
        except Exception:  # noqa: BLE001 - size is informative; a missing encoder fails loudly elsewhere
            pass
    return total


def run_candidate_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one candidate, judge it on the held-out records, write its report; the worker process body."""
    from synthdetect.evaluate.report import write_report
    from synthdetect.models import load_model
    from synthdetect.train.augment import AugmentConfig
    from synthdetect.train.registry import TrainRequest, get_trainer
    from synthdetect.train.trainer import TrainConfig, set_threads

    workdir = Path(job["workdir"])
    candidate = Candidate(**job["candidate"])
    threads = set_threads(job.get("threads"))
    records = {k: [Record(**r) for r in job[k]] for k in ("train", "val", "test")}
    config = TrainConfig(**{"seed": job["seed"], "threads": threads, **candidate.config})
    request = TrainRequest(
        train=records["train"], val=records["val"], test=records["test"], out=workdir / "package",
        name=job["model_name"], seed=job["seed"], threads=threads, augment=AugmentConfig(**candidate.augment),
        options=dict(candidate.options), command=job.get("command"), config=config, data=job.get("data"),
        split=job["split"],
    )
    _set_phase(workdir, "training")
    t0 = time.perf_counter()
    package = get_trainer(candidate.kind)(request)
    train_seconds = time.perf_counter() - t0
    _set_phase(workdir, "judging held-out sources")
    predictions, images_per_second, scored_by = judge_held_out(load_model(str(package.root)), records["test"],
                                                               candidate.name)
    _set_phase(workdir, "writing report")
    metrics = write_report(predictions, workdir / "report",
                           title=f"autopilot candidate {candidate.name} on held-out sources")
    (workdir / "predictions.json").write_text(json.dumps({
        "p_ai": [None if math.isnan(p) else float(p) for p in predictions.p_ai],
        "errors": predictions.errors, "verdicts": predictions.verdicts, "images": predictions.images,
        "seconds": predictions.seconds, "model_name": predictions.model_name,
    }))
    overall = metrics.get("overall", {})
    result = {
        "status": FINISHED, "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(predictions.seconds, 1),
        "images_per_second": images_per_second, "scored_by": scored_by,
        "n_test": len(records["test"]), "n_scored": metrics["n_scored"],
        "size_mb": round(package_bytes(package.card, package.root) / 1e6, 3),
        "parameters": package.card.get("parameters"), "unreadable": unreadable_note(package.card),
        "package": str(package.root), "report": str(workdir / "report" / "report.html"),
        **{k: overall.get(k) for k in ("roc_auc", "average_precision", "tpr_at_fpr_0.05", "tpr_at_fpr_0.01",
                                       "ece", "accuracy", "f1", "loss")},
    }
    return result


def unreadable_note(card: dict[str, Any]) -> str | None:
    """The images a candidate could not read, from its card's split (``training.split.<part>.unreadable``): the card
    and train.log held them, and the autopilot's own output said nothing of them."""
    split = (card.get("training") or {}).get("split") or {}
    counts = [(int((split.get(part) or {}).get("unreadable") or 0), role)
              for part, role in (("train", "training"), ("validation", "validation"), ("test", "held-out"))]
    counts = [f"{n} {role}" for n, role in counts if n]
    if not counts:
        return None
    failed = (card.get("training") or {}).get("images_failed") or []
    first = f" (first: {failed[0]})" if failed else ""
    return f"{', '.join(counts)} image(s) could not be read and were left out{first}"


def judge_held_out(model: Any, records: Sequence[Record], name: str, sample: int = 16):
    """``(predictions, images/s, how)`` on the held-out records.

    Through the Detector (model only); for linear-head kinds (``handcrafted``,
    ``clip-head``) the scores come from the shared feature cache instead --
    the same numbers (tests/test_distill.py checks it), without a second CLIP
    pass over every held-out image -- and the Detector is timed on a sample
    of ``sample`` images for the served speed.
    """
    from synthdetect.api import Detector
    from synthdetect.evaluate.report import Predictions, predict_records
    from synthdetect.fusion import fuse
    from synthdetect.models.base import ModelScore
    from synthdetect.train.distill import cached_scores

    detector = Detector(model, use_evidence=False)
    started = time.perf_counter()
    cached = cached_scores(model, records)
    if cached is None:
        predictions = predict_records(detector, records, description=f"{name}: held-out")
        speed = round(len(records) / predictions.seconds, 2) if predictions.seconds else None
        return predictions, speed, "detector"
    p, facts, reasons = cached
    # as the Detector answers: no verdict for an undecodable file, "uncertain" where the model declines (out of domain)
    verdicts = [None if not fact else "uncertain" if np.isnan(q)
                else fuse([], ModelScore(model.name, float("nan"), float(q)), model).label
                for q, fact in zip(p, facts)]
    predictions = Predictions(records=list(records), p_ai=p, labels=np.array([r.label for r in records], dtype=int),
                              errors=reasons, model_name=model.name, seconds=time.perf_counter() - started,
                              verdicts=verdicts, images=facts)
    timed = predict_records(detector, list(records)[:sample], description=f"{name}: timing the served path")
    speed = round(len(timed.records) / timed.seconds, 2) if timed.seconds else None
    return predictions, speed, f"feature cache (Detector timed on {len(timed.records)} images)"


def _worker_main(job_path: str) -> int:
    """``python -m synthdetect.train.autopilot JOB.json``: run one candidate, write ``result.json`` beside it."""
    job = json.loads(Path(job_path).read_text())
    out = Path(job["workdir"]) / "result.json"
    try:
        result = run_candidate_job(job)
    except Exception as exc:  # noqa: BLE001 - reported on the leaderboard; the traceback goes to the log
        traceback.print_exc()
        first = first_line(exc) or type(exc).__name__
        result = {"status": f"failed: {first}", "error": f"{type(exc).__name__}: {first}"}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, out)
    return 0


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class AutopilotResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path
    best: Path | None
    elapsed_s: float


def _stop(process: subprocess.Popen) -> None:
    """End the candidate's process group (the worker and anything it started), politely first.

    The group gets SIGKILL even when the worker is already gone: returning as soon as the worker died left
    whatever it started and that ignored SIGTERM running after the run.
    """
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _exit_reason(code: int | None) -> str:
    """A worker that ended without its result: "code -9" did not say it was killed, nor that memory is the usual
    reason for SIGKILL."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the system may have run out of memory)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code} without a result"


def _slice_for(candidates: Sequence[Candidate], index: int, remaining: float) -> float:
    weights = [max(c.weight, 1e-6) for c in candidates[index:]]
    return remaining * weights[0] / sum(weights)


def run_autopilot(records: Sequence[Record], out: str | Path, **options: Any) -> AutopilotResult:
    """``_run_autopilot``, one run per ``out`` at a time: two runs into one folder removed each other's candidates
    and winner (``models.package.exclusive_out``)."""
    from synthdetect.models.package import OutInUse, exclusive_out

    try:
        with exclusive_out(out):
            return _run_autopilot(records, out, **options)
    except OutInUse as exc:
        raise AutopilotError(str(exc)) from None


def _run_autopilot(
    records: Sequence[Record],
    out: str | Path,
    *,
    budget_s: float,
    candidates: Sequence[Candidate] | None = None,
    metric: str = "roc_auc",
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    holdout_sources: Sequence[str] = (),
    seed: int = 0,
    threads: int | None = None,
    data: str | None = None,
    command: str | None = None,
    console=None,
    progress: bool = True,
    reserve_s: float | None = None,
    min_slice_s: float = 2.0,
) -> AutopilotResult:
    """Train ``candidates`` within ``budget_s`` seconds, rank them on held-out sources, export the best to ``out/model``.

    ``reserve_s`` (default: 5% of the budget, 3..60 s) is kept back for the
    leaderboard, export and report, so the whole run ends within the budget
    plus process clean-up.
    """
    from rich.console import Console

    from synthdetect.train.splits import split_records

    started = time.monotonic()
    console = console or Console(stderr=True)
    if isinstance(budget_s, str):
        budget_s = parse_budget(budget_s)
    if not budget_s > 0:  # NaN made every deadline comparison false: candidates ran with no deadline at all
        raise AutopilotError(f"the budget must be a positive number of seconds (got {budget_s})")
    if metric not in RANK_METRICS:
        raise AutopilotError(f"unknown metric '{metric}' (one of {', '.join(RANK_METRICS)})")
    problems = fraction_problems(val_fraction, test_fraction, holdout_sources)
    if not (isinstance(seed, int) and seed >= 0):  # numpy's "expected non-negative integer", deep in the split
        problems.append(f"seed {seed}: expected a whole number at least 0")
    if problems:
        raise AutopilotError("; ".join(problems))
    require_sources(records, data or "dataset", minimum=3)
    out = Path(out).absolute()  # leaderboard.json names packages and reports: relative to what, later?
    candidates = list(candidates) if candidates is not None else default_candidates()
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise AutopilotError(f"candidate names must be unique: {', '.join(names)}")
    split = split_records(records, "source", val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                          holdout_sources=holdout_sources)
    if not split.test or len({r.label for r in split.test}) < 2:
        raise AutopilotError("the held-out sources need both AI and human images; name them with --holdout-source")
    for part, role in ((split.train, "training"), (split.val, "validation")):
        if len({r.label for r in part}) < 2:  # every candidate would fail on it, each after its own start-up
            ai = sum(r.label == 1 for r in part)
            raise AutopilotError(f"the {role} sources need both AI and human images, and hold {len(part) - ai} "
                                 f"human, {ai} ai; add sources or change --val-fraction/--holdout-source")
    out.mkdir(parents=True, exist_ok=True)  # after every refusal: a refused run leaves no empty OUT behind
    reserve = reserve_s if reserve_s is not None else min(max(0.05 * budget_s, 3.0), 60.0)
    deadline = started + budget_s - reserve
    split_info = split.describe()
    if not progress:
        console = Console(file=open(os.devnull, "w"))
    console.print(f"autopilot: {len(split.train)} train / {len(split.val)} validation / {len(split.test)} held-out "
                  f"images; held-out sources: {', '.join(split.held_out_sources)}; budget {budget_s:.0f} s",
                  markup=False, highlight=False)  # source names are the user's: "[x]" is text, not markup
    earlier = sorted(p.name for p in (out / "candidates").glob("*") if p.name not in names)
    if earlier:  # kept (they may be wanted), but never taken for this run's: the leaderboard lists this run only
        console.print(f"note: {out / 'candidates'} also holds {', '.join(earlier)} from an earlier run; they are not "
                      f"part of this run and stay as they are", markup=False, highlight=False)

    rows: list[dict[str, Any]] = []
    unavailable: list[str] = []
    runnable: list[Candidate] = []
    for candidate in candidates:
        reason = available(candidate.kind)
        if reason:
            unavailable.append(f"{candidate.name}: {reason}")
            rows.append({"candidate": candidate.name, "kind": candidate.kind, "status": "unavailable",
                         "error": reason})
        else:
            runnable.append(candidate)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                   TimeElapsedColumn(), console=console, transient=False)
    # Workers run in their own sessions (so a deadline kills a whole group), which Ctrl-C at the terminal does not
    # reach: an interrupted run must kill the running one itself, or it trained on after the run was gone.
    interrupted: int | None = None
    try:
        with sigterm_raises(KeyboardInterrupt):
            _run_candidates(runnable, rows, bar, out, split, split_info, budget_s, deadline, started, min_slice_s,
                            seed, threads, data, command, metric, console)
    except KeyboardInterrupt as exc:  # no worker is left running: each is stopped before its row is written
        interrupted = interrupt_signal(exc)
        ran = {r["candidate"] for r in rows}
        rows.extend({"candidate": c.name, "kind": c.kind, "status": SKIPPED_INTERRUPTED, "train_seconds": 0.0}
                    for c in runnable if c.name not in ran)

    # SIGTERM while the results are written is Ctrl-C too: each file is written whole or not at all, and the
    # command says what is there (FinishInterrupted) instead of the process ending without a word.
    with sigterm_raises(KeyboardInterrupt):
        try:
            result = _finish(rows, out, split, split_info, unavailable, budget_s, metric, data, command, seed,
                             started, interrupted, console, reserve)
        except KeyboardInterrupt as exc:
            signum = interrupt_signal(exc)
            raise FinishInterrupted(out, signum) from None
    if interrupted is not None:
        raise AutopilotInterrupted(result, interrupted)
    return result


def _finish(rows, out, split, split_info, unavailable, budget_s, metric, data, command, seed, started, interrupted,
            console, reserve_s: float | None = None) -> "AutopilotResult":
    """Rank the rows, export the winner, write the leaderboard and the report."""
    coverage_note = rank_on_common_images(rows, out, [r.label for r in split.test], metric)
    if coverage_note:
        console.print(f"note: {coverage_note}", markup=False, highlight=False)
    rows = rank_rows(rows, metric)
    best_row = next((r for r in rows if r.get("rank") == 1), None)
    summary = {
        "schema": "synthdetect.autopilot/1", "metric": metric, "higher_is_better": RANK_METRICS[metric],
        # absolute, as every other path in leaderboard.json: "d/manifest.csv" said nothing once read from elsewhere
        "budget_s": budget_s, "data": str(Path(data).absolute()) if data else data, "command": command, "seed": seed,
        "split": {**split_info, "train": len(split.train), "validation": len(split.val), "test": len(split.test),
                  "test_ai": sum(r.label for r in split.test), "test_human": sum(1 - r.label for r in split.test)},
        "scoring": "calibrated p_ai of the model alone (Detector without provenance evidence) on held-out sources",
        "unavailable": unavailable, "best": best_row["candidate"] if best_row else None,
    }
    if coverage_note:
        summary["coverage_note"] = coverage_note
    for row in rows:  # finished, yet unranked: the row said "finished" with dashes and nothing saying why
        if row.get("status") == FINISHED and row.get("rank") is None and not row.get("error"):
            row["error"] = (f"not ranked: no {metric} on its held-out images (scored {row.get('n_scored')} of "
                            f"{row.get('n_test')}; it needs scored images of both classes)")
    if best_row is None:
        summary["no_winner"] = no_winner_reason(rows, metric, budget_s, reserve_s)
    else:
        warning = chance_warning(best_row, metric)
        if warning:
            summary["warning"] = warning
            console.print(f"warning: {warning}", markup=False, highlight=False)
    if interrupted is not None:
        summary["interrupted"] = signal.Signals(interrupted).name
    best: Path | None = None
    if best_row:
        best = export_best(best_row, out / "model", summary, rows)
    else:  # a winner of an earlier run into this --out must not pass for this run's
        shutil.rmtree(out / "model", ignore_errors=True)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    write_leaderboard(rows, out, summary)
    write_autopilot_report(rows, summary, out, split.test, best_row)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    write_leaderboard(rows, out, summary)
    return AutopilotResult(rows=rows, summary=summary, out=out, best=best, elapsed_s=summary["elapsed_s"])


def _run_candidates(runnable, rows, bar, out, split, split_info, budget_s, deadline, started, min_slice_s, seed,
                    threads, data, command, metric, console) -> None:
    """Each candidate in its worker, in turn, appending its row to ``rows``.  On Ctrl-C (or SIGTERM, raised as
    KeyboardInterrupt) the running worker is stopped and its row says so before the interrupt goes on."""
    with bar:
        budget_task = bar.add_task("budget", total=budget_s, status=f"{len(runnable)} candidates")
        for index, candidate in enumerate(runnable):
            now = time.monotonic()
            remaining = deadline - now
            row: dict[str, Any] = {"candidate": candidate.name, "kind": candidate.kind}
            if remaining < min_slice_s:
                row.update(status=SKIPPED, train_seconds=0.0)
                rows.append(row)
                # an earlier run's package here is not this run's candidate
                shutil.rmtree(out / "candidates" / candidate.name, ignore_errors=True)
                continue
            slice_s = _slice_for(runnable, index, remaining)
            workdir = out / "candidates" / candidate.name
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            job = {
                "workdir": str(workdir), "candidate": asdict(candidate), "seed": seed, "threads": threads,
                "model_name": f"autopilot-{candidate.name}", "data": data, "command": command,
                "split": split_info,
                **{k: [_record_dict(r) for r in getattr(split, k)] for k in ("train", "val", "test")},
            }
            (workdir / "job.json").write_text(json.dumps(job))
            task = bar.add_task(f"{index + 1}/{len(runnable)} {candidate.name}", total=slice_s, status="starting")
            console.print(f"[{index + 1}/{len(runnable)}] {candidate.name} ({candidate.kind}): started, "
                          f"{slice_s:.0f} s of {remaining:.0f} s left", highlight=False)
            process = None
            t0 = time.monotonic()
            stopped = False
            try:
                with open(workdir / "train.log", "wb") as log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "synthdetect.train.autopilot", str(workdir / "job.json")],
                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                        env={**os.environ, "COLUMNS": "120"},
                    )
                    t0 = time.monotonic()
                    while process.poll() is None:
                        elapsed = time.monotonic() - t0
                        if elapsed >= slice_s:
                            stopped = True
                            break
                        phase = (workdir / "phase.txt").read_text() if (workdir / "phase.txt").exists() \
                            else "starting"
                        bar.update(task, completed=elapsed, status=phase)
                        bar.update(budget_task, completed=time.monotonic() - started)
                        try:
                            process.wait(timeout=min(0.25, max(slice_s - elapsed, 0.01)))
                        except subprocess.TimeoutExpired:
                            pass
            except KeyboardInterrupt:
                row.update(status=INTERRUPTED, train_seconds=round(time.monotonic() - t0, 1),
                           log=str(workdir / "train.log"))
                rows.append(row)
                raise
            finally:
                if process is not None:
                    _stop(process)  # the whole group, after a normal exit too: what the worker started goes with it
            seconds = time.monotonic() - t0
            result_path = workdir / "result.json"
            if stopped or not result_path.exists():
                status = STOPPED if stopped else f"failed: {_exit_reason(process.returncode)}"
                row.update(status=status, train_seconds=round(seconds, 1))
                if not stopped:
                    row["error"] = f"see {workdir / 'train.log'}"
            else:
                row.update(json.loads(result_path.read_text()))
                row.setdefault("train_seconds", round(seconds, 1))  # a failure's time, shown as a stopped one's is
                row["wall_seconds"] = round(seconds, 1)
            row["slice_seconds"] = round(slice_s, 1)
            row["log"] = str(workdir / "train.log")
            rows.append(row)
            bar.update(task, completed=slice_s, status=row["status"])
            score = f", {metric} {row[metric]:.4f} on held-out sources" if row.get(metric) is not None else ""
            console.print(f"[{index + 1}/{len(runnable)}] {candidate.name}: {row['status']} after {seconds:.0f} s"
                          f"{score}", highlight=False)
            if row.get("unreadable"):
                console.print(f"[{index + 1}/{len(runnable)}] {candidate.name}: note: {row['unreadable']}",
                              highlight=False, markup=False)
            bar.update(budget_task, completed=time.monotonic() - started)


def export_best(row: dict[str, Any], target: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Copy the winner's package to ``target`` and record on its card how it won.

    The copy is made beside ``target`` and renamed into place when its card is written: removed first and copied
    in place, a run stopped part-way had lost the earlier winner and left a copy without its ``autopilot`` card.
    ``target`` holds this run's winner alone, as it always did (nothing of the earlier folder is kept).
    """
    from synthdetect.models.package import ModelPackageError, staged_package

    source = Path(row["package"])
    earlier = os.listdir(target) if target.is_dir() else []
    try:
        with staged_package(target, drop=earlier) as folder:
            if folder == target:  # no folder could be made beside it: in place, as before
                shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, folder, ignore=shutil.ignore_patterns("_work"), dirs_exist_ok=True)
            _record_win(folder, row, summary, rows)
    except (ModelPackageError, OSError) as exc:  # one line naming where the winner is, not a traceback
        raise AutopilotError(f"{target}: the winner {row['candidate']} was not exported ({exc}); its package is "
                             f"{source}") from None
    return target


def _record_win(target: Path, row: dict[str, Any], summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from synthdetect.models.package import load_package, write_package

    package = load_package(target)
    card = dict(package.card)
    card["autopilot"] = {
        "rank": 1, "metric": summary["metric"], "held_out": {k: row.get(k) for k in
                                                             ("roc_auc", "average_precision", "tpr_at_fpr_0.05",
                                                              "ece", "accuracy", "n_scored")},
        "held_out_sources": summary["split"].get("test_sources", []),
        "images_per_second": row.get("images_per_second"), "budget_s": summary["budget_s"],
        **({"warning": summary["warning"]} if summary.get("warning") else {}),
        "leaderboard": [{k: r.get(k) for k in ("rank", "candidate", "kind", "status", "metric")} for r in rows],
    }
    files = {role: target / entry["path"] for role, entry in (card.get("files") or {}).items()}
    write_package(target, card, files)
    load_package(target)  # the exported package must verify like any other


def write_autopilot_report(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path,
                           test: Sequence[Record], best_row: dict[str, Any] | None) -> None:
    """``report.html``: the leaderboard, then the winner's full held-out evaluation (the evaluation report)."""
    from synthdetect.models.package import write_text_atomic

    section = leaderboard_html(rows, summary, out)
    if best_row is None:
        why = summary.get("no_winner") or no_winner_reason(rows, summary["metric"], summary["budget_s"])
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>autopilot</title></head><body>"
                f"<h1>Autopilot: no candidate was ranked</h1><p>{html.escape(why)}; nothing was exported.</p>"
                f"{section}</body></html>")
        write_text_atomic(out / "report.html", page)
        return
    from synthdetect.evaluate.report import Predictions, compute_metrics, render_html

    saved = json.loads((Path(best_row["report"]).parent.parent / "predictions.json").read_text())
    predictions = Predictions(
        records=list(test), p_ai=np.array([np.nan if p is None else p for p in saved["p_ai"]], dtype=float),
        labels=np.array([r.label for r in test], dtype=int), errors=saved["errors"],
        model_name=saved["model_name"], seconds=saved["seconds"], verdicts=saved["verdicts"], images=saved["images"],
    )
    metrics = compute_metrics(predictions)
    title = f"Autopilot: best candidate {best_row['candidate']} on held-out sources"
    page = render_html(predictions, metrics, title=title)
    page = page.replace("</h1>", "</h1>" + section + "<h2>The winner on held-out sources</h2>", 1)
    write_text_atomic(out / "report.html", page)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
