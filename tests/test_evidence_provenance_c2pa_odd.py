"""C2PA on files that only look as if they might hold a manifest, and on manifests damaged in place."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evidence_fakes import c2pa_sign, encode, make_cert_chain, textured_rgb
from synthdetect.evidence import run_probes
from synthdetect.images import load_image

pytest.importorskip("c2pa", reason="c2pa-python is a core dependency; install the package")


def _c2pa(data: bytes):
    return run_probes(load_image(data), ["c2pa"])


def test_the_bytes_c2pa_in_a_format_c2pa_does_not_support_are_not_a_manifest():
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[0, :2] = [(ord("c"), ord("2"), ord("p")), (ord("a"), 0, 0)]  # BMP stores rows bottom-up, BGR: still there
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "BMP")
    data = buffer.getvalue() + b"c2pa"
    assert b"c2pa" in data
    assert _c2pa(data) == []


@pytest.fixture(scope="module")
def signed():
    return c2pa_sign(encode(textured_rgb(320, seed=3), "JPEG", quality=90), "image/jpeg", make_cert_chain())


@pytest.mark.parametrize("offset", [100, 500, 1500, 3000])
def test_a_manifest_overwritten_in_place_is_never_a_trusted_or_decisive_claim(signed, offset):
    start = signed.find(b"c2pa")
    damaged = bytearray(signed)
    damaged[start + offset:start + offset + 40] = b"\xaa" * 40
    record, = _c2pa(bytes(damaged))
    unreadable = record.data.get("probe_failed") and (record.signal, record.strength) == ("none", "info")
    assert (record.signal in ("tampered", "unverified") or unreadable) and record.strength != "decisive"
    assert "\n" not in record.detail


@pytest.mark.parametrize("code", ["signingCredential.revoked", "signingCredential.ocsp.revoked"])
def test_a_revoked_vendor_certificate_makes_the_claim_unverified(monkeypatch, code):
    """Expiry and a missing EKU stay notes on a verified chain; revocation means the issuer withdrew the key."""
    from evidence_fakes import pin_intermediate
    from synthdetect.evidence import c2pa as c2pa_probe

    chain = make_cert_chain("OpenAI")
    pin_intermediate(chain, monkeypatch)
    facts = c2pa_probe.read_manifest(c2pa_sign(encode(textured_rgb(320, seed=3), "JPEG"), "image/jpeg", chain))
    assert c2pa_probe.describe(facts).strength == "decisive"
    facts.credential_notes.append(f"{code} (certificate revoked)")
    record = c2pa_probe.describe(facts)
    assert (record.signal, record.strength) == ("unverified", "moderate")
    assert f"its signing certificate was revoked by its issuer ({code}" in record.detail
    for other in ("signingCredential.expired (certificate expired)", "signingCredential.invalid (missing EKU)"):
        facts.credential_notes[-1] = other
        assert c2pa_probe.describe(facts).strength == "decisive"


def _sign_edit_only(image: bytes, chain: dict) -> bytes:
    import json

    import c2pa

    created = {"action": "c2pa.created",
               "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCreation"}
    manifest = {"claim_generator_info": [{"name": "synthdetect-tests", "version": "1.0"}], "title": "edit.jpg",
                "assertions": [{"label": "c2pa.actions",
                                "data": {"actions": [created, {"action": "c2pa.color_adjustments"}]}}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain["chain_pem"], chain["key_pem"], None))
    with c2pa.Builder(json.dumps(manifest)) as builder:
        out = io.BytesIO()
        builder.sign(signer, "image/jpeg", io.BytesIO(image), out)
    return out.getvalue()


def test_a_signer_name_from_an_unverified_certificate_is_never_stated_as_fact():
    """A self-made certificate can say O=OpenAI: every reason that names it must say it is not verified."""
    from evidence_fakes import tamper_pixels

    jpeg = encode(textured_rgb(320, seed=3), "JPEG", quality=90)
    forged = make_cert_chain("OpenAI")
    edited, = _c2pa(_sign_edit_only(jpeg, forged))
    tampered, = _c2pa(tamper_pixels(c2pa_sign(jpeg, "image/jpeg", forged)))
    assert (edited.signal, tampered.signal) == ("edited", "tampered")
    for record in (edited, tampered):
        assert "signed by 'OpenAI' (certificate not verified)" in record.detail, record.detail


def test_a_verified_signer_is_named_plainly(monkeypatch):
    from evidence_fakes import pin_intermediate

    chain = make_cert_chain("OpenAI")
    pin_intermediate(chain, monkeypatch)
    record, = _c2pa(_sign_edit_only(encode(textured_rgb(320, seed=3), "JPEG", quality=90), chain))
    assert record.signal == "edited" and "signed by OpenAI (claim generator" in record.detail
