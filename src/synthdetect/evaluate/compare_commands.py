"""``synthdetect compare``: several models, one dataset, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        data: Annotated[str, typer.Argument(help="Class folders, CSV manifest, or a zip of either.")],
        model: Annotated[list[str], typer.Option("--model", "-m", help="A model (repeat): shipped name, package path, "
                                                 "hf:ORG/NAME, hf:/dir, timm:..., keras:/m.h5, onnx:/m.onnx.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")],
        ensemble: Annotated[bool, typer.Option("--ensemble", help=(
            "Add a calibrated mean of the models (calibrated on a stratified split of DATA, scored on the rest)."
        ))] = False,
        calibration_fraction: Annotated[float, typer.Option(help="Share of DATA used to calibrate the ensemble.")] = 0.3,
        seed: Annotated[int, typer.Option(help="Seed of the calibration split.")] = 0,
        evidence: Annotated[bool, typer.Option("--evidence", help="Let provenance evidence override models "
                                               "(off: compare the models themselves).")] = False,
        source: Annotated[Optional[list[str]], typer.Option("--source", help="Only these sources.")] = None,
        label: Annotated[Optional[list[str]], typer.Option(
            "--label", help="Map a folder/label name: NAME=ai or NAME=human.")] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Images judged together.")] = 32,
    ) -> None:
        """Run several models on the same images: a report each, a side-by-side table and an agreement matrix."""
        from synthdetect.cli import EXIT_SOME_FAILED
        from synthdetect.evaluate.commands import _records, run_to_report, say
        from synthdetect.evaluate.compare import (
            COMPARISON_FILES, ENSEMBLE_NAME, TABLE_COLUMNS, agreement_cells, compare_models, format_cell,
        )
        from synthdetect.evaluate.report import out_dir_unwritable
        from synthdetect.models import ModelPackageError
        from synthdetect.train.commands import out_dir_problem

        problem = out_dir_problem(out) or out_dir_unwritable(out, COMPARISON_FILES)  # before any model runs
        if problem:
            say(f"error: {problem}")
            raise typer.Exit(2)

        def run() -> dict:
            return compare_models(model, records, out, data_name=data, ensemble=ensemble,
                                  calibration_fraction=calibration_fraction, seed=seed, use_evidence=evidence,
                                  batch_size=batch_size)

        try:
            records = _records(data, label, source)
            summary = run_to_report(run, out, on_disk_said=True)
        except (ModelPackageError, ValueError, ImportError) as exc:
            say(f"error: {exc}")
            raise typer.Exit(2) from None
        console = Console(width=160)
        table = Table(*(h for _, h in TABLE_COLUMNS), header_style="bold",
                      title=f"{summary['n_records']} images ({summary['n_ai']} ai, {summary['n_human']} human)")
        for row in summary["table"]:
            cells = [Text(format_cell(row.get(k))) for k, _ in TABLE_COLUMNS]  # Text: model paths are not markup
            table.add_row(*cells, style="bold" if row["model"] == ENSEMBLE_NAME else None)
        console.print(table)
        agreement = summary["agreement"]
        matrix = Table("agreement @0.5", header_style="bold")
        for name in agreement["models"]:
            matrix.add_column(Text(name))  # a model path with "[x]" in it is a name, not markup
        for name, cells in zip(agreement["models"], agreement_cells(agreement)):
            matrix.add_row(Text(name), *cells)
        console.print(matrix)
        typer.echo(f"wrote {out / 'comparison.html'}, comparison.json/.csv/.md "
                   f"and a report per model under {out / 'models'}")
        if summary["earlier_reports"]:
            say(f"warning: {out} also holds {len(summary['earlier_reports'])} report(s) from an earlier run "
                f"that are not part of this comparison: {', '.join(summary['earlier_reports'])}")
        for entry in summary["models"]:  # as evaluate warns: a row of fewer images is said, not only shown
            if entry.get("n_unscored"):
                say(f"warning: {entry['name']}: {entry['n_unscored']} of {summary['n_records']} images were "
                    f"not scored (see {out / entry['report']}); e.g. {entry['unscored_example']}")
        ensemble_said = summary.get("ensemble") or {}
        # the ensemble row on the screen reads as every model's mean: a member left out, or one that entered it as
        # one constant p_ai (an inverted fit), is said here too, not only in comparison.md/.html/.json
        for name, why in (ensemble_said.get("excluded") or {}).items():
            say(f"warning: ensemble: {name} is left out of the mean ({why})")
        for name, why in (ensemble_said.get("calibration_warnings") or {}).items():
            say(f"warning: ensemble: calibration of {name}: {why}")
        if summary["models"] and all(entry.get("n_judged") == 0 for entry in summary["models"]):
            # as evaluate: a run in which no model could judge any file is not a success, even with its reports
            say(f"error: none of the {summary['n_records']} images could be judged by any model "
                f"(see {out / 'comparison.html'})")
            raise typer.Exit(EXIT_SOME_FAILED)
