"""Streaming discovery of the files a scan judges: folders, list files and globs.

Why not :func:`synthdetect.api.expand_paths`: it sorts the whole expansion in
memory, which is right for ``detect`` and wrong for a bucket of millions of
files.  Here folders are walked one directory at a time (each directory's
entries sorted, so reruns see the same order) and every path is yielded as
soon as it is found.

Every path is normalised (``os.path.normpath``: ``./B/x.jpg`` is ``B/x.jpg``),
and only regular files are ever opened: a FIFO named ``.jpg`` would block the
reader forever, so it, a broken link or a link loop becomes an error row
instead (decided here from ``os.stat``, before any worker opens it).
"""

from __future__ import annotations

import codecs
import errno
import glob
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from synthdetect.images import IMAGE_SUFFIXES, path_problem
from synthdetect.scan.store import FileStamp

#: A SOURCE file with one of these suffixes is read as a list of paths, one per line.
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
#: The SOURCE that reads such a list from standard input (``find /data -name '*.jpg' | synthdetect scan - ...``).
STDIN_LIST = "-"


#: A list file's or standard input's bytes that are not UTF-8 (a Latin-1 file name) are kept as surrogates,
#: so the path opens the very file named and the store keeps it losslessly.
LIST_ERRORS = "surrogateescape"


#: Bytes a list of paths hardly ever holds (control characters other than tab, newline, CR, VT, FF; NUL separates
#: names); binary data is full of them.  An image read as a list had become thousands of ``not_found`` rows.
_BINARY = re.compile(rb"[\x01-\x08\x0e-\x1f]")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _looks_binary(block: bytes) -> bool:
    """Whether a block of a list is binary data: more than four control characters and more than one byte in 64
    (a stray one is a strange name, not data), or four NULs in a row (``find -print0`` never writes an empty name)."""
    controls = len(_BINARY.findall(block))
    return (controls > 4 and controls * 64 > len(block)) or b"\0\0\0\0" in block


class NotAListError(OSError):
    """What was read as a list of paths is binary data (an image, an archive); an ``OSError`` so that every
    reader of a list (``detect --files-from`` too) reports it as it reports a list it cannot open."""

    def __init__(self, reason: str):
        super().__init__(errno.EINVAL, reason)


@dataclass(frozen=True)
class Candidate:
    path: str
    stamp: FileStamp
    #: ``(error kind, reason)`` when discovery already knows the file cannot be judged; it is never opened.
    problem: tuple[str, str] | None = None


@dataclass
class PassedOver:
    """What discovery did not queue, so a scan can say so: nothing is skipped silently."""

    non_image: int = 0  # files in folders without an image suffix (judged only with --all-files)
    non_image_example: str | None = None
    unreadable_folders: list[str] = field(default_factory=list)  # "path: reason", first MAX_EXAMPLES
    unreadable_folder_count: int = 0
    linked_folders: int = 0  # symbolic links to folders not followed (the default, as find and os.walk)
    linked_folder_example: str | None = None
    repeat_folders: int = 0  # with --follow-links: folders reached a second time (a link loop or a second name)
    repeat_folder_example: str | None = None

    MAX_EXAMPLES = 10

    def note_non_image(self, path: str) -> None:
        self.non_image += 1
        self.non_image_example = self.non_image_example or path

    def note_linked_folder(self, path: str) -> None:
        self.linked_folders += 1
        self.linked_folder_example = self.linked_folder_example or path

    def note_repeat_folder(self, path: str) -> None:
        self.repeat_folders += 1
        self.repeat_folder_example = self.repeat_folder_example or path

    def note_unreadable(self, folder: str, exc: OSError) -> None:
        self.unreadable_folder_count += 1
        if len(self.unreadable_folders) < self.MAX_EXAMPLES:
            self.unreadable_folders.append(f"{folder}: {exc.strerror or exc}")

    def to_dict(self) -> dict:
        return {"non_image_files": self.non_image, "non_image_example": self.non_image_example,
                "unreadable_folders": self.unreadable_folder_count,
                "unreadable_folder_examples": self.unreadable_folders,
                "linked_folders": self.linked_folders, "linked_folder_example": self.linked_folder_example,
                "repeat_folders": self.repeat_folders, "repeat_folder_example": self.repeat_folder_example}

    @staticmethod
    def lines_of(summary: dict | None, verb: str = "judged",
                 hint: str = " (use --all-files to judge them)") -> list[str]:
        """One-line console notes from :meth:`to_dict` (empty when nothing was passed over)."""
        from synthdetect.api import passed_over_note

        summary = summary or {}
        out = []
        if summary.get("non_image_files"):
            out.append(passed_over_note(summary["non_image_files"], summary["non_image_example"], verb, hint))
        if summary.get("unreadable_folders"):
            out.append(f"warning: {summary['unreadable_folders']} folder(s) could not be read, e.g. "
                       f"{summary['unreadable_folder_examples'][0]}")
        if summary.get("linked_folders"):
            out.append(f"note: {summary['linked_folders']} symbolic link(s) to folders were not followed "
                       f"(--follow-links follows them), e.g. {summary['linked_folder_example']}")
        if summary.get("repeat_folders"):
            out.append(f"note: {summary['repeat_folders']} folder(s) reached again through a symbolic link were "
                       f"walked only once (a link loop or a second name), e.g. {summary['repeat_folder_example']}")
        return out


def inspect(path: str) -> Candidate:
    """A candidate with its size and mtime, or with the problem that keeps it from being opened (worded and kinded
    as ``detect`` words it: :func:`synthdetect.images.path_problem`)."""
    kind, reason, st = path_problem(Path(path))
    if st is None:
        if reason == "file not found":
            return Candidate(path, FileStamp(None, None))  # the decode worker says "file not found"
        return Candidate(path, FileStamp(None, None), (kind, reason))
    return Candidate(path, FileStamp(st.st_size, st.st_mtime_ns, st.st_ctime_ns), (kind, reason) if kind else None)


def first_visit(folder: str, visited: set[str], passed_over: PassedOver | None) -> bool:
    """With links followed: whether ``folder`` is a real folder not walked yet (then remembered); a link loop or
    a second name for a walked folder is noted instead.  Shared by this walk and ``detect``'s."""
    resolved = os.path.realpath(folder)
    if resolved in visited:
        if passed_over is not None:
            passed_over.note_repeat_folder(folder)
        return False
    visited.add(resolved)
    return True


def walk_folder(root: str, all_files: bool = False, passed_over: PassedOver | None = None,
                excluded: "_Exclusions | None" = None, follow_links: bool = False) -> Iterator[Candidate]:
    """Files under ``root``, depth first in name order.

    With ``follow_links`` a symbolic link to a folder is walked like a folder,
    but each real folder only once (its resolved path is remembered): a link
    loop, or a second name for a folder already walked, is noted, not walked
    again.  One remembered path per folder, not per file, so memory stays small.
    """
    passed_over = passed_over if passed_over is not None else PassedOver()
    visited = {os.path.realpath(root)} if follow_links else None
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
            # os.scandir(".") names its entries "./x.jpg": normalised as every other path is, so that `scan .`,
            # `scan x.jpg` and `find . | scan -` give x.jpg one row (they had given it two, each judged).
            path = entry.name if folder == os.curdir else entry.path
            try:
                real_folder = entry.is_dir(follow_symlinks=False)
                linked_folder = not real_folder and entry.is_symlink() and entry.is_dir()
            except OSError:
                real_folder = linked_folder = False  # a link loop: judged below, as an error row
            if visited is not None and (real_folder or linked_folder):
                if first_visit(path, visited, passed_over):
                    subfolders.append(path)
                continue
            if real_folder:
                subfolders.append(path)
                continue
            if excluded and path in excluded:
                continue
            if all_files or os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                yield inspect(path)
            elif linked_folder:
                passed_over.note_linked_folder(path)
            else:
                passed_over.note_non_image(path)
        stack.extend(reversed(subfolders))  # depth first, in name order


def listed_path(entry: str, base: Path | None = None) -> str:
    """A listed path, normalised; a relative one is relative to ``base`` (the list file's folder), or to the working
    directory for a list piped in (as ``find`` prints)."""
    return os.path.normpath(entry if base is None or os.path.isabs(entry) else os.path.join(base, entry))


def iter_listed_paths(lines: Iterable[str], base: Path | None = None) -> Iterator[str]:
    """The paths of a list, one per line; blank lines and ``#`` comments are skipped.  A NUL byte separates
    paths too (no file name can hold one, and ``os.stat`` refuses it)."""
    for line in lines:
        for entry in line.split("\0"):
            entry = entry.strip()
            if entry and not entry.startswith("#"):
                yield listed_path(entry, base)


def iter_list_stream(stream: BinaryIO, base: Path | None = None, chunk: int = 1 << 16) -> Iterator[str]:
    """The paths of a list read as bytes: one per line (as :func:`iter_listed_paths`), or NUL-separated as
    ``find -print0`` writes them, the only way to list a name that holds a newline.  A list is NUL-separated
    when the first block read holds a NUL; then each name is taken exactly as written (no stripping, no
    comments; only blank entries are skipped).  Blocks are handled as they arrive, so a piped list streams.

    A list in UTF-16 with its byte-order mark (what Windows PowerShell's ``>`` writes) is read as text: its
    zero bytes had made it a NUL-separated list of single letters.  Binary data (an image given as the list)
    raises :class:`NotAListError` instead of becoming one ``not_found`` path per run of bytes."""
    read = getattr(stream, "read1", stream.read)
    separator: bytes | None = None
    pending = b""
    first = True
    utf16 = None  # an incremental decoder once the list is known to be UTF-16
    while True:
        block = read(chunk)
        eof = not block
        if first and block:  # a list saved by Windows Notepad starts with a byte-order mark
            first = False
            if block.startswith(_UTF16_BOMS):
                utf16 = codecs.getincrementaldecoder("utf-16")(errors="replace")
            block = block.removeprefix(b"\xef\xbb\xbf")
        if utf16 is not None:  # as UTF-8 from here on (the decoder drops the mark)
            block = utf16.decode(block, final=eof).encode("utf-8", LIST_ERRORS)
        if _looks_binary(block):
            raise NotAListError("not a list of paths: it holds binary data (is it an image? a list has one path "
                                "per line)")
        if not eof:
            pending += block
            if separator is None:
                if b"\0" in pending:
                    separator = b"\0"
                elif b"\n" in pending:
                    separator = b"\n"
                else:
                    continue
            *records, pending = pending.split(separator)
        else:
            records, pending = [pending], b""
        texts = [r.decode("utf-8", LIST_ERRORS) for r in records]
        if separator == b"\0":
            yield from (listed_path(t, base) for t in texts if t.strip())  # not the newline `echo` may add
        else:
            yield from iter_listed_paths(texts, base)
        if eof:
            return


def read_list_file(path: str, all_files: bool = False, passed_over: PassedOver | None = None,
                   excluded: "_Exclusions | None" = None, follow_links: bool = False) -> Iterator[Candidate]:
    try:
        handle = open(path, "rb")
    except OSError as exc:  # permissions, a vanished mount: the list's own error row, not the end of the scan
        yield Candidate(path, FileStamp(None, None),
                        ("unreadable", f"cannot read this list of paths ({exc.strerror or exc})"))
        return
    with handle:
        try:
            yield from expand_listed(iter_list_stream(handle, Path(path).parent), all_files, passed_over, excluded,
                                     follow_links)
        except NotAListError as exc:  # the list's own error row, after any paths read before the binary data
            yield Candidate(path, FileStamp(None, None), ("unreadable", exc.strerror))


def expand_listed(paths: Iterable[str], all_files: bool = False, passed_over: PassedOver | None = None,
                  excluded: "_Exclusions | None" = None, follow_links: bool = False) -> Iterator[Candidate]:
    """The files of a list: a listed folder is walked, as ``detect`` does with one.

    ``find DIR`` prints DIR, then its folders and files: those inside a folder
    already walked are not queued again.  Only the listed folders are
    remembered, not every file, so a list of millions of paths streams in
    flat memory.
    """
    walked: set[str] = set()
    for path in paths:
        if covered_by(path, walked):
            continue
        if os.path.isdir(path):
            walked.add(path)
            yield from walk_folder(path, all_files, passed_over, excluded, follow_links)
        else:
            yield inspect(path)


def stdin_listed_paths() -> Iterator[str]:
    """The paths of a list piped in, read as a list file is (line- or NUL-separated, names kept byte for byte)."""
    buffer = getattr(sys.stdin, "buffer", None)  # absent when already text (a test harness)
    return iter_listed_paths(sys.stdin) if buffer is None else iter_list_stream(buffer)


def _expand(source: str, all_files: bool, passed_over: PassedOver, excluded: "_Exclusions",
            follow_links: bool = False) -> Iterator[Candidate]:
    if source == STDIN_LIST:  # streamed: a list of millions of paths is never held whole
        try:
            yield from expand_listed(stdin_listed_paths(), all_files, passed_over, excluded, follow_links)
        except NotAListError as exc:  # `scan - < photo.jpg`: one row for standard input, as for a list file
            yield Candidate(STDIN_LIST, FileStamp(None, None), ("unreadable", f"standard input: {exc.strerror}"))
        return
    source = os.path.normpath(source)
    if os.path.isdir(source):
        yield from walk_folder(source, all_files, passed_over, excluded, follow_links)
    elif os.path.isfile(source) and os.path.splitext(source)[1].lower() in LIST_SUFFIXES:
        yield from read_list_file(source, all_files, passed_over, excluded, follow_links)
    elif os.path.lexists(source):
        yield inspect(source)
    elif glob.has_magic(source):
        matched = False
        walked: set[str] = set()
        for match in glob.iglob(source, recursive=True):  # lazily: a pattern can match millions of files
            matched = True
            match = os.path.normpath(match)
            if not os.path.isdir(match):
                yield inspect(match)
            elif not inside_any(match, walked):  # "B/**" matches B and every folder in it: walk B once
                walked.add(match)
                yield from walk_folder(match, all_files, passed_over, excluded, follow_links)  # as `detect` does
        if not matched:
            yield Candidate(source, FileStamp(None, None), ("not_found", "no files match this pattern"))
    else:
        yield Candidate(source, FileStamp(None, None))


def covered_by(path: str, walked: set[str]) -> bool:
    """Whether a listed ``path`` is a listed folder already walked, or lies inside one."""
    return bool(walked) and (path in walked or inside_any(path, walked))


def inside_any(folder: str, roots: set[str]) -> bool:
    """Whether ``folder`` lies under one of ``roots`` (compared as normalised paths, by their parents)."""
    while True:
        parent = os.path.dirname(folder)
        if parent in roots:
            return True
        if not parent:  # a relative path below the working folder lies in "." (`find . | scan -` lists "." first)
            return os.curdir in roots and folder not in (os.curdir, os.pardir)
        if parent == folder:
            return False
        folder = parent


class _Exclusions:
    """The scan's own database files: never judged, however the sources reach them."""

    def __init__(self, paths: Iterable[str | os.PathLike]):
        self.by_name: dict[str, set[str]] = {}
        for path in paths:
            self.by_name.setdefault(os.path.basename(path), set()).add(os.path.realpath(path))

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def __contains__(self, path: str) -> bool:
        names = self.by_name.get(os.path.basename(path))  # cheap: realpath only for a same-named file
        return bool(names) and os.path.realpath(path) in names


def database_files(database: str | os.PathLike) -> list[str]:
    """A SQLite database and the files SQLite keeps beside it."""
    return [f"{database}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]


def iter_candidates(sources: Iterable[str], all_files: bool = False,
                    passed_over: PassedOver | None = None,
                    exclude: Iterable[str | os.PathLike] = (), follow_links: bool = False) -> Iterator[Candidate]:
    """Every file named by ``sources``, each once; a name that matches nothing is yielded too and becomes an
    error row.

    Files a folder walk does not queue (no image suffix) and folders it cannot
    read are recorded in ``passed_over``; paths in ``exclude`` (the scan's own
    database) are left out; ``follow_links`` walks symbolic links to folders
    (see :func:`walk_folder`).  With more than one source, or a glob, a file
    reached twice (``scan B B/x``, ``B/**``) is queued once: the paths already
    queued are remembered, which a single folder or list does not need.
    """
    passed_over = passed_over if passed_over is not None else PassedOver()
    sources = [str(s) for s in sources]
    excluded = _Exclusions(exclude)
    seen: set[str] | None = set() if len(sources) > 1 or any(map(glob.has_magic, sources)) else None
    for source in sources:
        for cand in _expand(source, all_files, passed_over, excluded, follow_links):
            if excluded and cand.path in excluded:
                continue
            if seen is not None:
                if cand.path in seen:
                    continue
                seen.add(cand.path)
            yield cand
