"""Labelled image datasets: class folders, CSV manifests, and zip archives of either.

A dataset is a list of :class:`Record` (where the bytes are, the label, and
optional source/generator for honest, source-held-out validation).  Zip
members are read in place: an 80k-image archive never needs unpacking.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
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


class DatasetRecords(list):
    """The records of a dataset, plus ``skipped``: entries left out on purpose (macOS metadata), by reason.

    A plain list to every caller; ``synthdetect dataset summary`` reports ``skipped`` so nothing is dropped unseen.
    """

    def __init__(self, records: Iterable[Record] = (), skipped: dict[str, int] | None = None) -> None:
        super().__init__(records)
        self.skipped: dict[str, int] = dict(skipped or {})


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


def _label_from_parts(parts: Sequence[str], mapping: dict[str, int] | None) -> tuple[int | None, bool]:
    """``(label, conflict)``: the OUTERMOST folder that names a class decides.

    The class split sits at the top of a dataset, and sub-folders describe content: ``ai/nature/x.png`` is an AI
    image of nature (``nature`` is also a human alias).  ``conflict`` says an inner folder names the other class.
    """
    labels = [label for label in (parse_label(part, mapping) for part in parts[:-1]) if label is not None]
    if not labels:
        return None, False
    return labels[0], any(label != labels[0] for label in labels[1:])


#: Zip entries that are macOS Finder metadata, not images: ``__MACOSX/...`` and AppleDouble ``._name`` files.
MACOS_METADATA = "macOS metadata (__MACOSX/, ._*)"


def is_macos_metadata(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("._"))


def _records_from_names(
    names: Iterable[str], make_ref, mapping: dict[str, int] | None, where: str = "dataset"
) -> list[Record]:
    records = []
    unlabelled: list[str] = []
    conflicting: list[str] = []
    for name in sorted(names):
        if not _is_image_name(name):
            continue
        parts = PurePosixPath(name).parts
        label, conflict = _label_from_parts(parts, mapping)
        if label is None:
            unlabelled.append(name)
            continue
        if conflict:
            conflicting.append(name)
        records.append(Record(ref=make_ref(name), label=label))
    if conflicting:
        logger.warning("%s: %d image file(s) sit under folders naming both classes, e.g. %s; the outermost class "
                       "folder decided (%s)", where, len(conflicting), conflicting[0],
                       "ai" if _label_from_parts(PurePosixPath(conflicting[0]).parts, mapping)[0] == AI else "human")
    if unlabelled and records:  # with no records at all, open_dataset raises instead
        logger.warning("%s: %d image file(s) are under no class folder and were left out, e.g. %s "
                       "(name the folder with --label NAME=ai|human)", where, len(unlabelled), unlabelled[0])
    return records


def _read_csv(text: str, resolve, mapping: dict[str, int] | None, where: str) -> list[Record]:
    """Rows of a ``path,label[,source][,generator]`` manifest; header names and cells are read without spaces."""
    text = text.removeprefix("\ufeff")  # a BOM left by Excel or by a zip member read as plain UTF-8
    reader = csv.reader(io.StringIO(text))
    header = [name.strip().lower() for name in next(reader, [])]
    if "path" not in header or "label" not in header:
        found = ", ".join(repr(name) for name in header) or "none"
        raise DatasetError(f"{where}: a manifest needs 'path' and 'label' columns (found {found})")
    column = {name: header.index(name) for name in ("path", "label", "source", "generator") if name in header}
    records = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        cells = {name: (row[i].strip() if i < len(row) else None) for name, i in column.items()}
        if not cells["path"] or cells["label"] is None:
            missing = "path" if not cells["path"] else "label"
            raise DatasetError(f"{where}:{line}: no {missing} ({len(row)} of {len(header)} columns: "
                               f"{','.join(row)!r})")
        label = parse_label(cells["label"], mapping)
        if label is None:
            raise DatasetError(f"{where}:{line}: unknown label '{cells['label']}' (map it with --label NAME=ai|human, "
                               f"e.g. --label 1=ai --label 0=human)")
        records.append(Record(ref=resolve(cells["path"]), label=label,
                              source=cells.get("source") or None, generator=cells.get("generator") or None))
    return records


def _zip_manifest(names: Sequence[str], manifest: str | None) -> str | None:
    """The zip member that is the dataset's manifest, as a folder's ``manifest.csv`` is.

    At the root, or inside the one top folder a zipped folder has; any other CSV (a generator's
    ``fake/metadata.csv``) is data, not the manifest.
    """
    wanted = manifest or "manifest.csv"
    if wanted in names:
        return wanted
    tops = {PurePosixPath(n).parts[0] for n in names if n and not is_macos_metadata(n)}
    if len(tops) == 1:
        nested = f"{tops.pop()}/{wanted}"
        if nested in names:
            return nested
    return None


def _member_path(base: str, path: str) -> str:
    """A manifest path inside a zip, normalised (``./.hidden/x.png`` stays ``.hidden/x.png``)."""
    return posixpath.normpath(posixpath.join(base, path.replace("\\", "/"))).removeprefix("./")


def open_dataset(path: str | Path, *, label_map: dict[str, int] | None = None, manifest: str | None = None) -> list[Record]:
    """Read a class-folder tree, a CSV manifest, or a zip of either into records."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset not found")
    skipped: dict[str, int] = {}
    if path.is_file() and path.suffix.lower() == ".csv":
        base = path.parent
        text = path.read_text(encoding="utf-8-sig")
        return DatasetRecords(_read_csv(text, lambda p: str((base / p)), label_map, str(path)))
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            member = _zip_manifest(names, manifest)
            if member:
                base = posixpath.dirname(member)
                text = archive.read(member).decode("utf-8-sig")
                return DatasetRecords(_read_csv(text, lambda p: f"{path}!{_member_path(base, p)}", label_map,
                                                f"{path}!{member}"))
        metadata = [n for n in names if is_macos_metadata(n) and not n.endswith("/")]
        if metadata:
            skipped[MACOS_METADATA] = len(metadata)
            logger.info("%s: skipped %d macOS metadata entries (__MACOSX/, ._*)", path, len(metadata))
        names = [n for n in names if not is_macos_metadata(n)]
        records = _records_from_names(names, lambda n: f"{path}!{n}", label_map, str(path))
    elif path.is_dir():
        candidate = path / (manifest or "manifest.csv")
        if candidate.is_file():
            return open_dataset(candidate, label_map=label_map)
        files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        metadata = [n for n in files if is_macos_metadata(n)]
        if metadata:
            skipped[MACOS_METADATA] = len(metadata)
        names = [n for n in files if not is_macos_metadata(n)]
        records = _records_from_names(names, lambda n: str(path / n), label_map, str(path))
    else:
        raise DatasetError(f"{path}: not a folder, CSV manifest or zip archive")
    if not records:
        raise DatasetError(
            f"{path}: no labelled images found (class folders such as FAKE/REAL, ai/human, 1_fake/0_real)"
        )
    return DatasetRecords(records, skipped)


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
