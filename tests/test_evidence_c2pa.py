"""C2PA: manifests signed here with a certificate the test creates are claims, not proof; tampering is reported."""

from __future__ import annotations

import hashlib

import pytest

from evidence_fakes import c2pa_sign, encode, make_cert_chain, tamper_pixels, textured_rgb
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
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    chain = make_cert_chain("OpenAI")
    intermediate = x509.load_pem_x509_certificates(chain["chain_pem"])[1]
    fingerprint = hashlib.sha256(intermediate.public_bytes(Encoding.DER)).hexdigest()
    monkeypatch.setitem(c2pa_probe.PINNED_CAS, fingerprint, "test-pinned CA")
    record = _c2pa(c2pa_sign(jpeg, "image/jpeg", chain))[0]
    assert (record.signal, record.strength) == ("ai", "decisive")
    assert "signed by OpenAI declares trainedAlgorithmicMedia" in record.detail
    assert record.data["pinned_ca"] == "test-pinned CA"
    # the same pinned CA vouching for an organisation that is not a known generator: still only a claim
    other = make_cert_chain("Some Startup")
    inter2 = x509.load_pem_x509_certificates(other["chain_pem"])[1]
    monkeypatch.setitem(c2pa_probe.PINNED_CAS, hashlib.sha256(inter2.public_bytes(Encoding.DER)).hexdigest(), "x")
    assert _c2pa(c2pa_sign(jpeg, "image/jpeg", other))[0].signal == "unverified"


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
