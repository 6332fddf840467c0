"""Test images carrying provenance, made here: a C2PA manifest signed with a certificate the test creates,
WebUI / ComfyUI parameters, and a Stable Diffusion dwtDct watermark.  Nothing is downloaded."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
from PIL import Image, PngImagePlugin

WEBUI_PARAMETERS = (
    "a watercolour fox in a snowy forest, highly detailed\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x512, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Version: v1.10.1"
)

COMFY_PROMPT = {
    "4": {"inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}, "class_type": "CheckpointLoaderSimple"},
    "6": {"inputs": {"text": "a fox", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
    "3": {"inputs": {"seed": 5, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "model": ["4", 0]},
          "class_type": "KSampler"},
}
COMFY_WORKFLOW = {"last_node_id": 6, "last_link_id": 3,
                  "nodes": [{"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["sd_xl_base_1.0.safetensors"]}]}


def textured_rgb(size: int = 512, seed: int = 0) -> np.ndarray:
    """A smooth, colourful picture (not noise) that behaves like a photo under JPEG and the watermark."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = []
    for c in range(3):
        f1, f2, phase = rng.uniform(1, 6, 3)
        channels.append(0.5 + 0.35 * np.sin(2 * np.pi * (f1 * xx + phase)) * np.cos(2 * np.pi * f2 * yy + c))
    arr = np.stack(channels, axis=2) * 255 + rng.normal(0, 4, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_with_text(arr: np.ndarray, chunks: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    return encode(arr, "PNG", pnginfo=info)


def exif_user_comment(text: str, unicode: bool = True) -> bytes:
    """EXIF bytes with UserComment, encoded as the WebUI writes it (piexif's UNICODE, UTF-16 big-endian)."""
    exif = Image.Exif()
    payload = b"UNICODE\x00" + text.encode("utf-16-be") if unicode else b"ASCII\x00\x00\x00" + text.encode()
    exif.get_ifd(0x8769)[0x9286] = payload
    return exif.tobytes()


def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS 5D Mark IV", "Adobe Lightroom Classic 12.0"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2021:06:05 14:22:01"
    sub[0x829A] = 0.004
    sub[0x829D] = 5.6
    sub[0x8827] = 200
    return exif.tobytes()


def strip_metadata(data: bytes) -> bytes:
    """Decode and re-encode pixels only: no text chunks, EXIF, XMP or manifest survive."""
    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format
        arr = np.asarray(im.convert("RGB"))
    return encode(arr, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))


# -- C2PA -----------------------------------------------------------------------------------------
def make_cert_chain(org: str = "Synthdetect Test Generator", leaf_serial: int | None = None):
    """A root CA, an intermediate and an end-entity signing certificate, C2PA-profile compliant (ES256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str, o: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, issuer, key, issuer_key, ca: bool, path_len=None, serial=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(serial or x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                  critical=False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                            critical=True)
        else:
            builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                                            critical=True)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                            critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name, inter_name = name("Test Root CA", org), name("Test Intermediate CA", org)
    root = build(root_name, root_name, root_key, root_key, True, 1)
    inter = build(inter_name, root_name, inter_key, root_key, True, 0)
    leaf = build(name("Test Signer", org), inter_name, leaf_key, inter_key, False, serial=leaf_serial)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    return {"chain_pem": pem(leaf) + pem(inter), "key_pem": key_pem, "root": root, "root_pem": pem(root),
            "leaf": leaf, "intermediate": inter}


def pin_intermediate(chain: dict, monkeypatch, name: str = "test-pinned CA") -> None:
    """Pin the chain's intermediate CA, as a deployment pins a vendor's CA."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    from synthdetect.evidence import c2pa as c2pa_probe

    der = chain["intermediate"].public_bytes(Encoding.DER)
    monkeypatch.setitem(c2pa_probe.PINNED_CAS, hashlib.sha256(der).hexdigest(), name)


def plant_in_comment(jpeg: bytes, payloads: list[bytes]) -> bytes:
    """Put bytes in JPEG comment segments right after SOI: present in the file, part of no manifest."""
    segments = b"".join(b"\xff\xfe" + (len(p) + 2).to_bytes(2, "big") + p for p in payloads)
    return jpeg[:2] + segments + jpeg[2:]


def c2pa_sign_over_parent(parent: bytes, mime: str, chain: dict, actions: list[dict]) -> bytes:
    """Sign ``parent`` again as an edit: the new manifest lists ``actions`` and holds the old one as parentOf."""
    import c2pa

    manifest = {"claim_generator_info": [{"name": "synthdetect-tests-editor", "version": "1.0"}], "title": "edit.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain["chain_pem"], chain["key_pem"], None))
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.add_ingredient(json.dumps({"title": "parent.jpg", "relationship": "parentOf", "label": "parent",
                                           "instance_id": "parent"}), mime, io.BytesIO(parent))
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(parent), out)
    return out.getvalue()


def c2pa_sign(image: bytes, mime: str, chain: dict, source_type: str = "trainedAlgorithmicMedia",
              agent: str = "Test Diffusion 1.0") -> bytes:
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": "synthdetect-tests", "version": "1.0"}],
        "title": "generated.jpg",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created", "softwareAgent": agent,
            "digitalSourceType": f"http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}"}]}}],
    }
    info = c2pa.C2paSignerInfo(b"es256", chain["chain_pem"], chain["key_pem"], None)
    signer = c2pa.Signer.from_info(info)
    with c2pa.Builder(json.dumps(manifest)) as builder:
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(image), out)
    return out.getvalue()


def tamper_pixels(signed_jpeg: bytes) -> bytes:
    """Change one JPEG quantisation-table entry: the picture still decodes, slightly altered, manifest untouched."""
    data = bytearray(signed_jpeg)
    dqt = data.find(b"\xff\xdb")
    assert dqt > 0, "no quantisation table"
    data[dqt + 10] = max(1, (data[dqt + 10] + 7) % 256)
    return bytes(data)
