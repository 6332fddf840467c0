"""Provenance and metadata evidence (helper audit, session 24): odd values and manifests reported as what they are,
in one short line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthdetect.evidence import run_probes
from synthdetect.images import load_image

PIXELS = (np.random.default_rng(24).random((32, 32, 3)) * 255).astype(np.uint8)


def _camera_jpeg(settings: dict[int, float]) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Canon", "Canon EOS 5D", "2020:01:01 10:00:00"
    sub = exif.get_ifd(0x8769)
    sub.update(settings)
    out = io.BytesIO()
    Image.fromarray(PIXELS).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("settings, shown", [
    ({0x829A: 5e-324}, "4.94e-324s"),  # a DOUBLE exposure time: 1/x is infinite (raised OverflowError)
    ({0x829A: 1e300}, "1e+300s"),
    ({0x829D: 1e300}, "f/1e+300"),  # printed 300 digits
    ({0x8827: 10 ** 9}, "ISO 1e+09"),  # a LONG ISO no sensor has
    ({0x829A: 1 / 250, 0x829D: 2.8, 0x8827: 100}, "1/250s f/2.8 ISO 100"),  # a camera's own values, as before
])
def test_exposure_settings_no_camera_records_are_shown_short_and_never_crash(settings, shown):
    [record] = run_probes(load_image(_camera_jpeg(settings)), ["exif"])
    assert (record.signal, record.strength) == ("human", "weak")
    assert f"captured 2020:01:01 10:00:00, {shown} (weak" in record.detail
    assert len(record.detail) < 150


def _png_with_itxt(chunks: dict[str, str]) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key, value)
    out = io.BytesIO()
    Image.fromarray(PIXELS).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _xmp(source_type: str, tool: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'xmlns:xmp="http://ns.adobe.com/xap/1.0/"><Iptc4xmpExt:DigitalSourceType>{source_type}'
            f'</Iptc4xmpExt:DigitalSourceType><xmp:CreatorTool>{tool}</xmp:CreatorTool></rdf:Description></rdf:RDF>'
            '</x:xmpmeta>')


def test_metadata_reasons_quote_free_text_on_one_short_line():
    data = _png_with_itxt({"XML:com.adobe.xmp": _xmp("x" * 20000, "Stable Diffusion\nline two\rthree"),
                           "Software": "GIMP 2.10\n\n" + "y" * 300})
    records = run_probes(load_image(data), ["metadata"])
    assert {(r.signal, r.strength) for r in records} == {("none", "info"), ("ai", "strong"), ("edited", "info")}
    for record in records:
        assert "\n" not in record.detail and "\r" not in record.detail and len(record.detail) < 200, record.detail
    assert "('Stable Diffusion line two three')" in " ".join(r.detail for r in records)
    assert any(len(r.data.get("value", "")) == 20000 for r in records)  # the record keeps the field whole


def test_c2pa_reasons_quote_the_manifests_free_text_on_one_short_line():
    pytest.importorskip("c2pa")
    from evidence_fakes import c2pa_sign, encode, make_cert_chain

    signed = c2pa_sign(encode(PIXELS, "JPEG"), "image/jpeg", make_cert_chain(),
                       agent="Test\nDiffusion " + "z" * 5000)
    [record] = run_probes(load_image(signed), ["c2pa"])
    assert (record.signal, record.strength) == ("unverified", "moderate")
    assert "\n" not in record.detail and len(record.detail) < 400, record.detail
    assert "Test Diffusion zzz" in record.detail and record.data["software_agent"].endswith("z" * 5000)


REMOTE = "https://cai-manifests.adobe.com/manifests/adobe-urn-uuid-5f37e182-3687-462e-a7fb-573462780391"


@pytest.mark.parametrize("url", [REMOTE, "https://example.com/m.c2pa"])
def test_a_manifest_kept_remotely_is_named_as_not_fetched(url):
    """Adobe's 'publish to the cloud' leaves only an XMP link.  Without the bytes "c2pa" in it the file had no record
    at all; with them, it read as damaged data ("C2PA data present but unreadable")."""
    pytest.importorskip("c2pa")
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           f'<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="{url}"/></rdf:RDF>'
           '</x:xmpmeta>')
    out = io.BytesIO()
    Image.fromarray(PIXELS).save(out, "JPEG", xmp=xmp.encode())
    [record] = run_probes(load_image(out.getvalue()), ["c2pa"])
    assert (record.signal, record.strength) == ("none", "info")
    assert record.data["remote_manifest"] == url and record.data["probe_failed"]  # the verdict says it was not read
    assert f"kept remotely at {url}, not fetched" in record.detail and "unreadable" not in record.detail


def test_the_word_provenance_alone_is_no_manifest():
    out = io.BytesIO()
    Image.fromarray(PIXELS).save(out, "JPEG", comment=b"provenance: my own camera")
    assert run_probes(load_image(out.getvalue()), ["c2pa"]) == []


def test_the_novelai_reason_quotes_its_source_on_one_short_line():
    data = _png_with_itxt({"Software": "NovelAI", "Comment": '{"steps": 28, "sampler": "k_euler"}',
                           "Source": "Stable Diffusion XL\nC1E1DE52 " + "s" * 5000})
    [record] = run_probes(load_image(data), ["genparams"])
    assert (record.signal, record.strength) == ("ai", "decisive")
    assert record.detail.startswith("NovelAI generation parameters (Stable Diffusion XL C1E1DE52 sss")
    assert "\n" not in record.detail and len(record.detail) < 150


@pytest.mark.parametrize("description, claim", [
    ("AI Generated Image", "ai"),  # Bing Image Creator's own wording
    ("Captured on device, not AI-generated", "none"),
    ("No generative AI was used", "none"),
    ("non-generative filter applied", "none"),
    ("made without any generative tools", "none"),
])
def test_a_created_action_that_denies_ai_is_no_ai_declaration(description, claim):
    from synthdetect.evidence.c2pa import _classify_claim

    manifest = {"assertions": [{"label": "c2pa.actions", "data": {"actions": [
        {"action": "c2pa.created", "softwareAgent": "Camera App 2.1", "description": description}]}}]}
    assert _classify_claim([manifest])[0] == claim
