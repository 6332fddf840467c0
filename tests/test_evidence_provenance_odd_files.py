"""Provenance in unusual places and encodings, and metadata built to be expensive: found, and read in bounded time."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from evidence_fakes import encode
from synthdetect.evidence import run_probes
from synthdetect.evidence.genparams import decode_user_comment
from synthdetect.evidence.metadata import read_xmp
from synthdetect.images import load_image

PIXELS = (np.random.default_rng(5).random((64, 64, 3)) * 255).astype(np.uint8)
AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def _xmp_packet(description_attrs: str) -> bytes:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description '
            f'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" {description_attrs}/></rdf:RDF></x:xmpmeta>').encode()


def _with_app1(jpeg: bytes, payloads: list[bytes]) -> bytes:
    segments = b"".join(b"\xff\xe1" + (len(p) + 2).to_bytes(2, "big") + p for p in payloads)
    return jpeg[:2] + segments + jpeg[2:]


def _probe(data: bytes, name: str):
    return run_probes(load_image(data), [name])


# -- JPEG extended XMP ---------------------------------------------------------------------------
def _extended_xmp_jpeg(split: int | None = None) -> bytes:
    """A JPEG whose DigitalSourceType sits in extended XMP (where Photoshop moves what overflows the 64 KB packet)."""
    extension = _xmp_packet(f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE}"')
    guid = hashlib.md5(extension).hexdigest().upper().encode()
    main = b"http://ns.adobe.com/xap/1.0/\x00" + _xmp_packet(f'xmpNote:HasExtendedXMP="{guid.decode()}"')
    header = b"http://ns.adobe.com/xmp/extension/\x00" + guid + len(extension).to_bytes(4, "big")
    # the chunks in reverse file order: readers must place each by its offset
    chunks = [header + (0).to_bytes(4, "big") + extension] if split is None else [
        header + split.to_bytes(4, "big") + extension[split:], header + (0).to_bytes(4, "big") + extension[:split]]
    return _with_app1(encode(PIXELS, "JPEG"), [main, *chunks])


@pytest.mark.parametrize("split", [None, 57])
def test_digital_source_type_in_jpeg_extended_xmp_is_read(split):
    records = [e for e in _probe(_extended_xmp_jpeg(split), "metadata") if e.signal == "ai"]
    assert [(r.strength, r.data["value"]) for r in records] == [("strong", AI_SOURCE)]


def test_only_the_extended_xmp_the_main_packet_names_is_read():
    stale = _xmp_packet('Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"')
    stale_chunk = (b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + len(stale).to_bytes(4, "big")
                   + (0).to_bytes(4, "big") + stale)
    data = _with_app1(_extended_xmp_jpeg(), [stale_chunk])
    assert read_xmp(load_image(data)).get("DigitalSourceType") == [AI_SOURCE]


# -- EXIF UserComment in UTF-16 little-endian (exiftool writes the EXIF's own byte order) -----------
NON_ASCII_PARAMETERS = ("一只在雪地里的水彩狐狸，非常详细，杰作，最好的质量，高分辨率，"
                        "雪山，森林，冬天的早晨\n"
                        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: anything-v5")


@pytest.mark.parametrize("codec", ["utf-16-be", "utf-16-le"])
def test_webui_parameters_with_a_non_ascii_prompt_in_either_byte_order(codec):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + NON_ASCII_PARAMETERS.encode(codec)
    record, = _probe(encode(PIXELS, "JPEG", exif=exif.tobytes()), "genparams")
    assert (record.signal, record.strength) == ("ai", "decisive")
    assert record.data["prompt"].startswith("一只在雪地里的水彩狐狸")
    assert record.data["model"] == "anything-v5"


@pytest.mark.parametrize("codec", ["utf-16-be", "utf-16-le", "utf-16"])
def test_user_comment_without_ascii_or_with_a_byte_order_mark(codec):
    text = "雪地里的水彩狐狸"
    assert decode_user_comment(b"UNICODE\x00" + text.encode(codec)) == text
    assert decode_user_comment(b"UNICODE\x00" + "Hi".encode(codec)) == "Hi"


# -- TIFF: the EXIF is the file's own IFD ----------------------------------------------------------
def _tiff(tags: dict[int, object], exif_tags: dict[int, object]) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    for tag, value in exif_tags.items():
        exif.get_ifd(0x8769)[tag] = value
    return encode(PIXELS, "TIFF", exif=exif.tobytes())


def test_camera_exif_in_a_tiff_is_read():
    data = _tiff({0x010F: "Nikon", 0x0110: "NIKON D850"}, {0x9003: "2021:03:04 05:06:07", 0x829A: 0.002})
    record, = _probe(data, "exif")
    assert (record.signal, record.strength) == ("human", "weak")
    assert "NIKON D850" in record.detail and "1/500s" in record.detail


def test_a_generator_in_tiff_software_is_read():
    record, = _probe(_tiff({0x0131: "Adobe Firefly"}, {}), "exif")
    assert (record.signal, record.strength, record.data["generator"]) == ("ai", "strong", "Adobe Firefly")


# -- cost: a broken XMP packet built to make the fallback pattern quadratic ------------------------
def test_the_xmp_fallback_pattern_starts_only_where_a_name_starts():
    """Each match may start only at the start of a name, so a long run of letters is scanned once, not once per
    position (the old pattern took 3 s on 20 KB of letters, 56 s on 80 KB, growing as the square)."""
    from synthdetect.evidence.metadata import _XMP_PROPERTY

    text = ' xmp:CreatorTool="Midjourney"'
    assert _XMP_PROPERTY.match(text, 1) is not None
    assert all(_XMP_PROPERTY.match(text, start) is None for start in (2, 3))
    assert _XMP_PROPERTY.match(" " + "a" * 65 + ':CreatorTool="x"', 1) is None  # no prefix is that long


def test_a_broken_packet_with_a_long_run_of_letters_still_yields_its_properties():
    packet = b"<x:xmpmeta><broken " + b"a" * 20000 + b' xmp:CreatorTool="Midjourney"</x:xmpmeta>'
    image = load_image(encode(PIXELS, "PNG"))
    image.info["xmp"] = packet
    fields = read_xmp(image)
    assert fields.get("CreatorTool") == ["Midjourney"] and not fields.well_formed


def test_user_comment_marked_unicode_but_written_as_utf8():
    text = "a fox, café\nSteps: 20, Sampler: Euler, Seed: 1"
    assert decode_user_comment(b"UNICODE\x00" + text.encode("utf-8")) == text


# -- EXIF values no camera writes -------------------------------------------------------------------
@pytest.mark.parametrize("exposure", [-0.01, float("inf")])
def test_negative_or_infinite_exposure_is_not_an_exposure_setting(exposure):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 80D"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:01 10:00:00"
    exif.get_ifd(0x8769)[0x829A] = exposure
    record, = _probe(encode(PIXELS, "JPEG", exif=exif.tobytes()), "exif")
    assert (record.signal, record.strength) == ("none", "info")
    assert "no exposure settings" in record.detail and "1/-" not in record.detail and "1/0s" not in record.detail


# -- a crashing probe: reported on one readable line, the others still run --------------------------
@pytest.mark.parametrize("error,shown", [
    (KeyError("ckpt_name"), "probe failed: explodes raised KeyError: 'ckpt_name'"),
    (RuntimeError("Verify: manifest failed validation with: failures:\n  assertion.hashedURI.mismatch"),
     "probe failed: explodes raised RuntimeError: Verify: manifest failed validation with: failures:"),
    (ValueError(), "probe failed: explodes raised ValueError"),
])
def test_a_crashing_probe_is_named_on_one_line_and_the_others_still_run(error, shown):
    from synthdetect.evidence import _ON_REQUEST, _PROBES, register_probe

    @register_probe("explodes", default=False)
    def explodes(image):
        raise error

    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly"
    try:
        found = run_probes(load_image(encode(PIXELS, "JPEG", exif=exif.tobytes())), ["explodes", "exif"])
    finally:
        _PROBES.pop("explodes")
        _ON_REQUEST.discard("explodes")
    failed, after = found
    assert (failed.signal, failed.strength, failed.detail) == ("none", "info", shown)
    assert failed.data["probe_failed"] and (after.kind, after.signal) == ("exif", "ai")


# -- ComfyUI's WebP saver writes its graphs into EXIF Make / Model as "workflow:{...}" / "prompt:{...}" --
def _comfy_exif(prompt: bool = True, workflow: bool = True) -> bytes:
    import json

    from evidence_fakes import COMFY_PROMPT, COMFY_WORKFLOW

    exif = Image.Exif()
    if prompt:
        exif[0x0110] = "prompt:" + json.dumps(COMFY_PROMPT)
    if workflow:
        exif[0x010F] = "workflow:" + json.dumps(COMFY_WORKFLOW)
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG"])
@pytest.mark.parametrize("prompt,workflow", [(True, True), (False, True), (True, False)])
def test_comfyui_graph_in_exif_make_and_model_is_decisive(fmt, prompt, workflow):
    data = encode(PIXELS, fmt, exif=_comfy_exif(prompt, workflow))
    record, = _probe(data, "genparams")
    assert (record.signal, record.strength, record.data["tool"]) == ("ai", "decisive", "comfyui")
    assert record.data["models"] == ["sd_xl_base_1.0.safetensors"]
    assert ("Model ('prompt:')" in record.detail) is prompt and ("Make ('workflow:')" in record.detail) is workflow


def test_a_comfyui_graph_in_exif_is_not_reported_as_a_camera_name():
    assert _probe(encode(PIXELS, "WEBP", exif=_comfy_exif()), "exif") == []


# -- cost: megabytes of XMP (Photoshop's DocumentAncestors in extended XMP) are not parsed into a tree -------
def _ancestors_packet(items: int, properties: str) -> bytes:
    ancestors = "".join(f"<rdf:li>xmp.did:{i:032x}</rdf:li>" for i in range(items))
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description '
            f'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            f'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" {properties}>'
            f'<photoshop:DocumentAncestors><rdf:Bag>{ancestors}</rdf:Bag></photoshop:DocumentAncestors>'
            f'</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def _no_tree(monkeypatch):
    from synthdetect.evidence import metadata

    def refuse(*args, **kwargs):
        raise AssertionError("the packet was parsed into a tree")

    monkeypatch.setattr(metadata.ET, "fromstring", refuse)


def test_a_packet_over_the_parse_limit_is_read_around_its_properties(monkeypatch):
    packet = _ancestors_packet(40000, f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE}" xmp:CreatorTool="Midjourney"')
    assert len(packet) > (1 << 20)
    image = load_image(encode(PIXELS, "PNG"))
    image.info["xmp"] = packet
    _no_tree(monkeypatch)
    fields = read_xmp(image)
    assert fields.get("DigitalSourceType") == [AI_SOURCE] and fields.get("CreatorTool") == ["Midjourney"]
    assert fields.well_formed  # not claimed broken just because it was not parsed


def test_a_packet_without_the_properties_read_is_not_parsed(monkeypatch):
    image = load_image(encode(PIXELS, "PNG"))
    image.info["xmp"] = _ancestors_packet(2000, "")
    _no_tree(monkeypatch)
    assert run_probes(image, ["metadata"]) == []


def test_the_pattern_reads_a_bounded_number_of_occurrences():
    from synthdetect.evidence import metadata

    text = 'x:CreatorTool="Midjourney" ' * (metadata._PATTERN_MAX_HITS + 50)
    assert len(metadata._xmp_by_pattern(text).get("CreatorTool")) == metadata._PATTERN_MAX_HITS


def test_long_exif_strings_are_shortened_in_the_reason():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon " + "X" * 5000
    exif[0x0131] = "Adobe Photoshop " + "9" * 5000
    found = _probe(encode(PIXELS, "JPEG", exif=exif.tobytes()), "exif")
    assert [e.signal for e in found] == ["none", "edited"]
    assert all(len(e.detail) < 300 for e in found), [len(e.detail) for e in found]
    generator = Image.Exif()
    generator[0x0131] = "Midjourney " + "v" * 5000
    record, = _probe(encode(PIXELS, "JPEG", exif=generator.tobytes()), "exif")
    assert record.signal == "ai" and len(record.detail) < 300


def test_generation_records_give_one_short_line_whatever_their_values():
    import json

    from evidence_fakes import png_with_text

    webui = "a fox\nSteps: 20, Sampler: " + "Euler " * 2000 + ", Seed: 1, Model: " + "m" * 3000
    swarm = json.dumps({"sui_image_params": {"model": "line one\nline two " + "x" * 3000, "steps": 20}})
    graph = {str(i): {"inputs": {"lora_name": f"lora_{i}.safetensors"}, "class_type": "LoraLoader"} for i in range(40)}
    for chunks in ({"parameters": webui}, {"parameters": swarm}, {"prompt": json.dumps(graph)}):
        record, = _probe(png_with_text(PIXELS, chunks), "genparams")
        assert record.strength == "decisive" and "\n" not in record.detail and len(record.detail) < 400, record.detail
    assert "and 34 more" in record.detail and len(record.data["models"]) == 40


@pytest.mark.parametrize("tag,field", [(0x0131, "Software"), (0x010F, "Make"), (0x0110, "Model")])
def test_the_exif_generator_reason_quotes_the_field_that_names_it(tag, field):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS 80D", "Adobe Lightroom"
    exif[tag] = "Stable Diffusion 3.5"
    record, = _probe(encode(PIXELS, "JPEG", exif=exif.tobytes()), "exif")
    assert (record.signal, record.strength, record.data["field"]) == ("ai", "strong", field)
    assert record.detail == f"EXIF {field} names the generator Stable Diffusion ('Stable Diffusion 3.5')"


def test_the_xpacket_wrapper_pattern_is_bounded_and_still_strips_real_wrappers():
    """An unclosed ``<?xpacket`` was scanned to the end of the text from every occurrence (180 KB: 7 s)."""
    from synthdetect.evidence.metadata import _XPACKET

    assert _XPACKET.search("<?xpacket" + "a" * 300 + "?>") is None
    wrapped = ("<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>"
               + _xmp_packet('xmp:CreatorTool="Midjourney" xmlns:xmp="http://ns.adobe.com/xap/1.0/"').decode()
               + "<?xpacket end='w'?>")
    image = load_image(encode(PIXELS, "PNG"))
    image.info["xmp"] = ("<?xpacket" * 2000) + wrapped
    assert read_xmp(image).get("CreatorTool") == ["Midjourney"]
    image.info["xmp"] = wrapped
    fields = read_xmp(image)
    assert fields.get("CreatorTool") == ["Midjourney"] and fields.well_formed
