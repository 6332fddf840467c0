"""Labelled image datasets: class folders, CSV manifests, and zip archives of either.

A dataset is a list of :class:`Record` (where the bytes are, the label, and
optional source/generator for honest, source-held-out validation).  Zip
members are read in place: an 80k-image archive never needs unpacking.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

from synthdetect.images import IMAGE_SUFFIXES, LoadedImage, LoadLimits, load_image

logger = logging.getLogger(__name__)

AI, HUMAN = 1, 0

#: Folder / label names recognised without options (compared case-insensitively).
LABEL_ALIASES: dict[str, int] = {
    **{name: AI for name in ("fake", "ai", "1_fake", "generated", "synthetic", "artificial", "ai_generated")},
    **{name: HUMAN for name in ("real", "human", "0_real", "authentic", "natural", "nature", "camera")},
}


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Record:
    """One labelled image. ``ref`` is a filesystem path or ``archive.zip!member``."""

    ref: str
    label: int
    source: str | None = None
    generator: str | None = None

    @property
    def name(self) -> str:
        return self.ref


def parse_label(value: str, mapping: dict[str, int] | None = None) -> int | None:
    key = value.strip().lower()
    if mapping and key in mapping:
        return mapping[key]
    return LABEL_ALIASES.get(key)


class _ZipCache(threading.local):
    """One open ZipFile per archive per thread: ZipFile objects are not thread-safe."""

    def __init__(self) -> None:
        self.handles: dict[str, zipfile.ZipFile] = {}

    def get(self, path: str) -> zipfile.ZipFile:
        handle = self.handles.get(path)
        if handle is None:
            handle = self.handles[path] = zipfile.ZipFile(path)
        return handle


_ZIPS = _ZipCache()


def read_record_bytes(record: Record) -> bytes:
    if "!" in record.ref and record.ref.split("!", 1)[0].lower().endswith(".zip"):
        archive, member = record.ref.split("!", 1)
        return _ZIPS.get(archive).read(member)
    return Path(record.ref).read_bytes()


def load_record(record: Record, limits: LoadLimits | None = None) -> LoadedImage:
    return load_image(read_record_bytes(record), limits, name=record.ref)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _label_from_parts(parts: Sequence[str], mapping: dict[str, int] | None) -> int | None:
    # The nearest enclosing folder with a recognised name decides the label.
    for part in reversed(parts[:-1]):
        label = parse_label(part, mapping)
        if label is not None:
            return label
    return None


def _records_from_names(
    names: Iterable[str], make_ref, mapping: dict[str, int] | None, where: str = "dataset"
) -> list[Record]:
    records = []
    unlabelled: list[str] = []
    for name in sorted(names):
        if not _is_image_name(name):
            continue
        parts = PurePosixPath(name).parts
        label = _label_from_parts(parts, mapping)
        if label is None:
            unlabelled.append(name)
            continue
        records.append(Record(ref=make_ref(name), label=label))
    if unlabelled and records:  # with no records at all, open_dataset raises instead
        logger.warning("%s: %d image file(s) are under no class folder and were left out, e.g. %s "
                       "(name the folder with --label NAME=ai|human)", where, len(unlabelled), unlabelled[0])
    return records


def _read_csv(text: str, resolve, mapping: dict[str, int] | None, where: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "path" not in reader.fieldnames or "label" not in reader.fieldnames:
        raise DatasetError(f"{where}: a manifest needs 'path' and 'label' columns")
    records = []
    for line, row in enumerate(reader, start=2):
        label = parse_label(row["label"], mapping)
        if label is None:
            raise DatasetError(f"{where}:{line}: unknown label '{row['label']}' (map it with --label NAME=ai|human)")
        records.append(Record(ref=resolve(row["path"]), label=label,
                              source=(row.get("source") or None), generator=(row.get("generator") or None)))
    return records


def open_dataset(path: str | Path, *, label_map: dict[str, int] | None = None, manifest: str | None = None) -> list[Record]:
    """Read a class-folder tree, a CSV manifest, or a zip of either into records."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset not found")
    if path.is_file() and path.suffix.lower() == ".csv":
        base = path.parent
        return _read_csv(path.read_text(), lambda p: str((base / p)), label_map, str(path))
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            csvs = [n for n in names if n.lower().endswith(".csv") and (manifest is None or n == manifest)]
            if csvs:
                base = PurePosixPath(csvs[0]).parent
                text = archive.read(csvs[0]).decode("utf-8")
                return _read_csv(text, lambda p: f"{path}!{(base / p).as_posix().lstrip('./')}", label_map, f"{path}!{csvs[0]}")
        records = _records_from_names(names, lambda n: f"{path}!{n}", label_map, str(path))
    elif path.is_dir():
        candidate = path / (manifest or "manifest.csv")
        if candidate.is_file():
            return open_dataset(candidate, label_map=label_map)
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        records = _records_from_names(names, lambda n: str(path / n), label_map, str(path))
    else:
        raise DatasetError(f"{path}: not a folder, CSV manifest or zip archive")
    if not records:
        raise DatasetError(
            f"{path}: no labelled images found (class folders such as FAKE/REAL, ai/human, 1_fake/0_real)"
        )
    return records


def stratified_split(
    records: Sequence[Record], fractions: Sequence[float], seed: int
) -> list[list[Record]]:
    """Split into len(fractions) parts keeping the class balance; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[Record]] = [[] for _ in fractions]
    cuts = np.cumsum(fractions)
    if not np.isclose(cuts[-1], 1.0):
        raise ValueError("split fractions must sum to 1")
    for label in (HUMAN, AI):
        members = [r for r in records if r.label == label]
        order = rng.permutation(len(members))
        bounds = [0] + [int(round(c * len(members))) for c in cuts]
        for k in range(len(fractions)):
            parts[k].extend(members[i] for i in order[bounds[k] : bounds[k + 1]])
    return parts
