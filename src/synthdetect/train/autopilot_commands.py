"""``synthdetect autopilot`` and ``synthdetect distill``: thin commands over train/autopilot.py and train/distill.py."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console


def _command_line() -> str:
    return "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _split_list(values: Optional[list[str]]) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    @app.command()
    def autopilot(
        data: Annotated[str, typer.Argument(help="CSV manifest with a 'source' column (path,label,source), or a zip "
                                                 "holding one: whole sources are held out, and class folders "
                                                 "carry no source.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Directory for leaderboard, report and the best model.")],
        budget: Annotated[str, typer.Option(help="Time budget for the whole run: 20m, 90s, 1h30m.")] = "20m",
        kinds: Annotated[Optional[list[str]], typer.Option(
            "--kind", help="Candidate (repeat or comma-separate): a default blueprint name or a model kind. "
                           "Default: every default blueprint whose kind is available.")] = None,
        metric: Annotated[str, typer.Option(help="Leaderboard metric on held-out sources.")] = "roc_auc",
        holdout_sources: Annotated[Optional[list[str]], typer.Option(
            "--holdout-source", help="Source(s) held out for the leaderboard (default: picked by seed).")] = None,
        val_fraction: Annotated[float, typer.Option(help="Share of images in validation sources.")] = 0.15,
        test_fraction: Annotated[float, typer.Option(help="Share of images in held-out sources (unused with "
                                                               "--holdout-source).")] = 0.2,
        # min=0: numpy's generator refuses a negative seed, which ended the run in a traceback
        seed: Annotated[int, typer.Option(min=0, help="Seed for the source split and training.")] = 0,
        threads: Annotated[int, typer.Option(min=0, max=1024, help="Torch threads per candidate (0 = all CPUs).")] = 0,
    ) -> None:
        """Train candidate model kinds within a time budget, rank them on held-out sources, export the best."""
        from synthdetect.cli import fail, state
        from synthdetect.train.autopilot import (AutopilotError, AutopilotInterrupted, FinishInterrupted,
                                                 default_candidates, fraction_problems, leaderboard_table,
                                                 parse_budget, refuse_unknown_kinds, require_sources, run_autopilot)
        from synthdetect.train.commands import out_dir_problem
        from synthdetect.train.datasets import DatasetError, open_dataset
        from synthdetect.train.splits import SplitError

        interrupted = None
        try:
            problem = out_dir_problem(out)
            if problem:
                raise AutopilotError(problem)
            budget_s = parse_budget(budget)
            problems = fraction_problems(val_fraction, test_fraction, _split_list(holdout_sources))
            if problems:  # before the dataset is read: a big zip took its time to be refused for a typo
                raise AutopilotError("; ".join(problems))
            refuse_unknown_kinds(_split_list(kinds))
            candidates = default_candidates(_split_list(kinds))
            records = open_dataset(data)
            require_sources(records, data)
            result = run_autopilot(
                records, out, budget_s=budget_s, candidates=candidates, metric=metric,
                val_fraction=val_fraction, test_fraction=test_fraction,
                holdout_sources=_split_list(holdout_sources), seed=seed, threads=threads or None, data=data,
                command=_command_line(), progress=not state["quiet"],
            )
        except (AutopilotError, DatasetError, SplitError) as exc:
            fail(str(exc))
        except AutopilotInterrupted as exc:  # the leaderboard of what finished is written: show it too
            result, interrupted = exc.result, exc.signum
        except FinishInterrupted as exc:  # stopped while the results were written: say what is there
            fail(exc.message, code=128 + exc.signum)
        Console(width=max(Console().width, 140)).print(
            leaderboard_table(result.rows, metric, title=f"autopilot leaderboard ({metric} on held-out sources "
                              f"{', '.join(result.summary['split'].get('test_sources', []))})"))
        for line in result.summary["unavailable"]:
            typer.echo(f"not available: {line}", err=True)
        typer.echo(f"leaderboard: {out / 'leaderboard.csv'}, {out / 'leaderboard.json'}; report: {out / 'report.html'}")
        if interrupted is not None:
            where = f"; best so far: {result.summary['best']} -> {result.best}" if result.best else ""
            typer.echo(f"interrupted: the running candidate was stopped{where}", err=True)
            raise typer.Exit(128 + interrupted)  # 130 for Ctrl-C, 143 for SIGTERM
        if result.best is None:
            typer.echo(f"{result.summary.get('no_winner') or 'no candidate was ranked'}; nothing exported", err=True)
            raise typer.Exit(1)
        typer.echo(f"best: {result.summary['best']} -> {result.best} (elapsed {result.elapsed_s:.0f} s of "
                   f"{budget_s:.0f} s)")
        if result.summary.get("warning"):  # after the table, where a user reads: the progress console may be off
            typer.echo(f"warning: {result.summary['warning']}", err=True)

    @app.command()
    def distill(
        data: Annotated[str, typer.Argument(help="CSV manifest with a 'source' column (path,label,source), or a zip "
                                                 "holding one: the comparison holds out whole sources.")],
        teachers: Annotated[list[str], typer.Option("--teacher", help="Teacher model name or package (repeat).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the student package and the report.")],
        student: Annotated[str, typer.Option("--student", help="Student model kind.")] = "small-cnn",
        alpha: Annotated[float, typer.Option(help="Weight of the teachers' soft labels (1 - alpha on hard labels).")] = 0.7,
        combine: Annotated[str, typer.Option(help="How teachers' p_ai become one target: max or mean.")] = "max",
        holdout_sources: Annotated[Optional[list[str]], typer.Option(
            "--holdout-source", help="Source(s) held out for the comparison (default: picked by seed).")] = None,
        val_fraction: Annotated[float, typer.Option(help="Share of images in validation sources.")] = 0.15,
        test_fraction: Annotated[float, typer.Option(help="Share of images in held-out sources.")] = 0.2,
        # bounds said up front: --epochs 0 trained nothing and ended in a traceback (no best.pt), and the CNNs' three
        # 2x2 poolings end at under 1 px below 8 px, a torch traceback after the teachers had scored everything
        input_size: Annotated[int, typer.Option(min=8, help="Student input size, at least 8 px (CNN students).")] = 128,
        epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (CNN students).")] = 15,
        seed: Annotated[int, typer.Option(min=0, help="Seed for split and training.")] = 0,
        threads: Annotated[int, typer.Option(min=0, max=1024, help="Torch threads (0 = all CPUs).")] = 0,
    ) -> None:
        """Train one student on the teachers' soft labels (plus hard labels); compare it with each teacher."""
        from synthdetect.cli import fail
        from synthdetect.models import ModelPackageError
        from synthdetect.train.autopilot import AutopilotError, require_sources
        from synthdetect.train.commands import out_dir_problem
        from synthdetect.train.datasets import DatasetError, open_dataset
        from synthdetect.models.package import PackageNotMoved
        from synthdetect.train.distill import DistillError, DistillInterrupted, comparison_table, run_distillation
        from synthdetect.train.registry import TrainerError
        from synthdetect.train.splits import SplitError

        try:
            problem = out_dir_problem(out)
            if problem:
                raise DistillError(problem)
            records = open_dataset(data)
            require_sources(records, data)
            result = run_distillation(
                teachers, student, records, out, alpha=alpha, combine=combine,
                holdout_sources=_split_list(holdout_sources), val_fraction=val_fraction,
                test_fraction=test_fraction, input_size=input_size, epochs=epochs, seed=seed,
                threads=threads or None, data=data, command=_command_line(),
            )
        except PackageNotMoved as exc:  # the student is complete where it was written
            fail(str(exc), code=1)
        except (DistillError, AutopilotError, DatasetError, SplitError, TrainerError, ModelPackageError) as exc:
            fail(str(exc))
        except ValueError as exc:  # a trainer's refusal (one class, diverged training): one line, as train says it
            fail(str(exc))
        except DistillInterrupted as exc:  # Ctrl-C or SIGTERM: what is kept, and how to go on
            typer.echo(f"interrupted: {exc.message}", err=True)
            raise typer.Exit(128 + exc.signum) from None
        Console(width=max(Console().width, 140)).print(comparison_table(result))
        typer.echo(f"student: {result.student_package}; report: {out / 'report.html'}; "
                   f"comparison: {out / 'comparison.csv'}")
