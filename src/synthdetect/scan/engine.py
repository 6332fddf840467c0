"""The local streaming scan engine: discovery -> decode workers -> batched Detector -> SQLite.

Four stages overlap through bounded queues, so memory stays flat however many
files a folder holds:

* a discovery thread walks the sources, skips files the database already has
  (same size and mtime, same detector configuration) and queues the rest;
* worker processes read each file, hash it, answer from the content-hash
  cache when identical bytes were judged before, else decode it with
  :func:`synthdetect.images.load_image` and run ``Detector.examine`` on it
  (evidence probes, routing, the model's resize), exactly as ``synthdetect
  detect`` does;
* the main process batches the examined files into ``Detector.conclude``
  (one forward pass per batch, then fusion), so verdicts equal ``detect``'s;
* a writer thread commits each batch in one SQLite transaction.

Loss-free under ``kill -9``: a row exists only once its batch is committed,
rows are upserted by path, and a rerun queues every file without a row (and
every error row that a second try may fix).  SIGTERM ends a scan as Ctrl-C
does, and a worker whose parent died exits on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait as ready_connections
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from synthdetect.images import ImageLoadError, LoadLimits
from synthdetect.interrupts import sigterm_raises
from synthdetect.messages import EMPTY_PATH_HINT
from synthdetect.scan.decode import Decoded, decode_file
from synthdetect.scan.sources import Candidate, PassedOver, database_files, iter_candidates
from synthdetect.scan.store import (CONTENT_ERROR_KINDS, FileStamp, ResultStore, connect, database_failed,
                                    path_key, verdict_row)

_log = logging.getLogger(__name__)

#: Paths checked against the database per query while discovering.
RESUME_CHUNK = 256
#: How often an idle decode worker checks that the scan that started it is still alive (seconds).
PARENT_CHECK_S = 1.0
#: What the pool's reader thread hands on: a worker's result, or word that its pipe ended (it died).
RESULT, GONE = "result", "gone"


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: what was judged is committed; ``signum`` says which, for the exit code, and ``summary``
    is the run's summary so far (``interrupted`` true) when the scan got as far as writing it."""

    def __init__(self, signum: int = signal.SIGINT, summary: dict[str, Any] | None = None):
        super().__init__(signum)
        self.signum = signum
        self.summary = summary


@dataclass
class ScanOptions:
    """Everything that decides what a scan computes and how hard it pushes the machine."""

    model: str = "default"
    workers: int | None = None  # decode processes; default: every CPU this process may use
    batch_size: int = 32
    threads: int | None = None  # inference threads; default: the model backend's own choice
    rescore: bool = False
    draft: bool = False
    draft_factor: int = 1  # with draft: decode to at least this many times the model input
    all_files: bool = False
    follow_links: bool = False  # walk symbolic links to folders (each real folder once)
    use_evidence: bool = True
    limits: LoadLimits = field(default_factory=LoadLimits)
    queue_per_worker: int = 4
    #: A batch is also sent to the model once its inputs hold this many bytes (bounded memory for big photos).
    max_batch_bytes: int = 144_000_000
    prune: bool = False  # first drop rows whose file no longer exists
    #: Files this scan writes besides its database (``--export`` targets): never judged, as the database is not.
    #: With ``--all-files`` a rerun had judged its own CSV export into a ``not_an_image`` row, exit code 3.
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, least in (("workers", 0), ("threads", 0), ("batch_size", 1), ("queue_per_worker", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, not {value}")


def worker_context() -> Any:
    """``fork`` where there is one: a spawned worker re-imports torch and the whole package and loads
    the model again, which costs seconds of CPU per worker.  Forked workers decode with Pillow, hash,
    read SQLite and run the weight-free ``Detector.examine`` (NumPy, Pillow, the probes), never torch
    or ONNX Runtime, so the threads those libraries started in the parent do not matter."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def load_detector(options: ScanOptions):
    """The Detector a scan uses, with the inference thread count applied to both backends."""
    from synthdetect.api import Detector

    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
        os.environ["SYNTHDETECT_THREADS"] = str(options.threads)
    return Detector.load(options.model, limits=options.limits, use_evidence=options.use_evidence)


def _model_cards(model: Any) -> list[dict[str, Any]]:
    """The model's card and, for a router, every routed model's card as routed (none of them needs building)."""
    cards = [model.card]
    for name, card in getattr(model, "member_cards", {}).items():
        cards.extend(_model_cards(model.member(name)) if card.get("kind") == "router" else [card])
    return cards


def draft_size_for(model: Any, factor: int = 1) -> tuple[int, int] | None:
    """The smallest JPEG decode size that cannot change which model judges an image, or how.

    Draft mode scales by 1/2, 1/4 or 1/8 but never below the requested size,
    so asking for the largest model input *and* every size boundary on the
    cards (routes, ``min_side``, ``max_short_side``) keeps routing and
    out-of-domain answers as they are at full resolution.  ``factor`` asks for
    that many times the model input: the model's own resize then does more of
    the downscaling, so scores move less (``benchmarks/draft_accuracy.py``).
    """
    if factor < 1:
        raise ValueError(f"draft factor must be at least 1, not {factor}")
    cards = _model_cards(model)
    needed = 0
    for card in cards:
        spec = card.get("input") or {}
        if card.get("kind") != "router" and "size" not in spec:
            return None  # a kind that does not state its input may need every pixel
        needed = max([needed, *(factor * side for side in spec.get("size", []))])
        if spec.get("max_short_side"):
            needed = max(needed, int(spec["max_short_side"]) + 1)
        needed = max(needed, int(spec.get("min_side", 0)))
        for route in card.get("routes", []):
            if route.get("max_short_side") is not None:
                needed = max(needed, int(route["max_short_side"]) + 1)
            if route.get("min_short_side") is not None:
                needed = max(needed, int(route["min_short_side"]))
    return (needed, needed) if needed else None


def detector_fingerprint(detector: Any, draft_size: tuple[int, int] | None) -> str:
    """Identity of everything that shapes a verdict; a cached row is reused only under the same one."""
    from synthdetect import __version__
    from synthdetect.evidence import probe_names

    cards = [{k: v for k, v in card.items() if k != "history"} for card in _model_cards(detector.model)]
    payload = {
        "synthdetect": __version__, "cards": cards, "use_evidence": detector.use_evidence,
        "probes": sorted(detector.probes) if detector.probes is not None else probe_names(),
        "limits": asdict(detector.limits), "draft_size": draft_size,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# -- decode worker processes -------------------------------------------------------------------
#: The scan's Detector, set before workers fork so they share it instead of loading it again.
_FORKED_DETECTOR: Any = None
#: True only while :class:`_Pool` forks a worker (read by :func:`_forget_stdin` in the child).
_FORKING_WORKER = False


def _forget_stdin() -> None:
    """In a forked worker, drop ``sys.stdin`` before multiprocessing closes it.  A replacement worker forks
    while discovery may be blocked reading a ``scan -`` list, holding the stdin buffer's lock; the child's
    copy of that lock is never released, so its ``sys.stdin.close()`` waited forever and the scan hung."""
    if _FORKING_WORKER:
        sys.stdin = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_stdin)


def _worker_main(wid: int, tasks: Any, results: Connection, inherited: list[Connection], current: Any,
                 limits: LoadLimits, draft_size: tuple[int, int] | None, db_path: str, fingerprint: str,
                 use_cache: bool, options: ScanOptions, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides how Ctrl-C ends a scan
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the scan's handler, inherited through fork
    for reader in inherited:  # only the scan may hold read ends: once it dies, a send here fails, never blocks
        reader.close()
    detector = _FORKED_DETECTOR if _FORKED_DETECTOR is not None else load_detector(options)  # spawn: own copy
    cache = None
    if use_cache:
        try:
            cache = connect(db_path, readonly=True)
        except Exception:  # noqa: BLE001 - without a cache every file is simply judged
            cache = None
    while True:
        try:
            task = _next_task(tasks)
        except queue.Empty:
            if os.getppid() != parent:
                return  # the scan was killed: nobody will read what this worker makes
            continue
        if task is None:
            break
        seq, path, stamp, problem = task
        current[wid] = seq  # read by the main process if this worker dies on this file
        decoded = decode_file(path, FileStamp(*stamp), limits, draft_size=draft_size,
                              cache=cache, fingerprint=fingerprint, problem=problem).examine(detector)
        try:
            results.send((seq, decoded.to_bytes()))
        except OSError:
            return  # the scan is gone
        current[wid] = -1  # delivered whole: dying from here on costs this file nothing


def _next_task(tasks: Any) -> Any:
    """The next task, waiting up to ``PARENT_CHECK_S`` for one *without* holding the queue's read lock.

    ``tasks.get(timeout=...)`` keeps that lock (shared by every worker) while it waits, so a worker killed
    while idle (the OOM killer, ``kill``) left it taken for good: its replacement and every other worker
    then waited forever and the scan hung.  Here the lock is held only for the instant of reading a task."""
    if not tasks._reader.poll(PARENT_CHECK_S):
        raise queue.Empty
    return tasks.get(block=False)


class _Pool:
    """Decode processes, each sending its results down a pipe of its own, replaced when one dies.

    One queue shared by every worker guarded its pipe with a lock that the sending worker held: a worker
    killed while sending a large result (the OOM killer, ``kill``) left the lock taken and half a message in
    the pipe, and the scan hung for ever.  A worker's own pipe ends in end-of-file when it dies, after
    everything it sent whole, so a reader thread hands on its results and then ``(GONE, wid)``, in that order,
    and the file it held is the only one that gets an error row.
    """

    def __init__(self, n: int, worker_args: tuple, queue_per_worker: int, ctx: Any):
        self.ctx = ctx
        self.args = worker_args
        self.tasks = ctx.Queue(maxsize=n * queue_per_worker)  # paths: cheap
        # Examined files are small (a resized model input) unless a model needs the whole image,
        # in which case a 4 MP photo is 12 MB of RGB: so only a few per worker wait here.
        self.results: queue.Queue = queue.Queue(maxsize=queue_per_worker * n)
        self.current = ctx.Array("q", [-1] * n, lock=False)
        self.procs: list[Any] = [None] * n
        self.pipes: dict[Connection, int] = {}  # read end -> worker id
        self._pipes_lock = threading.Lock()
        self._closing = threading.Event()
        for wid in range(n):
            self._start(wid)
        self._reader = threading.Thread(target=self._read_results, name="synthdetect-results", daemon=True)
        self._reader.start()

    def _start(self, wid: int) -> None:
        self.current[wid] = -1
        reader, writer = self.ctx.Pipe(duplex=False)
        with self._pipes_lock:
            inherited = [*self.pipes, reader]  # what a forked child holds of the read ends
        proc = self.ctx.Process(target=_worker_main, name=f"synthdetect-decode-{wid}", daemon=True,
                                args=(wid, self.tasks, writer, inherited, self.current, *self.args, os.getpid()))
        global _FORKING_WORKER
        _FORKING_WORKER = True
        try:
            proc.start()
        finally:
            _FORKING_WORKER = False
            writer.close()  # the worker holds the only write end, so its death is end-of-file here
        with self._pipes_lock:
            self.pipes[reader] = wid
        self.procs[wid] = proc

    def _read_results(self) -> None:
        while not self._closing.is_set():
            with self._pipes_lock:
                readers = list(self.pipes)
            if not readers:
                time.sleep(0.05)
                continue
            for reader in ready_connections(readers, timeout=0.1):
                wid = self.pipes[reader]
                try:
                    item: tuple = (RESULT, wid, *reader.recv())
                except Exception:  # noqa: BLE001 - end-of-file, or half a message from a worker that died
                    with self._pipes_lock:
                        del self.pipes[reader]
                    reader.close()
                    item = (GONE, wid)
                while not self._closing.is_set():
                    try:
                        self.results.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue

    def replace(self, wid: int) -> tuple[int, int | None]:
        """Start a new worker in place of one whose pipe ended; returns ``(seq it held, exit code)``."""
        proc = self.procs[wid]
        proc.join(timeout=5)
        if proc.is_alive():  # closed its pipe but lives on: it can send nothing, so it is of no use
            proc.kill()
            proc.join(timeout=5)
        held = int(self.current[wid])
        self._start(wid)
        return held, proc.exitcode

    def close(self, wait: bool = True) -> None:
        if wait:
            for _ in self.procs:
                self.tasks.put(None)
            for proc in self.procs:
                proc.join(timeout=10)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        self._closing.set()
        self._reader.join(timeout=5)
        with self._pipes_lock:
            for reader in self.pipes:
                reader.close()
            self.pipes.clear()
        self.tasks.cancel_join_thread()
        self.tasks.close()


# -- the scan ----------------------------------------------------------------------------------
@dataclass
class ScanCounters:
    discovered: int = 0
    skipped: int = 0
    pruned: int = 0
    queued: int = 0
    judged: int = 0
    cached: int = 0
    labels: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    passed_over: PassedOver = field(default_factory=PassedOver)

    @property
    def done(self) -> int:
        return self.judged + self.cached


ProgressHook = Callable[[ScanCounters, bool], None]


def resume_filter(candidates: Iterable[Candidate], db_path: str | Path, fingerprint: str,
                  rescore: bool, counters: ScanCounters, rescored_since: str | None = None) -> Iterable[Candidate]:
    """Drop files whose row is already there for this detector, unchanged since (unless rescoring).

    ``rescored_since``: when a ``--rescore`` began (see :meth:`ResultStore.begin_rescore`); rows written since
    then were rescored already, by this scan's earlier, interrupted run, and are not judged again.

    A database that cannot be read (a damaged page) is one :class:`StoreError`, not a traceback."""
    try:
        conn = connect(db_path, readonly=True)
    except sqlite3.Error as exc:
        raise database_failed(db_path, exc) from exc
    try:
        chunk: list[Candidate] = []

        def pending(chunk: list[Candidate]) -> list[Candidate]:
            if rescore and rescored_since is None:
                return chunk
            try:
                done = _done(conn, [c.path for c in chunk], fingerprint, rescored_since if rescore else None)
            except sqlite3.Error as exc:
                raise database_failed(db_path, exc) from exc
            keep = [c for c in chunk if c.path not in done or not done[c.path].same_file(c.stamp)]
            counters.skipped += len(chunk) - len(keep)
            return keep

        for cand in candidates:
            counters.discovered += 1
            chunk.append(cand)
            if len(chunk) >= RESUME_CHUNK:
                yield from pending(chunk)
                chunk = []
        if chunk:
            yield from pending(chunk)
    finally:
        conn.close()


def rescore_window(store: ResultStore, sources: Sequence[str], fingerprint: str, rescore: bool
                   ) -> tuple[str | None, str | None]:
    """``(key, began)`` of this scan's ``--rescore``, or ``(None, None)`` for a scan without it.

    `--rescore` interrupted and run again continues, as any scan does: it had judged every file from the first
    again, so a rescore of a large collection under a batch system's time limit never finished.  A scan without
    --rescore in between ends any unfinished rescore, so a later --rescore judges every file.  Both engines use
    this, so a rescore stopped on one continues on the other (the key names the detector and the sources)."""
    if not rescore:
        store.end_rescore()
        return None, None
    named = hashlib.sha256(json.dumps(list(map(str, sources))).encode()).hexdigest()[:16]
    key = f"rescore:{fingerprint}:{named}"
    return key, store.begin_rescore(key)


def _done(conn: Any, paths: Sequence[str], fingerprint: str, since: str | None = None) -> dict[str, FileStamp]:
    """Stamps of the rows that need no second look: judged, or refused for their content (which a retry
    with the same bytes would refuse again).  Other error rows (unreadable, not found, not a regular file,
    a crashed decoder) are tried again on every resume.  ``since``: only rows written after that second (one
    written in that very second may predate it, so it is judged again: at worst a second's work done twice)."""
    keys = {path_key(p): p for p in paths}
    content = tuple(sorted(CONTENT_ERROR_KINDS))
    query = (f"SELECT path, size, mtime_ns, ctime_ns FROM results WHERE fingerprint = ? "
             f"AND (error IS NULL OR error_kind IN ({', '.join('?' for _ in content)})) "
             f"{'AND scanned_at > ? ' if since is not None else ''}"
             f"AND path IN ({', '.join('?' for _ in keys)})")
    params = (fingerprint, *content, *(() if since is None else (since,)), *keys)
    return {keys[k]: FileStamp(s, m, c) for k, s, m, c in conn.execute(query, params)}


def judge_batch(detector: Any, batch: Sequence[Decoded]) -> list[dict[str, Any]]:
    """Verdict dicts for decoded files; a model failure on one batch falls back to file by file.

    A file the model fails on is a ``model_error`` row even when it is alone in its batch (``--batch-size 1``,
    or the batch flushed while the queue was empty): raising there ended the whole scan, on every resume."""
    if len(batch) > 1:
        try:
            return _judge(detector, batch)
        except Exception:  # noqa: BLE001 - find the one file the model cannot take; the rest still count
            pass
    out = []
    for d in batch:
        try:
            out.extend(_judge(detector, [d]))
        except Exception as exc:  # noqa: BLE001
            from synthdetect.verdict import Verdict

            _log.warning("%s: model failed: %s", d.path, exc)
            out.append(Verdict.failed(d.path, f"{d.path}: model failed ({exc})", "model_error").to_dict())
    return out


def _judge(detector: Any, batch: Sequence[Decoded]) -> list[dict[str, Any]]:
    for d in batch:
        d.examine(detector)  # no-op when a worker examined it already
    return [v.to_dict() for v in detector.conclude([
        detector.failed_with_records(d.path, d.error, {"load": d.load_ms}) if d.error is not None else d.examined
        for d in batch
    ])]


def run_scan(
    sources: Sequence[str],
    out: str | Path,
    options: ScanOptions | None = None,
    progress: ProgressHook | None = None,
) -> dict[str, Any]:
    """Scan ``sources`` into the SQLite database ``out``; returns the summary (also stored in ``runs``)."""
    options = options or ScanOptions()
    if any(str(source) == "" for source in sources):
        raise ValueError(f'an empty source ("") names no file or folder{EMPTY_PATH_HINT}')
    out = Path(out)
    workers = options.workers or available_cpus()
    store = ResultStore(out)
    ctx = worker_context()
    started = time.perf_counter()
    counters = ScanCounters()
    prune_example = None
    if options.prune:
        counters.pruned, prune_example = store.prune_missing()
    detector = load_detector(options)
    draft_size = draft_size_for(detector.model, options.draft_factor) if options.draft else None
    fingerprint = detector_fingerprint(detector, draft_size)
    run_id = store.start_run(json.dumps(list(map(str, sources))), options.model, "local")
    rescore_key, rescore_since = rescore_window(store, sources, fingerprint, options.rescore)
    global _FORKED_DETECTOR
    detector.model.ready()  # build lazy sessions once, here, not in every forked worker
    _FORKED_DETECTOR = detector if ctx.get_start_method() == "fork" else None
    pool = _Pool(workers, (options.limits, draft_size, str(out), fingerprint, not options.rescore, options),
                 options.queue_per_worker, ctx)

    lock = threading.Lock()
    inflight: dict[int, tuple[str, FileStamp]] = {}
    discovery_done = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    def discover() -> None:
        try:
            seq = 0
            found = iter_candidates(sources, options.all_files, counters.passed_over,
                                    exclude=[*database_files(out), *options.exclude], follow_links=options.follow_links)
            for cand in resume_filter(found, out, fingerprint, options.rescore, counters, rescore_since):
                with lock:
                    inflight[seq] = (cand.path, cand.stamp)
                    counters.queued += 1
                task = (seq, cand.path, (cand.stamp.size, cand.stamp.mtime_ns, cand.stamp.ctime_ns), cand.problem)
                while not stop.is_set():
                    try:
                        pool.tasks.put(task, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
                seq += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
        finally:
            discovery_done.set()

    writes: queue.Queue = queue.Queue(maxsize=8)

    def write() -> None:
        while True:
            rows = writes.get()
            if rows is None:
                return
            if failure:
                continue  # keep draining so the main thread never blocks on a full queue
            try:
                store.write(rows)
            except BaseException as exc:  # noqa: BLE001
                failure.append(exc)
                stop.set()

    def emit(verdicts: list[dict[str, Any]], decoded: Sequence[Decoded | tuple[str, FileStamp]]) -> None:
        rows = []
        for verdict, d in zip(verdicts, decoded):
            if isinstance(d, Decoded):
                rows.append(verdict_row(verdict, d.stamp, options.model, fingerprint, d.original_size, d.sha256))
            else:
                rows.append(verdict_row(verdict, d[1], options.model, fingerprint))
            if verdict["error"]:
                counters.errors[verdict["error_kind"] or "error"] += 1
            else:
                counters.labels[verdict["label"]] += 1
        writes.put(rows)

    discoverer = threading.Thread(target=discover, name="synthdetect-discover", daemon=True)
    writer = threading.Thread(target=write, name="synthdetect-writer", daemon=True)
    discoverer.start()
    writer.start()
    pending: list[Decoded] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending_bytes
        if pending:
            emit(judge_batch(detector, pending), pending)
            counters.judged += len(pending)
            pending.clear()
            pending_bytes = 0

    interrupted: int | None = None  # the signal that ended the scan early
    try:
        with sigterm_raises(ScanInterrupted):
            while not failure:
                with lock:
                    finished = discovery_done.is_set() and not inflight
                if finished:
                    break
                try:
                    kind, wid, *message = pool.results.get(timeout=0.05)
                except queue.Empty:
                    flush()
                    if progress:
                        progress(counters, discovery_done.is_set())
                    continue
                if kind == GONE:
                    _replace_worker(pool, wid, lock, inflight, emit, counters)
                    continue
                seq, data = message
                with lock:
                    known = inflight.pop(seq, None) is not None
                if not known:
                    continue  # already written as a crashed-decoder row
                decoded = Decoded.from_bytes(data)
                if decoded.cached is not None:
                    verdict = dict(decoded.cached, file=decoded.path)
                    emit([verdict], [decoded])
                    counters.cached += 1
                else:
                    pending.append(decoded)
                    pending_bytes += decoded.payload_bytes
                    if len(pending) >= options.batch_size or pending_bytes >= options.max_batch_bytes:
                        flush()
                if progress:
                    progress(counters, discovery_done.is_set())
            flush()
    except KeyboardInterrupt as exc:
        interrupted = getattr(exc, "signum", signal.SIGINT)
    finally:
        stop.set()
        writes.put(None)
        writer.join()
        pool.close(wait=interrupted is None and not failure)
        _FORKED_DETECTOR = None
        discoverer.join(timeout=5)
    if failure:
        store.close()
        raise failure[0]
    seconds = time.perf_counter() - started
    summary = {
        "engine": "local", "database": str(out), "model": options.model, "fingerprint": fingerprint,
        "workers": workers, "batch_size": options.batch_size, "draft_size": draft_size,
        "discovered": counters.discovered, "skipped_unchanged": counters.skipped,
        "pruned": counters.pruned, "pruned_example": prune_example,
        "judged": counters.judged, "from_cache": counters.cached,
        "errors": sum(counters.errors.values()), "labels": dict(counters.labels),
        "errors_by_kind": dict(counters.errors), "passed_over": counters.passed_over.to_dict(),
        "seconds": round(seconds, 3),
        "files_per_s": round(counters.done / seconds, 2) if seconds > 0 else None,
        "interrupted": interrupted is not None, "database_totals": store.totals(),
    }
    store.finish_run(run_id, summary)
    if rescore_key is not None and interrupted is None:
        store.end_rescore(rescore_key)  # done: the next --rescore judges every file again
    store.close()
    if progress:
        progress(counters, True)
    if interrupted is not None:
        raise ScanInterrupted(interrupted, summary)
    return summary


def _replace_worker(pool: _Pool, wid: int, lock: threading.Lock, inflight: dict, emit: Callable,
                    counters: ScanCounters) -> None:
    """A worker died: everything it sent whole has been handled, so the file it held is the one it died on."""
    from synthdetect.verdict import Verdict

    seq, code = pool.replace(wid)
    with lock:
        entry = inflight.pop(seq, None) if seq >= 0 else None
    if entry is None:
        return
    path, stamp = entry
    reason = f"decoder process died on this file (exit code {code})"
    _log.warning("%s: %s", path, reason)
    emit([Verdict.failed(path, f"{path}: {reason}", "decoder_crashed").to_dict()], [(path, stamp)])
    counters.judged += 1
