"""C2PA: manifests signed here with a certificate the test creates are claims, not proof; tampering is reported."""

from __future__ import annotations

import hashlib

import pytest

from evidence_fakes import (c2pa_sign, c2pa_sign_over_parent, encode, make_cert_chain, pin_intermediate,
                            plant_in_comment, tamper_pixels, textured_rgb)
from synthdetect.evidence import c2pa as c2pa_probe
from synthdetect.evidence import run_probes
from synthdetect.images import load_image

pytest.importorskip("c2pa", reason="c2pa-python is a core dependency; install the package")


@pytest.fixture(scope="module")
def jpeg():
    return encode(textured_rgb(320, seed=3), "JPEG", quality=90)


@pytest.fixture(scope="module")
def own_chain():
    return make_cert_chain("Synthdetect Test Generator")


@pytest.fixture(scope="module")
def signed(jpeg, own_chain):
    return c2pa_sign(jpeg, "image/jpeg", own_chain)


def _c2pa(data: bytes):
    return [e for e in run_probes(load_image(data)) if e.kind == "c2pa"]


def test_self_signed_ai_declaration_is_an_unverified_claim(signed):
    found = _c2pa(signed)
    assert len(found) == 1
    record = found[0]
    assert record.signal == "unverified" and record.strength == "moderate"
    assert "trainedAlgorithmicMedia" in record.detail and "not proof" in record.detail
    assert record.data["claim"] == "ai" and record.data["declared"] == "trainedAlgorithmicMedia"
    assert record.data["signer"] == "Synthdetect Test Generator"
    assert record.data["software_agent"] == "Test Diffusion 1.0"
    assert not record.data["integrity_failures"]


def test_tampered_copy_is_reported_as_tampered(signed):
    tampered = tamper_pixels(signed)
    assert tampered != signed
    record = _c2pa(tampered)[0]
    assert record.signal == "tampered" and record.strength == "strong"
    assert record.data["integrity_failures"]
    assert "changed after signing" in record.detail


def test_a_vendor_name_in_a_self_made_certificate_is_not_trusted(jpeg):
    forged = c2pa_sign(jpeg, "image/jpeg", make_cert_chain("OpenAI"))
    record = _c2pa(forged)[0]
    assert record.data["signer"] == "OpenAI"
    assert record.signal == "unverified", "an organisation name alone must never make a claim decisive"


def test_pinned_ca_and_known_vendor_make_the_claim_decisive(jpeg, monkeypatch):
    """The trusted path, exercised with a CA this test creates and pins (as a deployment would pin a vendor's CA)."""
    chain = make_cert_chain("OpenAI")
    pin_intermediate(chain, monkeypatch)
    record = _c2pa(c2pa_sign(jpeg, "image/jpeg", chain))[0]
    assert (record.signal, record.strength) == ("ai", "decisive")
    assert "signed by OpenAI declares trainedAlgorithmicMedia" in record.detail
    assert record.data["pinned_ca"] == "test-pinned CA"
    assert record.data["signing_certificates"][0]["serial"] == format(chain["leaf"].serial_number, "x")
    # the same pinned CA vouching for an organisation that is not a known generator: still only a claim
    other = make_cert_chain("Some Startup")
    pin_intermediate(other, monkeypatch, "x")
    record = _c2pa(c2pa_sign(jpeg, "image/jpeg", other))[0]
    assert record.signal == "unverified" and "'Some Startup' is not a known generator" in record.detail


def test_a_vendor_certificate_planted_beside_a_forged_signature_is_not_trusted(jpeg, monkeypatch):
    """The vendor's real certificates elsewhere in the file, the forger's copying its name and serial: untrusted.

    Trust is read from the certificate that made the signature, never from a certificate found by serial number.
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    vendor = make_cert_chain("OpenAI")
    pin_intermediate(vendor, monkeypatch)
    forger = make_cert_chain("OpenAI", leaf_serial=vendor["leaf"].serial_number)
    planted = [vendor[k].public_bytes(Encoding.DER) for k in ("leaf", "intermediate")]
    forged = c2pa_sign(plant_in_comment(jpeg, planted), "image/jpeg", forger)
    assert planted[0] in forged
    record = _c2pa(forged)[0]
    assert record.data["signer"] == "OpenAI" and not record.data["integrity_failures"]
    assert record.signal == "unverified" and record.data["pinned_ca"] is None
    assert "no certificate chain to a pinned CA" in record.detail


def test_an_inherited_declaration_is_trusted_only_through_trusted_signers(jpeg, monkeypatch):
    """The manifest that makes the declaration must verify, and so must every manifest signed over it."""
    vendor, editor = make_cert_chain("OpenAI"), make_cert_chain("Adobe Inc.")
    pin_intermediate(vendor, monkeypatch, "vendor CA")
    pin_intermediate(editor, monkeypatch, "editor CA")
    edit = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
            {"action": "c2pa.color_adjustments", "softwareAgent": "Photo Editor 1.0"}]
    # trusted generator, trusted editor: decisive, and the detail names who declared what
    both = _c2pa(c2pa_sign_over_parent(c2pa_sign(jpeg, "image/jpeg", vendor), "image/jpeg", editor, edit))[0]
    assert (both.signal, both.strength) == ("ai", "decisive"), both.detail
    assert "signed by Adobe Inc. holds a parent ingredient whose manifest, signed by OpenAI, declares" in both.detail
    assert both.data["pinned_ca"] == "vendor CA" and len(both.data["signing_certificates"]) == 2
    # a self-made 'generator' under a trusted editor: the editor vouches for its edit, not for the parent's claim
    stranger = c2pa_sign(jpeg, "image/jpeg", make_cert_chain("Random Person"))
    record = _c2pa(c2pa_sign_over_parent(stranger, "image/jpeg", editor, edit))[0]
    assert record.signal == "unverified" and "that ingredient's signer 'Random Person'" in record.detail
    # a trusted generator's manifest re-signed by a self-made certificate: the file's own signer is not trusted
    resigned = c2pa_sign_over_parent(c2pa_sign(jpeg, "image/jpeg", vendor), "image/jpeg",
                                     make_cert_chain("Someone"), edit)
    record = _c2pa(resigned)[0]
    assert record.signal == "unverified" and "its signer 'Someone'" in record.detail


def test_trusted_algorithmic_media_is_not_generative_ai(jpeg, monkeypatch):
    """IPTC algorithmicMedia is procedural graphics made without training data: reported, never 'ai'."""
    vendor = make_cert_chain("Adobe Inc.")
    pin_intermediate(vendor, monkeypatch)
    record = _c2pa(c2pa_sign(jpeg, "image/jpeg", vendor, source_type="algorithmicMedia"))[0]
    assert (record.signal, record.strength) == ("none", "info")
    assert "not by a generative model" in record.detail


def test_unreadable_signature_data_gives_no_chain():
    from synthdetect.evidence.c2pa_signers import pinned_ca, signer_of, signing_chain

    assert signing_chain(b"", "urn:x") == [] and signing_chain(b"\x00\x00\x00\x10jumbgarbage!", "urn:x") == []
    assert pinned_ca([], {}) is None
    assert signer_of(None, "urn:x", {}).pinned_ca is None


def test_png_manifest_and_capture_claim(own_chain):
    png = encode(textured_rgb(300, seed=4), "PNG")
    record = _c2pa(c2pa_sign(png, "image/png", own_chain, source_type="digitalCapture", agent="Test Camera"))[0]
    assert record.data["claim"] == "capture"
    assert record.signal == "unverified" and record.strength == "weak"


def test_garbage_c2pa_bytes_are_reported_not_fatal(jpeg):
    # a JPEG whose comment mentions c2pa but holds no manifest: cheap pre-check passes, reader finds nothing
    data = jpeg[:2] + b"\xff\xfe\x00\x0ac2pa-ish" + jpeg[2:]
    assert _c2pa(data) == []


def test_files_without_manifest_skip_the_reader(jpeg, monkeypatch):
    import c2pa

    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("reader called on a file without a c2pa label")

    monkeypatch.setattr(c2pa.Reader, "try_create", boom)
    assert _c2pa(jpeg) == []
