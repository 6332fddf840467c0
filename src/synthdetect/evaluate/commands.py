"""``synthdetect evaluate`` and ``synthdetect dataset summary``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def _records(data: str, label: list[str] | None, sources: list[str] | None, *, to_score: bool = True):
    """The records to judge; ``to_score`` refuses, before any work, what would make every number wrong or empty:
    no image, a file listed twice, or not one listed file on disk."""
    from synthdetect.train.commands import parse_label_map
    from synthdetect.train.datasets import open_dataset, refuse_listed_twice

    records = open_dataset(data, label_map=parse_label_map(label))  # a manifest that is not UTF-8: one line
    if sources:
        known = {r.source for r in records if r.source}
        missing = [s for s in sources if s not in known]
        if missing:
            have = (f"sources: {', '.join(sorted(known))}" if known
                    else "the data records no sources; --source needs a CSV manifest with a 'source' column")
            raise ValueError(f"{data}: unknown source(s) {', '.join(missing)} ({have})")
        records = [r for r in records if r.source in sources]
    if to_score:
        if not records:
            raise ValueError(f"{data}: lists no images")
        refuse_listed_twice(data, records)
        _refuse_if_no_file_exists(data, records)
    return records


def _refuse_if_no_file_exists(data: str, records) -> None:
    """Paths read against the wrong folder fail one by one; when not one exists, say so before any work.

    Some missing files are judged as failures (counted and reported); of a zip member (``a.zip!m``) only the
    archive is looked for, found as training finds it (a ``!`` in a folder name is no member separator).
    """
    from synthdetect.train.datasets import split_zip_ref

    def on_disk(ref: str) -> str:
        in_zip = split_zip_ref(ref)
        return in_zip[0] if in_zip else ref

    if any(os.path.exists(on_disk(r.ref)) for r in records):
        return
    where = (" (paths are read relative to the manifest's folder)"
             if Path(data).suffix.lower() == ".csv" or Path(data, "manifest.csv").is_file() else "")
    raise ValueError(f"{data}: none of the {len(records)} listed files exists, e.g. {records[0].ref}{where}")


def say(line: str) -> None:
    """One line on stderr.  File names come from the data and may hold a newline or a terminal escape sequence:
    they are shown as escapes (``cli.shown``), so a warning stays one line and cannot redraw the screen."""
    from synthdetect.cli import shown

    typer.echo(shown(line), err=True)


def run_to_report(work: Callable[[], Any], out: Path, *, on_disk_said: bool = False) -> Any:
    """``work()`` (judging, then writing reports into ``out``) with its ends said in one line each, not as a
    traceback: a report file that cannot be written (exit 1), a model that fails to load mid-run (exit 2), and
    Ctrl-C or SIGTERM (exit 130 or 143, as a shell reports them), with how far the run got and what ``out``
    holds (``on_disk_said``: the errors ``work`` raises say that already, as ``compare_models``' do)."""
    from synthdetect.evaluate.report import (
        JudgingInterrupted, ReportInterrupted, ReportNotWritten, on_disk,
    )
    from synthdetect.interrupts import signal_number

    def left() -> str:
        return "" if on_disk_said else f"; {on_disk(out)}"

    from synthdetect.interrupts import sigterm_raises
    from synthdetect.models import ModelPackageError

    try:
        with sigterm_raises(lambda signum: KeyboardInterrupt(signum)):
            return work()
    except ReportNotWritten as exc:
        say(f"error: {exc}")
        raise typer.Exit(1) from None
    except ModelPackageError as exc:  # a routed model loads at its first image, so it can fail mid-run
        say(f"error: {exc}{'' if getattr(exc, 'on_disk_said', False) else left()}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        if isinstance(exc, ReportInterrupted):
            said, signum = exc.message, exc.signum
        else:
            said = str(exc) if isinstance(exc, JudgingInterrupted) else "interrupted"
            said, signum = f"{said}{left()}", signal_number(exc)
        say(f"error: {said}")
        raise typer.Exit(128 + (signum or signal.SIGINT)) from None


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _ci(interval) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""


#: The table's columns that ``overall["undefined"]`` can list, as the table names them.
_UNDEFINED_NAMES = {"roc_auc": "ROC-AUC", "average_precision": "AP", "tpr_at_fpr_0.01": "TPR@1%FPR",
                    "tpr_at_fpr_0.05": "TPR@5%FPR"}


def summary_lines(metrics: dict) -> list[str]:
    """What the table cannot hold: the intervals, and the threshold and FPR behind each TPR@FPR."""
    overall = metrics.get("overall") or {}
    ci = overall.get("ci95") or {}
    lines = []
    if ci:
        lines.append(f"95% CI (bootstrap, stratified): ROC-AUC {_ci(ci.get('roc_auc'))}, accuracy @0.5 "
                     f"{_ci(ci.get('accuracy'))}, ECE {_ci(ci.get('ece'))} ({overall.get('ece_bins')} bins)")
    for key, point in (overall.get("at_fpr") or {}).items():
        lines.append(f"TPR@{point['fpr_target']:.0%}FPR {point['tpr']:.3f} {_ci(ci.get(f'tpr_at_fpr_{key}'))}: "
                     f"threshold {point['threshold']:.4g}, {point['false_positives']} of {point['n_human']} human "
                     f"images called AI (FPR {point['fpr_achieved']:.3f}, exact 95% CI {_ci(point['fpr_ci95'])})"
                     + (f"; {point['note']}" if point.get("note") else ""))
    verdicts = metrics.get("verdicts") or {}
    served = {k: sum((verdicts.get(f"{c}_images") or {}).get(k, 0) for c in ("ai", "human"))
              for k in ("ai", "human", "uncertain")}
    total = sum(served.values())
    if total:  # the table's accuracy is at p_ai >= 0.5; what is served has an uncertain band, so say both halves
        decided = served["ai"] + served["human"]
        lines.append(f"served verdicts (model thresholds): {decided} of {total} decided (coverage "
                     f"{decided / total:.3f}), accuracy when decided {_fmt(verdicts.get('accuracy_when_decided'))}; "
                     f"{served['uncertain']} uncertain")
    reasons: dict[str, list[str]] = {}
    for key, why in (overall.get("undefined") or {}).items():  # a "–" in the table says why, once per reason
        if key in _UNDEFINED_NAMES:
            reasons.setdefault(why, []).append(_UNDEFINED_NAMES[key])
    for why, names in reasons.items():
        lines.append(f"{', '.join(names)}: – ({why})")
    if overall.get("n") is not None and overall["n"] < 200:
        lines.append(f"ECE on {overall['n']} images is noisy: {overall.get('ece_note', '')}")
    return lines


def warning_lines(metrics: dict, calibration_warning: str | None = None) -> list[str]:
    """One line per thing a person must know before trusting the numbers."""
    lines = []
    if calibration_warning:
        lines.append(calibration_warning)
    if metrics["n_unscored"]:
        example = metrics["unscored_examples"][0] if metrics["unscored_examples"] else ""
        lines.append(f"{metrics['n_unscored']} of {metrics['n_records']} images were not scored "
                     f"(see report.html); e.g. {example}")
    for name, m in (metrics.get("perturbations") or {}).items():
        if m["n_unscored"] > metrics["n_unscored"]:
            example = m["unscored_examples"][0] if m["unscored_examples"] else ""
            lines.append(f"{name}: {m['n_scored']} of {m['n_records']} images scored, so its row is not comparable "
                         f"with 'none'; e.g. {example}")
    saturated = (metrics.get("overall") or {}).get("saturated_scores") or 0
    if saturated:
        lines.append(f"{saturated} of {metrics['n_scored']} scores are exactly 0.0 or 1.0 (a saturated calibration): "
                     "ties among them lower ROC-AUC and coarsen every threshold")
    return lines


def register(app: typer.Typer) -> None:
    dataset_app = typer.Typer(help="Inspect labelled datasets before training on them.", no_args_is_help=True)
    app.add_typer(dataset_app, name="dataset")

    @app.command()
    def evaluate(
        model: Annotated[str, typer.Argument(help="Model name or package path.")],
        data: Annotated[str, typer.Argument(help="Class folders, CSV manifest, or a zip of either.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Report directory (metrics.json, report.html).")],
        perturb: Annotated[Optional[str], typer.Option(help="Robustness sweep, e.g. jpeg:90,jpeg:70,jpeg:50,resize:0.5,crop:0.5,blur:1.0.")] = None,
        source: Annotated[Optional[list[str]], typer.Option("--source", help="Only these sources (e.g. the held-out one).")] = None,
        label: Annotated[Optional[list[str]], typer.Option("--label", help="Map a folder/label name: NAME=ai or NAME=human.")] = None,
        title: Annotated[Optional[str], typer.Option(help="Report title.")] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Images judged together.")] = 32,
        no_evidence: Annotated[bool, typer.Option("--no-evidence", help="Model score only, no provenance probes.")] = False,
    ) -> None:
        """Judge a labelled dataset with a model and write metrics.json and a self-contained report.html."""
        from synthdetect.api import Detector
        from synthdetect.cli import EXIT_SOME_FAILED
        from synthdetect.evaluate.perturb import parse_perturbations
        from synthdetect.evaluate.report import (
            JudgingInterrupted, ReportInterrupted, on_disk, out_dir_unwritable, predict_records,
            write_partial_predictions, write_report,
        )
        from synthdetect.models import ModelPackageError
        from synthdetect.train.commands import out_dir_problem

        problem = out_dir_problem(out) or out_dir_unwritable(out)  # said now, not after an hour of judging
        if problem:
            say(f"error: {problem}")
            raise typer.Exit(2)
        try:
            perturbations = parse_perturbations(perturb) if perturb else []
            records = _records(data, label, source)
            detector = Detector.load(model, use_evidence=not no_evidence)
        except (ModelPackageError, ValueError, ImportError) as exc:
            say(f"error: {exc}")
            raise typer.Exit(2) from None

        def judge_and_write() -> tuple[Any, dict]:
            runs: dict[str, Any] = {}  # what is judged so far, per perturbation ("none" first)
            try:
                runs["none"] = predict_records(detector, records, batch_size)
                for p in perturbations:
                    runs[p.name] = predict_records(detector, records, batch_size, transform=p, description=p.name)
            except (JudgingInterrupted, ModelPackageError) as exc:
                # a stopped run, or a routed model that cannot load part way, keeps what it judged as
                # predictions.partial.csv: never a report that reads whole
                if getattr(exc, "partial", None) is not None:
                    runs[exc.description if runs else "none"] = exc.partial
                written, detail = write_partial_predictions(out, runs)
                said = f"{exc}; {on_disk(out, written, detail)}"
                if isinstance(exc, JudgingInterrupted):
                    raise ReportInterrupted(said, exc.signum) from None
                failed = ModelPackageError(said)
                failed.on_disk_said = True  # run_to_report adds nothing more
                raise failed from None
            predictions, perturbed = runs.pop("none"), runs
            metrics = write_report(predictions, out, title=title or f"{detector.name} on {data}",
                                   perturbations=perturbed or None)
            return predictions, metrics

        predictions, metrics = run_to_report(judge_and_write, out)
        overall = metrics.get("overall", {})
        # accuracy is at p_ai 0.5, not at the model's served thresholds (its uncertain band): the heading says so
        table = Table("", "n", "accuracy @0.5", "ROC-AUC", "AP", "ECE", "TPR@1%FPR", "TPR@5%FPR", "uncertain",
                      header_style="bold", title=Text(f"{detector.name} on {data}"))  # a path is not markup
        rows = metrics.get("robustness_table") or [{"perturbation": "none", "n_scored": metrics["n_scored"], **overall,
                                                     "fraction_uncertain": metrics["verdicts"]["fraction_uncertain"]}]
        for r in rows:
            table.add_row(r["perturbation"], str(r["n_scored"]), *(_fmt(r.get(k)) for k in (
                "accuracy", "roc_auc", "average_precision", "ece", "tpr_at_fpr_0.01", "tpr_at_fpr_0.05",
                "fraction_uncertain")))
        Console(stderr=False, width=120).print(table)
        for line in summary_lines(metrics):
            typer.echo(line)
        typer.echo(f"wrote {out / 'metrics.json'}, {out / 'predictions.csv'} and {out / 'report.html'}")
        for line in warning_lines(metrics, getattr(getattr(detector.model, "calibration", None), "warning", None)):
            say(f"warning: {line}")
        if predictions.verdicts and all(v is None for v in predictions.verdicts):
            # as detect: a run in which no file could be judged is not a success, even with its report written
            say(f"error: none of the {len(predictions.verdicts)} images could be judged (see report.html)")
            raise typer.Exit(EXIT_SOME_FAILED)

    @dataset_app.command("summary")
    def dataset_summary(
        data: Annotated[str, typer.Argument(help="Class folders, CSV manifest, or a zip of either.")],
        label: Annotated[Optional[list[str]], typer.Option("--label", help="Map a folder/label name: NAME=ai or NAME=human.")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Per class and per source: count, formats, size distribution, and shortcut warnings."""
        from synthdetect.cli import shown
        from synthdetect.train.dataset_summary import summarize_dataset

        try:
            records = _records(data, label, None, to_score=False)
        except ValueError as exc:
            say(f"error: {exc}")
            raise typer.Exit(2) from None
        summary = summarize_dataset(records, progress=True)
        if json_out:
            typer.echo(json.dumps(summary, indent=2))
            return
        console = Console(width=140)
        table = Table("source", "class", "count", "formats", "short side px (min/median/max)", "file kB (median)",
                      header_style="bold", title=f"{escape(str(data))}: {summary['records']} files"
                      + (f" ({summary['unreadable_count']} unreadable)" if summary["unreadable_count"] else ""))
        rows = [("ALL", cls, d) for cls, d in summary["per_class"].items()]
        rows += [(src, cls, d) for src, classes in summary["per_source"].items() for cls, d in classes.items()]
        for src, cls, d in rows:
            s = d["short_side_px"] or {}
            # the count includes files that could not be read: say how many, or the formats do not add up to it
            formats = [f"{k} {v}" for k, v in d["formats"].items()] + (
                [f"unreadable {d['unreadable']}"] if d.get("unreadable") else [])
            # Text: a source named "[x]" is not markup
            table.add_row(Text(shown(src)), cls, str(d["count"]), ", ".join(formats),
                          f"{s.get('min', '–')}/{s.get('median', '–')}/{s.get('max', '–')}",
                          str((d["file_kb"] or {}).get("median", "–")), end_section=(src == "ALL" and cls == "human"))
        console.print(table)
        for warning in summary["warnings"]:  # warnings name files: shown() escapes what a terminal would act on
            console.print(f"[yellow]warning:[/yellow] {escape(shown(warning))}", highlight=False, soft_wrap=True)
        for reason, count in summary["skipped"].items():
            console.print(f"skipped {count} entries: {reason}", highlight=False, markup=False)
        if summary["unreadable_count"]:
            console.print(f"[red]{summary['unreadable_count']} unreadable[/red], e.g. {escape(shown(summary['unreadable'][0]))}",
                          highlight=False, soft_wrap=True)
