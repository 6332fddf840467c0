"""What a decode worker does with one file: read, hash, look in the cache, decode, examine.

Shared by the local engine's worker processes and the Ray engine's actors so
both judge exactly the same ``LoadedImage`` that ``synthdetect detect`` would.
Examining (evidence probes, routing, the model's resize) also happens here, so
a worker hands on a few hundred KB per file instead of a decoded photo, and
the probes run on every core rather than in the process that holds the model.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from PIL import Image

from synthdetect.images import ImageLoadError, LoadedImage, LoadLimits, load_image, not_a_regular_file
from synthdetect.scan.store import FileStamp, cached_verdict

if TYPE_CHECKING:
    from synthdetect.api import Examined


@dataclass
class Decoded:
    """A worker's answer for one file: one of ``image`` / ``examined``, ``error`` or ``cached`` is set."""

    path: str
    stamp: FileStamp
    image: LoadedImage | None = None
    error: ImageLoadError | None = None
    cached: dict[str, Any] | None = None
    original_size: tuple[int, int] | None = None
    examined: Examined | None = None
    load_ms: float = 0.0
    sha256: str | None = None  # of the bytes read, computed once for the cache and the verdict

    def examine(self, detector: Any) -> "Decoded":
        """Replace the decoded image by what ``detector`` needs of it (see :meth:`Detector.examine`)."""
        if self.image is None:
            return self
        try:
            self.examined = detector.examine(self.path, self.image, sha256=self.sha256, load_ms=self.load_ms)
        except Exception as exc:  # noqa: BLE001 - a model's resize failing on one file must not stop the scan
            self.error = ImageLoadError(self.path, "model_error", f"preparing the model input failed ({exc})")
        self.image = None
        return self

    @property
    def payload_bytes(self) -> int:
        """Roughly what this file holds in memory until its batch is judged."""
        return _pixel_bytes(self.image if self.image is not None else getattr(self.examined, "prepared", None))

    def to_bytes(self) -> bytes:
        """Pickled by hand so that an unpicklable field (odd image metadata) cannot lose the file."""
        error = None if self.error is None else (self.error.source, self.error.kind, self.error.reason)
        # a damaged file's readable records (its bytes and header) travel too: its row lists them, as detect's does
        records = None if self.error is None else self.error.records
        state = {f.name: getattr(self, f.name) for f in fields(self)} | {"error": error, "records": records}
        try:
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - metadata Pillow attached that does not pickle
            for image in (self.image, getattr(self.examined, "prepared", None), records):
                if isinstance(image, LoadedImage):
                    image.info = {k: v for k, v in image.info.items() if _picklable(v)}
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Decoded":
        state = pickle.loads(data)
        error, records = state.pop("error"), state.pop("records", None)
        if error:
            error = ImageLoadError(*error)
            error.records = records
        return cls(**state, error=error or None)


def _pixel_bytes(value: Any) -> int:
    """Pixel bytes in whatever a model prepared: arrays, images, or containers of them (e.g. multi-view crops)."""
    if isinstance(value, LoadedImage):
        value = value.rgb
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, (list, tuple)):
        return sum(_pixel_bytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001
        return False
    return True


def decode_file(
    path: str,
    stamp: FileStamp,
    limits: LoadLimits,
    *,
    draft_size: tuple[int, int] | None = None,
    cache: sqlite3.Connection | None = None,
    fingerprint: str | None = None,
    problem: tuple[str, str] | None = None,
) -> Decoded:
    """Decode one file; never raises for a bad file (the error travels in :class:`Decoded`).

    ``problem`` is what discovery already found wrong (a FIFO, a broken link): the file is not opened.
    """
    started = time.perf_counter()
    if problem is not None:
        return Decoded(path, stamp, error=ImageLoadError(path, *problem))
    try:
        raw = _read_regular_file(path, limits)
    except ImageLoadError as exc:
        return Decoded(path, stamp, error=exc)
    digest: str | None = None
    try:
        if raw is None:
            image = load_image(path, limits, name=path, draft_size=draft_size)
        else:
            digest = hashlib.sha256(raw).hexdigest()
            if cache is not None and fingerprint:
                hit = _cache_lookup(cache, digest, fingerprint)
                if hit is not None:
                    return Decoded(path, stamp, cached=hit[0], original_size=hit[1])
            image = load_image(raw, limits, name=path, draft_size=draft_size)
    except ImageLoadError as exc:  # the bytes' hash travels too: an error row names the file it failed on
        return Decoded(path, stamp, error=exc, sha256=digest)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the scan
        return Decoded(path, stamp, error=ImageLoadError(path, "decoder_error", f"decoder failed ({exc})"),
                       sha256=digest)
    (w0, h0), (w, h) = image.original_size, image.rgb.size
    original = (w0, h0) if w0 * h0 != w * h else None  # decoded at reduced size (draft mode)
    return Decoded(path, stamp, image=image, original_size=original,
                   load_ms=(time.perf_counter() - started) * 1000, sha256=digest)


def _cache_lookup(cache: sqlite3.Connection, digest: str, fingerprint: str):
    """The cached verdict for these bytes, or None when the cache cannot be read (a damaged page, a lock): the
    cache only saves work, and its failure had become this file's ``decoder_error`` row, a content error that
    no resume retries, so a good image stayed unjudged for good."""
    try:
        return cached_verdict(cache, digest, fingerprint)
    except sqlite3.Error:
        return None


def _read_regular_file(path: str, limits: LoadLimits) -> bytes | None:
    """The file's bytes, or None to let ``load_image(path)`` give its canonical error (missing, unreadable,
    empty, too large).  Opened without blocking and checked with ``fstat``: a FIFO that replaced the file since
    discovery would otherwise block the worker forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with open(fd, "rb") as handle:
        st = os.fstat(fd)
        why = not_a_regular_file(st.st_mode)
        if why:
            raise ImageLoadError(path, "not_a_file", why)
        if not 0 < st.st_size <= limits.max_bytes:
            return None
        try:
            return handle.read()
        except OSError:
            return None
