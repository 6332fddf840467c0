"""Thin Typer commands over the Python API; every command goes through ``Detector``.

Exit codes: 0 every file judged; 3 some files could not be judged (their rows
are still printed with ``error``); 2 bad usage; 1 an unexpected failure; 141
the reader of the output went away (``detect ... | head``), as a shell reports
a command that SIGPIPE ended.
"""

from __future__ import annotations

import csv
import errno
import importlib
import io
import json
import logging
import os
import re
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synthdetect import __version__

EXIT_SOME_FAILED = 3
EXIT_READER_GONE = 128 + 13  # what a shell shows for a command SIGPIPE ended (git log | head)

app = typer.Typer(
    name="synthdetect",
    help="Tell whether images were made by a generative model, with evidence and calibrated scores.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="The registry of named models and their cards.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True)
state = {"quiet": False, "verbose": False}

#: Modules that add their commands to ``app`` through a ``register(app)`` function.
COMMAND_MODULES = ["synthdetect.train.commands", "synthdetect.explain.commands", "synthdetect.server.commands", "synthdetect.evaluate.commands", "synthdetect.train.wild_commands",
                   "synthdetect.evaluate.compare_commands", "synthdetect.scan.commands",
                   "synthdetect.evidence.commands",
                   "synthdetect.train.autopilot_commands"]


class OutputFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"
    json = "json"
    csv = "csv"


class CardFormat(str, Enum):
    """What ``models list`` / ``models show`` can print: a card is nested, so no CSV."""

    table = "table"
    json = "json"
    jsonl = "jsonl"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"synthdetect {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only results and errors; no progress.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging to stderr.")] = False,
) -> None:
    state["quiet"], state["verbose"] = quiet, verbose
    from synthdetect.models.onnx_backend import threads_from_environment

    try:  # checked here: models load lazily, so a bad value would otherwise surface mid-batch as a traceback
        threads_from_environment()
    except ValueError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if quiet:  # what a dataset leaves out (images under no class folder, ...) is said even with -q, as the files
        logging.getLogger("synthdetect.train.datasets").setLevel(logging.WARNING)  # a folder walk passes over are


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A library's warning (Pillow's "Corrupt EXIF data ...", "Tag data larger than file") as one line like every
    other message here, not Python's two (the warning and the library's source line).  Hidden by ``-q``; ``-v``
    keeps Python's form, with the place it came from."""
    if state["quiet"]:
        return
    if state["verbose"]:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    library = Path(filename).parts[-2] if filename and len(Path(filename).parts) > 1 else "python"
    text = shown(" ".join(str(message).split()))
    print(f"warning: {text} ({library}, {category.__name__})", file=file or sys.stderr)


#: Characters a terminal acts on rather than shows: C0/C1 controls (ESC starts sequences that clear the screen or
#: set the title; a newline breaks "one line"), lone surrogates (a name that is not UTF-8) and bidi overrides
#: (which make ``x\u202egpj.exe`` read as ``xexe.jpg``).
UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    return ascii(match.group())[1:-1]


def shown(text: str) -> str:
    """``text`` for a person's terminal: what a terminal would act on, or cannot encode, written as Python escapes
    (``\\n``, ``\\x1b``, ``\\xff``); CSV and JSON keep file names exactly."""
    return UNSHOWABLE.sub(_escaped, text)


def print_error(message: str) -> None:
    """One line on stderr however long (soft wrap: the terminal folds it, rich does not break it).

    The message is escaped: it names files, and rich would read ``[b]`` in a file name as markup and drop it;
    control characters in a name are shown as escapes (:func:`shown`)."""
    err.print(f"[red]error:[/red] {escape(shown(message))}", highlight=False, soft_wrap=True)


def print_note(line: str, console: Console | None = None) -> None:
    """A note about what a command passed over: one line, file names as they are (no markup; control characters
    shown as escapes)."""
    (console or err).print(shown(line), markup=False, highlight=False, soft_wrap=True)


def valid_text(value):
    """``value`` (a verdict's dict) with each file-name byte that is not UTF-8 written as ``\\xNN``, as
    ``scan-export`` writes it.  ``os.fsdecode`` keeps such a byte as a lone surrogate: strict stdout crashed the
    CSV and the table with a traceback, losing every row, and JSON carried ``\\udcff``, invalid Unicode that
    strict JSON readers refuse."""
    from synthdetect.scan.store import display_text

    if isinstance(value, str):
        return display_text(value)
    if isinstance(value, dict):
        return {key: valid_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [valid_text(item) for item in value]
    return value


def fail(message: str, code: int = 2) -> None:
    print_error(message)
    raise typer.Exit(code)


CSV_COLUMNS = ["file", "label", "p_ai", "reasons", "evidence", "model", "raw_logit", "sha256", "error"]
#: The CSV columns of text (the others are numbers, a negative ``raw_logit`` included, and stay as they are).
CSV_TEXT_COLUMNS = ("file", "label", "reasons", "evidence", "model", "sha256", "error")


def verdict_row(d: dict) -> dict:
    model = d["models"][0] if d["models"] else {}
    return {
        "file": d["file"], "label": d["label"] or "", "p_ai": "" if d["p_ai"] is None else f"{d['p_ai']:.4f}",
        "reasons": " | ".join(d["reasons"]),
        "evidence": " | ".join(f"{e['kind']}:{e['signal']}:{e['strength']}" for e in d["evidence"]),
        "model": model.get("model", ""), "raw_logit": model.get("raw_logit", ""),
        "sha256": d["sha256"] or "", "error": d["error"] or "",
    }


def render_verdicts(verdicts: list[dict], fmt: OutputFormat, out=None, *, header: bool = True) -> None:
    out = out or sys.stdout
    verdicts = [valid_text(d) for d in verdicts]
    if fmt is OutputFormat.jsonl:
        for d in verdicts:
            out.write(json.dumps(d) + "\n")
    elif fmt is OutputFormat.json:
        out.write(json.dumps(verdicts, indent=2) + "\n")
    elif fmt is OutputFormat.csv:
        from synthdetect.csv_cells import spreadsheet_row

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        if header:
            writer.writeheader()
        for d in verdicts:  # file names are uploaders' text: never a live formula in a spreadsheet
            writer.writerow(spreadsheet_row(verdict_row(d), CSV_TEXT_COLUMNS))
        out.write(buffer.getvalue())
    else:
        table = Table(show_lines=False, header_style="bold")
        for col, kw in (("file", {"overflow": "fold", "max_width": 60}), ("verdict", {}), ("p_ai", {"justify": "right"}),
                        ("why", {"overflow": "fold"})):
            table.add_column(col, **kw)
        colours = {"ai": "red", "human": "green", "uncertain": "yellow"}
        for d in verdicts:
            if d["error"]:
                why = d["error"].removeprefix(d["file"] + ": ")
                if d["evidence"]:  # a damaged file's records, read from its bytes; the row stays an error
                    why += "; records read from its bytes: " + ", ".join(
                        f"{e['kind']} {e['signal']} {e['strength']}" for e in d["evidence"])
                table.add_row(escape(shown(d["file"])), "[magenta]error[/magenta]", "", escape(shown(why)))
            else:
                p = "" if d["p_ai"] is None else f"{d['p_ai']:.3f}"
                table.add_row(escape(shown(d["file"])), f"[{colours[d['label']]}]{d['label']}[/]", p,
                              escape(shown("; ".join(d["reasons"]))))
        Console(file=out, width=max(Console().width, 120)).print(table)


#: The file name verdicts give an image read from standard input (``synthdetect detect -``, ``inspect -``).
STDIN_NAME = "<stdin>"


def stdin_image():
    """The binary stream ``-`` reads one image from; the loader applies the byte limit as it reads."""
    if sys.stdin is None or sys.stdin.isatty():
        fail("- reads one image from standard input, which is a terminal here (pipe an image in: "
             "cat photo.jpg | synthdetect detect -)")
    return sys.stdin.buffer


def gather_inputs(paths: list[str], files_from: str | None, all_files: bool, follow_links: bool = False):
    """What ``detect`` (or ``inspect``) reads, in order: ``(name, problem, source)`` per file, and a scan
    ``PassedOver`` with what the walks did not take (printed with its ``lines_of``).

    ``-`` among the paths is one image from standard input; ``--files-from`` adds a list of paths (``-``: read
    the list from standard input), so any number of files fits, past the shell's argument limit.  A list reads
    as ``scan`` reads one: ``#`` comments skipped, relative paths relative to the list's folder, a listed folder
    walked, and what ``find`` prints inside a listed folder not taken twice.  A file reached twice (``detect B
    B/x.jpg``) is judged once, as ``scan`` does."""
    from synthdetect.api import expand_paths, missing_problem
    from synthdetect.messages import EMPTY_PATH_HINT
    from synthdetect.scan.sources import PassedOver, covered_by, iter_list_stream, stdin_listed_paths

    if "" in paths:  # `detect "$DIR"` with DIR unset: Path("") is the working folder, which was walked whole
        fail(f'an empty path ("") names no file or folder{EMPTY_PATH_HINT}')
    if paths.count("-") > 1:
        fail("- (one image from standard input) can be given only once")
    if files_from == "-" and "-" in paths:
        fail("standard input cannot hold both an image (-) and the list of paths (--files-from -)")
    listed: list[str] = []
    if files_from is not None:
        try:  # names that are not UTF-8 (find prints them as they are) are kept, as scan keeps them
            if files_from == "-":
                if sys.stdin is None:  # `detect --files-from - <&-`
                    fail("--files-from -: standard input is closed here; there is no list to read")
                listed = list(stdin_listed_paths())
            else:
                with open(files_from, "rb") as handle:
                    listed = list(iter_list_stream(handle, Path(files_from).parent))
        except OSError as exc:
            fail(f"--files-from {files_from}: {getattr(exc, 'strerror', None) or exc}")
    targets: list[tuple[str, str | None, object]] = []
    notes = PassedOver()
    seen: set[str] = set()
    over_seen: set[str] = set()
    listed_folders: set[str] = set()
    empty_folders: list[str] = []
    for path, from_list in [(p, False) for p in paths] + [(p, True) for p in listed]:
        if path == "-" and not from_list:
            targets.append((STDIN_NAME, None, stdin_image()))
            continue
        if from_list:
            if covered_by(path, listed_folders):
                continue
            if os.path.isdir(path):
                listed_folders.add(path)
        if from_list and not os.path.exists(path):  # a list names files, as scan reads it: never a glob, so a
            found, over = [(path, missing_problem(Path(path)))], []  # gone photo[1].jpg is not photo1.jpg
        else:
            found, over = expand_paths([path], all_files=all_files, follow_links=follow_links, notes=notes)
            if not found and not over and os.path.isdir(path):  # said, as every file passed over is said
                empty_folders.append(path)
        for name, problem in found:
            key = os.path.normpath(name)
            if key not in seen:
                seen.add(key)
                targets.append((name, problem, name))
        for name in over:
            if os.path.normpath(name) not in over_seen:
                over_seen.add(os.path.normpath(name))
                notes.note_non_image(name)
    if empty_folders and targets:  # with nothing at all to judge, the command's own error says so
        print_note(f"note: {len(empty_folders)} folder(s) given held no files at all, e.g. {empty_folders[0]}")
    return targets, notes


@app.command()
def detect(
    paths: Annotated[Optional[list[str]], typer.Argument(
        help="Image files, folders (searched recursively) or globs; - reads one image from standard input.")] = None,
    files_from: Annotated[Optional[str], typer.Option(
        "--files-from", help="Also judge the paths listed in this file, one per line, relative to its folder "
                             "(- reads the list from standard input, e.g. from find).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name or package path.")] = "default",
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    batch_size: Annotated[int, typer.Option(min=1, help="Images decoded and scored together.")] = 32,
    max_pixels: Annotated[int, typer.Option(
        min=1, help="Refuse images with more pixels (decompression bombs).")] = 80_000_000,
    max_bytes: Annotated[int, typer.Option(
        min=1, help="Refuse files larger than this many bytes.")] = 100 * 1024 * 1024,
    all_files: Annotated[bool, typer.Option("--all-files", help="In folders, judge every file, not only image suffixes.")] = False,
    follow_links: Annotated[bool, typer.Option("--follow-links", "-L", help="Walk symbolic links to folders (each "
                                               "real folder once; a link loop is noted).")] = False,
    no_evidence: Annotated[bool, typer.Option("--no-evidence", help="Skip provenance/metadata probes.")] = False,
) -> None:
    """Judge images: prints one row per file (verdict, calibrated p_ai, reasons)."""
    from rich.progress import track

    from synthdetect.api import Detector
    from synthdetect.images import LoadLimits
    from synthdetect.interrupts import interrupt_signal, sigterm_raises
    from synthdetect.models import ModelPackageError
    from synthdetect.verdict import Verdict

    if sys.stdout is None:  # `detect ... >&-`: judging everything first ended in an AttributeError traceback
        fail("standard output is closed: there is nowhere to write the verdicts")
    try:
        detector = Detector.load(model, limits=LoadLimits(max_pixels=max_pixels, max_bytes=max_bytes),
                                 use_evidence=not no_evidence)
    except (ModelPackageError, ValueError, ImportError) as exc:
        fail(str(exc))
    targets, passed_over = gather_inputs(list(paths or []), files_from, all_files, follow_links)
    for line in passed_over.lines_of(passed_over.to_dict()):  # even with -q: never a silent skip
        print_note(line)
    if not targets:
        fail("no files to judge (give files, folders or globs, - for an image on standard input, or --files-from)")
    # JSON lines and CSV stream one batch at a time (flat memory, rows appear as they are judged);
    # the table and a JSON array need every row first.
    streaming = format in (OutputFormat.jsonl, OutputFormat.csv)
    counts = {"ai": 0, "human": 0, "uncertain": 0}
    failed = total = 0
    kept: list[dict] = []
    batches = [targets[i : i + batch_size] for i in range(0, len(targets), batch_size)]
    iterator = batches if state["quiet"] or len(batches) < 2 else track(batches, description="detect", console=err)

    def write(rows: list[dict], header: bool = True) -> None:
        """Rows to stdout; a write that fails (a full disk: ENOSPC) is one line, not a traceback after the judging.
        A reader gone (EPIPE) is left to ``main``, which exits 141."""
        try:
            render_verdicts(rows, format, header=header)
            sys.stdout.flush()
        except OSError as exc:
            if exc.errno == errno.EPIPE or isinstance(exc, BrokenPipeError):
                raise
            fail(f"cannot write the verdicts to standard output ({exc.strerror or exc}): the output is incomplete "
                 f"({total + len(rows) if streaming else len(rows)} of {len(targets)} files judged so far)", code=1)

    try:
        with sigterm_raises(lambda signum: KeyboardInterrupt(signum)):
            for index, batch in enumerate(iterator):
                ok = [(name, source) for name, problem, source in batch if problem is None]
                judged = iter(detector.detect([source for _, source in ok], names=[name for name, _ in ok]))
                rows = []
                for path, problem, _ in batch:
                    verdict = (Verdict.failed(path, f"{path}: {problem.reason}", problem.kind) if problem
                               else next(judged))
                    rows.append(verdict.to_dict())
                if streaming:
                    write(rows, header=index == 0)
                else:
                    kept.extend(rows)
                for row in rows:  # counted once written (or kept), so an interruption reports what is printed
                    total += 1
                    failed += bool(row["error"])
                    if row["label"] in counts:
                        counts[row["label"]] += 1
    except (KeyboardInterrupt, ModelPackageError) as exc:
        # Ctrl-C, SIGTERM, or a routed model that cannot load (it loads with its first image): the rows judged so
        # far are printed (a table or JSON array used to be lost), and one line says how far the run got, so a
        # partial output is never read as the whole.
        getattr(iterator, "close", lambda: None)()  # the progress bar ends now, not after the error line
        if kept and not streaming:
            write(kept)
        how_far = (f"{total} of {len(targets)} files judged ({failed} failed), their rows printed; "
                   f"the other {len(targets) - total} were not judged" if total else "no file was judged")
        if isinstance(exc, ModelPackageError):
            fail(f"{exc} ({how_far})" if total else str(exc))
        signum = interrupt_signal(exc)
        fail(f"interrupted: {how_far}", code=128 + signum)
    if not streaming:
        write(kept)
    if not state["quiet"]:
        err.print(f"{total} files: {counts['ai']} ai, {counts['human']} human, "
                  f"{counts['uncertain']} uncertain, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


@models_app.command("list")
def models_list(
    format: Annotated[CardFormat, typer.Option(
        "--format", "-f", help="table, json (one array) or jsonl.")] = CardFormat.table,
) -> None:
    """The models shipped with synthdetect."""
    from synthdetect.models import builtin_names, find_package

    rows = []
    for name in builtin_names():
        card = find_package(name).card
        test = (card.get("metrics") or {}).get("test", {}).get("at_0.5", {})
        rows.append({"name": name, "kind": card["kind"], "version": card.get("version", ""),
                     "description": card.get("description", ""),
                     "test_accuracy": test.get("accuracy"), "test_roc_auc": test.get("roc_auc"),
                     "held_out": held_out_summary(card)})
    if format is not CardFormat.table:
        from synthdetect.train.wild import nan_to_none

        rows = nan_to_none(rows)  # strict JSON, as models show
    if format is CardFormat.json:
        typer.echo(json.dumps(rows, indent=2, allow_nan=False))
        return
    if format is CardFormat.jsonl:
        for row in rows:
            typer.echo(json.dumps(row, allow_nan=False))
        return
    table = Table("name", "kind", "version", "held out", header_style="bold")
    table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["version"], r["held_out"], r["description"])
    Console(width=max(Console().width, 120)).print(table)


def held_out_summary(card: dict) -> str:
    """A card's headline held-out numbers in one line, whichever protocol measured them (a test split for
    ``synthdetect train``, leave-one-source-out for ``train-wild``); a router points to its routed models."""
    metrics = card.get("metrics") or {}
    test = metrics.get("test", {}).get("at_0.5")
    if test and test.get("accuracy") is not None:
        n = test.get("n")
        size = f", {n:,} images" if isinstance(n, int) else ""
        return f"accuracy {test['accuracy']:.4f}, ROC-AUC {test.get('roc_auc', float('nan')):.4f} (test split{size})"
    pooled = metrics.get("held_out_pooled")
    if pooled:
        return (f"ROC-AUC {pooled['roc_auc']:.3f}, TPR {pooled['tpr_at_fpr_0.05']:.1%} at 5% FPR, "
                f"ECE {pooled['ece']:.3f} (leave-one-source-out)")
    if card.get("kind") == "router":
        return "see the routed models"
    return "none on the card"


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="Model name, package path or prefixed name (onnx:/m.onnx, hf:ORG/NAME).")],
    format: Annotated[CardFormat, typer.Option(
        "--format", "-f", help="table, json or jsonl (one line).")] = CardFormat.table,
) -> None:
    """Print a model card."""
    from synthdetect.models import ModelPackageError, adapter_for, find_package

    adapter = adapter_for(name)
    unverified = None
    try:
        if adapter is not None:  # an external model has no package: its card is built as it loads
            card = adapter().card
            where = card.get("source", name)
        else:
            try:
                package = find_package(name)
            except ModelPackageError as exc:
                # A weight file missing or altered (a partial download): the card, which lists every file and its
                # sha256, is what tells what is wrong, so it is shown, then the refusal.  A card that cannot be
                # read fails again here, as before.
                package, unverified = find_package(name, verify=False), str(exc)
            card, where = package.card, package.root
    except (ModelPackageError, ValueError, ImportError) as exc:
        fail(str(exc))
    _print_card(card, where, adapter is None, format)
    if unverified:
        fail(f"{unverified} (the card is shown unverified; the model cannot be loaded)")


def _print_card(card: dict, where, is_package: bool, format: CardFormat) -> None:
    if format is not CardFormat.table:
        from synthdetect.train.wild import nan_to_none

        card = nan_to_none(card)  # strict JSON: a NaN or Infinity on a card is null, as its writers store them
        typer.echo(json.dumps(card, indent=2, allow_nan=False) if format is CardFormat.json
                   else json.dumps(card, allow_nan=False))
        return
    console = Console()
    # Card text is data, not Rich markup: '[/bold]' in a description would crash, '[cifake]' would vanish.  Nor is
    # it terminal input: a card from a download could clear the screen or retitle the terminal with an escape
    # sequence, or fake a line with a newline, so what a terminal acts on is shown as escapes (``shown``).
    console.print(f"[bold]{escape(shown(str(card['name'])))}[/bold] {escape(shown(str(card.get('version', ''))))}  "
                  f"kind={escape(shown(str(card['kind'])))}", highlight=False)
    console.print(shown(str(card.get("description", ""))), markup=False, highlight=False)
    console.print(f"{'package' if is_package else 'source'}: {shown(str(where))}", markup=False, highlight=False)
    # "source" of an external model is the line above ("source: x" was printed twice)
    skip = {"history", "name", "version", "kind", "description"} | (set() if is_package else {"source"})
    for key, value in card.items():
        if key in skip:
            continue
        # JSON escapes control characters inside its strings (and keeps its own line breaks); a plain value does not
        text = json.dumps(value, indent=2) if isinstance(value, (dict, list)) else shown(str(value))
        console.print(f"[bold]{escape(shown(str(key)))}[/bold]: {escape(text)}", highlight=False)


def _register_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)


_register_commands()


#: synthdetect's own flags, which Click reads only before the command name.
GLOBAL_FLAGS = frozenset({"-q", "--quiet", "-v", "--verbose"})


def hoist_global_flags(args: list[str]) -> list[str]:
    """``detect -q x.jpg`` as ``-q detect x.jpg``: Click refused the first with "No such option: -q", though users
    type flags after the command.  No command has a ``-q`` or ``-v`` of its own, and nothing after ``--`` moves."""
    command = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
    if command is None:
        return args
    head, tail = args[:command], args[command:]
    end = tail.index("--") if "--" in tail else len(tail)
    moved = [arg for arg in tail[:end] if arg in GLOBAL_FLAGS]
    kept = [arg for arg in tail[:end] if arg not in GLOBAL_FLAGS] + tail[end:]
    return head + moved + kept


def main() -> None:
    from synthdetect.models import ModelPackageError

    streams = sys.stdout, sys.stderr
    warnings.showwarning = _one_line_warning  # the command line only: tests and library users keep Python's own
    try:
        app(args=hoist_global_flags(sys.argv[1:]))
    except SystemExit as exc:
        # Typer answers EPIPE by swapping both streams for wrappers that swallow the last flush and exiting 1, the
        # code of an unexpected failure; under `set -o pipefail` a script could not tell `| head` from a crash.
        if exc.code == 1 and (sys.stdout, sys.stderr) != streams:
            sys.exit(EXIT_READER_GONE)
        raise
    except ModelPackageError as exc:  # a routed model loads with its first image, after the command's own checks
        print_error(str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
