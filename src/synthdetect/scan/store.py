"""The scan results database: one SQLite row per file, safe against ``kill -9``.

Why SQLite: it is in the standard library, a single file is easy to hand to
a colleague, and its write-ahead log makes every committed batch survive a
killed process.  Rows are keyed by path and written with an upsert, so a
batch that is judged twice (killed after judging, before committing) still
leaves exactly one row.  The sha256 column doubles as a content-hash cache:
an unchanged file is never rescored.

The key is the path as the scan found it, normalised (``os.path.normpath``).
A name that is not valid UTF-8 (Linux allows any bytes but ``/`` and NUL)
is stored as its raw bytes, a BLOB, so every file gets a row and the name
comes back exactly; text columns show such bytes as ``\\xNN``.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

SCHEMA_VERSION = 1

#: Columns of the ``results`` table, in export order.
COLUMNS = (
    "path", "sha256", "size", "mtime_ns", "label", "p_ai", "reasons", "model", "raw_logit", "model_p_ai",
    "evidence", "width", "height", "format", "error", "error_kind", "detector", "fingerprint", "scanned_at",
    "verdict",
)

#: Stored after :data:`COLUMNS` and never exported: the file's inode change time when it was found, so that a
#: resume notices a file replaced by another of the same size and mtime (added to databases that lack it).
STAMP_COLUMNS = ("ctime_ns",)
STORED_COLUMNS = COLUMNS + STAMP_COLUMNS

_CREATE = """
CREATE TABLE IF NOT EXISTS results (
    path TEXT PRIMARY KEY,
    sha256 TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    label TEXT,
    p_ai REAL,
    reasons TEXT,
    model TEXT,
    raw_logit REAL,
    model_p_ai REAL,
    evidence TEXT,
    width INTEGER,
    height INTEGER,
    format TEXT,
    error TEXT,
    error_kind TEXT,
    detector TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    scanned_at TEXT NOT NULL,
    verdict TEXT NOT NULL,
    ctime_ns INTEGER
);
CREATE INDEX IF NOT EXISTS results_sha256 ON results (sha256, fingerprint);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    source TEXT NOT NULL,
    detector TEXT NOT NULL,
    engine TEXT NOT NULL,
    summary TEXT
);
"""

_UPSERT = (
    f"INSERT INTO results ({', '.join(STORED_COLUMNS)}) VALUES ({', '.join('?' for _ in STORED_COLUMNS)}) "
    f"ON CONFLICT(path) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in STORED_COLUMNS if c != "path")
)


class StoreError(RuntimeError):
    """The results file cannot be opened as a synthdetect scan database."""


#: Error kinds that the same bytes under the same detector always give again; a resume retries every other
#: error (a file that was unreadable, missing or not a regular file may have been fixed without a new mtime).
CONTENT_ERROR_KINDS = frozenset({
    "not_an_image", "corrupt", "truncated", "empty", "too_large", "too_many_pixels", "unsupported_format",
    "decoder_error",
})


def path_key(path: str) -> str | bytes:
    """The ``path`` column value: the text itself, or its raw file-system bytes when it is not valid UTF-8
    (a name read with surrogateescape), which SQLite text cannot hold."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_from_key(value: str | bytes) -> str:
    """The inverse of :func:`path_key`: the same ``str`` the scan found (surrogate-escaped if need be)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def display_text(text: str) -> str:
    """Valid UTF-8 text for a string that may hold surrogate-escaped bytes: each such byte becomes ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable(row: Sequence[Any]) -> tuple:
    """A row SQLite accepts: the path as its key, every other text made valid UTF-8 (error messages name it)."""
    return (path_key(row[0]), *(display_text(v) if isinstance(v, str) else v for v in row[1:]))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FileStamp:
    """What the resume check compares (:meth:`same_file`): size, mtime and, where known, the inode change time."""

    size: int | None
    mtime_ns: int | None
    #: ``st_ctime_ns``: changed by every write or rename and never set back (``touch -r``, ``cp -p``, ``rsync -a``
    #: and archives restore mtimes, so another image of the same size could take a file's place unnoticed).
    ctime_ns: int | None = None

    def same_file(self, found: "FileStamp") -> bool:
        """Whether ``found`` (a stat now) shows the file this stamp was taken of, unchanged.  A stamp stored
        without a change time (older databases, the Ray engine) is compared by size and mtime alone."""
        return (self.size is not None and (self.size, self.mtime_ns) == (found.size, found.mtime_ns)
                and (self.ctime_ns is None or self.ctime_ns == found.ctime_ns))


def verdict_row(verdict: dict[str, Any], stamp: FileStamp, detector: str, fingerprint: str,
                original_size: Sequence[int] | None = None, sha256: str | None = None) -> tuple:
    """Flatten a Verdict dict into the ``results`` columns (the full verdict JSON is kept too).

    ``original_size`` is the stored image's size when it was decoded at reduced scale.  ``sha256`` is the hash of
    the bytes the worker read: an error row (not an image, truncated, the model failing on it) has it in its
    ``sha256`` column, so a moderator can match a failed file to its copies, while its verdict stays the one
    ``detect`` gives (which names no hash for a file it could not judge).
    """
    model = verdict["models"][0] if verdict.get("models") else {}
    image = verdict.get("image") or {}
    width, height = original_size if original_size else (image.get("width"), image.get("height"))
    return (
        verdict["file"], verdict.get("sha256") or sha256, stamp.size, stamp.mtime_ns, verdict.get("label"),
        verdict.get("p_ai"), " | ".join(verdict.get("reasons") or []), model.get("model"), model.get("raw_logit"),
        model.get("p_ai"),
        json.dumps(verdict.get("evidence") or []), width, height, image.get("format"),
        verdict.get("error"), verdict.get("error_kind"), detector, fingerprint, utc_now(),
        json.dumps(verdict, separators=(",", ":")), stamp.ctime_ns,
    )


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode; ``readonly`` ones are for decode workers' cache look-ups and exports."""
    path = Path(path)
    if readonly:
        return _connect_readonly(path)
    if path.is_dir():
        raise StoreError(f"{path}: is a folder; give the results database a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    except FileExistsError as exc:  # a file where a folder of the path should be
        raise StoreError(f"{path}: cannot create the results database ({exc.filename} is not a folder)") from exc
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"{path}: cannot create the results database ({getattr(exc, 'strerror', None) or exc})") \
            from exc
    try:
        # WAL: readers (workers, `synthdetect scan` reruns) never block the writer, and a
        # commit is durable once its frames are in the log, even if the process is killed.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_CREATE)
        present = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
        for column in STAMP_COLUMNS:  # a database written before the column existed
            if column not in present:
                conn.execute(f"ALTER TABLE results ADD COLUMN {column} INTEGER")
        _drop_dot_prefix(conn)
    except sqlite3.OperationalError as exc:  # unwritable folder or file, full disk, locked
        conn.close()
        raise StoreError(f"{path}: cannot write the results database ({exc})") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise unopenable(path, exc) from exc
    try:  # a damaged page can first show here, past the schema: one line, not a traceback
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None:
            with conn:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except sqlite3.Error as exc:
        conn.close()
        raise database_failed(path, exc) from exc
    if version is not None and str(version[0]) != str(SCHEMA_VERSION):
        conn.close()
        raise StoreError(f"{path}: scan database schema {version[0]}, this synthdetect reads {SCHEMA_VERSION}")
    return conn


def _drop_dot_prefix(conn: sqlite3.Connection) -> None:
    """Key ``./x.jpg`` rows as ``x.jpg``, once per database.

    A scan of ``.`` before 2026-12-05 keyed its files ``./x.jpg``; it now keys them ``x.jpg``, as a file named on
    the command line or in a list is keyed.  Without this, scanning ``.`` again into such a database gave each file
    a second row beside its old one (and ``--prune`` kept both, the file being there).  Where both keys exist, the
    newer ``x.jpg`` row stays."""
    if conn.execute("SELECT 1 FROM meta WHERE key = 'dot_keys_dropped'").fetchone():
        return
    with conn:
        conn.execute("DELETE FROM results WHERE substr(path, 1, 2) = './' "
                     "AND substr(path, 3) IN (SELECT path FROM results)")
        conn.execute("UPDATE results SET path = substr(path, 3), verdict = json_set(verdict, '$.file', "
                     "substr(path, 3)) WHERE substr(path, 1, 2) = './'")
        conn.execute("INSERT INTO meta VALUES ('dot_keys_dropped', '1')")


def is_sqlite_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing SQLite database (its 16-byte header), whatever its name."""
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection, also to a database on read-only media or in a folder this user cannot write.

    Reading a WAL database needs its ``-shm`` file, which SQLite cannot create there ("unable to open database
    file"); with no ``-wal`` left beside it (a scan that ended merges its log) every row is in the main file, so
    it is opened as immutable instead.  A leftover ``-wal`` holds rows the main file lacks: then say so."""
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if not path.is_file() or os.access(path.parent, os.W_OK):
            raise
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{path}: cannot read: its folder cannot be written and {wal.name} holds rows not yet "
                         f"merged into it; copy the database with its -wal file to a writable folder")
    conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def _primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code (``SQLITE_CORRUPT``), whatever extended code (``SQLITE_CORRUPT_INDEX``) came."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def unopenable(path: str | Path, exc: sqlite3.Error) -> StoreError:
    """A file that failed as it was opened as a scan database: damaged (see :func:`database_failed`), or not one."""
    if _primary_code(exc) == sqlite3.SQLITE_CORRUPT:
        return database_failed(path, exc)
    return StoreError(f"{path}: not a synthdetect scan database ({exc})")


def database_failed(path: str | Path, exc: sqlite3.Error) -> StoreError:
    """A failed read or write as one line.  A full disk, an I/O error or a lock held past the timeout loses
    nothing committed; a damaged file (``database disk image is malformed``) is said to be damaged, since
    running the same command again cannot fix it."""
    code = _primary_code(exc)
    if code == sqlite3.SQLITE_NOTADB:
        return StoreError(f"{path}: not a synthdetect scan database ({exc})")
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreError(f"{path}: the results database is damaged ({exc}); scan into a new --out file "
                          f"(sqlite3's .recover command may save the rows it still holds)")
    return StoreError(f"{path}: cannot write the results database ({exc}); every row committed before is "
                      f"kept: fix that and run the same command to continue")


class ResultStore:
    """Writes verdict rows in transactions and answers the resume and cache questions."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = connect(self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------
    def write(self, rows: Sequence[tuple]) -> None:
        """One transaction per batch: either every row of it is there after a crash, or none."""
        if not rows:
            return
        try:
            with self.conn:
                self.conn.executemany(_UPSERT, [_storable(row) for row in rows])
        except sqlite3.Error as exc:  # also a damaged file (DatabaseError), not only a full disk
            raise database_failed(self.path, exc) from exc

    def start_run(self, source: str, detector: str, engine: str) -> int:
        try:
            with self.conn:
                cur = self.conn.execute(
                    "INSERT INTO runs (started_at, source, detector, engine) VALUES (?, ?, ?, ?)",
                    (utc_now(), source, detector, engine),
                )
        except sqlite3.Error as exc:  # also a damaged file (DatabaseError), not only a full disk
            raise database_failed(self.path, exc) from exc
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        try:
            with self.conn:
                self.conn.execute("UPDATE runs SET finished_at = ?, summary = ? WHERE id = ?",
                                  (utc_now(), json.dumps(summary), run_id))
        except sqlite3.Error as exc:  # also a damaged file (DatabaseError), not only a full disk
            raise database_failed(self.path, exc) from exc

    def begin_rescore(self, key: str) -> str:
        """When the ``--rescore`` named ``key`` began: an unfinished one's time (it goes on), else now (recorded)."""
        try:
            with self.conn:
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, utc_now()))
                return str(self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
        except sqlite3.Error as exc:
            raise database_failed(self.path, exc) from exc

    def end_rescore(self, key: str | None = None) -> None:
        """Forget the ``--rescore`` named ``key`` (finished), or every unfinished one (``None``)."""
        try:
            with self.conn:
                if key is None:
                    self.conn.execute("DELETE FROM meta WHERE key LIKE 'rescore:%'")
                else:
                    self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            raise database_failed(self.path, exc) from exc

    # -- reading ----------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def totals(self) -> dict[str, Any]:
        try:
            labels = dict(self.conn.execute(
                "SELECT label, COUNT(*) FROM results WHERE error IS NULL GROUP BY label").fetchall())
            errors = dict(self.conn.execute(
                "SELECT error_kind, COUNT(*) FROM results WHERE error IS NOT NULL GROUP BY error_kind").fetchall())
            return {"rows": self.count(), "labels": labels, "errors": errors}
        except sqlite3.Error as exc:
            raise database_failed(self.path, exc) from exc

    def rows(self) -> Iterator[dict[str, Any]]:
        return _iter_rows(self.conn)

    def prune_missing(self, chunk: int = 10_000) -> tuple[int, str | None]:
        """Delete rows whose file no longer exists (a relative path is looked up from the working directory);
        returns how many, and one example.  Walked by rowid so millions of rows are never held at once.

        A delete that fails (another scan holding the database past the timeout, a full disk, a damaged file)
        is one :class:`StoreError`, like a failed batch: it had ended ``scan --prune`` with a traceback."""
        try:
            return self._prune_missing(chunk)
        except sqlite3.Error as exc:
            raise database_failed(self.path, exc) from exc

    def _prune_missing(self, chunk: int) -> tuple[int, str | None]:
        pruned, example, last = 0, None, 0
        while True:
            batch = self.conn.execute("SELECT rowid, path FROM results WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                      (last, chunk)).fetchall()
            if not batch:
                return pruned, example
            last = batch[-1][0]
            gone = [rowid for rowid, key in batch if not os.path.lexists(path_from_key(key))]
            if gone:
                with self.conn:
                    self.conn.executemany("DELETE FROM results WHERE rowid = ?", [(r,) for r in gone])
                example = example or display_text(path_from_key(dict(batch)[gone[0]]))
                pruned += len(gone)


def cached_verdict(conn: sqlite3.Connection, sha256: str, fingerprint: str
                   ) -> tuple[dict[str, Any], tuple[int, int] | None] | None:
    """A verdict already computed for identical bytes under the same detector configuration, with the stored
    image's size from its row (in draft mode the verdict's own ``image`` size is the reduced decode's)."""
    row = conn.execute(
        "SELECT verdict, width, height FROM results WHERE sha256 = ? AND fingerprint = ? AND error IS NULL LIMIT 1",
        (sha256, fingerprint),
    ).fetchone()
    if not row:
        return None
    return json.loads(row[0]), ((row[1], row[2]) if row[1] is not None and row[2] is not None else None)


# -- export ---------------------------------------------------------------------------------
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
#: Columns written by exports; the full verdict JSON is left to ``jsonl``.
FLAT_COLUMNS = tuple(c for c in COLUMNS if c != "verdict")
#: The exported columns that hold text (the rest are numbers, kept as they are in a CSV too).
TEXT_COLUMNS = ("path", "sha256", "label", "reasons", "model", "evidence", "format", "error", "error_kind",
                "detector", "fingerprint", "scanned_at")


def export(db_path: str | Path, out: str | Path, fmt: str | None = None) -> int:
    """Write every row of the database to CSV, JSON lines or Parquet; returns the row count."""
    out = Path(out)
    check_export_target(out, fmt, database=db_path)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if not Path(db_path).is_file():
        raise StoreError(f"{db_path}: no scan database here")
    conn = None
    try:
        conn = connect(db_path, readonly=True)
        # Every exported column, before the output file is created: a database of another schema is one
        # clear line, not a traceback from the middle of the export.
        conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results LIMIT 1").fetchall()
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise unopenable(db_path, exc) from exc
    if version is not None and version[0] != str(SCHEMA_VERSION):
        conn.close()
        raise StoreError(f"{db_path}: scan database schema {version[0]}, this synthdetect reads {SCHEMA_VERSION}")
    # Written beside the target and renamed over it once complete: a full disk or Ctrl-C halfway leaves no
    # truncated export that reads as a whole one, and an earlier export of the same name stays as it was.
    partial = out.with_name(f".synthdetect-export-{os.getpid()}-{threading.get_native_id()}.part")  # any name fits
    try:
        rows = _iter_rows(conn)
        writer = {"csv": _export_csv, "jsonl": _export_jsonl}.get(fmt, _export_parquet)
        n = writer(rows, partial)
        os.replace(partial, out)
        return n
    except OSError as exc:
        raise StoreError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    except sqlite3.Error as exc:  # a damaged page met halfway through the rows; nothing is written to ``out``
        raise StoreError(f"{db_path}: cannot read every row ({exc}); nothing was written to {out}") from exc
    finally:
        conn.close()
        partial.unlink(missing_ok=True)


def check_export_target(out: str | Path, fmt: str | None = None, database: str | Path | None = None) -> None:
    """Refuse an export that cannot be written before any work is done (a scan checks this before scanning),
    and one that would overwrite ``database`` or the files SQLite keeps beside it."""
    out = Path(out)
    if database is not None and os.path.realpath(out) in {
            os.path.realpath(f"{database}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")}:
        raise StoreError(f"{out}: is the scan database itself (or its journal); export to another file")
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if str(out) == "-" and fmt not in EXPORT_FORMATS:  # said as it is, not "unknown export format ''"
        raise ValueError("-: an export is written to a file, not to standard output: name a .csv, .jsonl or "
                         ".parquet file")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"{out}: unknown export format '{fmt}' (one of {', '.join(EXPORT_FORMATS)})")
    folder = out.parent
    if not folder.is_dir():
        raise StoreError(f"{out}: folder {folder} does not exist")
    if out.is_dir():
        raise StoreError(f"{out}: is a folder")
    if not os.access(folder, os.W_OK):
        raise StoreError(f"{out}: folder {folder} is not writable")
    if fmt == "parquet":  # said now: `scan --export x.parquet` had scanned for an hour, then failed on the import
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:
            raise StoreError(f"{out}: Parquet export needs pyarrow: pip install 'synthdetect[scan]'") from exc


def _iter_rows(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """Rows with the path as the ``str`` the scan found."""
    for values in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY path"):
        row = dict(zip(COLUMNS, values))
        row["path"] = path_from_key(row["path"])
        yield row


def _exported(row: dict[str, Any]) -> dict[str, Any]:
    """The flat columns, the path as valid UTF-8 (text formats cannot carry a file name's raw bytes)."""
    return {c: display_text(row[c]) if c == "path" else row[c] for c in FLAT_COLUMNS}


def displayed(value: Any) -> Any:
    """A verdict with every text valid UTF-8: a file name's stray byte in an error message is ``\\xNN``, as in
    the columns, not a lone surrogate escape (``\\udcff``) that strict JSON readers refuse."""
    if isinstance(value, str):
        return display_text(value)
    if isinstance(value, list):
        return [displayed(v) for v in value]
    if isinstance(value, dict):
        return {k: displayed(v) for k, v in value.items()}
    return value


def _export_csv(rows: Iterable[dict[str, Any]], out: Path) -> int:
    """The CSV is opened in spreadsheets: a text cell that would run as a formula (a file named
    ``=HYPERLINK(...).jpg``) gets a leading apostrophe (:mod:`synthdetect.csv_cells`); JSON lines and Parquet keep
    every value exactly."""
    from synthdetect.csv_cells import spreadsheet_row

    n = 0
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FLAT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(spreadsheet_row(_exported(row), TEXT_COLUMNS))
            n += 1
    return n


def _export_jsonl(rows: Iterable[dict[str, Any]], out: Path) -> int:
    n = 0
    with open(out, "w", encoding="utf-8") as handle:
        for row in rows:
            record = _exported(row)
            record["evidence"] = json.loads(row["evidence"]) if row["evidence"] else []
            record["verdict"] = displayed(json.loads(row["verdict"]))
            record["verdict"]["file"] = record["path"]
            handle.write(json.dumps(record) + "\n")
            n += 1
    return n


def _export_parquet(rows: Iterable[dict[str, Any]], out: Path, chunk: int = 50_000) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("Parquet export needs pyarrow: pip install 'synthdetect[scan]'") from exc
    schema = pa.schema([
        ("path", pa.string()), ("sha256", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
        ("label", pa.string()), ("p_ai", pa.float64()), ("reasons", pa.string()), ("model", pa.string()),
        ("raw_logit", pa.float64()), ("model_p_ai", pa.float64()), ("evidence", pa.string()),
        ("width", pa.int64()), ("height", pa.int64()), ("format", pa.string()), ("error", pa.string()),
        ("error_kind", pa.string()), ("detector", pa.string()), ("fingerprint", pa.string()),
        ("scanned_at", pa.string()),
    ])
    n = 0
    # Written in row groups so memory stays bounded however large the database is.
    with pq.ParquetWriter(out, schema) as writer:
        buffer: list[dict[str, Any]] = []
        for row in rows:
            buffer.append(_exported(row))
            if len(buffer) >= chunk:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                n += len(buffer)
                buffer = []
        if buffer or n == 0:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
            n += len(buffer)
    return n
