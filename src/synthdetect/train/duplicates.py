"""Byte-identical files in a dataset, so that no copy of a training image is scored as held out.

CIFAKE's training zip holds 599 pairs of identical AI images under different
names.  A random split put 57 copies of earlier files (50 of them copies of
training files) among the 4,009 held-out images; the shipped model got all of
them right, so the held-out accuracy measured memory as well as detection.
Files are compared by the sha256 of their bytes: exact copies are certain
leaks.  Near-duplicates (re-encoded, resized, cropped) need a similarity
threshold and are not looked for here; ``benchmarks/near_copies.py`` counts
them in a split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.progress import track

from synthdetect.train.datasets import Record, read_record_bytes

#: Hash this many files or more with a progress bar (about a second of work below it).
PROGRESS_FROM = 20_000
#: The card lists at most this many of the copies it did not score; the counts are always complete.
LISTED_COPIES = 100


@dataclass(frozen=True)
class UnscoredCopy:
    """A validation or test file left out of scoring because an identical file came before it."""

    part: str
    ref: str
    copy_of: str
    copy_of_part: str


def file_digest(record: Record) -> str | None:
    """sha256 of the file's bytes; None when it cannot be read (the decoder reports that file later)."""
    try:
        return hashlib.sha256(read_record_bytes(record)).hexdigest()
    except (OSError, KeyError, ValueError):
        return None


def file_digests(records: Sequence[Record]) -> list[str | None]:
    """Digests in record order, read one after another: a thread pool took 9.8 s for CIFAKE's 80,171 small
    files where this loop takes 2.2 s."""
    if len(records) >= PROGRESS_FROM:
        records = track(records, description="look for identical files", console=Console(stderr=True),
                        transient=True)
    return [file_digest(record) for record in records]


def drop_scored_copies(parts: Sequence[tuple[str, Sequence[Record]]]) -> tuple[list[list[Record]], list[UnscoredCopy]]:
    """Keep each part's records except copies of a file seen in an earlier part or earlier in the same one.

    ``parts`` come in order (train, validation, test).  Training keeps all its
    files: a repeated training image costs an extra step, never an inflated
    score.  A validation copy of a training file would tune thresholds on
    memorised images, and a test copy of either would flatter the card.
    """
    kept: list[list[Record]] = []
    unscored: list[UnscoredCopy] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for index, (part, records) in enumerate(parts):
        digests = file_digests(records)
        keep: list[Record] = []
        for record, digest in zip(records, digests):
            earlier = first_seen.get(digest) if digest is not None else None
            if earlier is not None and index > 0:
                unscored.append(UnscoredCopy(part, record.ref, earlier[1], earlier[0]))
                continue
            if digest is not None and earlier is None:
                first_seen[digest] = (part, record.ref)
            keep.append(record)
        kept.append(keep)
    return kept, unscored


def describe_unscored(unscored: Sequence[UnscoredCopy]) -> dict:
    """The card's account of what was not scored: complete counts, and the first files by name."""
    counts: dict[str, int] = {}
    for copy in unscored:
        counts[copy.part] = counts.get(copy.part, 0) + 1
    return {
        "rule": "validation and test files byte-identical to a file earlier in train, validation or test are not scored",
        "counts": counts,
        "files": [{"part": c.part, "file": c.ref, "copy_of": c.copy_of, "copy_of_part": c.copy_of_part}
                  for c in unscored[:LISTED_COPIES]],
        "listed": min(len(unscored), LISTED_COPIES),
    }


def copies_of(digests: Sequence[str | None], held_out: np.ndarray) -> np.ndarray:
    """Which files are byte-identical to a held-out one (``held_out``: a boolean mask over ``digests``).

    Leave-one-source-out folds train on every other source: a file that
    also sits in the held-out source under another name would let the fold
    score memory.  Fold code trains on ``~held_out & ~copies_of(...)``, so
    every file is still scored once, by a model that never saw its copy.
    """
    held = {d for d, h in zip(digests, held_out) if h and d is not None}
    return np.array([bool(d is not None and d in held and not h) for d, h in zip(digests, held_out)], dtype=bool)
