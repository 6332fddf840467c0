"""``synthdetect inspect IMG...``: every probe's findings for each image, without any model.

Runs all registered probes, including the on-request forensic views (ELA,
spectrum), so a person can see exactly what provenance an image carries.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

EXIT_SOME_FAILED = 3


class InspectFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


def inspect_file(path: str, probes: list[str] | None = None, source: Any = None) -> dict:
    """One file's findings as a JSON-ready dict.  ``error`` is set when it cannot be read; findings are then empty,
    except for a truncated or corrupt file, whose records (``RECORD_PROBES``) are still read from its bytes.

    ``source``: what to read instead of the file ``path`` names (bytes or a stream: an image piped in)."""
    from synthdetect.evidence import RECORD_PROBES, failure_reason, probe_names, record_probes, run_probes
    from synthdetect.images import ImageLoadError, load_image

    t0 = time.perf_counter()
    try:
        loaded = load_image(path if source is None else source, name=path)
    except ImageLoadError as exc:
        result = {"file": path, "error": str(exc), "error_kind": exc.kind, "evidence": []}
        if exc.records is not None:
            # A fact-checker wants what a damaged file still says about itself; the error stays, and the pixel
            # views say they did not look.  Found records were lost with the pixels (a cut PNG kept its WebUI
            # parameters, a cut JPEG its XMP DigitalSourceType, and neither was shown).
            selected = list(dict.fromkeys(probes or probe_names()))
            checked = record_probes(selected)
            result.update({
                "image": exc.records.summary(),
                "evidence": [e.to_dict() for e in run_probes(exc.records, checked)],
                "checked": checked,
                "not_checked": {name: f"the pixels could not be decoded ({exc.reason})"
                                for name in selected if name not in RECORD_PROBES},
                "timing_ms": round((time.perf_counter() - t0) * 1000, 2)})
        return result
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file is its row, as in detect; the rest go on
        return {"file": path, "error": f"{path}: cannot read input ({failure_reason(exc)})", "error_kind": "unreadable",
                "evidence": []}
    selected = list(dict.fromkeys(probes or probe_names()))  # "-p exif -p exif" asks once
    skipped = not_checked(loaded, selected)  # those probes would decide the same again and return nothing
    checked = [name for name in selected if name not in skipped]
    evidence = run_probes(loaded, checked)
    return {
        "file": path, "error": None, "error_kind": None,
        # frames and notes as in a verdict: the pixel views (ELA, spectrum, watermark) saw the first frame only
        "image": loaded.summary(),
        "evidence": [e.to_dict() for e in evidence],
        "checked": checked,
        "not_checked": skipped,
        "timing_ms": round((time.perf_counter() - t0) * 1000, 2),
    }


def not_checked(image: Any, probes: list[str]) -> dict[str, str]:
    """Probe -> why it did not look at this image: "no watermark found" must not be said of one never decoded."""
    from synthdetect.evidence.spectrum import why_no_profile
    from synthdetect.evidence.watermark import why_not_decoded

    reasons = {"watermark": why_not_decoded, "spectrum": why_no_profile}
    found = {name: reasons[name](image) for name in probes if name in reasons}
    return {name: reason for name, reason in found.items() if reason}


#: What each record-reading probe looks for, as the "no ... found" line names it (ELA and the spectrum are views).
_LOOKS_FOR = {"c2pa": "provenance", "metadata": "metadata", "genparams": "metadata", "exif": "metadata",
              "watermark": "watermark", "ela": None, "spectrum": None}


def looked_for_phrase(checked: list[str]) -> str:
    """``provenance, metadata or watermark`` for the probes that looked: "no watermark found" is never said of a
    file the watermark probe did not run on (``-p exif``), nor "no metadata" when only the watermark looked."""
    names = list(dict.fromkeys(_LOOKS_FOR.get(name, name) for name in checked))
    names = [name for name in names if name]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _render_table(results: list[dict], console: Console | None = None) -> None:
    """File names and findings quote text from the files: control characters in them are shown as escapes, so a
    name or a metadata field cannot clear the screen or retitle the terminal."""
    from synthdetect.cli import shown

    console = console or Console(width=max(Console().width, 120))
    colours = {"ai": "red", "human": "green", "edited": "cyan", "unverified": "yellow", "tampered": "magenta",
               "none": "dim"}
    for result in results:
        image = result.get("image") or {}
        if result["error"]:
            console.print(f"[bold]{escape(shown(result['file']))}[/bold]: [magenta]error[/magenta] "
                          f"{escape(shown(result['error'].removeprefix(result['file'] + ': ')))}", highlight=False)
            if "checked" not in result:  # nothing of the file was read; a damaged one's records are listed below
                continue
        else:
            console.print(f"[bold]{escape(shown(result['file']))}[/bold]  {image['format']} "
                          f"{image['width']}x{image['height']} {image['mode']}", highlight=False)
        for note in image.get("notes") or []:  # "3 frames; judged the first": what the pixel views looked at
            console.print(f"  {escape(shown(note))}", highlight=False)
        rank = {"decisive": 0, "strong": 1, "moderate": 2, "weak": 3, "info": 4}
        findings = sorted(result["evidence"], key=lambda e: (e["kind"] in ("ela", "spectrum"), rank[e["strength"]]))
        skipped = result.get("not_checked") or {}
        looked_for = looked_for_phrase(result.get("checked", []))
        if looked_for and not any(e["kind"] not in ("ela", "spectrum") for e in findings):
            console.print(f"  no {looked_for} found (absence is not evidence either way)")
        for name, reason in skipped.items():
            console.print(f"  {name} not checked: {escape(reason)}", highlight=False)
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
        for column in ("probe", "signal", "strength", "finding"):
            table.add_column(column, overflow="fold")
        for e in findings:
            colour = colours.get(e["signal"], "white")
            table.add_row(e["kind"], f"[{colour}]{e['signal']}[/]", e["strength"], escape(shown(e["detail"])))
        if findings:  # an empty table would print only its header
            console.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        paths: Annotated[Optional[list[str]], typer.Argument(
            help="Image files, folders or globs; - reads one image from standard input.")] = None,
        files_from: Annotated[Optional[str], typer.Option(
            "--files-from", help="Also inspect the paths listed in this file, one per line (- reads the list from "
                                 "standard input).")] = None,
        format: Annotated[InspectFormat, typer.Option("--format", "-f", help="Output format.")] = InspectFormat.table,
        probe: Annotated[Optional[list[str]], typer.Option("--probe", "-p",
                                                           help="Run only this probe (repeatable).")] = None,
        follow_links: Annotated[bool, typer.Option("--follow-links", "-L", help="Walk symbolic links to folders "
                                                   "(each real folder once).")] = False,
    ) -> None:
        """Show every evidence probe's findings (C2PA, metadata, generation parameters, EXIF, watermark, ELA, spectrum)."""
        from rich.progress import track

        from synthdetect.cli import err, fail, gather_inputs, print_note, state, valid_text
        from synthdetect.evidence import probe_names
        from synthdetect.interrupts import interrupt_signal, sigterm_raises

        known = probe_names()
        unknown = [p for p in probe or [] if p not in known]
        if unknown:
            fail(f"unknown probe {', '.join(unknown)} (known: {', '.join(known)})")
        targets, passed_over = gather_inputs(list(paths or []), files_from, False, follow_links)
        if not targets:
            fail("no files to inspect (give files, folders or globs, - for an image on standard input, or --files-from)")
        for line in passed_over.lines_of(passed_over.to_dict(), "inspected", ""):  # never a silent skip
            print_note(line)
        # The table and JSON lines are written file by file, as each is inspected (they are the progress, and
        # a long run's findings are not held back); a JSON array needs every file first, so a bar shows progress.
        items = targets
        if format is InspectFormat.json and not state["quiet"] and len(targets) > 1:
            items = track(targets, description="inspect", console=err)
        console = Console(width=max(Console().width, 120))
        results, failed, done = [], 0, 0
        try:
            with sigterm_raises(lambda signum: KeyboardInterrupt(signum)):
                for path, problem, source in items:
                    result = valid_text({"file": path, "error": f"{path}: {problem.reason}", "error_kind": problem.kind,
                                         "evidence": []} if problem
                                        else inspect_file(path, probe, source))  # a name's stray byte as \\xNN
                    if format is InspectFormat.json:
                        results.append(result)
                    elif format is InspectFormat.jsonl:
                        sys.stdout.write(json.dumps(result) + "\n")
                    else:
                        _render_table([result], console)
                    sys.stdout.flush()
                    done += 1  # counted once written (or kept), so an interruption reports what is printed
                    failed += bool(result["error"])
        except KeyboardInterrupt as exc:
            # Ctrl-C or SIGTERM: a JSON array of the files done is still written (it used to be lost), and one
            # line says how far the run got, so a partial output is never read as the whole.
            getattr(items, "close", lambda: None)()  # the progress bar ends before the line, not after it
            if format is InspectFormat.json:
                sys.stdout.write(json.dumps(results, indent=2) + "\n")
            sys.stdout.flush()
            signum = interrupt_signal(exc)
            fail(f"interrupted: {done} of {len(targets)} files inspected ({failed} failed), their findings printed; "
                 f"the other {len(targets) - done} were not inspected", code=128 + signum)
        if format is InspectFormat.json:
            sys.stdout.write(json.dumps(results, indent=2) + "\n")
        if failed:
            raise typer.Exit(EXIT_SOME_FAILED)
