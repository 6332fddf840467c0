"""Labelled image datasets: class folders, CSV manifests, and zip archives of either.

A dataset is a list of :class:`Record` (where the bytes are, the label, and
optional source/generator for honest, source-held-out validation).  Zip
members are read in place: an 80k-image archive never needs unpacking.
"""

from __future__ import annotations

import csv
import io
import logging
import lzma
import os
import posixpath
import stat
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from synthdetect.images import IMAGE_SUFFIXES, ImageLoadError, LoadedImage, LoadLimits, load_image
from synthdetect.messages import EMPTY_PATH_HINT

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


def split_zip_ref(ref: str) -> tuple[str, str] | None:
    """``(archive, member)`` for an ``archive.zip!member`` ref, else None.

    The archive is the first ``*.zip`` prefix that is a file, so a ``!`` in a folder name above the zip
    (``/data/wow!/set.zip!ai/x.png``) or in a member name (``set.zip!ai/wow!.png``) does not break the split.
    """
    candidates = [i for i, char in enumerate(ref) if char == "!" and ref[:i].lower().endswith(".zip")]
    if len(candidates) == 1:  # the answer whether or not it is a file: no stat (80,000 of them hashing CIFAKE)
        return ref[:candidates[0]], ref[candidates[0] + 1:]
    for i in candidates:
        if Path(ref[:i]).is_file():
            return ref[:i], ref[i + 1:]
    return (ref[:candidates[0]], ref[candidates[0] + 1:]) if candidates else None


def read_record_bytes(record: Record) -> bytes:
    """The file's bytes; a zip member that is missing or damaged is an ``OSError``, which callers count per file."""
    in_zip = split_zip_ref(record.ref)
    if in_zip is None:
        return Path(record.ref).read_bytes()
    archive, member = in_zip
    try:
        return _ZIPS.get(archive).read(member)
    except KeyError:
        raise FileNotFoundError(f"no member {member!r} in {archive}") from None
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise OSError(_member_problem(exc)) from None  # one bad member: one bad file, not a crash


def _member_problem(exc: Exception) -> str:
    """Why a zip member cannot be read, in words: zipfile raises RuntimeError for a password and
    NotImplementedError for a compression method it lacks, which callers that count bad files did not catch."""
    if isinstance(exc, RuntimeError) and "password" in str(exc):
        return ("password-protected in the archive; synthdetect reads no passwords: unzip it, or zip it again "
                "without one")
    if isinstance(exc, NotImplementedError):
        return f"stored with a compression method Python's zipfile cannot read ({exc}); zip it again with deflate"
    return f"damaged in the archive ({exc})"


def load_record(record: Record, limits: LoadLimits | None = None) -> LoadedImage:
    return load_image(read_record_bytes(record), limits, name=record.ref)


#: What :func:`load_record` raises for one unreadable record (the others of a dataset are still read).
RECORD_ERRORS = (ImageLoadError, OSError, KeyError)


def record_error(record: Record, exc: Exception) -> str:
    """``file: reason`` whatever raised it (the image loader already names the file; ``open`` says ``[Errno 2]``)."""
    if isinstance(exc, ImageLoadError):
        return str(exc)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{record.ref}: {reason}"


def _is_image_name(name: str) -> bool:
    """``PurePosixPath(name).suffix`` in IMAGE_SUFFIXES, by string operations: pathlib took seconds on a zip of
    80,000 names (a test checks both agree)."""
    base = next((part for part in reversed(name.split("/")) if part and part != "."), "")
    dot = base.rfind(".")
    return 0 < dot < len(base) - 1 and base[dot:].lower() in IMAGE_SUFFIXES


def _label_from_parts(parts: Sequence[str], mapping: dict[str, int] | None) -> tuple[int | None, bool]:
    """``(label, conflict)``: the OUTERMOST folder that names a class decides.

    The class split sits at the top of a dataset, and sub-folders describe content: ``ai/nature/x.png`` is an AI
    image of nature (``nature`` is also a human alias).  ``conflict`` says an inner folder names the other class.
    """
    labels = [label for label in (parse_label(part, mapping) for part in parts[:-1]) if label is not None]
    if not labels:
        return None, False
    return labels[0], any(label != labels[0] for label in labels[1:])


#: Folder names a warning lists before it stops.
FOLDERS_NAMED = 10

#: Top folders that name a ready-made split (``train/FAKE``, ``test/REAL``), not a class.
SPLIT_FOLDERS = ("train", "training", "test", "testing", "val", "valid", "validation")

#: Zip entries that are macOS Finder metadata, not images: ``__MACOSX/...`` and AppleDouble ``._name`` files.
MACOS_METADATA = "macOS metadata (__MACOSX/, ._*)"


def name_parts(name: str) -> tuple[str, ...]:
    """Folders and file name of a dataset entry; a zip made on Windows may separate them with ``\\``.

    ``PurePosixPath(...).parts`` by string operations (pathlib was most of the 10 s that opening the 80,000-name
    CIFAKE zip took; a test checks both agree): empty and ``.`` parts dropped, a leading ``/`` (or exactly
    ``//``, which POSIX leaves to the system) kept as the first part.
    """
    normal = name.replace("\\", "/")
    root = "//" if normal.startswith("//") and not normal.startswith("///") else "/" if normal.startswith("/") else ""
    parts = tuple(part for part in normal.split("/") if part and part != ".")
    return (root, *parts) if root else parts


def is_macos_metadata(name: str) -> bool:
    parts = name_parts(name)
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("._"))


#: Folders of class-folder datasets that hold no photos of their own: hidden folders (``.git``, ``.thumbnails``,
#: ``.Trash``) and the thumbnail or recycle folders NAS systems add beside every photo (Synology ``@eaDir``,
#: ``#recycle``, QNAP ``.@__thumb``).  ``@eaDir/x.jpg/SYNOPHOTO_THUMB_M.jpg`` takes the class of the folder above it
#: and is a near-copy of ``x.jpg`` that only byte-identical copies would catch, so it could sit on both sides of a
#: split and inflate the held-out numbers.
HIDDEN_FOLDERS = "hidden or thumbnail folders (.*/, @eaDir/, #recycle/)"
_NAS_FOLDERS = frozenset({"@eadir", "#recycle", "#snapshot", "@recycle"})


def in_hidden_folder(name: str) -> bool:
    """Whether a class-folder entry sits under a hidden or NAS thumbnail folder (a hidden *file* is not meant)."""
    return any(part.startswith(".") or part.lower() in _NAS_FOLDERS for part in name_parts(name)[:-1])


def _skip_hidden(names: list[str], skipped: dict[str, int], where: Path) -> list[str]:
    """``names`` without entries in hidden or thumbnail folders, counted in ``skipped`` and said once."""
    hidden = [n for n in names if in_hidden_folder(n) and not n.endswith("/")]
    if not hidden:
        return names
    skipped[HIDDEN_FOLDERS] = len(hidden)
    logger.warning("%s: %d file(s) in hidden or thumbnail folders are not read as data, e.g. %s (move them out of "
                   "such a folder to use them)", where, len(hidden), hidden[0])
    return [n for n in names if not in_hidden_folder(n)]


def _records_from_names(
    names: Iterable[str], make_ref, mapping: dict[str, int] | None, where: str = "dataset"
) -> list[Record]:
    records = []
    unlabelled: list[str] = []
    conflicting: list[str] = []
    names = sorted(names)
    folders: set[str] = set()  # every folder name above an image, to check --label against
    for name in names:
        if not _is_image_name(name):
            continue
        parts = name_parts(name)
        folders.update(part.lower() for part in parts[:-1])
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
                       "ai" if _label_from_parts(name_parts(conflicting[0]), mapping)[0] == AI else "human")
    splits = sorted({parts[0] for parts in map(name_parts, names)
                     if len(parts) > 2 and _is_image_name(parts[-1]) and parts[0].lower() in SPLIT_FOLDERS})
    if len(splits) > 1:  # CIFAKE ships train/ and test/: pooled here, its own test images could land in training
        logger.warning("%s: the folders %s are pooled and split again by synthdetect train (--split, --seed); to "
                       "keep a dataset's own test images out of training, give the training folder alone",
                       where, ", ".join(splits))
    unused = [name for name in (mapping or {}) if name not in folders]
    if unused:  # a typo (--label photo=human for photos/) would otherwise only show as images left out
        tops = sorted({parts[0] for parts in map(name_parts, names) if len(parts) > 1 and _is_image_name(parts[-1])})
        more = f" and {len(tops) - FOLDERS_NAMED} more" if len(tops) > FOLDERS_NAMED else ""
        logger.warning("%s: --label %s: no folder of that name holds images (top folders: %s%s)", where,
                       ", ".join(unused), ", ".join(tops[:FOLDERS_NAMED]) or "none", more)
    if unlabelled and records:  # with no records at all, open_dataset raises instead
        logger.warning("%s: %d image file(s) are under no class folder and were left out, e.g. %s "
                       "(name the folder with --label NAME=ai|human)", where, len(unlabelled), unlabelled[0])
    return records


#: Column separators a manifest may use: a spreadsheet saved as CSV where the decimal mark is a comma writes ``;``,
#: and "tab-separated" exports write tabs.  The one whose header holds ``path`` and ``label`` is used.
MANIFEST_DELIMITERS = (",", ";", "\t")


def _manifest_delimiter(text: str) -> str:
    first = io.StringIO(text, newline=None).readline()  # the header, whatever the line ending
    for delimiter in MANIFEST_DELIMITERS:
        header = {name.strip().lower() for name in next(csv.reader([first], delimiter=delimiter), [])}
        if {"path", "label"} <= header:
            return delimiter
    return ","


def _read_csv(text: str, resolve, mapping: dict[str, int] | None, where: str) -> list[Record]:
    """Rows of a ``path,label[,source][,generator]`` manifest; header names and cells are read without spaces."""
    text = text.removeprefix("\ufeff")  # a BOM left by Excel or by a zip member read as plain UTF-8
    # newline=None: lines may end in \r\n, \n or a lone \r (old Mac exports), which csv otherwise refuses
    reader = csv.reader(io.StringIO(text, newline=None), delimiter=_manifest_delimiter(text))
    try:
        return _read_rows(reader, resolve, mapping, where)
    except csv.Error as exc:  # e.g. a quote never closed, so that the rest of a large manifest is one cell
        raise DatasetError(f"{where}:{reader.line_num}: {exc} (a quote opened on or before this line is never "
                           f"closed?)") from None


def _read_rows(reader, resolve, mapping: dict[str, int] | None, where: str) -> list[Record]:
    header = [name.strip().lower() for name in next(reader, [])]
    if "path" not in header or "label" not in header:
        found = ", ".join(repr(name) for name in header) or "none"
        raise DatasetError(f"{where}: a manifest needs 'path' and 'label' columns (found {found})")
    repeated = sorted({name for name in ("path", "label", "source", "generator") if header.count(name) > 1})
    if repeated:
        raise DatasetError(f"{where}: the header names {', '.join(repr(n) for n in repeated)} more than once; "
                           f"which column is meant is not clear")
    column = {name: header.index(name) for name in ("path", "label", "source", "generator") if name in header}
    records = []
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1  # the line a row starts on: a quoted cell may span several
        if not any(cell.strip() for cell in row):
            continue  # blank line
        cells = {name: (row[i].strip() if i < len(row) else None) for name, i in column.items()}
        if not cells["path"] or not cells["label"]:  # an empty label cell is no label, not an unknown one
            missing = "path" if not cells["path"] else "label"
            quote = "; a quote in it is never closed" if any("\n" in cell for cell in row) else ""
            raise DatasetError(f"{where}:{line}: no {missing} ({len(row)} of {len(header)} columns: "
                               f"{','.join(row)!r}{quote})")
        label = parse_label(cells["label"], mapping)
        if label is None:
            raise DatasetError(f"{where}:{line}: unknown label '{cells['label']}' (map it with --label NAME=ai|human, "
                               f"e.g. --label 1=ai --label 0=human)")
        records.append(Record(ref=resolve(cells["path"]), label=label,
                              source=cells.get("source") or None, generator=cells.get("generator") or None))
    return records


def refuse_listed_twice(where: str | Path, records: Sequence[Record]) -> None:
    """A file a manifest lists twice weighs double in training (or, with two labels, both ways), and could sit
    on both sides of a split; ``synthdetect evaluate`` refuses it in the same words."""
    seen: dict[str, list[Record]] = {}
    for record in records:
        seen.setdefault(posixpath.normpath(record.ref.replace("\\", "/")), []).append(record)
    repeated = {ref: rs for ref, rs in seen.items() if len(rs) > 1}
    if repeated:
        ref, rs = next(iter(repeated.items()))
        labels = " and ".join(sorted({"ai" if r.label == AI else "human" for r in rs}))
        more = f" (and {len(repeated) - 1} more)" if len(repeated) > 1 else ""
        raise DatasetError(f"{where}: {ref} is listed {len(rs)} times (labelled {labels}){more}; list each image once")


def _decode_manifest(data: bytes, where: str) -> str:
    """A manifest's text: UTF-8 (with or without a byte-order mark), else one line naming the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); "
                           f"save the manifest as UTF-8") from None


def _zip_members(infos: Sequence[zipfile.ZipInfo]) -> dict[str, str]:
    """Each file in a zip under its normalised name (``/`` between folders, no ``./``), mapped to its own name.

    A zip made on Windows may store ``data\\ai\\x.png``, and its manifest may write either separator.  A
    non-ASCII name stored as UTF-8 without the zip's UTF-8 flag (as many tools write it) reads as cp437
    (``caf├⌐`` for ``café``); it is found under its UTF-8 spelling too, as the manifest writes it.
    """
    members: dict[str, str] = {}
    for info in infos:
        name = info.filename
        if not name or name.endswith(("/", "\\")):
            continue
        members.setdefault(_member_path("", name), name)
        if not info.flag_bits & 0x800:
            members.setdefault(_member_path("", _utf8_spelling(name)), name)
    return members


def _utf8_spelling(name: str) -> str:
    """``name`` as UTF-8 where zipfile read its bytes as cp437 (``caf├⌐`` -> ``café``), else ``name``."""
    if name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except UnicodeError:
        return name


def _zip_manifest(members: dict[str, str], manifest: str | None) -> str | None:
    """The zip member that is the dataset's manifest, as a folder's ``manifest.csv`` is.

    At the root, or inside the one top folder a zipped folder has (``data/manifest.csv``, or
    ``data\\manifest.csv`` from a Windows tool); any other CSV (a generator's ``fake/metadata.csv``) is data,
    not the manifest.  ``members`` comes from :func:`_zip_members`.
    """
    wanted = _member_path("", manifest or "manifest.csv")
    if wanted in members:
        return members[wanted]
    tops = {_member_path("", name).split("/")[0] for name in set(members.values()) if not is_macos_metadata(name)}
    if len(tops) == 1:
        return members.get(f"{tops.pop()}/{wanted}")
    return None


def _manifest_path(base: Path, path: str) -> str:
    """A manifest path on disk; ``images\\ai\\x.png`` from a manifest written on Windows reads as in a zip."""
    literal = base / path
    if "\\" in path and not literal.exists():
        return str(base / path.replace("\\", "/"))
    return str(literal)


def _member_path(base: str, path: str) -> str:
    """A manifest path inside a zip, normalised (``./.hidden/x.png`` stays ``.hidden/x.png``)."""
    return posixpath.normpath(posixpath.join(base, path.replace("\\", "/"))).removeprefix("./")


def _files_under(root: Path) -> list[str]:
    """Every file below ``root`` as a relative POSIX path, following symlinked folders (a dataset assembled
    with ``ln -s /data/sd15 ai/sd15``) but not a link back into a folder above it, so that a loop ends.

    ``Path.rglob`` does not follow them before Python 3.13: such images were left out without a word.
    """
    files: list[str] = []

    def unlisted(error: OSError) -> None:  # os.walk skips a folder it cannot list without a word otherwise
        logger.warning("%s: cannot list %s (%s); the images in it are left out", root, error.filename,
                       error.strerror or error)

    for folder, subfolders, names in os.walk(root, onerror=unlisted, followlinks=True):
        relative = Path(folder).relative_to(root)
        above = {os.path.realpath(root.joinpath(*relative.parts[:k])) for k in range(len(relative.parts))}
        if os.path.realpath(folder) in above:
            logger.warning("%s: %s links back to a folder above it; not followed", root, relative.as_posix())
            subfolders[:] = []
            continue
        # a broken symlink is kept, so that it is counted and named as unreadable rather than left out unseen
        files.extend((relative / name).as_posix() for name in names
                     if os.path.isfile(os.path.join(folder, name)) or os.path.islink(os.path.join(folder, name)))
    return files


def open_dataset(path: str | Path, *, label_map: dict[str, int] | None = None, manifest: str | None = None) -> list[Record]:
    """Read a class-folder tree, a CSV manifest, or a zip of either into records."""
    if not str(path).strip():  # Path("") is the working folder: an unset shell variable must not train on it
        raise DatasetError(f'an empty path ("") names no dataset{EMPTY_PATH_HINT}')
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset not found")
    skipped: dict[str, int] = {}
    member = None
    names: list[str] = []
    if path.is_file() and path.suffix.lower() == ".csv":
        base = path.parent
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        text = _decode_manifest(data, str(path))
        records = _read_csv(text, lambda p: _manifest_path(base, p), label_map, str(path))
    elif path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # truncated, or its directory damaged
            raise DatasetError(f"{path}: cannot be read as a zip archive ({exc}: damaged, incomplete, or another "
                               f"format)") from None
        with archive:
            names = archive.namelist()
            members = _zip_members(archive.infolist())
            member = _zip_manifest(members, manifest)
            try:
                text = _decode_manifest(archive.read(member), f"{path}!{member}") if member else None
            except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, RuntimeError, NotImplementedError,
                    OSError) as exc:
                raise DatasetError(f"{path}!{member}: the manifest cannot be read: {_member_problem(exc)}") from None
            _warn_about_zip_entries(path, archive.infolist())
        names = list(dict.fromkeys(names))  # a name stored twice is one record (zipfile reads its last entry)
        metadata = [n for n in names if is_macos_metadata(n) and not n.endswith("/")]
        if metadata:
            skipped[MACOS_METADATA] = len(metadata)
            logger.info("%s: skipped %d macOS metadata entries (__MACOSX/, ._*)", path, len(metadata))
        if member:
            base = posixpath.dirname(_member_path("", member))

            def member_ref(listed: str) -> str:
                """The member's own name, whichever separator or spelling the manifest and the zip use; a path
                written from the zip's root (``data/imgs/a.png`` in ``data/manifest.csv``) is found too."""
                for folder in dict.fromkeys((base, _utf8_spelling(base), "")):
                    if _member_path(folder, listed) in members:
                        return f"{path}!{members[_member_path(folder, listed)]}"
                return f"{path}!{_member_path(base, listed)}"

            records = _read_csv(text, member_ref, label_map, f"{path}!{member}")
        else:
            names = _skip_hidden([n for n in names if not is_macos_metadata(n)], skipped, path)
            records = _records_from_names(names, lambda n: f"{path}!{n}", label_map, str(path))
    elif path.is_dir():
        candidate = path / (manifest or "manifest.csv")
        if candidate.is_file():
            return open_dataset(candidate, label_map=label_map)
        files = _files_under(path)
        metadata = [n for n in files if is_macos_metadata(n)]
        if metadata:
            skipped[MACOS_METADATA] = len(metadata)
        names = _skip_hidden([n for n in files if not is_macos_metadata(n)], skipped, path)
        records = _records_from_names(names, lambda n: str(path / n), label_map, str(path))
    else:
        raise DatasetError(f"{path}: not a folder, CSV manifest or zip archive")
    if not records and (member or path.suffix.lower() == ".csv"):
        raise DatasetError(f"{path}{'!' + member if member else ''}: lists no images")
    if not records:
        raise DatasetError(
            f"{path}: no labelled images found (class folders such as FAKE/REAL, ai/human, 1_fake/0_real)"
            + _unread_manifest_hint(path, names)
        )
    return DatasetRecords(records, skipped)


def _unread_manifest_hint(path: Path, names: Sequence[str]) -> str:
    """Where a dataset of class folders turned out empty, the CSV files it holds that were not read as its
    manifest (one in a sub-folder of a zip, or a folder's ``labels.csv``): the likely intent, said."""
    csvs = sorted(n for n in names if n.lower().endswith(".csv") and not is_macos_metadata(n))
    if not csvs:
        return ""
    where = "a zip's root or its one top folder" if path.is_file() else "the folder"
    more = f" and {len(csvs) - 1} more" if len(csvs) > 1 else ""
    return (f"; it holds {csvs[0]}{more}, which is not read as the manifest (that is manifest.csv in {where}): "
            f"name it manifest.csv{'' if path.is_file() else ', or give the CSV file itself'}")


def _warn_about_zip_entries(path: Path, infos: Sequence[zipfile.ZipInfo]) -> None:
    """Say what of a zip will not be read as it looks: a name stored twice (zipfile, like unzip, gives the last
    entry, so the earlier bytes are never seen and the two would pass for identical copies), symbolic links and
    password-protected entries (each would fail on its own, after everything else was decoded)."""
    files = [info for info in infos if not info.is_dir()]
    counts: dict[str, int] = {}
    for info in files:
        counts[info.filename] = counts.get(info.filename, 0) + 1
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:
        logger.warning("%s: %d name(s) are stored more than once in the zip, e.g. %s; only the last entry under "
                       "each name is read (%d earlier entries are not)", path, len(repeated), repeated[0],
                       sum(counts[name] - 1 for name in repeated))
    links = [info.filename for info in files if stat.S_ISLNK(info.external_attr >> 16)]
    if links:  # ``zip -y`` and macOS's ditto store a link as the text of its target, which no decoder reads
        logger.warning("%s: %d entries are symbolic links stored as links, e.g. %s; the zip holds only the name of "
                       "the file they point to (zip it again without -y, so that the files themselves are stored)",
                       path, len(links), links[0])
    encrypted = [info.filename for info in files if info.flag_bits & 0x1]
    if encrypted:
        logger.warning("%s: %d of %d entries are password-protected, e.g. %s; synthdetect reads no passwords, so "
                       "they cannot be read (unzip it, or zip it again without one)", path, len(encrypted),
                       len(files), encrypted[0])


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
