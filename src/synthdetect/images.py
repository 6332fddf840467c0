"""Decode images once, for every surface, with limits and one-line errors.

Every path, byte string or PIL image that enters synthdetect passes through
:func:`load_image`.  It validates the input *before* decoding pixels (so a
PNG whose header claims 100k x 100k px costs nothing), applies EXIF
orientation, flattens every colour mode to 8-bit RGB, and keeps the raw bytes
and original format so that evidence probes (C2PA, metadata, watermarks, ELA)
see the file exactly as it arrived.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from synthdetect.messages import first_line

try:  # HEIC/HEIF (and AVIF on builds of Pillow without it) come from pillow-heif.
    import pillow_heif

    pillow_heif.register_heif_opener()
    if "AVIF" not in Image.registered_extensions().values():
        pillow_heif.register_avif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a core dependency
    pillow_heif = None

# Truncated files must fail loudly, never decode as grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# We enforce our own, configurable pixel limit before decoding; Pillow's
# global bomb check would otherwise fire with a less useful message.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 80_000_000  # ~ a 10k x 8k photo; larger is almost surely a bomb
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_BACKGROUND = (255, 255, 255)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, BinaryIO]


def is_stream(source: Any) -> bool:
    """A file object or other binary stream (``open(p, "rb")``, ``io.BytesIO``, an upload's file); none of the
    other input types has ``read``."""
    return hasattr(source, "read")


def read_limited(stream: BinaryIO, max_bytes: int, chunk: int = 1 << 20) -> tuple[bytes | None, int]:
    """All of ``stream``: its bytes, or None past ``max_bytes`` (then drained and counted, never held), and its
    size.  A stream has no size to check beforehand, and its bytes cannot be refused once all in memory."""
    parts: list[bytes] = []
    size = 0
    while block := stream.read(chunk):
        if isinstance(block, str):
            raise TypeError("a text stream: open the file in binary mode ('rb')")
        size += len(block)
        if size <= max_bytes:
            parts.append(block)
        else:
            parts.clear()
    return (b"".join(parts) if size <= max_bytes else None), size

# Magic numbers of formats people send that Pillow cannot decode; naming them
# turns "not an image" into the more useful "unsupported format: PDF".
_KNOWN_UNSUPPORTED = (
    (b"%PDF", "PDF"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"8BPS", "Photoshop PSD"),
    (b"II*\x00\x10\x00\x00\x00CR", "Canon CR2 raw"),
    (b"FUJIFILMCCD-RAW", "Fujifilm RAF raw"),
    (b"\x1a\x45\xdf\xa3", "WebM/Matroska video"),
    (b"GIF8", "GIF"),
)


class ImageLoadError(ValueError):
    """A file could not be judged; ``kind`` is machine-readable, ``str()`` is one line."""

    def __init__(self, source: str, kind: str, reason: str):
        self.source = source
        self.kind = kind
        self.reason = reason
        #: A file whose pixels could not be decoded (truncated, corrupt) may still carry readable records (C2PA, XMP,
        #: PNG text, EXIF) before the damage: its bytes and header as a LoadedImage without pixels (``rgb`` 0x0),
        #: for the probes that read records (see :func:`records_only`).  None when nothing of the file was read.
        self.records: LoadedImage | None = None
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class LoadLimits:
    """Limits applied before any pixel is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    background: tuple[int, int, int] = DEFAULT_BACKGROUND


@dataclass
class LoadedImage:
    """An image decoded to 8-bit RGB plus everything the probes need about the original."""

    rgb: Image.Image
    source: str
    raw: bytes | None
    format: str | None
    original_mode: str
    original_size: tuple[int, int]
    frames: int = 1
    #: the EXIF orientation turned into ``rgb`` (1: none); the file's own pixel grid is the other way round
    orientation: int = 1
    had_alpha: bool = False
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size

    @property
    def orientation_applied(self) -> bool:
        return self.orientation != 1

    @property
    def short_side(self) -> int:
        return min(self.rgb.size)

    def array(self) -> np.ndarray:
        return np.asarray(self.rgb)

    def summary(self) -> dict[str, Any]:
        """The ``image`` field of a verdict and of ``inspect``: format, decoded size, mode, frames and notes.  A
        damaged file's records-only image (:func:`records_only`, no pixels) gives its header's size and no frame
        count."""
        decoded = self.rgb.size != (0, 0)
        width, height = self.size if decoded else self.original_size
        return {"format": self.format, "width": width, "height": height, "mode": self.original_mode,
                "frames": self.frames if decoded else None, "notes": list(self.notes)}


def encode_image(image: Image.Image, fmt: str, **options) -> bytes:
    """``image`` saved as ``fmt`` (Pillow save options) into bytes: a re-encoded copy, as a platform would make one."""
    if fmt == "PNG":
        options.setdefault("compress_level", 1)  # lossless either way; level 1 encodes large images several times faster
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def shrink_to_short_side(image: Image.Image, short: int, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """``image`` scaled so its short side is ``short`` px, keeping the aspect; never enlarged (returned as it is)."""
    if min(image.size) <= short:
        return image
    scale = short / min(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes:{len(source)}>"
    if isinstance(source, Image.Image):
        return f"<PIL.Image {source.mode} {source.size[0]}x{source.size[1]}>"
    if is_stream(source) and isinstance(getattr(source, "name", None), str):
        return source.name  # an open file: its path
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    limits: LoadLimits | None = None,
    *,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
) -> LoadedImage:
    """Decode ``source`` to RGB or raise :class:`ImageLoadError` with a one-line reason.

    ``draft_size`` lets JPEG decoding happen at a reduced scale (Pillow's draft
    mode) when the caller knows the model never needs more pixels.
    """
    limits = limits or LoadLimits()
    label = name or describe_source(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, label, limits)
    raw = _read_bytes(source, label, limits)
    return _decode(raw, label, limits, draft_size)


def _too_large(label: str, size: int, limits: LoadLimits) -> ImageLoadError:
    return ImageLoadError(label, "too_large", f"file too large ({size:,} bytes > limit {limits.max_bytes:,})")


def _read_bytes(source: ImageSource, label: str, limits: LoadLimits) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        raw = _read_file(Path(source), label, limits)
    elif is_stream(source):
        try:
            if isinstance(source, io.TextIOBase):  # open(path) without "b": its read() decodes, and fails on bytes
                raise TypeError("a text stream: open the file in binary mode ('rb')")
            read, size = read_limited(source, limits.max_bytes)
        except (TypeError, UnicodeDecodeError):
            raise ImageLoadError(label, "not_an_image", "a text stream: open the file in binary mode ('rb')") from None
        except OSError as exc:
            raise ImageLoadError(label, "unreadable", f"cannot read stream ({exc.strerror or exc})") from exc
        except ValueError as exc:  # a closed file: "I/O operation on closed file"
            raise ImageLoadError(label, "unreadable", f"cannot read stream ({exc})") from None
        if read is None:
            raise _too_large(label, size, limits)
        raw = read
        position = 0 if raw else _stream_position(source)
        if position:  # the same open file passed twice: it was read to its end
            raise ImageLoadError(label, "empty", f"nothing left to read: the stream is at its end (position "
                                                 f"{position:,}); seek(0) before passing it again")
    else:
        raise ImageLoadError(label, "not_an_image", f"unsupported input type {type(source).__name__}")
    if not raw:
        raise ImageLoadError(label, "empty", "empty file (0 bytes)")
    if len(raw) > limits.max_bytes:
        raise _too_large(label, len(raw), limits)
    return raw


def _stream_position(stream: Any) -> int:
    """Where a seekable stream stands (0 when it cannot say)."""
    try:
        return int(stream.tell()) if stream.seekable() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def _read_file(path: Path, label: str, limits: LoadLimits) -> bytes:
    """The bytes of the regular file ``path``, never more than ``max_bytes`` of them held.

    The file can change between the check and the read: one removed since is ``not_found`` (it was listed, or
    named, and is gone), a FIFO put in its place is refused by ``fstat`` instead of blocking the reader, and one
    that grew past the limit (still being written, or a ``/proc`` file whose size reads 0) is ``too_large``.
    """
    size = regular_file_size(path, label)
    if size > limits.max_bytes:
        raise _too_large(label, size, limits)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise ImageLoadError(label, "not_found", "file not found (it was removed before it could be read)") from exc
    except OSError as exc:
        raise ImageLoadError(label, "unreadable", f"cannot read file ({exc.strerror or exc})") from exc
    with open(fd, "rb") as handle:
        why = not_a_regular_file(os.fstat(fd).st_mode)
        if why:
            raise ImageLoadError(label, "not_a_file", why)
        try:
            raw = handle.read(limits.max_bytes + 1)
        except OSError as exc:
            raise ImageLoadError(label, "unreadable", f"cannot read file ({exc.strerror or exc})") from exc
    if len(raw) > limits.max_bytes:  # the rest is not read: its size is not needed to refuse it
        raise ImageLoadError(label, "too_large", f"file too large (more than the limit of {limits.max_bytes:,} bytes "
                                                 f"when read, though {size:,} bytes when checked: it is growing)")
    return raw


#: The one wording of each path that is not a readable regular file, for detect, scan and the Python API alike.
LINK_LOOP = "symbolic link loop"
BROKEN_LINK = "broken symbolic link (its target does not exist)"
_FILE_TYPES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISDIR, "a folder"))


def not_a_regular_file(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is refused, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_TYPES if test(mode)), "a special file")
    return f"is {kind}, not a regular file"


def path_problem(path: Path) -> tuple[str, str, os.stat_result | None]:
    """``(error_kind, reason, stat)`` of a path before it is opened: kind and reason are empty for a regular file.

    A FIFO would block a reader for ever, and a missing file, a broken link and a link loop each say what they are.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return "not_found", BROKEN_LINK if path.is_symlink() else "file not found", None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "not_a_file", LINK_LOOP, None
        return "unreadable", f"cannot read file ({exc.strerror or exc})", None
    why = not_a_regular_file(info.st_mode)
    return ("not_a_file", why, info) if why else ("", "", info)


def regular_file_size(path: Path, label: str) -> int:
    """Size of ``path``, refusing anything but a regular file before it is opened (a FIFO would block for ever)."""
    kind, reason, info = path_problem(path)
    if kind:
        raise ImageLoadError(label, kind, reason)
    return info.st_size


def _sniff_unsupported(raw: bytes) -> str | None:
    head = raw[:32]
    for magic, fmt in _KNOWN_UNSUPPORTED:
        if head.startswith(magic) and fmt != "GIF":
            return fmt
    stripped = head.lstrip()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in raw[:2048]):
        return "SVG (vector graphics)"
    return None


#: Pillow's names of the formats whose damage is told apart from "not an image" (see :func:`_why_not_opened`).
_SIGNED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "AVIF", "HEIF", "ICO",
                             "JPEG2000"})


def _why_not_opened(raw: bytes) -> tuple[str, BaseException | str] | None:
    """``(format, Pillow's reason)`` when a decoder recognised the file's signature but could not read its header.

    ``Image.open`` drops each decoder's reason and says only that it cannot identify the file, which would call a
    PNG with a bad header checksum, or a GIF without a frame, "not an image".  The decoders are asked again here,
    as ``Image.open`` asks them (their own signature check first).  Only the formats synthdetect reads are asked,
    each with a signature of several bytes: PCX and a few others accept two bytes, which random data can match.
    """
    Image.init()
    prefix = raw[:16]
    for fmt in Image.ID:
        if fmt not in _SIGNED_FORMATS:
            continue
        factory, accept = Image.OPEN[fmt]
        try:
            verdict = accept(prefix) if accept else False
        except Exception:  # noqa: BLE001 - BMP's check unpacks 4 bytes: a 1-3 byte file is no signature of it
            continue
        if isinstance(verdict, str):  # the decoder's own refusal of a variant it knows
            return fmt, verdict
        if not verdict:
            continue
        try:
            factory(io.BytesIO(raw), "").close()
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the reason
            return fmt, exc
    return None


def _is_truncation(reason: BaseException | str) -> bool:
    """Whether a decoder's failure is the data ending early (a short read, or ``struct`` finding too few bytes,
    which Pillow's PNG reader passes on as the cause of its ``SyntaxError``)."""
    if isinstance(reason, (EOFError, struct.error)) or isinstance(getattr(reason, "__cause__", None), struct.error):
        return True
    message = str(reason).lower()
    # libjpeg, Pillow, and libheif (pillow-heif) in their own words
    return any(words in message for words in ("truncated", "premature end", "unexpected end of file",
                                              "insufficient input data"))


def _container_format(raw: bytes) -> str | None:
    """``WEBP`` for a RIFF WebP, ``AVIF``/``HEIF`` for an ISO base media file (by its ``ftyp`` brand), else None."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    if raw[4:8] == b"ftyp":
        return "AVIF" if raw[8:12] in (b"avif", b"avis") else "HEIF"
    return None


def _container_cut_short(raw: bytes) -> str | None:
    """How a WebP, AVIF or HEIF file is shorter than its own container says, or None.

    libwebp and libheif refuse a cut file with "could not create decoder object" or "BMFF parsing failed", which
    read as a damaged header; the container's stated lengths (RIFF's size field, the top-level box sizes) tell a
    file that ends early from one that is damaged."""
    fmt = _container_format(raw)
    if fmt == "WEBP":
        stated = int.from_bytes(raw[4:8], "little") + 8
        return f"the WebP file states {stated:,} bytes and has {len(raw):,}" if len(raw) < stated else None
    if fmt in ("AVIF", "HEIF"):
        at = 0
        while at + 8 <= len(raw):
            size = int.from_bytes(raw[at:at + 4], "big")
            if size == 1 and at + 16 <= len(raw):  # a 64-bit size follows the box type
                size = int.from_bytes(raw[at + 8:at + 16], "big")
            if size == 0:  # the last box runs to the end of the file
                return None
            if size < 8:
                return None  # damaged, not cut
            if at + size > len(raw):
                return f"an {fmt} box runs to byte {at + size:,} and the file has {len(raw):,}"
            at += size
    return None


def looks_like_text(raw: bytes) -> bool:
    """Whether ``raw`` starts as UTF-8 text: "not an image (the file contains text)" and the server's form fields.

    The first 1 KB is decoded incrementally, so a character cut by the 1 KB mark does not make text binary.
    """
    sample = raw[:1024]
    if b"\x00" in sample:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(raw) <= len(sample))
    except UnicodeDecodeError:
        return False
    return True


def _decode(
    raw: bytes, label: str, limits: LoadLimits, draft_size: tuple[int, int] | None
) -> LoadedImage:
    try:
        im = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError as exc:
        unsupported = _sniff_unsupported(raw)
        if unsupported:
            raise ImageLoadError(label, "unsupported_format", f"unsupported format: {unsupported}") from exc
        if looks_like_text(raw):  # first: "BMW cars" starts with BMP's two-byte signature
            raise ImageLoadError(label, "not_an_image", "not an image (the file contains text)") from exc
        damaged = _why_not_opened(raw)
        if damaged:
            fmt, why = damaged
            if cut := _container_cut_short(raw):
                error = ImageLoadError(label, "truncated", f"truncated image data ({cut})")
            elif _is_truncation(why):
                error = ImageLoadError(label, "truncated", f"truncated image data (the {fmt} header is cut short)")
            else:
                error = ImageLoadError(label, "corrupt", f"corrupt image header ({fmt}: {_short(why)})")
            error.records = records_only(raw, label, fmt)  # an XMP or C2PA segment may precede the cut
            raise error from exc
        raise ImageLoadError(label, "not_an_image", "not an image (unrecognised data)") from exc
    except ValueError as exc:
        if "MAX_TEXT_" not in str(exc) or not raw.startswith(_PNG_SIGNATURE):
            raise ImageLoadError(label, "corrupt", f"corrupt image header ({_short(exc)})") from exc
        # Pillow refuses a text chunk that inflates past 1 MB (a decompression-bomb guard); the pixels are fine
        try:
            im = Image.open(io.BytesIO(_without_png_text(raw)))
        except (OSError, SyntaxError, ValueError) as again:
            raise ImageLoadError(label, "corrupt", f"corrupt image header ({_short(again)})") from exc
        text_note = "PNG text chunks not read: one inflates past Pillow's 1 MB text limit"
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, and whatever else a decoder raises on damage
        if looks_like_text(raw):  # a text file that starts as a signature ("BMW ..." as a BMP) is no damaged image
            raise ImageLoadError(label, "not_an_image", "not an image (the file contains text)") from exc
        if cut := _container_cut_short(raw):
            error = ImageLoadError(label, "truncated", f"truncated image data ({cut})")
            error.records = records_only(raw, label, _container_format(raw))  # an XMP chunk may precede the cut
            raise error from exc
        if _is_truncation(exc):
            raise ImageLoadError(label, "truncated", "truncated image data (the header is cut short)") from exc
        raise ImageLoadError(label, "corrupt", f"corrupt image header ({_short(exc)})") from exc
    else:
        text_note = None

    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(label, "corrupt", f"corrupt image header (size {width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            label,
            "too_many_pixels",
            f"too many pixels ({width}x{height} = {width * height:,} > limit {limits.max_pixels:,})",
        )
    fmt = im.format
    notes: list[str] = [text_note] if text_note else []
    try:
        frames = getattr(im, "n_frames", 1) or 1
    except Exception as exc:  # noqa: BLE001 - a damaged later frame (a TIFF's next-IFD pointer) spoils only the count
        frames = 1
        notes.append(f"later frames could not be read ({_short(exc)}); judged the first")
        im = _reopen(raw, label)
    if frames > 1:
        im.seek(0)
        notes.append(f"{frames} frames; judged the first")
    if draft_size and fmt == "JPEG":
        im.draft("RGB", draft_size)
    header_info = dict(im.info)  # as opened: the records before the pixel data, before a failed decode touches it
    try:
        _load_pixels(im, label)
    except ImageLoadError as error:
        if error.kind in ("truncated", "corrupt"):
            error.records = records_only(raw, label, fmt, im.mode, (width, height), header_info)
        raise
    if im.size != (width, height):
        notes.append(f"decoded at {im.size[0]}x{im.size[1]} from {width}x{height} (JPEG draft mode)")
    loaded = _from_pil(im, label, limits, raw=raw, fmt=fmt)
    loaded.original_size = (width, height)  # the stored size, also when draft mode decoded less
    loaded.frames = frames
    loaded.notes[:0] = notes
    return loaded


def records_only(raw: bytes, label: str, fmt: str | None, mode: str = "", size: tuple[int, int] = (0, 0),
                 info: dict[str, Any] | None = None) -> LoadedImage:
    """A damaged file as the record-reading probes see it: its bytes, format and header fields, and no pixels.

    ``rgb`` is an empty 0x0 image, so a probe that looked at pixels would fail (and say so) rather than judge a
    placeholder; only C2PA, XMP/IPTC, generation parameters and EXIF are read from it (``synthdetect inspect``)."""
    return LoadedImage(rgb=Image.new("RGB", (0, 0)), source=label, raw=raw, format=fmt, original_mode=mode,
                       original_size=size, info=dict(info or {}),
                       notes=["pixels not decoded: only records in the file's bytes were read"])


def _reopen(raw: bytes, label: str) -> Image.Image:
    """The file opened afresh at its first frame: a failed seek leaves Pillow's image half set up for another."""
    try:
        return Image.open(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - it opened a moment ago; say so if it no longer does
        raise ImageLoadError(label, "corrupt", f"corrupt image header ({_short(exc)})") from exc


def _load_pixels(im: Image.Image, label: str) -> None:
    """Decode now, so a truncated or corrupt file is an error of its own and not a crash in a model.

    Decoders fail on damaged data with more than ``OSError`` (Pillow's TIFF reader raises ``TypeError`` for a
    damaged directory): any of them is this file's error, never the batch's."""
    try:
        im.load()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        message = str(exc).lower()
        if _is_truncation(exc):
            raise ImageLoadError(label, "truncated", "truncated image data") from exc
        if "closed image" in message:
            raise ImageLoadError(label, "unreadable", "the PIL image was closed before it was judged") from exc
        raise ImageLoadError(label, "corrupt", f"corrupt image data ({_short(exc)})") from exc


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _without_png_text(raw: bytes) -> bytes:
    """The PNG with its tEXt/zTXt/iTXt chunks left out (chunk walk: length, type, data, CRC)."""
    kept, offset = [raw[:8]], 8
    while offset + 12 <= len(raw):
        length = int.from_bytes(raw[offset:offset + 4], "big")
        end = offset + 12 + length
        if raw[offset + 4:offset + 8] not in (b"tEXt", b"zTXt", b"iTXt"):
            kept.append(raw[offset:end])
        offset = end
    return b"".join(kept)


def _from_pil(
    im: Image.Image,
    label: str,
    limits: LoadLimits,
    *,
    raw: bytes | None = None,
    fmt: str | None = None,
) -> LoadedImage:
    width, height = im.size
    if width * height == 0:  # Image.new("RGB", (0, 5)) is a valid PIL image with nothing to judge
        raise ImageLoadError(label, "empty", f"empty image ({width}x{height} px): no pixels to judge")
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            label,
            "too_many_pixels",
            f"too many pixels ({width}x{height} = {width * height:,} > limit {limits.max_pixels:,})",
        )
    if raw is None:  # a caller's PIL image may still be lazy: decode it here, inside the error handling
        _load_pixels(im, label)
    original_mode = im.mode
    original_size = im.size
    info = dict(im.info)
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF must not block judging pixels
        exif = None
    # Only 2..8 turn the image (0, 9 or garbage leave it as stored, as Pillow does): ``orientation`` records what
    # was applied, and ELA undoes exactly that to find the file's own pixel grid.
    orientation = exif.get(0x0112, 1) if exif else 1
    if not isinstance(orientation, int) or isinstance(orientation, bool) or not 2 <= orientation <= 8:
        orientation = 1
    try:
        oriented = ImageOps.exif_transpose(im) if orientation != 1 else im
    except Exception:  # noqa: BLE001 - a malformed orientation tag leaves the image as stored
        oriented, orientation = im, 1
    try:
        rgb, had_alpha = to_rgb(oriented, limits.background)
    except (ValueError, OSError) as exc:
        raise ImageLoadError(label, "unsupported_format", f"cannot convert colour mode {im.mode} to RGB "
                                                          f"({_short(exc)})") from exc
    notes = []
    if had_alpha:
        notes.append(f"alpha composited on RGB{limits.background}")
    return LoadedImage(
        rgb=rgb,
        source=label,
        raw=raw,
        format=fmt or im.format,
        original_mode=original_mode,
        original_size=original_size,
        orientation=orientation,
        had_alpha=had_alpha,
        notes=notes,
        info=info,
    )


def to_rgb(im: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> tuple[Image.Image, bool]:
    """Flatten any Pillow mode to 8-bit RGB; returns (image, had_alpha).

    Pillow's own ``convert("RGB")`` clips 16-bit and float data at 255 instead
    of scaling it, so those modes are rescaled here first.
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode == "F":  # NaN (no data) is black and inf the brightest value: one such pixel made the scale NaN
            finite = arr[np.isfinite(arr)]  # and the whole image black, or the rest white
            top = float(finite.max()) if finite.size else 0.0
            arr = np.nan_to_num(arr, nan=0.0, posinf=top, neginf=0.0)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F" and arr.max() <= 1.0:
            peak = 1.0
        arr8 = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB"), False
    if mode in ("RGB",):
        return im, False
    if mode == "La":  # premultiplied alpha; Pillow converts it to straight alpha only as LA
        im, mode = im.convert("LA"), "LA"
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode == "P" and "transparency" in im.info
    ) or (mode in ("L", "RGB") and "transparency" in im.info)
    if has_alpha:
        # Composited a strip at a time: whole, an RGBA copy, an RGBA canvas and the RGB result were held at once
        # (a 9000x8000 PNG with alpha peaked at 1.1 GB).  Compositing is per pixel, so the result is the same.
        out = Image.new("RGB", im.size)
        rows = max(1, ALPHA_STRIP_PIXELS // max(im.width, 1))
        for top in range(0, im.height, rows):
            strip = im.crop((0, top, im.width, min(top + rows, im.height))).convert("RGBA")
            canvas = Image.new("RGBA", strip.size, background + (255,))
            canvas.alpha_composite(strip)
            out.paste(canvas.convert("RGB"), (0, top))
        return out, True
    return im.convert("RGB"), False


#: Pixels composited at once when alpha is flattened (see ``to_rgb``).
ALPHA_STRIP_PIXELS = 1 << 22


def _short(exc: BaseException) -> str:
    return first_line(exc, 160) or type(exc).__name__


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
     ".avif", ".heic", ".heif", ".ppm", ".pgm", ".pbm", ".tga", ".ico", ".jp2"}
)
