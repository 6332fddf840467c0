"""The image parts of a ``multipart/form-data`` body, read with python-multipart's streaming parser.

Starlette's ``request.form()`` makes a part a file only when it has a
``filename``; a part without one (``curl -F 'files=<x.jpg'``, some HTTP
clients) becomes a text field capped at 1 MB and the image is lost.  Here a
part is an upload when it has a filename, is a non-empty part of the ``files``
field, declares an ``image/*`` or ``application/octet-stream`` type, or holds
bytes that are not text (``curl -F 'image=<x.jpg'`` in any field name): a file
sent in an unexpected field is judged, never dropped.  Text fields (a caption,
an option) are skipped.  Parts are held as bytes: the body guard bounds the total.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from synthdetect.images import looks_like_text
from synthdetect.server.limits import ServiceError

FILES_FIELD = "files"
BINARY_TYPES = (b"application/octet-stream",)


@dataclass
class _Part:
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    is_image: bool = False
    data: bytearray = field(default_factory=bytearray)
    size: int = 0


def _text(raw: bytes) -> str:
    """Browsers send UTF-8 names; anything else is kept byte for byte as latin-1, as Starlette does."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _extended_filename(disposition: str) -> str | None:
    """The RFC 5987 ``filename*`` (``filename*=utf-8''%E6%97%A5.png``), preferred over ``filename`` (RFC 6266).

    .NET's HttpClient sends non-ASCII names as ``filename="=?utf-8?B?...?="; filename*=utf-8''...`` and older
    urllib3 as ``filename*`` alone; python-multipart drops ``filename*`` (RFC 7578 forbids it), so the verdict
    would name the file ``=?utf-8?B?...?=`` or ``upload-1``.  The stdlib's email parser decodes it.
    """
    if "filename*" not in disposition.lower():
        return None
    message = Message()
    message["content-disposition"] = disposition
    extended = [value for key, value in message.get_params(header="content-disposition") or []
                if key == "filename" and isinstance(value, tuple)]
    if not extended:
        return None
    return collapse_rfc2231_value(extended[-1]) or None  # an empty filename* leaves the plain filename


#: What browsers escape in a multipart file name (HTML's multipart/form-data encoding algorithm).
_BROWSER_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n"}


def disposition_filename(disposition: str, form_part: bool = False) -> str | None:
    """The file name a ``Content-Disposition`` value gives (``filename*`` first, then ``filename``), made one line.

    Used for multipart parts and for a raw body's own header (``curl -H 'Content-Disposition: attachment;
    filename="x.jpg"'``, .NET's ``ByteArrayContent``), so both name a file the same way.  In a form part, the
    ``%22``, ``%0D`` and ``%0A`` that browsers write for ``"``, CR and LF are read back (the web page's upload of
    ``my "best".jpg`` came back as ``my %22best%22.jpg``); other percent signs are the name's own.
    """
    filename = _extended_filename(disposition)
    if filename is None:
        _, options = parse_options_header(disposition)
        if b"filename" in options:
            filename = _text(options[b"filename"])
            if form_part:
                filename = re.sub("%22|%0D|%0A", lambda m: _BROWSER_ESCAPES[m.group(0)], filename)
    return None if filename is None else client_name(filename)


def client_name(name: str) -> str:
    """A file name a client chose, with control characters and line breaks shown as ``?`` (as ``ls`` does).

    The name starts every error message of its file; a newline in it would
    split the one-line message (and a log or terminal line) in two.
    """
    return "".join("?" if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in name)


_FORM_PART_START = re.compile(rb"--[^\r\n]{1,200}\r?\n(?:[^\r\n]*\r?\n){0,8}?content-disposition:", re.IGNORECASE)


def looks_like_form(body: bytes) -> bool:
    """Whether a raw body is a multipart message: a ``--boundary`` line, then a part's ``Content-Disposition``.

    ``curl -H 'Content-Type: image/png' -F files=@x.png`` sends its form (parts ``attachment``, not ``form-data``,
    once the type is not multipart) under the type it was told; judged as one image, it read "upload: not an
    image (unrecognised data)" though an image was sent.  No image format starts with ``--`` and a MIME header.
    """
    return bool(_FORM_PART_START.match(body[:4096]))


class _ImageCollector:
    """python-multipart callbacks that keep image parts and count everything against the limits."""

    def __init__(self) -> None:
        self.part = _Part()
        self.images: list[tuple[str | None, bytes]] = []
        self.fields = 0
        self.ignored: list[str] = []  # fields with bytes that were not taken for images, for the no_files message

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.part.header_name).lower()] = bytes(self.part.header_value)
        self.part.header_name, self.part.header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        part = self.part
        disposition = part.headers.get(b"content-disposition", b"").decode("latin-1")
        _, options = parse_options_header(disposition)
        part.name = _text(options.get(b"name", b""))
        part.filename = disposition_filename(disposition, form_part=True)
        media, _ = parse_options_header(part.headers.get(b"content-type", b"").decode("latin-1"))
        part.is_image = (part.filename is not None or part.name == FILES_FIELD
                         or media.startswith(b"image/") or media in BINARY_TYPES)
        if not part.is_image:
            self.fields += 1

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.part.size += end - start
        self.part.data += data[start:end]  # a field's bytes too: binary ones are an upload (on_part_end)

    def on_part_end(self) -> None:
        part = self.part
        encoding = part.headers.get(b"content-transfer-encoding", b"").strip().lower()
        if encoding == b"base64":  # RFC 7578 deprecates it, but mail-style MIME writers still send it
            try:
                part.data = bytearray(base64.b64decode(b"".join(part.data.split()), validate=True))  # lines joined
            except binascii.Error as exc:
                raise ServiceError(400, "bad_multipart", f"malformed multipart body (part '{client_name(part.name)}'"
                                                         f" says base64 but is not: {exc})") from None
            part.size = len(part.data)
        # A named file is kept even when empty (its verdict says "empty file"); a bare empty field is no upload,
        # nor is an empty part with an empty name (what a browser sends for a file input left empty).
        if part.is_image and (part.filename or part.data):
            self.images.append((part.filename, bytes(part.data)))
        elif part.is_image:
            self.fields += 1  # dropped, but it counts: else a body of empty parts would be parsed without limit
        elif part.size and not looks_like_text(part.data):
            self.fields -= 1  # an upload in a field of another name: counted as a file, not a field
            self.images.append((None, bytes(part.data)))
        elif part.size:
            self.ignored.append(f"'{client_name(part.name)}' ({part.size:,} bytes)")


async def _without_preamble(chunks: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[bytes]:
    """The body from its first ``--boundary`` line on: RFC 2046 allows a preamble before it (MIME writers put
    "This is a multi-part message in MIME format." there; hand-made bodies a blank line or text); python-multipart
    refused it with 400 "Expected boundary character 45, got 84".

    The preamble is dropped as it streams (only a boundary's length is kept), so it costs no memory; a body
    with text but no boundary line is malformed, an empty or blank one has no image.
    """
    delimiter = b"--" + boundary
    head, at_start, text_seen = b"", True, False
    chunks_left = aiter(chunks)
    async for chunk in chunks_left:
        head += chunk
        if at_start and head.startswith(delimiter):
            first = head
            break
        line_start = head.find(b"\n" + delimiter)
        if line_start >= 0:
            first = head[line_start + 1:]
            break
        text_seen = text_seen or bool(head.strip())
        at_start = at_start and len(head) < len(delimiter)
        head = head[-len(delimiter):]  # a delimiter cut between two chunks is found with the next one
    else:
        if text_seen or head.strip():
            raise ServiceError(400, "bad_multipart", "malformed multipart body (no line starts with '--' and the "
                                                     "boundary of its content type)")
        return
    async for chunk in chunks_left:  # enough of the first line to see how it ends
        if len(first) > len(delimiter) + 1:
            break
        first += chunk
    else:
        chunk = b""
    if first[len(delimiter):len(delimiter) + 1] == b"\n":  # python-multipart's own message named a byte code
        raise ServiceError(400, "bad_multipart", "malformed multipart body (its lines end with LF alone; "
                                                 "multipart/form-data needs CRLF line ends, RFC 7578)")
    yield first
    if chunk:
        yield chunk
    async for chunk in chunks_left:
        yield chunk


async def image_parts(content_type: str, chunks: AsyncIterator[bytes], max_files: int,
                      max_fields: int) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` per image part; a part without a file name is called ``upload-N``."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ServiceError(400, "bad_multipart", "malformed multipart body (no boundary in the content type)")
    collector = _ImageCollector()
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end")}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        async for chunk in _without_preamble(chunks, boundary):
            parser.write(chunk)
            if len(collector.images) > max_files:
                raise ServiceError(413, "too_many_files", f"too many files (more than the limit of {max_files})")
            if collector.fields > max_fields:
                raise ServiceError(400, "bad_multipart", f"too many form fields (more than {max_fields})")
        parser.finalize()
    except FormParserError as exc:
        raise ServiceError(400, "bad_multipart", f"malformed multipart body ({exc})") from None
    # python-multipart's finalize() does not check the end: a cut body (a Content-Length shorter than the body,
    # a dropped upload) would silently lose its last file. An empty body has no parts and no image.
    if parser.state not in (MultipartState.START, MultipartState.END):
        where = f" in {collector.part.filename}" if collector.part.filename else ""
        raise ServiceError(400, "bad_multipart",
                           f"malformed multipart body (truncated{where}: it ends before the closing boundary)")
    if not collector.images and collector.ignored:
        # Only text fields were sent (a caption, a path typed as text): say which, and how to send an image.
        shown = ", ".join(collector.ignored[:5]) + (", ..." if len(collector.ignored) > 5 else "")
        raise ServiceError(422, "no_files", f"no image in the request: field(s) {shown} hold text, not a file; send "
                                            f"images in the '{FILES_FIELD}' field or with a file name")
    return [(name or f"upload-{i + 1}", data) for i, (name, data) in enumerate(collector.images)]
