"""Streaming discovery of the files a scan judges: folders, list files and globs.

Why not :func:`synthdetect.api.expand_paths`: it sorts the whole expansion in
memory, which is right for ``detect`` and wrong for a bucket of millions of
files.  Here folders are walked one directory at a time (each directory's
entries sorted, so reruns see the same order) and every path is yielded as
soon as it is found.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from synthdetect.images import IMAGE_SUFFIXES
from synthdetect.scan.store import FileStamp

#: A SOURCE file with one of these suffixes is read as a list of paths, one per line.
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
#: The SOURCE that reads such a list from standard input (``find /data -name '*.jpg' | synthdetect scan - ...``).
STDIN_LIST = "-"


@dataclass(frozen=True)
class Candidate:
    path: str
    stamp: FileStamp


@dataclass
class PassedOver:
    """What discovery did not queue, so a scan can say so: nothing is skipped silently."""

    non_image: int = 0  # files in folders without an image suffix (judged only with --all-files)
    non_image_example: str | None = None
    unreadable_folders: list[str] = field(default_factory=list)  # "path: reason", first MAX_EXAMPLES
    unreadable_folder_count: int = 0

    MAX_EXAMPLES = 10

    def note_non_image(self, path: str) -> None:
        self.non_image += 1
        self.non_image_example = self.non_image_example or path

    def note_unreadable(self, folder: str, exc: OSError) -> None:
        self.unreadable_folder_count += 1
        if len(self.unreadable_folders) < self.MAX_EXAMPLES:
            self.unreadable_folders.append(f"{folder}: {exc.strerror or exc}")

    def to_dict(self) -> dict:
        return {"non_image_files": self.non_image, "non_image_example": self.non_image_example,
                "unreadable_folders": self.unreadable_folder_count,
                "unreadable_folder_examples": self.unreadable_folders}

    @staticmethod
    def lines_of(summary: dict | None) -> list[str]:
        """One-line console notes from :meth:`to_dict` (empty when nothing was passed over)."""
        from synthdetect.api import passed_over_note

        summary = summary or {}
        out = []
        if summary.get("non_image_files"):
            out.append(passed_over_note(summary["non_image_files"], summary["non_image_example"]))
        if summary.get("unreadable_folders"):
            out.append(f"warning: {summary['unreadable_folders']} folder(s) could not be read, e.g. "
                       f"{summary['unreadable_folder_examples'][0]}")
        return out


def _stamp(path: str) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return FileStamp(None, None)  # the decode worker turns this into an error row
    return FileStamp(st.st_size, st.st_mtime_ns)


def walk_folder(root: str, all_files: bool = False, passed_over: PassedOver | None = None) -> Iterator[Candidate]:
    passed_over = passed_over if passed_over is not None else PassedOver()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            passed_over.note_unreadable(folder, exc)
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                    continue
                if not entry.is_file():
                    continue
            except OSError:
                continue
            if all_files or os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                try:
                    st = entry.stat()
                    stamp = FileStamp(st.st_size, st.st_mtime_ns)
                except OSError:
                    stamp = FileStamp(None, None)
                yield Candidate(entry.path, stamp)
            else:
                passed_over.note_non_image(entry.path)
        stack.extend(reversed(subfolders))  # depth first, in name order


def iter_listed_paths(lines: Iterable[str], base: Path | None = None) -> Iterator[str]:
    """The paths of a list, one per line; blank lines and ``#`` comments are skipped; a relative path is relative
    to ``base`` (the list file's folder), or to the working directory for a list piped in (as ``find`` prints)."""
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        yield entry if base is None or os.path.isabs(entry) else str(base / entry)


def read_list_file(path: str) -> Iterator[Candidate]:
    with open(path, encoding="utf-8") as handle:
        for full in iter_listed_paths(handle, Path(path).parent):
            yield Candidate(full, _stamp(full))


def iter_candidates(sources: Iterable[str], all_files: bool = False,
                    passed_over: PassedOver | None = None) -> Iterator[Candidate]:
    """Every file named by ``sources``; a name that matches nothing is yielded too and becomes an error row.

    Files a folder walk does not queue (no image suffix) and folders it cannot
    read are recorded in ``passed_over``.
    """
    for source in sources:
        source = str(source)
        if source == STDIN_LIST:  # streamed: a list of millions of paths is never held whole
            yield from (Candidate(path, _stamp(path)) for path in iter_listed_paths(sys.stdin))
        elif os.path.isdir(source):
            yield from walk_folder(source, all_files, passed_over)
        elif os.path.isfile(source) and os.path.splitext(source)[1].lower() in LIST_SUFFIXES:
            yield from read_list_file(source)
        elif os.path.exists(source):
            yield Candidate(source, _stamp(source))
        elif glob.has_magic(source):
            for match in glob.iglob(source, recursive=True):
                if os.path.isfile(match):
                    yield Candidate(match, _stamp(match))
        else:
            yield Candidate(source, FileStamp(None, None))
