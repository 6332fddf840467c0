"""Which certificate signed each C2PA manifest, and whether it chains to a pinned CA.

c2pa-python validates every claim signature but reports only the signer's
names and serial number, never its certificate.  Names and a serial number can
be copied into a self-made certificate, and a vendor's real certificates can be
planted anywhere in a file, so trust is decided on the one certificate whose
key made the signature: the first entry of the ``x5chain`` header of the
manifest's COSE_Sign1 signature, which is what c2pa-rs verified the claim
against.  Issuers are looked for only in that same ``x5chain``.

The signature box is found by walking the manifest store's JUMBF boxes
(ISO/IEC 19566-5: size, type, a ``jumd`` description box carrying the label,
then content boxes).  No maintained Python library reads JUMBF, and the walk
needs only box headers and labels; CBOR is decoded with ``cbor2``.  Anything
that does not parse yields no chain, which makes a claim ``unverified``, never
trusted.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from typing import Any

#: COSE header label of the certificate chain (RFC 9360), and the older text label some signers used.
_X5CHAIN = (33, "x5chain")


@dataclass(frozen=True)
class Signer:
    """The certificate that signed one manifest, as far as trust needs it."""

    organisation: str | None
    common_name: str | None
    serial: str | None
    pinned_ca: str | None  # name of the pinned CA its chain reaches, or None


def _boxes(buf: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of each box in ``buf``; stops at the first malformed header."""
    offset = 0
    while offset + 8 <= len(buf):
        size, kind, header = int.from_bytes(buf[offset:offset + 4], "big"), buf[offset + 4:offset + 8], 8
        if size == 1:
            size, header = int.from_bytes(buf[offset + 8:offset + 16], "big"), 16
        elif size == 0:
            size = len(buf) - offset
        if size < header or offset + size > len(buf):
            return
        yield kind, buf[offset + header:offset + size]
        offset += size


def _label(description: bytes) -> str | None:
    # jumd: 16-byte content-type UUID, a toggles byte (bit 1: a label follows), the label NUL-terminated
    if len(description) < 17 or not description[16] & 0x02:
        return None
    end = description.find(b"\x00", 17)
    return description[17:end if end >= 0 else None].decode("utf-8", "replace")


def _content_at(boxes: list[tuple[bytes, bytes]], labels: list[str]) -> list[tuple[bytes, bytes]] | None:
    """Content boxes of the JUMBF superbox reached by following ``labels`` down from ``boxes``."""
    for kind, payload in boxes:
        if kind != b"jumb":
            continue
        children = list(_boxes(payload))
        if not children or children[0][0] != b"jumd" or _label(children[0][1]) != labels[0]:
            continue
        return children[1:] if len(labels) == 1 else _content_at(children[1:], labels[1:])
    return None


def manifest_store(reader: Any, active_label: str) -> bytes | None:
    """The JUMBF manifest store c2pa-rs read (it hands it out for a ``self#jumbf=`` signature URI)."""
    buffer = io.BytesIO()
    try:
        reader.resource_to_stream(f"self#jumbf=/c2pa/{active_label}/c2pa.signature", buffer)
    except Exception:  # noqa: BLE001 - no store means no certificate to trust, which is the safe answer
        return None
    return buffer.getvalue() or None


def signing_chain(store: bytes, manifest_label: str) -> list[Any]:
    """The ``x5chain`` of the manifest's signature, signing certificate first; [] when it cannot be read."""
    import cbor2
    from cryptography import x509

    content = _content_at(list(_boxes(store)), ["c2pa", manifest_label, "c2pa.signature"]) or []
    cose = next((payload for kind, payload in content if kind == b"cbor"), None)
    if cose is None:
        return []
    try:
        message = cbor2.loads(cose)
        if isinstance(message, cbor2.CBORTag):
            message = message.value
        protected = cbor2.loads(message[0]) if message[0] else {}
        unprotected = message[1] or {}
        chain = next((h[k] for h in (protected, unprotected) if isinstance(h, Mapping) for k in _X5CHAIN if k in h), None)
        if isinstance(chain, bytes):
            chain = [chain]
        return [x509.load_der_x509_certificate(der) for der in chain or []]
    except (cbor2.CBORDecodeError, ValueError, TypeError, IndexError, KeyError):
        return []


def pinned_ca(chain: list[Any], pins: dict[str, str]) -> str | None:
    """Name of the pinned CA that the chain's first certificate reaches, each issuer signature verified."""
    from cryptography.hazmat.primitives.serialization import Encoding

    current = chain[0] if chain else None
    for _ in range(len(chain)):
        fingerprint = hashlib.sha256(current.public_bytes(Encoding.DER)).hexdigest()
        if fingerprint in pins:
            return pins[fingerprint]
        issuer = None
        for candidate in chain:
            if candidate is current or candidate.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except Exception:  # noqa: BLE001 - wrong key or algorithm: not this certificate's issuer
                continue
            issuer = candidate
            break
        if issuer is None:
            return None
        current = issuer
    return None


def _name(certificate: Any, oid: Any) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def signer_of(store: bytes | None, manifest_label: str, pins: dict[str, str]) -> Signer:
    """Who signed ``manifest_label``: the certificate its signature carries, never a name it reports."""
    from cryptography.x509.oid import NameOID

    chain = signing_chain(store, manifest_label) if store else []
    if not chain:
        return Signer(None, None, None, None)
    leaf = chain[0]
    return Signer(_name(leaf, NameOID.ORGANIZATION_NAME), _name(leaf, NameOID.COMMON_NAME),
                  format(leaf.serial_number, "x"), pinned_ca(chain, pins))
