"""Audit of the provenance probes: unreadable C2PA data claims nothing, XMP is read from the file's own packet,
IPTC source types as writers spell them, and ``inspect`` decides once whether the watermark can be checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from evidence_fakes import c2pa_sign, encode, make_cert_chain, textured_rgb
from synthdetect.evidence import run_probes
from synthdetect.evidence.metadata import _parse_xmp as read_xmp_text
from synthdetect.images import load_image

PIXELS = textured_rgb(64, seed=11)
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def _xmp(source_type: str) -> bytes:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'Iptc4xmpExt:DigitalSourceType="{source_type}"/></rdf:RDF></x:xmpmeta>').encode()


def _metadata(data: bytes):
    return run_probes(load_image(data), ["metadata"])


# -- C2PA data that cannot be read ----------------------------------------------------------------
@pytest.fixture(scope="module")
def unreadable_manifest() -> bytes:
    pytest.importorskip("c2pa", reason="c2pa-python is a core dependency; install the package")
    signed = c2pa_sign(encode(textured_rgb(320, seed=3), "JPEG", quality=90), "image/jpeg", make_cert_chain())
    start = signed.find(b"c2pa")
    damaged = bytearray(signed)
    damaged[start + 100:start + 140] = b"\xaa" * 40  # inside the manifest store's box headers: c2pa-rs cannot parse it
    return bytes(damaged)


def test_unreadable_c2pa_data_is_a_note_that_claims_nothing(unreadable_manifest):
    """It was an 'unverified' record of 'moderate' strength, as if some signer had claimed something."""
    record, = run_probes(load_image(unreadable_manifest), ["c2pa"])
    assert record.detail.startswith("C2PA data present but unreadable (")
    assert (record.signal, record.strength) == ("none", "info")
    assert record.data["probe_failed"] is True


def test_a_verdict_says_the_c2pa_data_could_not_be_read_and_the_model_decides(unreadable_manifest):
    from synthdetect.fusion import fuse
    from synthdetect.models.base import Model, ModelScore

    class Fixed(Model):
        def logits(self, images):  # pragma: no cover - fusion never calls the model
            raise AssertionError

    model = Fixed({"name": "m", "kind": "test", "decision": {"ai_at_or_above": 0.9, "human_below": 0.1}})
    evidence = run_probes(load_image(unreadable_manifest), ["c2pa"])
    for p, label in ((0.05, "human"), (0.95, "ai"), (0.5, "uncertain")):
        fused = fuse(evidence, ModelScore("m", 0.0, p), model)
        assert fused.label == label
        assert fused.reasons[0].startswith("no provenance found (but 1 record(s) could not be read: C2PA data present "
                                           "but unreadable"), fused.reasons
        assert len(fused.reasons) == 1  # not listed again as if it were a claim


@pytest.mark.parametrize("source_type", ["digitalArt", "digitalCreation"])
def test_a_c2pa_declaration_of_digital_art_is_not_a_camera_capture(source_type):
    """It was reported as "declares a camera capture (digitalArt)": human-made, but no capture of a scene."""
    pytest.importorskip("c2pa", reason="c2pa-python is a core dependency; install the package")
    signed = c2pa_sign(encode(textured_rgb(300, seed=4), "PNG"), "image/png", make_cert_chain(), source_type=source_type,
                       agent="Test Paint 1.0")
    record, = run_probes(load_image(signed), ["c2pa"])
    assert record.data["claim"] == "none" and "camera capture" not in record.detail, record.detail
    assert (record.signal, record.strength) == ("none", "info")


# -- which XMP packet is the file's --------------------------------------------------------------
def _exif_app1_with_thumbnail(thumbnail_jpeg: bytes) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    body = exif.tobytes()
    body = body if body.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + body
    return body + thumbnail_jpeg  # the thumbnail's bytes travel inside the EXIF segment


def _with_app1(jpeg: bytes, payloads: list[bytes]) -> bytes:
    segments = b"".join(b"\xff\xe1" + (len(p) + 2).to_bytes(2, "big") + p for p in payloads)
    return jpeg[:2] + segments + jpeg[2:]


def test_an_embedded_thumbnails_xmp_is_not_the_files():
    """A JPEG with no XMP of its own took the first packet anywhere in its bytes: here, its EXIF thumbnail's."""
    thumbnail = encode(PIXELS[:16, :16], "JPEG", xmp=_xmp(IPTC + "trainedAlgorithmicMedia"))
    data = _with_app1(encode(PIXELS, "JPEG"), [_exif_app1_with_thumbnail(thumbnail)])
    assert _metadata(data) == []
    captured = encode(PIXELS, "JPEG", xmp=_xmp(IPTC + "digitalCapture"))
    found = _metadata(_with_app1(captured, [_exif_app1_with_thumbnail(thumbnail)]))
    assert [(e.signal, e.data["value"]) for e in found] == [("human", IPTC + "digitalCapture")]


def test_a_packet_inside_another_png_chunk_is_not_the_files():
    """PNG's XMP is its iTXt chunk; a JPEG kept in a private chunk (a preview, an ingredient) has its own."""
    thumbnail = encode(PIXELS[:16, :16], "JPEG", xmp=_xmp(IPTC + "trainedAlgorithmicMedia"))
    png = encode(PIXELS, "PNG")
    chunk = b"prVw" + thumbnail
    import zlib

    private = len(thumbnail).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    data = png[:33] + private + png[33:]  # after IHDR
    assert load_image(data).format == "PNG"
    assert _metadata(data) == []


def test_an_app1_packet_under_an_unfamiliar_header_is_still_read():
    data = _with_app1(encode(PIXELS, "JPEG"), [b"XMP\x00://ns.adobe.com/xap/1.0/\x00" + _xmp(IPTC + "trainedAlgorithmicMedia")])
    assert "xmp" not in load_image(data).info  # Pillow does not hand this one over
    assert [(e.signal, e.strength) for e in _metadata(data)] == [("ai", "strong")]


def _extension(packet: bytes, guid: bytes) -> bytes:
    return (b"http://ns.adobe.com/xmp/extension/\x00" + guid + len(packet).to_bytes(4, "big") + (0).to_bytes(4, "big")
            + packet)


@pytest.mark.parametrize("names", [None, "0123456789ABCDEF0123456789ABCDEF"])
def test_extended_xmp_the_main_packet_does_not_name_is_not_the_files(names):
    """Extension chunks count only under the GUID the main packet names; they were all read when it named none, or
    one that is not there (left over from an earlier save)."""
    note = f' xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="{names}"' if names else ""
    main = (b"http://ns.adobe.com/xap/1.0/\x00" + _xmp(IPTC + "digitalCapture").replace(
        b"<rdf:Description ", f"<rdf:Description{note} ".encode()))
    stale = _extension(_xmp(IPTC + "trainedAlgorithmicMedia"), b"FEDCBA9876543210FEDCBA9876543210")
    found = _metadata(_with_app1(encode(PIXELS, "JPEG"), [main, stale]))
    assert [(e.signal, e.data["value"]) for e in found] == [("human", IPTC + "digitalCapture")]


def _gif_with_xmp(*packets: bytes) -> bytes:
    gif = encode(PIXELS, "GIF")
    trailer = bytes([1, *range(255, -1, -1), 0])  # the XMP spec's "magic trailer" for GIF
    extensions = b"".join(b"\x21\xff\x0bXMP DataXMP" + packet + trailer for packet in packets)
    return gif[:-1] + extensions + gif[-1:]


def test_the_last_packet_an_updater_appended_is_the_current_one():
    """Where Pillow hands no packet over (GIF), the bytes are scanned: the old reader took the first, stale one."""
    data = _gif_with_xmp(_xmp(IPTC + "digitalCapture"), _xmp(IPTC + "trainedAlgorithmicMedia"))
    assert [(e.signal, e.data["value"]) for e in _metadata(data)] == [("ai", IPTC + "trainedAlgorithmicMedia")]
    assert [e.signal for e in _metadata(_gif_with_xmp(_xmp(IPTC + "trainedAlgorithmicMedia")))] == ["ai"]


def _imagemagick_profile(name: str, data: bytes) -> str:
    """ImageMagick's PNG text for a profile: newline, name, newline, length in 8 columns, newline, hex in lines of 72."""
    hexed = data.hex()
    return f"\n{name}\n{len(data):8d}\n" + "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72)) + "\n"


def test_exif_and_xmp_that_imagemagick_carried_into_a_png_are_read():
    """``convert photo.jpg photo.png`` keeps EXIF and XMP as 'Raw profile type' text chunks: they were not read."""
    from evidence_fakes import WEBUI_PARAMETERS, camera_exif, exif_user_comment

    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", _imagemagick_profile("exif", camera_exif()), zip=True)
    info.add_text("Raw profile type xmp", _imagemagick_profile("xmp", _xmp(IPTC + "trainedAlgorithmicMedia")), zip=True)
    found = run_probes(load_image(encode(PIXELS, "PNG", pnginfo=info)), ["metadata", "exif"])
    assert {(e.kind, e.signal, e.strength) for e in found} == {
        ("metadata", "ai", "strong"), ("exif", "human", "weak"), ("exif", "edited", "info")}
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", _imagemagick_profile("exif", exif_user_comment(WEBUI_PARAMETERS)), zip=True)
    record, = run_probes(load_image(encode(PIXELS, "PNG", pnginfo=info)), ["genparams"])
    assert (record.signal, record.strength, record.data["where"]) == ("ai", "decisive", "EXIF UserComment")


def test_text_that_only_looks_like_an_imagemagick_profile_is_no_metadata():
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "\nexif\n  not a number\nzz")
    info.add_text("Raw profile type xmp", "just words")
    assert run_probes(load_image(encode(PIXELS, "PNG", pnginfo=info)), ["metadata", "exif", "genparams"]) == []


# -- IPTC DigitalSourceType as writers spell it ---------------------------------------------------
def _png_xmp(source_type: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _xmp(source_type).decode(), zip=True)
    return encode(PIXELS, "PNG", pnginfo=info)


@pytest.mark.parametrize("value, signal, name", [
    (IPTC + "trainedAlgorithmicMedia", "ai", "trainedAlgorithmicMedia"),
    ("https://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia/", "ai",
     "compositeWithTrainedAlgorithmicMedia"),
    (IPTC + "TrainedAlgorithmicMedia", "ai", "trainedAlgorithmicMedia"),
    (IPTC.upper() + "TRAINEDALGORITHMICMEDIA", "ai", "trainedAlgorithmicMedia"),
    ("digsrctype:trainedAlgorithmicMedia", "ai", "trainedAlgorithmicMedia"),  # the vocabulary's QCode form
    (" trainedalgorithmicmedia ", "ai", "trainedAlgorithmicMedia"),
    (IPTC + "algorithmicMedia", "none", "algorithmicMedia"),
    (IPTC + "compositeSynthetic", "edited", "compositeSynthetic"),
    (IPTC + "DIGITALCAPTURE", "human", "digitalCapture"),
    (IPTC + "softwareImage", "none", "softwareImage"),  # retired codes, still in older files
    (IPTC + "digitalCreation", "human", "digitalCreation"),
])
def test_digital_source_types_as_writers_spell_them(value, signal, name):
    record, = _metadata(_png_xmp(value))
    assert (record.signal, record.data["value"]) == (signal, value.strip())
    assert f"DigitalSourceType {name} (" in record.detail and "an unknown source type" not in record.detail
    assert record.strength == {"ai": "strong", "human": "weak", "none": "info", "edited": "info"}[signal]


# -- inspect --------------------------------------------------------------------------------------
def test_inspect_reads_a_coarse_jpegs_tables_once(tmp_path, monkeypatch):
    """``inspect`` ran the watermark probe, which read the JPEG's tables to decide not to decode, then read them again
    to say why.  (A JPEG it does decode is still read twice, by ``not_checked`` and by the probe: see the report.)"""
    from synthdetect.cli import app
    from synthdetect.evidence import watermark

    calls: list[str] = []
    real = watermark.mark_can_survive

    def counted(image):
        calls.append(image.source)
        return real(image)

    monkeypatch.setattr(watermark, "mark_can_survive", counted)
    rng = np.random.default_rng(0)
    files = []
    for name, quality in (("coarse.jpg", 75), ("fine.jpg", 98)):
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(path, quality=quality)
        files.append(str(path))
    result = CliRunner().invoke(app, ["inspect", *files, "-p", "watermark", "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    assert calls.count(files[0]) == 1
    rows = {json.loads(line)["file"]: json.loads(line) for line in result.stdout.splitlines()}
    assert "quality 90 or coarser" in rows[files[0]]["not_checked"]["watermark"]
    assert rows[files[1]]["not_checked"] == {}


def test_a_probe_named_twice_reports_its_findings_once(tmp_path):
    from evidence_fakes import camera_exif
    from synthdetect.cli import app

    path = tmp_path / "camera.jpg"
    path.write_bytes(encode(PIXELS, "JPEG", exif=camera_exif()))
    result = CliRunner().invoke(app, ["inspect", str(path), "-p", "exif", "-p", "exif", "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    row, = map(json.loads, result.stdout.splitlines())
    assert [(e["signal"], e["strength"]) for e in row["evidence"]] == [("human", "weak"), ("edited", "info")]


def test_what_the_xmp_says_of_placed_documents_is_not_said_of_the_file():
    """xmpMM:Pantry holds the XMP of documents placed in this one; their source type and tool were read as the file's."""
    rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    packet = (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{rdf}"><rdf:Description rdf:about="" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" '
        f'Iptc4xmpExt:DigitalSourceType="{IPTC}digitalCapture">'
        '<xmpMM:History><rdf:Seq><rdf:li stEvt:action="saved" stEvt:softwareAgent="GIMP 2.10"/></rdf:Seq></xmpMM:History>'
        '<xmpMM:Pantry><rdf:Bag><rdf:li><rdf:Description xmp:CreatorTool="Adobe Firefly" '
        f'Iptc4xmpExt:DigitalSourceType="{IPTC}trainedAlgorithmicMedia"/></rdf:li></rdf:Bag></xmpMM:Pantry>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>')
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    found = _metadata(encode(PIXELS, "PNG", pnginfo=info))
    assert sorted((e.signal, e.strength) for e in found) == [("edited", "info"), ("human", "weak")], found
    # Over the parse limit (read by pattern) and not well-formed (read by pattern): the same. A 1 MB Photoshop
    # packet was read as AI from its Pantry; "<x/>" nests an empty element inside the placed document's entry.
    own = f'Iptc4xmpExt:DigitalSourceType="{IPTC}digitalCapture"'
    padding = "<xmpMM:History>" + " " * (1 << 20) + "</xmpMM:History>"
    for variant in (packet.replace("</rdf:Description></rdf:RDF>", padding + "</rdf:Description></rdf:RDF>"),
                    packet.replace('xmlns:xmp="http://ns.adobe.com/xap/1.0/" ', ""),
                    packet.replace("<rdf:Bag>", '<rdf:Bag><xmpMM:DerivedFrom stRef:documentID="x"/>')):
        fields = read_xmp_text(variant)
        assert fields.get("DigitalSourceType") == [IPTC + "digitalCapture"], (len(variant), fields.values)
        assert fields.get("CreatorTool") == [] and own in variant


def _psd(resources: list[tuple[int, bytes]], layer_data: bytes) -> bytes:
    """A 2x2 RGB Photoshop file: header, image resources, a layer section holding ``layer_data``, raw pixels."""
    blocks = b""
    for resource, data in resources:
        blocks += b"8BIM" + resource.to_bytes(2, "big") + b"\x00\x00" + len(data).to_bytes(4, "big") + data
        blocks += b"\x00" * (len(data) & 1)
    header = b"8BPS" + (1).to_bytes(2, "big") + b"\x00" * 6 + (3).to_bytes(2, "big") + (2).to_bytes(4, "big") * 2
    header += (8).to_bytes(2, "big") + (3).to_bytes(2, "big")
    layers = b"\x00" * 8 + layer_data  # no layers, no global mask, then "additional layer information"
    return (header + b"\x00" * 4 + len(blocks).to_bytes(4, "big") + blocks + len(layers).to_bytes(4, "big") + layers
            + b"\x00\x00" + bytes(range(12)))


def test_a_packet_under_the_pre_2004_root_name_is_read():
    """Photoshop 7 and other early writers named the root x:xapmeta; such a file's XMP was missed."""
    old_root = _xmp(IPTC + "trainedAlgorithmicMedia").replace(b"x:xmpmeta", b"x:xapmeta")
    assert [(e.signal, e.strength) for e in _metadata(_psd([(1060, old_root)], b""))] == [("ai", "strong")]
    both = _xmp(IPTC + "digitalCapture") + old_root  # an updater appends: the last complete packet is current
    assert [e.signal for e in _metadata(_psd([(1060, both)], b""))] == ["ai"]
    assert [e.signal for e in _metadata(_psd([(1060, old_root + _xmp(IPTC + "digitalCapture"))], b""))] == ["human"]


def test_a_photoshop_files_xmp_is_its_resource_not_a_smart_objects():
    """Smart objects embed whole files, each with its packet, after the resources; the file's XMP is resource 1060."""
    embedded = b"8BIMlnk2" + encode(PIXELS[:8, :8], "JPEG", xmp=_xmp(IPTC + "trainedAlgorithmicMedia"))
    data = _psd([(1036, b"thumbnail"), (1060, _xmp(IPTC + "digitalCapture"))], embedded)
    assert load_image(data).format == "PSD"
    assert [(e.signal, e.data["value"]) for e in _metadata(data)] == [("human", IPTC + "digitalCapture")]
    assert _metadata(_psd([(1036, b"thumbnail")], embedded)) == []


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF", "HEIF", "TIFF"])
def test_xmp_and_exif_of_formats_whose_packet_pillow_hands_over_are_read(fmt):
    """These formats are no longer scanned byte by byte for a packet, so Pillow must hand over the file's own."""
    from evidence_fakes import camera_exif

    options = {"tiffinfo": {700: _xmp(IPTC + "trainedAlgorithmicMedia")}} if fmt == "TIFF" else {
        "xmp": _xmp(IPTC + "trainedAlgorithmicMedia"), "exif": camera_exif()}
    try:
        data = encode(PIXELS, fmt, **options)
    except (KeyError, OSError, ValueError) as exc:
        pytest.skip(f"no {fmt} encoder here ({exc})")
    found = {(e.kind, e.signal) for e in run_probes(load_image(data), ["metadata", "exif"])}
    assert ("metadata", "ai") in found
    assert fmt == "TIFF" or ("exif", "human") in found
