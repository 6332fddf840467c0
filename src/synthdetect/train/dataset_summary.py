"""What a dataset holds, per class and per source, and the shortcuts it offers a model.

A classifier learns whatever separates the classes most cheaply.  When all
AI images are PNG and all human ones JPEG, or one class is much larger, the
cheapest rule is not about generation at all; this summary says so before
anyone trains.  Only headers are decoded (Pillow opens lazily), so it is
fast; the bytes are hashed too, to count identical files.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthdetect.images import ImageLoadError, LoadLimits, load_image
from synthdetect.train.datasets import Record, read_record_bytes

#: Classes whose format mixes differ by more than this total-variation distance get a warning.
FORMAT_TV_WARN = 0.3
#: ... and whose median short side or file size differs by more than this factor.
SIZE_RATIO_WARN = 1.5
#: Sources named in a warning; the rest are counted.
SOURCES_NAMED = 10


def record_facts(record: Record) -> dict[str, Any]:
    """Format, size in px and bytes from the file header; ``error`` when it cannot be read."""
    try:
        data = read_record_bytes(record)
    except (OSError, KeyError) as exc:
        return {"error": f"{record.ref}: cannot read file ({exc})"}
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height, fmt = im.width, im.height, im.format
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return {"error": _decode_error(record, data, exc)}
    limits = LoadLimits()  # those training and evaluation decode with: a file they refuse is not counted as read
    if width <= 0 or height <= 0 or width * height > limits.max_pixels or len(data) > limits.max_bytes:
        return {"error": _decode_error(record, data, ValueError(f"{width}x{height}, {len(data):,} bytes"))}
    return {"format": fmt or "?", "width": width, "height": height, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def _decode_error(record: Record, data: bytes, exc: Exception) -> str:
    """The loader's one-line reason (what training and evaluation will say), not Pillow's ``<_io.BytesIO ...>``."""
    try:
        load_image(data, name=record.ref)
    except ImageLoadError as error:
        return str(error)
    return f"{record.ref}: {exc}"


def _describe(facts: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [f for f in facts if "error" not in f]
    short = np.array([min(f["width"], f["height"]) for f in ok], dtype=float)
    kb = np.array([f["bytes"] / 1024 for f in ok], dtype=float)

    def q(v: np.ndarray) -> dict[str, float] | None:
        if v.size == 0:
            return None
        p = np.percentile(v, [0, 25, 50, 75, 100])
        return dict(zip(("min", "p25", "median", "p75", "max"), (round(float(x), 1) for x in p)))

    return {"count": len(facts), "unreadable": len(facts) - len(ok),
            "formats": dict(Counter(f["format"] for f in ok).most_common()),
            "short_side_px": q(short), "file_kb": q(kb)}


def shortcut_warnings(per_class: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings when the AI and human classes differ in format mix or size."""
    ai, human = per_class.get("ai"), per_class.get("human")
    if not ai or not human or not ai["formats"] or not human["formats"]:
        return []
    warnings = []
    formats = set(ai["formats"]) | set(human["formats"])
    share = {name: {f: c["formats"].get(f, 0) / max(sum(c["formats"].values()), 1) for f in formats}
             for name, c in (("ai", ai), ("human", human))}
    tv = 0.5 * sum(abs(share["ai"][f] - share["human"][f]) for f in formats)
    if tv > FORMAT_TV_WARN:
        mix = "; ".join(f"{name}: " + ", ".join(f"{f} {100 * s:.0f}%" for f, s in sorted(share[name].items(), key=lambda kv: -kv[1]) if s)
                        for name in ("ai", "human"))
        warnings.append(f"classes differ in file format (total-variation distance {tv:.2f}; {mix}): "
                        f"a model can separate them by format alone (the 'JPEG vs PNG' shortcut)")
    for key, what in (("short_side_px", "image size (median short side, px)"), ("file_kb", "file size (median kB)")):
        a, h = (ai[key] or {}).get("median"), (human[key] or {}).get("median")
        if a and h and max(a, h) / min(a, h) > SIZE_RATIO_WARN:
            warnings.append(f"classes differ in {what}: ai {a:g} vs human {h:g} "
                            f"(ratio {max(a, h) / min(a, h):.1f}); a model can learn size instead of content")
    return warnings


def identical_files(records: Sequence[Record], facts: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Counts of byte-identical files, and warnings; copies labelled both ways are label errors."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record, fact in zip(records, facts):
        if "sha256" in fact:
            groups[fact["sha256"]].append(record)
    repeated = [g for g in groups.values() if len(g) > 1]
    conflicting = [g for g in repeated if len({r.label for r in g}) > 1]
    counts = {"groups": len(repeated), "files": sum(len(g) for g in repeated), "both_labels": len(conflicting)}
    warnings = []
    if repeated:
        a, b = repeated[0][:2]
        warnings.append(f"{counts['files']} files are byte-identical copies of one another ({counts['groups']} groups, "
                        f"e.g. {a.ref} = {b.ref}): synthdetect train does not score validation or test copies of an "
                        f"earlier file, so its held-out numbers never credit memory")
    if conflicting:
        a, b = next((x, y) for x in conflicting[0] for y in conflicting[0] if x.label != y.label)
        warnings.append(f"identical files carry both labels in {len(conflicting)} group(s) (e.g. {a.ref} and "
                        f"{b.ref}): one of the labels is wrong")
    return counts, warnings


def _read_facts(records: Sequence[Record], progress: bool) -> list[dict[str, Any]]:
    """Each record's facts; with ``progress``, a bar on stderr where that is a terminal (an 80k-image zip took
    2 minutes on a shared 2-core machine without a word); a log or a pipe gets only the summary."""
    from rich.console import Console

    console = Console(stderr=True)
    if not progress or not console.is_terminal:
        return [record_facts(r) for r in records]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    facts = []
    with Progress(TextColumn("[bold]read headers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("read headers", total=len(records))
        for i, record in enumerate(records):
            facts.append(record_facts(record))
            if i % 256 == 0 or i == len(records) - 1:
                bar.update(task, completed=i + 1)
    return facts


def summarize_dataset(records: Sequence[Record], *, progress: bool = False) -> dict[str, Any]:
    facts = _read_facts(records, progress)
    by_class: dict[str, list] = defaultdict(list)
    by_source: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record, fact in zip(records, facts):
        cls = "ai" if record.label == 1 else "human"
        by_class[cls].append(fact)
        by_source[record.source or "(no source)"][cls].append(fact)
    per_class = {cls: _describe(by_class[cls]) for cls in ("ai", "human") if by_class[cls]}
    per_source = {src: {cls: _describe(v) for cls, v in sorted(classes.items())} for src, classes in sorted(by_source.items())}
    warnings = shortcut_warnings(per_class)
    for src, classes in per_source.items() if len(per_source) > 1 else ():  # one source: the lines above again
        for w in shortcut_warnings(classes):
            warnings.append(f"source {src}: {w}")
    single = [src for src, classes in per_source.items() if len(classes) == 1 and src != "(no source)"]
    if single and len(per_class) == 2:  # every source of one class is the strongest shortcut, not a reason for silence
        how_many = (f"all {len(single)} sources hold" if len(single) == len(per_source)
                    else f"{len(single)} of {len(per_source)} sources hold")
        named = ", ".join(single[:SOURCES_NAMED]) + (f" and {len(single) - SOURCES_NAMED} more"
                                                      if len(single) > SOURCES_NAMED else "")
        warnings.append(f"{how_many} one class only ({named}): with a random split a model can score well by "
                        f"recognising the source; use --split source or loso")
    identical, copy_warnings = identical_files(records, facts)
    warnings += copy_warnings
    errors = [f["error"] for f in facts if "error" in f]
    return {"records": len(records), "per_class": per_class, "per_source": per_source, "identical_files": identical,
            "warnings": warnings, "unreadable": errors[:20], "unreadable_count": len(errors),
            "skipped": dict(getattr(records, "skipped", {}))}
