"""The same scan on Ray Data: ``map_batches`` over a callable class, so each actor loads the Detector once.

Local Ray by default; a cluster when ``RAY_ADDRESS`` is set (every node must
see the files at the same paths, e.g. a shared mount).  The driver does what
the local engine's discovery and writer do (walk, skip unchanged files,
commit rows in transactions), so resume, the database and the verdicts are
the same as ``--engine local``.  Pending files are sent to Ray in chunks:
the driver never holds more than one chunk of paths, and an interrupted scan
loses at most the chunk in flight.  Ray is started only once a file needs
judging, so a resume with nothing left to do does not wait for it.

A file that kills its actor (a decoder crashing, the OOM killer) becomes a
``decoder_crashed`` row, as in the local engine: Ray restarts the actor and
retries its task, and :class:`CrashMarks` tells the retry which file to skip.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

import numpy as np

from synthdetect.images import ImageLoadError
from synthdetect.interrupts import sigterm_raises
from synthdetect.scan.decode import Decoded, decode_file
from synthdetect.scan.engine import (
    ProgressHook, ScanCounters, ScanInterrupted, ScanOptions, available_cpus, detector_fingerprint, draft_size_for,
    judge_batch, load_detector, rescore_window, resume_filter,
)
from synthdetect.scan.sources import Candidate, database_files, iter_candidates
from synthdetect.scan.store import COLUMNS, FileStamp, ResultStore, verdict_row

_LABEL, _ERROR, _ERROR_KIND = COLUMNS.index("label"), COLUMNS.index("error"), COLUMNS.index("error_kind")

#: Files per Ray dataset; bounds the driver's memory and the work lost to an interruption.
CHUNK = 20_000
#: Batches per Ray task (a task's rows reach the database when it ends).
BATCHES_PER_TASK = 4
#: Seconds the cluster at ``RAY_ADDRESS`` has to accept a connection (Ray itself retries for ever).
CONNECT_TIMEOUT_S = 10.0
#: Why a file whose decoding killed its actor has no verdict (the local engine also gives the exit code).
DECODER_CRASHED = "decoder process (a Ray actor) died on this file"
#: Why a file whose model pass killed its actor has no verdict.
MODEL_CRASHED = "model failed (its Ray actor died on this file)"


class RayClusterError(ConnectionError):
    """The Ray cluster named by ``RAY_ADDRESS`` cannot be reached (the CLI's one-line error for connections)."""


class CrashMarks:
    """Marks, in this node's temp folder, of the work an actor is doing, so a retried task skips what killed it.

    Ray restarts an actor that died and retries its task.  Without the marks a
    file that crashes its decoder crashed every retry and the scan never ended.
    A mark is made before a file's work and removed after it; one still there
    when the retry reaches that work means the actor died inside it.  The
    marks of a batch go once it is judged, and the folder once it is empty.
    On a cluster the retry may run on another node, which then dies on the file
    once too: at most one crash per node.
    """

    def __init__(self, run: str):
        self.folder = Path(tempfile.gettempdir()) / f"synthdetect-ray-{run}"

    def died_in(self, name: str) -> bool:
        return (self.folder / name).exists()

    @contextmanager
    def held(self, name: str) -> Iterator[None]:
        mark = self.folder / name
        while True:
            try:
                mark.touch()
                break
            except FileNotFoundError:  # made on first use; another actor removes it whenever it is empty
                self.folder.mkdir(parents=True, exist_ok=True)
        yield
        mark.unlink(missing_ok=True)  # never reached when the process dies inside: the mark stays

    def clear(self, names: Sequence[str]) -> None:
        for name in names:
            (self.folder / name).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # another actor's work in progress, or gone already
            pass


class JudgeFiles:
    """Ray actor: decodes its batch of paths and judges them with a Detector it loaded once."""

    def __init__(self, options: ScanOptions, draft_size: tuple[int, int] | None, fingerprint: str, run: str):
        # Each actor holds one CPU; letting it spawn a thread per core would oversubscribe the node.
        self.options = replace(options, threads=options.threads or 1)
        self.detector = load_detector(self.options)
        self.draft_size = draft_size
        self.fingerprint = fingerprint
        self.marks = CrashMarks(run)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        seqs = [int(s) for s in batch["seq"]]
        decoded = []
        for seq, path, stamped, size, mtime, ctime, kind, reason in zip(
                seqs, batch["path"], batch["stamped"], batch["size"], batch["mtime_ns"], batch["ctime_ns"],
                batch["problem_kind"],
                batch["problem_reason"]):
            stamp = (FileStamp(int(size), int(mtime), None if int(ctime) < 0 else int(ctime)) if stamped
                     else FileStamp(None, None))
            path = os.fsdecode(path) if isinstance(path, bytes) else str(path)  # bytes: any file name survives
            decoded.append(self._decode(f"{seq}.decode", path, stamp, (str(kind), str(reason)) if kind else None))
        verdicts = self._judge(seqs, decoded)
        rows = [verdict_row(v, d.stamp, self.options.model, self.fingerprint, d.original_size, d.sha256)
                for v, d in zip(verdicts, decoded)]
        self.marks.clear([f"{s}.{step}" for s in seqs for step in ("decode", "model")] + [_batch_mark(seqs)])
        return {"seq": seqs, "row": [json.dumps(r) for r in rows]}

    def _decode(self, mark: str, path: str, stamp: FileStamp, problem: tuple[str, str] | None) -> Decoded:
        """What a local decode worker does (read, decode, examine), or the crash row if it killed this actor."""
        if self.marks.died_in(mark):
            return Decoded(path, stamp, error=ImageLoadError(path, "decoder_crashed", DECODER_CRASHED))
        with self.marks.held(mark):
            return decode_file(path, stamp, self.options.limits, draft_size=self.draft_size,
                               problem=problem).examine(self.detector)

    def _judge(self, seqs: list[int], decoded: list[Decoded]) -> list[dict[str, Any]]:
        """One model pass for the batch; after a pass that killed the actor, each file alone, so one file fails."""
        if not self.marks.died_in(_batch_mark(seqs)):
            with self.marks.held(_batch_mark(seqs)):
                return judge_batch(self.detector, decoded)
        from synthdetect.verdict import Verdict

        verdicts = []
        for seq, d in zip(seqs, decoded):
            if self.marks.died_in(f"{seq}.model"):
                verdicts.append(Verdict.failed(d.path, f"{d.path}: {MODEL_CRASHED}", "model_error").to_dict())
                continue
            with self.marks.held(f"{seq}.model"):
                verdicts.extend(judge_batch(self.detector, [d]))
        return verdicts


def _batch_mark(seqs: Sequence[int]) -> str:
    return f"{seqs[0]}-{seqs[-1]}.batch"


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``RAY_ADDRESS`` nobody answers at, at once: ``ray.init`` waits for such a head for ever."""
    if address in ("auto", "local"):
        return  # Ray looks for a cluster started on this machine and says so when there is none
    url = urlsplit(address if "://" in address else f"gcs://{address}")
    if url.scheme == "ray" and importlib.util.find_spec("grpc") is None:
        raise ImportError(f"RAY_ADDRESS={address} connects through Ray Client: pip install 'ray[client]'")
    try:
        host, port = url.hostname, url.port
    except ValueError as exc:
        raise RayClusterError(f"RAY_ADDRESS={address}: not host:port ({exc})") from exc
    if not host or port is None:
        raise RayClusterError(f"RAY_ADDRESS={address}: not host:port (e.g. head-node:6379 or ray://head-node:10001)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise RayClusterError(f"RAY_ADDRESS={address}: cannot reach the Ray cluster "
                              f"({exc.strerror or exc or 'timed out'})") from exc


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--engine ray needs Ray Data: pip install 'synthdetect[ray]'") from exc
    return ray


def init_ray(num_cpus: int | None = None) -> Any:
    """Connect to ``RAY_ADDRESS`` if set, else start a local Ray limited to ``num_cpus``."""
    ray = _import_ray()
    # Ray Data logs every dataset's progress at INFO; the scan has its own progress bar.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # no start-up chatter on the console
        address = os.environ.get("RAY_ADDRESS")
        if address:
            check_reachable(address)
            try:
                ray.init(address=address, ignore_reinit_error=True, **quiet)
            except ConnectionError as exc:
                raise RayClusterError(f"RAY_ADDRESS={address}: {exc}") from exc
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, **quiet)
    return ray


def _start_ray(num_cpus: int) -> tuple[Any, bool]:
    """Ray, and whether this call started it; the scan's SIGTERM handler stays (``ray.init`` sets its own)."""
    started = not _import_ray().is_initialized()
    ours = signal.getsignal(signal.SIGTERM)
    ray = init_ray(num_cpus)
    if started and callable(ours) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, ours)
    return ray, started


def run_ray_scan(
    sources: Sequence[str],
    out: str | Path,
    options: ScanOptions | None = None,
    progress: ProgressHook | None = None,
) -> dict[str, Any]:
    """Scan ``sources`` into ``out`` on Ray; the same database, summary and interruptions as ``run_scan``."""
    options = options or ScanOptions()
    out = Path(out)
    started = time.perf_counter()
    store = ResultStore(out)
    detector = load_detector(options)  # the driver computes the same fingerprint the actors judge under
    draft_size = draft_size_for(detector.model, options.draft_factor) if options.draft else None
    fingerprint = detector_fingerprint(detector, draft_size)
    del detector
    run_id = store.start_run(json.dumps(list(map(str, sources))), options.model, "ray")
    # An interrupted --rescore continues where it stopped, as on the local engine (it had started over here).
    rescore_key, rescore_since = rescore_window(store, sources, fingerprint, options.rescore)
    counters = ScanCounters()
    prune_example = None
    ray, started_ray, actors = None, False, 0
    run = uuid.uuid4().hex
    interrupted: int | None = None  # the signal that ended the scan early
    try:
        with sigterm_raises(ScanInterrupted):
            if options.prune:
                counters.pruned, prune_example = store.prune_missing()
            found = iter_candidates(sources, options.all_files, counters.passed_over,
                                    exclude=[*database_files(out), *options.exclude], follow_links=options.follow_links)
            pending = resume_filter(found, out, fingerprint, options.rescore, counters, rescore_since)
            while True:
                chunk = list(islice(pending, CHUNK))
                discovered_all = len(chunk) < CHUNK
                if chunk:
                    if ray is None:
                        ray, started_ray = _start_ray(options.workers or available_cpus())
                        actors = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
                    _judge_chunk(ray, chunk, counters.queued, actors, options, draft_size, fingerprint, run, store,
                                 counters, progress, discovered_all)
                if discovered_all:
                    break
    except KeyboardInterrupt as exc:
        interrupted = getattr(exc, "signum", signal.SIGINT)
    except BaseException:
        store.close()
        raise
    finally:
        if started_ray:
            ray.shutdown()
        # After the shutdown: an actor whose retried task was still running when the last rows came in made the
        # folder again after an earlier removal (seen once, a mark of a batch left behind in the temp folder).
        shutil.rmtree(CrashMarks(run).folder, ignore_errors=True)  # marks of actors killed by the interruption
    seconds = time.perf_counter() - started
    summary = {
        "engine": "ray", "database": str(out), "model": options.model, "fingerprint": fingerprint,
        "workers": actors, "batch_size": options.batch_size, "draft_size": draft_size,
        "ray_address": os.environ.get("RAY_ADDRESS") or "local",
        "discovered": counters.discovered, "skipped_unchanged": counters.skipped,
        "pruned": counters.pruned, "pruned_example": prune_example,
        "judged": counters.judged, "from_cache": 0, "errors": sum(counters.errors.values()),
        "labels": dict(counters.labels), "errors_by_kind": dict(counters.errors),
        "passed_over": counters.passed_over.to_dict(),
        "seconds": round(seconds, 3), "files_per_s": round(counters.done / seconds, 2) if seconds > 0 else None,
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


def _judge_chunk(ray: Any, chunk: list[Candidate], first_seq: int, actors: int, options: ScanOptions,
                 draft_size: tuple[int, int] | None, fingerprint: str, run: str, store: ResultStore,
                 counters: ScanCounters, progress: ProgressHook | None, discovered_all: bool) -> None:
    """Judge one chunk of pending files on an actor pool and commit its rows batch by batch."""
    counters.queued += len(chunk)
    items = []
    for seq, c in enumerate(chunk, first_seq):
        stamped = c.stamp.size is not None and c.stamp.mtime_ns is not None  # a stamp may be negative (pre-1970)
        items.append({"seq": seq, "path": os.fsencode(c.path), "stamped": stamped,
                      "size": c.stamp.size if stamped else 0, "mtime_ns": c.stamp.mtime_ns if stamped else 0,
                      # -1: no change time (a block's column needs one type); stored as NULL, compared as before
                      "ctime_ns": c.stamp.ctime_ns if stamped and c.stamp.ctime_ns is not None else -1,
                      "problem_kind": c.problem[0] if c.problem else "",
                      "problem_reason": c.problem[1] if c.problem else ""})
    pool = min(actors, len(items))  # never more actors than blocks: Ray warns about idle ones
    # A task's rows come back when it ends: tasks of a few batches each keep the progress bar moving and bound
    # what an interruption loses (a chunk in 4 tasks per actor held 2,500 files each), yet are not one per file.
    blocks = max(pool, -(-len(items) // (options.batch_size * BATCHES_PER_TASK)))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        JudgeFiles, fn_constructor_kwargs={"options": options, "draft_size": draft_size,
                                           "fingerprint": fingerprint, "run": run},
        batch_size=options.batch_size, compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=1,
    )
    del items
    if progress:
        progress(counters, discovered_all)
    written: set[int] = set()  # a retried task may send rows again; each file counts once
    for batch in dataset.iter_batches(batch_size=options.batch_size, batch_format="numpy"):
        rows = [tuple(json.loads(r)) for s, r in zip(batch["seq"], batch["row"]) if int(s) not in written]
        written.update(int(s) for s in batch["seq"])
        store.write(rows)
        for r in rows:
            if r[_ERROR]:
                counters.errors[r[_ERROR_KIND] or "error"] += 1
            else:
                counters.labels[r[_LABEL]] += 1
        counters.judged += len(rows)
        if progress:
            progress(counters, discovered_all)


__all__ = ["run_ray_scan", "JudgeFiles", "init_ray", "check_reachable", "CrashMarks", "RayClusterError"]
