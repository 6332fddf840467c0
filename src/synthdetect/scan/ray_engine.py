"""The same scan on Ray Data: ``map_batches`` over a callable class, so each actor loads the Detector once.

Local Ray by default; a cluster when ``RAY_ADDRESS`` is set (every node must
see the files at the same paths, e.g. a shared mount).  The driver does what
the local engine's discovery and writer do (walk, skip unchanged files,
commit rows in transactions), so resume, the database and the verdicts are
the same as ``--engine local``.  Pending files are sent to Ray in chunks:
the driver never holds more than one chunk of paths, and an interrupted scan
loses at most the chunk in flight.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdetect.scan.decode import decode_file
from synthdetect.scan.engine import (
    ProgressHook, ScanCounters, ScanOptions, available_cpus, detector_fingerprint, draft_size_for, judge_batch,
    load_detector, resume_filter,
)
from synthdetect.scan.sources import database_files, iter_candidates
from synthdetect.scan.store import COLUMNS, FileStamp, ResultStore, verdict_row

_LABEL, _ERROR, _ERROR_KIND = COLUMNS.index("label"), COLUMNS.index("error"), COLUMNS.index("error_kind")

#: Files per Ray dataset; bounds the driver's memory and the work lost to an interruption.
CHUNK = 20_000


class JudgeFiles:
    """Ray actor: decodes its batch of paths and judges them with a Detector it loaded once."""

    def __init__(self, options: ScanOptions, draft_size: tuple[int, int] | None, fingerprint: str):
        # Each actor holds one CPU; letting it spawn a thread per core would oversubscribe the node.
        self.options = replace(options, threads=options.threads or 1)
        self.detector = load_detector(self.options)
        self.draft_size = draft_size
        self.fingerprint = fingerprint

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        decoded = []
        for path, size, mtime, kind, reason in zip(batch["path"], batch["size"], batch["mtime_ns"],
                                                   batch["problem_kind"], batch["problem_reason"]):
            stamp = FileStamp(None if size < 0 else int(size), None if mtime < 0 else int(mtime))
            problem = (str(kind), str(reason)) if kind else None
            path = os.fsdecode(path) if isinstance(path, bytes) else str(path)  # bytes: any file name survives
            decoded.append(decode_file(path, stamp, self.options.limits, draft_size=self.draft_size,
                                       problem=problem))
        verdicts = judge_batch(self.detector, decoded)
        rows = [verdict_row(v, d.stamp, self.options.model, self.fingerprint, d.original_size)
                for v, d in zip(verdicts, decoded)]
        return {"row": [json.dumps(r) for r in rows]}


def init_ray(num_cpus: int | None = None) -> Any:
    """Connect to ``RAY_ADDRESS`` if set, else start a local Ray limited to ``num_cpus``."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--engine ray needs Ray Data: pip install 'synthdetect[ray]'") from exc
    # Ray Data logs every dataset's progress at INFO; the scan has its own progress bar.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    return ray


def run_ray_scan(
    sources: Sequence[str],
    out: str | Path,
    options: ScanOptions | None = None,
    progress: ProgressHook | None = None,
) -> dict[str, Any]:
    options = options or ScanOptions()
    out = Path(out)
    started = time.perf_counter()
    ray = init_ray(options.workers or available_cpus())
    store = ResultStore(out)
    detector = load_detector(options)  # the driver computes the same fingerprint the actors judge under
    draft_size = draft_size_for(detector.model, options.draft_factor) if options.draft else None
    fingerprint = detector_fingerprint(detector, draft_size)
    del detector
    run_id = store.start_run(json.dumps(list(map(str, sources))), options.model, "ray")
    counters = ScanCounters()
    prune_example = None
    if options.prune:
        counters.pruned, prune_example = store.prune_missing()
    actors = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    found = iter_candidates(sources, options.all_files, counters.passed_over, exclude=database_files(out),
                            follow_links=options.follow_links)
    pending = resume_filter(found, out, fingerprint, options.rescore, counters)
    while True:
        chunk = list(islice(pending, CHUNK))
        if not chunk:
            break
        counters.queued += len(chunk)
        items = [{"path": os.fsencode(c.path), "size": -1 if c.stamp.size is None else c.stamp.size,
                  "mtime_ns": -1 if c.stamp.mtime_ns is None else c.stamp.mtime_ns,
                  "problem_kind": c.problem[0] if c.problem else "",
                  "problem_reason": c.problem[1] if c.problem else ""} for c in chunk]
        blocks = max(actors, min(actors * 4, -(-len(items) // options.batch_size)))  # not one task per file
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            JudgeFiles, fn_constructor_kwargs={"options": options, "draft_size": draft_size,
                                               "fingerprint": fingerprint},
            batch_size=options.batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        )
        for batch in dataset.iter_batches(batch_size=options.batch_size, batch_format="numpy"):
            rows = [tuple(json.loads(r)) for r in batch["row"]]
            store.write(rows)
            for r in rows:
                if r[_ERROR]:
                    counters.errors[r[_ERROR_KIND] or "error"] += 1
                else:
                    counters.labels[r[_LABEL]] += 1
            counters.judged += len(rows)
            if progress:
                progress(counters, False)
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
        "interrupted": False, "database_totals": store.totals(),
    }
    store.finish_run(run_id, summary)
    store.close()
    if progress:
        progress(counters, True)
    return summary


__all__ = ["run_ray_scan", "JudgeFiles", "init_ray"]
