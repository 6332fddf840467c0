"""``synthdetect scan``, ``synthdetect scan-export`` and ``synthdetect export``: thin commands over the scan API."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def _write_exports(database: Path, targets: list[Path], say) -> tuple[str, int] | None:
    """Write each export of ``database``; Ctrl-C or SIGTERM (a batch system's time limit) stops it cleanly.
    Returns None, or the failure's one-line message and exit code: ``scan`` still prints its summary first.

    SIGTERM's default action ended the process mid-write and left the hidden ``.part`` file beside the target;
    raised as Ctrl-C, the export's own clean-up removes it and an earlier export of that name stays whole.
    """
    from synthdetect.interrupts import sigterm_raises
    from synthdetect.scan.engine import ScanInterrupted
    from synthdetect.scan.store import StoreError
    from synthdetect.scan.store import export as export_db

    target = None
    try:
        with sigterm_raises(ScanInterrupted):
            for target in targets:
                n = export_db(database, target)
                say(f"wrote {n} rows to {target}")
    except (StoreError, ValueError, ImportError) as exc:
        return str(exc), 2
    except KeyboardInterrupt as exc:
        return (f"interrupted while writing {target}: nothing was written there, and {database} keeps every row; "
                f"write it with: synthdetect scan-export {database} {target}",
                128 + getattr(exc, "signum", signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM
    return None


def _export_all(database: Path, targets: list[Path], say) -> None:
    """:func:`_write_exports`, a failure said in one line with its exit code."""
    from synthdetect.cli import fail

    failure = _write_exports(database, targets, say)
    if failure:
        fail(*failure)


def summary_text(summary: dict) -> str:
    """``--summary-json``'s text.  A file name's byte that is not UTF-8 (in ``passed_over``'s examples) is written
    ``\\xNN``, as in the exports: ``json.dumps`` wrote it as a lone surrogate escape (``\\udcff``), which strict
    JSON readers (Rust's serde_json, for one) refuse and others turn into U+FFFD."""
    from synthdetect.scan.store import displayed

    return json.dumps(displayed(summary), indent=2)


def _progress_display(quiet: bool):
    """A Rich progress bar (files/s, ETA, errors) fed by the engine's counters, or None when quiet."""
    if quiet:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} files/s"), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("[red]{task.fields[errors]} errors[/red] {task.fields[cached]} cached, "
                   "{task.fields[skipped]} unchanged"),
        console=Console(stderr=True), transient=False,
    )
    task = progress.add_task("scan (discovering)", total=None, rate="-", errors=0, cached=0, skipped=0)
    state = {"t0": time.perf_counter(), "last": 0.0}

    def hook(counters, discovery_done: bool) -> None:
        now = time.perf_counter()
        if now - state["last"] < 0.1 and not discovery_done:
            return
        state["last"] = now
        elapsed = max(now - state["t0"], 1e-9)
        progress.update(
            task, completed=counters.done, total=counters.queued if discovery_done else None,
            description="scan" if discovery_done else f"scan (discovering, {counters.queued} queued)",
            rate=f"{counters.done / elapsed:.1f}", errors=sum(counters.errors.values()),
            cached=counters.cached, skipped=counters.skipped,
        )

    return progress, hook


def print_summary(summary: dict, console) -> None:
    from synthdetect.cli import print_note

    labels = ", ".join(f"{k} {v}" for k, v in sorted(summary["labels"].items())) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(summary["errors_by_kind"].items())) or "none"
    totals = summary["database_totals"]
    console.print(
        f"scanned {summary['judged'] + summary['from_cache']} files in {summary['seconds']:.1f} s "
        f"({summary['files_per_s']} files/s; {summary['judged']} judged, {summary['from_cache']} from the "
        f"content-hash cache); {summary['skipped_unchanged']} unchanged files skipped",
        highlight=False,
    )
    if summary.get("pruned"):
        print_note(f"pruned {summary['pruned']} rows of files that no longer exist, e.g. {summary['pruned_example']}",
                   console)
    console.print(f"labels: {labels}", highlight=False)
    console.print(f"errors: {errors}", highlight=False)
    db_labels = ", ".join(f"{k} {v}" for k, v in sorted(totals["labels"].items())) or "none"
    db_errors = sum(totals["errors"].values())
    print_note(f"database {summary['database']}: {totals['rows']} rows ({db_labels}; {db_errors} errors)", console)


def register(app: typer.Typer) -> None:
    @app.command()
    def scan(
        sources: Annotated[list[str], typer.Argument(
            help="Folders (recursive), list files (.txt/.lst/.list, one path per line), globs, or - for a list "
                 "of paths on standard input.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="SQLite results database (created or resumed).")],
        model: Annotated[str, typer.Option("--model", "-m", help="Model name or package path.")] = "default",
        engine: Annotated[Engine, typer.Option(help="local: worker processes on this machine; ray: Ray Data "
                                               "(local Ray, or the cluster at RAY_ADDRESS).")] = Engine.local,
        workers: Annotated[int, typer.Option(min=0, help="Decode processes (ray: actors); 0 = one per CPU.")] = 0,
        batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 32,
        threads: Annotated[int, typer.Option(min=0, max=1024, help="Inference threads (0 = the backend's default).")] = 0,
        rescore: Annotated[bool, typer.Option("--rescore", help="Judge every file again, ignoring the cache.")] = False,
        draft: Annotated[bool, typer.Option("--draft/--full-decode", help="Decode large JPEGs at reduced size "
                                            "(never below what the model and routing need).")] = False,
        draft_factor: Annotated[int, typer.Option(min=1, help="With --draft: decode to at least this many times the "
                                                  "model input (1 is fastest; 2 or 3 move single scores less).")] = 1,
        all_files: Annotated[bool, typer.Option("--all-files", help="In folders, judge every file, not only "
                                                "image suffixes.")] = False,
        follow_links: Annotated[bool, typer.Option("--follow-links", "-L", help="Walk symbolic links to folders "
                                                   "(each real folder once; a link loop is noted).")] = False,
        no_evidence: Annotated[bool, typer.Option("--no-evidence", help="Skip provenance/metadata probes.")] = False,
        export: Annotated[Optional[list[Path]], typer.Option("--export", help="After the scan, also write the "
                                                             "database as .csv, .jsonl or .parquet.")] = None,
        max_pixels: Annotated[int, typer.Option(min=1, help="Refuse images with more pixels.")] = 80_000_000,
        max_bytes: Annotated[int, typer.Option(min=1, help="Refuse files larger than this many bytes.")] = 100 * 1024 * 1024,
        prune: Annotated[bool, typer.Option("--prune", help="First drop the rows of files that no longer exist "
                                            "(relative paths are looked up from the working directory).")] = False,
        summary_json: Annotated[bool, typer.Option("--summary-json", help="Print the run summary as JSON on "
                                                   "stdout.")] = False,
    ) -> None:
        """Scan folders of images into a resumable SQLite database, one row per file.

        Kill it at any moment and run the same command again: it continues with no
        duplicate and no missing rows; unchanged files are not judged again.
        """
        from rich.console import Console

        from synthdetect.cli import EXIT_SOME_FAILED, fail, print_note, state
        from synthdetect.images import LoadLimits
        from synthdetect.models import ModelPackageError
        from synthdetect.messages import EMPTY_PATH_HINT
        from synthdetect.scan.engine import ScanOptions
        from synthdetect.scan.sources import STDIN_LIST, PassedOver
        from synthdetect.scan.store import EXPORT_FORMATS, StoreError, check_export_target, connect, is_sqlite_file

        if "" in sources:  # `scan "$DIR"` with DIR unset: normpath("") is ".", and the working folder was walked
            fail(f"an empty SOURCE (\"\") names no file or folder{EMPTY_PATH_HINT}")
        if STDIN_LIST in sources and sys.stdin is None:  # `scan - <&-`: there is no list to read
            fail("- reads the list of paths from standard input, which is closed here")
        if str(out) == STDIN_LIST:  # `--out -` had made a SQLite database named "-" in the working folder
            fail("--out -: the results database is a SQLite file, not standard output; name it (--out "
                 "results.sqlite) and write rows with --export FILE.csv or scan-export, or use synthdetect detect "
                 "--format csv|jsonl for rows on standard output")
        if out.suffix.lstrip(".").lower() in EXPORT_FORMATS and not is_sqlite_file(out):
            fail(f"--out {out}: the results database is SQLite (name it .sqlite); write {out.suffix} files "
                 f"with --export {out}")
        for target in export or []:  # checked now, not after an hour of scanning
            if target.suffix.lstrip(".").lower() not in EXPORT_FORMATS:
                fail(f"--export {target}: use a .csv, .jsonl or .parquet file")
            try:
                check_export_target(target, database=out)
            except StoreError as exc:
                fail(f"--export {exc}")
        try:  # before the progress bar: a bad --out is one line, not a traceback after it
            connect(out).close()
        except StoreError as exc:
            fail(f"--out {exc}")
        options = ScanOptions(
            model=model, workers=workers or None, batch_size=batch_size, threads=threads or None, rescore=rescore,
            draft=draft, draft_factor=draft_factor, all_files=all_files, follow_links=follow_links,
            use_evidence=not no_evidence,
            limits=LoadLimits(max_pixels=max_pixels, max_bytes=max_bytes), prune=prune,
            exclude=tuple(str(target) for target in export or []),
        )
        console = Console(stderr=True)
        display = _progress_display(state["quiet"])
        hook = display[1] if display else None
        try:
            if display:
                display[0].start()
            if engine is Engine.ray:
                from synthdetect.scan.ray_engine import run_ray_scan

                # Ray's driver prints its workers' deaths ("(raylet) A worker died ...") on stdout, where they
                # came before --summary-json's JSON; stdout is kept for what the scan itself prints.
                with contextlib.redirect_stdout(sys.stderr):
                    summary = run_ray_scan(sources, out, options, progress=hook)
            else:
                from synthdetect.scan.engine import run_scan

                summary = run_scan(sources, out, options, progress=hook)
        except (ModelPackageError, StoreError, ImportError, ConnectionError) as exc:  # Connection: RAY_ADDRESS
            if display:
                display[0].stop()
            fail(str(exc))
        except KeyboardInterrupt as exc:
            if display:
                display[0].stop()
            partial = getattr(exc, "summary", None)
            if summary_json and partial:  # a script still learns what this run did ("interrupted": true)
                typer.echo(summary_text(partial))
            console.print("interrupted: every committed row is kept; run the same command to continue")
            raise typer.Exit(128 + getattr(exc, "signum", signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM
        if display:
            display[0].stop()
        # An export that fails only now (its folder removed or a folder put at its name during the scan, a full
        # disk) had ended the run before --summary-json was printed: a script learnt nothing of the judged run.
        export_failure = _write_exports(out, list(export or []), lambda line: print_note(line, console))
        if export_failure:
            summary = {**summary, "export_error": export_failure[0]}
        if summary_json:
            typer.echo(summary_text(summary))
        for line in PassedOver.lines_of(summary.get("passed_over")):  # even with -q: never a silent skip
            print_note(line, console)
        if not state["quiet"]:
            print_summary(summary, console)
        if export_failure:  # said last, and its exit code (2, or 130/143 when interrupted) as before
            fail(*export_failure)
        if summary["errors"]:
            raise typer.Exit(EXIT_SOME_FAILED)

    @app.command("scan-export")
    def scan_export(
        database: Annotated[Path, typer.Argument(help="A database written by synthdetect scan.")],
        to: Annotated[Path, typer.Argument(help="Output file: .csv, .jsonl or .parquet.")],
    ) -> None:
        """Write a scan database as CSV, JSON lines (with full verdicts) or Parquet."""
        _export_all(database, [to], typer.echo)

    @app.command("export")
    def export_model(
        model: Annotated[str, typer.Argument(help="A torch model package (name or path): small-cnn, ela-cnn, small-pair, efficientnet-lite*.")],
        out: Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Directory for the exported package.")],
        onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format so far).")] = False,
        opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
        tolerance: Annotated[float, typer.Option(min=0.0, help="Largest |p_ai| difference from torch "
                                                 "accepted.")] = 1e-4,
    ) -> None:
        """Export a model package to ONNX; the new package is served by ONNX Runtime.

        The exported package keeps the card (calibration, thresholds) and the torch weights;
        ONNX-vs-torch parity on generated images is measured and written on the card.
        """
        from synthdetect.cli import fail
        from synthdetect.interrupts import sigterm_raises
        from synthdetect.models import ModelPackageError
        from synthdetect.models.onnx_backend import export_package
        from synthdetect.scan.engine import ScanInterrupted

        if not onnx:
            fail("say which format: --onnx")
        if not out.strip():  # `--out "$DIR"` with DIR unset: Path("") is ".", which made the working folder a package
            fail("--out is empty: name the folder for the exported package")
        try:
            # SIGTERM (a batch system's time limit) killed the process outright, leaving its scratch folder in /tmp;
            # raised as Ctrl-C, the scratch and staging folders are removed, and either stop is said in one line.
            with sigterm_raises(ScanInterrupted):
                package = export_package(model, out, opset=opset, tolerance=tolerance)
        except ModelPackageError as exc:
            fail(str(exc))
        except KeyboardInterrupt as exc:
            fail(f"interrupted: the export did not finish, and {out} holds what it held before (or, stopped in the "
                 "last instant, the complete new package)", code=128 + getattr(exc, "signum", signal.SIGINT))
        parity = package.card["runtime"]["parity"]
        typer.echo(f"wrote {package.root} (ONNX opset {opset}; max |logit diff| vs torch "
                   f"{parity['max_abs_logit_diff']:.2e}, max |p_ai diff| {parity['max_abs_p_ai_diff']:.2e} "
                   f"on {parity['images']} images)")
