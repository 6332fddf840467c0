"""XMP / IPTC / PNG text: declared source types and the names of the tools that wrote the file.

These fields are unsigned: anyone can write or strip them.  So a declared
``trainedAlgorithmicMedia`` or a generator named as the creating tool is
*strong* evidence, never decisive; an editor's name means the file was edited
(which says nothing about how the picture was made); no metadata at all is no
evidence.  The one exception is Midjourney's own PNG record (a prompt ending
in ``Job ID: <uuid>`` plus a ``u<digits>`` author), which only Midjourney
writes: that is the generator's own record and counts as decisive, like the
generation parameters in :mod:`synthdetect.evidence.genparams`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from synthdetect.evidence import clipped, register_probe
from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

IPTC_SOURCE_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: IPTC digital source types, what each means, and which way it points.
#: Only the *trained* (machine-learning) types point to ``ai``; plain
#: ``algorithmicMedia`` is procedural computer graphics, not generative AI.
SOURCE_TYPES: dict[str, tuple[str, str]] = {
    "trainedAlgorithmicMedia": ("ai", "created by a trained generative model"),
    "compositeWithTrainedAlgorithmicMedia": ("ai", "contains parts made by a trained generative model"),
    "algorithmicallyEnhanced": ("edited", "enhanced by an algorithm"),
    "algorithmicMedia": ("none", "computer-generated without training data: procedural, not generative AI"),
    "compositeSynthetic": ("edited", "composite that includes synthetic elements"),
    "composite": ("edited", "composite of several captures"),
    "digitalCapture": ("human", "captured by a camera or scanner"),
    "computationalCapture": ("human", "captured with computational photography"),
    "negativeFilm": ("human", "scanned from a film negative"),
    "positiveFilm": ("human", "scanned from film"),
    "print": ("human", "scanned from a print"),
    "minorHumanEdits": ("edited", "captured and lightly edited"),
    "compositeCapture": ("human", "composite of captures"),
    "digitalArt": ("human", "drawn or painted digitally by a person"),
    "humanEdits": ("edited", "edited by a person"),
    "screenCapture": ("none", "a screenshot"),
    "virtualRecording": ("none", "recording of a virtual scene"),
    "dataDrivenMedia": ("none", "data-driven media"),
    # retired from the vocabulary, still in older files
    "softwareImage": ("none", "created by software, a retired IPTC type that need not mean generative AI"),
    "digitalCreation": ("human", "created digitally by a person, the retired name of digitalArt"),
}
#: The human source types that are captures of a real scene (``digitalArt`` is human-made, but not a capture).
CAPTURE_SOURCE_TYPES = frozenset({"digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm", "print",
                                  "compositeCapture"})
#: Codes as writers spell them (``TrainedAlgorithmicMedia``, all lower case) -> the vocabulary's own spelling.
_SOURCE_TYPE_SPELLING = {name.casefold(): name for name in SOURCE_TYPES}

#: Names that only generative tools write into CreatorTool / Software fields.  Names that are also ordinary words
#: or other products count only in their generator's form: a Hawkeye "Firefly 8SE" action camera, Spanish "imagen"
#: (image) in a viewer's name, or a "Gemini" phone must not read as AI.
GENERATOR_NAMES = (
    "Midjourney", "DALL-E", "DALL·E", "DALLE", "Stable Diffusion", "StableDiffusion", "NovelAI", "Adobe Firefly",
    "Firefly Image", "Google Imagen", "ImageFX", "Ideogram", "Leonardo.Ai",
    "ComfyUI", "InvokeAI", "Fooocus", "AUTOMATIC1111", "NightCafe", "Craiyon", "DreamStudio",
    "Image Creator from Designer", "Bing Image Creator", "Titan Image Generator", "FLUX.1", "OpenAI Sora", "GPT-4o",
    "Google Gemini", "Grok Imagine", "xAI Grok", "Kandinsky", "Playground AI", "SDXL",
)
_GENERATOR_RE = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(n) for n in GENERATOR_NAMES) + r")(?![\w])", re.IGNORECASE
)

#: Editors and raw developers: their name means "edited", never "generated".
EDITOR_NAMES = (
    "Adobe Photoshop", "Photoshop", "Lightroom", "GIMP", "Affinity Photo", "Capture One", "darktable",
    "RawTherapee", "Pixelmator", "Paint.NET", "Snapseed", "Luminar", "DxO", "Photos", "ImageMagick", "Canva",
    "Krita", "Picasa", "ACDSee", "Corel",
)
_EDITOR_RE = re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in EDITOR_NAMES) + r")(?!\w)", re.IGNORECASE)

_MIDJOURNEY_JOB = re.compile(r"Job ID:\s*[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\s*$")
_MIDJOURNEY_AUTHOR = re.compile(r"^u\d{6,}$")


def quoted(value: str, limit: int = 80) -> str:
    """File text as a reason quotes it: on one line and short.  These fields are free text of any length (a 20 KB
    DigitalSourceType made a 20 KB reason, a CreatorTool with line breaks a reason over several lines)."""
    return clipped(" ".join(str(value).split()), limit)


def generator_named_in(text: str | None) -> str | None:
    """The generator a free-text tool field names, if any."""
    if not text:
        return None
    match = _GENERATOR_RE.search(text)
    return match.group(1) if match else None


def editor_named_in(text: str | None) -> str | None:
    if not text:
        return None
    match = _EDITOR_RE.search(text)
    return match.group(1) if match else None


def source_type_name(value: str) -> str:
    """``http(s)://cv.iptc.org/.../trainedAlgorithmicMedia/``, the QCode ``digsrctype:trainedAlgorithmicMedia`` or
    the bare code, in any letter case -> ``trainedAlgorithmicMedia`` (a code not in the vocabulary as written)."""
    name = re.split(r"[/:#]", value.strip().rstrip("/"))[-1].strip()
    return _SOURCE_TYPE_SPELLING.get(name.casefold(), name)


@dataclass
class XmpFields:
    """The few XMP properties the probes read, by local name (namespaces vary between writers)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    well_formed: bool = True  # False: read by pattern from a packet that does not parse as XML

    def get(self, name: str) -> list[str]:
        return self.values.get(name, [])


#: Formats whose main XMP packet Pillow puts in ``info`` when the file has one (PNG's iTXt, WebP's XMP chunk, TIFF
#: tag 700, the HEIF/AVIF metadata item; and JPEG's APP1 XMP segment, the last if an updater left two).  Any other
#: packet in such a file belongs to something embedded in it (an EXIF thumbnail, a second MPF picture, a C2PA
#: ingredient's thumbnail) and says nothing about this picture.
_XMP_IN_INFO = frozenset({"PNG", "WEBP", "TIFF", "HEIF", "AVIF"})


def raw_profile(image: LoadedImage, name: str) -> bytes | None:
    """A profile ImageMagick kept in a PNG text chunk ``Raw profile type <name>`` (newline, name, newline, length,
    newline, the bytes in hex): how ``convert`` carries a JPEG's EXIF and XMP into a PNG.  Pillow leaves it as text."""
    text = image.info.get(f"Raw profile type {name}") if image.format == "PNG" else None
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if not isinstance(text, str):
        return None
    lines = text.split("\n")
    try:
        length, data = int(lines[2]), bytes.fromhex("".join(lines[3:]))
    except (IndexError, ValueError):  # not ImageMagick's layout: nothing to read
        return None
    return data[:length] or None


def _xmp_text(image: LoadedImage) -> str | None:
    """The file's main XMP packet (XMP spec part 3), never one of an image embedded in it."""
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = image.info.get(key)
        if value:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if profile := raw_profile(image, "xmp"):
        return profile.decode("utf-8", "replace")
    raw = image.raw or b""
    if (b"<x:xmpmeta" not in raw and b"<x:xapmeta" not in raw) or image.format in _XMP_IN_INFO:
        return None
    if image.format in ("JPEG", "MPO"):  # an APP1 packet under a header Pillow does not know; never the EXIF's
        own = [s for s in _jpeg_app1_segments(raw) if not s.startswith((b"Exif\0", _EXTENDED_XMP))]
        return _last_packet(b"".join(own))
    if image.format == "PSD":  # its image resource 1060; smart objects further on carry their own files' packets
        return _last_packet(_psd_resource(raw, 1060) or b"")
    # GIF's XMP application extension, JPEG 2000's XMP box...: Pillow hands none over, so scan the bytes.  An updater
    # that cannot rewrite in place appends, so the last complete packet is the current one.
    return _last_packet(raw)


def _last_packet(data: bytes) -> str | None:
    """The last complete packet in ``data``; ``x:xapmeta`` is the root name Photoshop 7 and other writers before
    XMP 2004 used (those files' XMP was missed)."""
    packets = []
    for root in (b"x:xmpmeta", b"x:xapmeta"):
        end = data.rfind(b"</" + root + b">")
        start = data.rfind(b"<" + root, 0, end) if end >= 0 else -1
        if start >= 0:
            packets.append((end, start, end + len(root) + 3))
    if not packets:
        return None
    _, start, stop = max(packets)
    return data[start:stop].decode("utf-8", "replace")


def _psd_resource(raw: bytes, wanted: int) -> bytes | None:
    """One image resource of a Photoshop file, walked as Pillow reads them (Pillow keeps only the ICC profile)."""
    at = 26 + 4 + int.from_bytes(raw[26:30], "big")  # past the header and the colour mode data
    end = min(len(raw), at + 4 + int.from_bytes(raw[at:at + 4], "big"))
    at += 4
    while at + 12 <= end:  # signature, id, Pascal name padded to even, size, data padded to even
        resource = int.from_bytes(raw[at + 4:at + 6], "big")
        at += 6 + (raw[at + 6] + 2) // 2 * 2
        size = int.from_bytes(raw[at:at + 4], "big")
        if resource == wanted:
            return raw[at + 4:at + 4 + size]
        at += 4 + size + (size & 1)
    return None


def _jpeg_app1_segments(raw: bytes) -> list[bytes]:
    """The payloads of the JPEG's own APP1 segments (Pillow reads the markers of the main picture only)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            return [payload for marker, payload in getattr(im, "applist", []) if marker == "APP1"]
    except Exception:  # noqa: BLE001 - a file cut inside its header (inspect reads such a file's records)
        return _complete_app1_segments(raw)


def _complete_app1_segments(raw: bytes) -> list[bytes]:
    """The whole APP1 segments before the point where Pillow's header parse failed (a file cut inside its header):
    each marker's stated length, up to the first scan or the first segment that does not fit in the file."""
    found, at = [], 2
    while at + 4 <= len(raw) and raw[at] == 0xFF:
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0xDA:  # start of scan: the header ends
            break
        length = int.from_bytes(raw[at + 2:at + 4], "big")
        if length < 2 or at + 2 + length > len(raw):  # damaged, or cut: only whole segments are read
            break
        if marker == 0xE1:
            found.append(raw[at + 4:at + 2 + length])
        at += 2 + length
    return found


def read_xmp(image: LoadedImage) -> XmpFields | None:
    """The file's XMP (with a JPEG's extended XMP, where the main packet overflowed) as local-name -> values."""
    main = _xmp_text(image)
    packets = [p for p in (_parse_xmp(main), _parse_xmp(_jpeg_extended_xmp(image, main))) if p is not None]
    if not packets:
        return None
    fields = XmpFields(well_formed=all(p.well_formed for p in packets))
    for packet in packets:
        for key, values in packet.values.items():
            fields.values.setdefault(key, []).extend(values)
    return fields


_EXTENDED_XMP = b"http://ns.adobe.com/xmp/extension/\x00"


def _jpeg_extended_xmp(image: LoadedImage, main: str | None) -> str | None:
    """JPEG extended XMP (XMP spec part 3, 1.1.3.1): what did not fit in the 64 KB main packet, split over APP1
    segments as GUID, full length, offset, chunk.  Pillow keeps only the main packet in ``info``.  Only the chunks
    whose GUID the main packet names (``xmpNote:HasExtendedXMP``) are its extension; others are left over."""
    raw = image.raw or b""
    named = re.search(r"HasExtendedXMP\W{1,3}([0-9A-Fa-f]{32})", main or "")
    if image.format not in ("JPEG", "MPO") or _EXTENDED_XMP not in raw or not named:
        return None
    segments = _jpeg_app1_segments(raw)
    chunks: dict[bytes, dict[int, bytes]] = {}
    for payload in segments:
        if payload.startswith(_EXTENDED_XMP) and len(payload) >= len(_EXTENDED_XMP) + 40:
            rest = payload[len(_EXTENDED_XMP):]
            chunks.setdefault(rest[:32].upper(), {})[int.from_bytes(rest[36:40], "big")] = rest[40:]
    parts = chunks.get(named.group(1).upper().encode(), {})
    return b"".join(part for _, part in sorted(parts.items())).decode("utf-8", "replace") or None


#: The XMP properties the probes read (by local name: namespaces vary between writers).
XMP_PROPERTIES = ("DigitalSourceType", "CreatorTool", "softwareAgent")
#: Packets above this are read by pattern around each property, not parsed: extended XMP (Photoshop's
#: DocumentAncestors) runs to tens of megabytes, and parsing 34 MB of it took 2 s and 147 MB for three properties.
XMP_PARSE_LIMIT = 1 << 20


#: The packet wrapper's processing instructions (short; bounded so that an unclosed one is not scanned to the end of
#: the text from every occurrence: 180 KB of them took 7 s).
_XPACKET = re.compile(r"<\?xpacket[^>]{0,256}\?>")


def _parse_xmp(text: str | None) -> XmpFields | None:
    """Parse one XMP packet into local-name -> values (attributes, element text and list items)."""
    if not text:
        return None
    if not any(name in text for name in XMP_PROPERTIES):
        return XmpFields()
    text = _XPACKET.sub("", text).strip()
    if len(text) > XMP_PARSE_LIMIT:
        return _xmp_by_pattern(text, well_formed=True) or XmpFields()
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return _xmp_by_pattern(text)
    fields = XmpFields()

    def add(key: str, value: str | None) -> None:
        if value and value.strip():
            fields.values.setdefault(key.rsplit("}", 1)[-1], []).append(value.strip())

    stack = [root]  # in document order, without recursion (a packet can nest deeper than Python's stack)
    while stack:
        element = stack.pop()
        if element.tag in _OTHER_DOCUMENTS:
            continue
        for key, value in element.attrib.items():
            add(key, value)
        if len(element) == 0:
            # a property's value is its text, or (RDF's resource form) its rdf:resource attribute
            add(element.tag, element.text or element.attrib.get(_RDF_RESOURCE))
        stack.extend(reversed(element))
    return fields


_RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
#: xmpMM properties about *other* documents: the XMP of placed or embedded files (Pantry) and references to
#: ingredients and sources.  A source type or tool named there is not said of this file.
_OTHER_DOCUMENTS = frozenset(f"{{http://ns.adobe.com/xap/1.0/mm/}}{name}"
                             for name in ("Pantry", "Ingredients", "DerivedFrom", "Manifest"))
#: The properties the probes read, as attribute, element text or rdf:resource, in any prefix.
#: The prefix may start only where a name starts, so a long run of name characters is scanned once, not once per
#: start position (quadratic: 80 KB of letters in a broken packet took 56 s).
_XMP_PROPERTY = re.compile(
    r"(?<![\w.-])[\w.-]{1,64}:(DigitalSourceType|CreatorTool|softwareAgent)"
    r"(?:\s*=\s*[\"']([^\"']*)[\"']|\s*>([^<]*)<|\s+[\w.-]+:resource\s*=\s*[\"']([^\"']*)[\"'])")
_PREFIX_BEFORE = re.compile(r"[\w.-]{1,64}:\Z")
_PATTERN_WINDOW = 4096  # characters read after a property name for its value
_PATTERN_MAX_HITS = 1000  # occurrences read per property: an edit history repeats its agent, never this often


#: An element about another document (any prefix, as in _XMP_PROPERTY): opening, closing or empty.
_OTHER_DOCUMENT_TAG = re.compile(r"<(/?)[\w.-]{1,64}:(Pantry|Ingredients|DerivedFrom|Manifest)\b[^<>]{0,4096}?(/?)>")


def _without_other_documents(text: str) -> str:
    """``text`` less the elements about other documents (``_OTHER_DOCUMENTS``), for the pattern reading, which does
    not see the XML tree: a 1 MB Photoshop packet whose Pantry held a placed Firefly image's XMP was read as AI.
    One pass over the tags, with their nesting counted; an element left open runs to the end."""
    kept, depth, at = [], 0, 0
    for tag in _OTHER_DOCUMENT_TAG.finditer(text):
        closing, empty = tag.group(1), tag.group(3)
        if depth == 0:
            kept.append(text[at:tag.start()])
        if closing:
            depth = max(depth - 1, 0)
        elif not empty:
            depth += 1
        at = tag.end()
    if depth == 0:
        kept.append(text[at:])
    return "".join(kept)


def _xmp_by_pattern(text: str, well_formed: bool = False) -> XmpFields | None:
    """Writers do emit XMP that is not well-formed (an undeclared prefix is enough to fail the parser);
    the few properties read here are still found by pattern rather than dropping the packet unread.

    The pattern is tried only where a property name occurs (found by plain substring search), at most
    :data:`_PATTERN_MAX_HITS` times per property over at most :data:`_PATTERN_WINDOW` characters: the cost is bounded
    whatever the packet holds."""
    text = _without_other_documents(text)
    fields = XmpFields(well_formed=well_formed)
    found: list[tuple[int, str, str]] = []
    for name in XMP_PROPERTIES:
        at, hits = text.find(name), 0
        while at >= 0 and hits < _PATTERN_MAX_HITS:
            hits += 1
            prefix = _PREFIX_BEFORE.search(text, max(0, at - 65), at)
            match = prefix and _XMP_PROPERTY.match(text, prefix.start(), at + len(name) + _PATTERN_WINDOW)
            value = next((v for v in match.groups()[1:] if v and v.strip()), None) if match else None
            if value:
                found.append((at, name, value.strip()))
            at = text.find(name, at + len(name))
    for _, name, value in sorted(found):
        fields.values.setdefault(name, []).append(value)
    return fields if fields.values else None


def _png_text(image: LoadedImage, key: str) -> str | None:
    value = image.info.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value.strip() else None


@register_probe("metadata")
def probe_metadata(image: LoadedImage) -> list[Evidence]:
    found: list[Evidence] = []
    found.extend(_midjourney(image))
    xmp = read_xmp(image)
    if xmp is not None:
        found.extend(_source_types(xmp))
        found.extend(_xmp_tools(xmp))
    found.extend(_png_tools(image))
    return found


def _midjourney(image: LoadedImage) -> list[Evidence]:
    description, author = _png_text(image, "Description"), _png_text(image, "Author")
    if not description or not _MIDJOURNEY_JOB.search(description):
        return []
    job = description.rsplit("Job ID:", 1)[1].strip()
    author_ok = bool(author and _MIDJOURNEY_AUTHOR.match(author.strip()))
    strength = "decisive" if author_ok else "strong"
    detail = f"Midjourney's own PNG metadata (prompt with Job ID {job}" + (f", author {author})" if author_ok else ")")
    return [Evidence("metadata", "ai", strength, detail,
                     {"tool": "midjourney", "job_id": job, "author": author, "prompt": description[:500]})]


def _source_types(xmp: XmpFields) -> list[Evidence]:
    """One record per source type: a packet may spell the same type several ways (the http and https IPTC URIs,
    a trailing slash, the ``digsrctype:`` code), and each spelling had been a record of its own."""
    found, named = [], set()
    for value in dict.fromkeys(xmp.get("DigitalSourceType")):
        name = source_type_name(value)
        if name in named:
            continue
        named.add(name)
        signal, meaning = SOURCE_TYPES.get(name, ("none", "an unknown source type"))
        # Unsigned: a declared source type is strong at most, and the human
        # types only weak (a camera-style label is the easiest thing to fake).
        strength = {"ai": "strong", "human": "weak", "edited": "info", "none": "info"}[signal]
        found.append(Evidence("metadata", signal, strength,
                              f"XMP/IPTC DigitalSourceType {quoted(name)} ({meaning}; unsigned metadata"
                              f"{'' if xmp.well_formed else ', in an XMP packet that is not well-formed XML'})",
                              {"field": "Iptc4xmpExt:DigitalSourceType", "value": value}))
    return found


def _tool_evidence(field_name: str, value: str) -> Evidence | None:
    generator = generator_named_in(value)
    if generator:
        return Evidence("metadata", "ai", "strong",
                        f"{field_name} names the generator {generator!s} ('{quoted(value)}')",
                        {"field": field_name, "value": value, "generator": generator})
    editor = editor_named_in(value)
    if editor:
        return Evidence("metadata", "edited", "info",
                        f"{field_name} '{quoted(value)}': edited in {editor} (says nothing about how it was made)",
                        {"field": field_name, "value": value, "editor": editor})
    return None


def _xmp_tools(xmp: XmpFields) -> list[Evidence]:
    found: list[Evidence] = []
    for field_name, local in (("XMP CreatorTool", "CreatorTool"), ("XMP history softwareAgent", "softwareAgent")):
        for value in dict.fromkeys(xmp.get(local)):  # a history repeats the same agent for every save
            if record := _tool_evidence(field_name, value):
                found.append(record)
    return found


def _png_tools(image: LoadedImage) -> list[Evidence]:
    found = []
    for key in ("Software", "Source", "Creator", "Generator"):
        value = _png_text(image, key)
        if value and (record := _tool_evidence(f"PNG {key}", value)):
            found.append(record)
    return found
