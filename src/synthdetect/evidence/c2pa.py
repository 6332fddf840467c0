"""C2PA Content Credentials: a signed manifest that says who made the file and how.

c2pa-python (the Content Authenticity Initiative's binding of c2pa-rs) reads
and cryptographically validates the manifest store: claim signature, hashes
of the assertions and of the image bytes.  With no network there is no
official C2PA trust list, so c2pa-rs reports every signer as
``signingCredential.untrusted``; *trust* is decided here instead:

* the certificate that made the signature (read from the signature itself,
  :mod:`synthdetect.evidence.c2pa_signers`) must chain, by verified
  signatures within that signature's own certificate chain, to one of the CA
  certificates pinned in :data:`PINNED_CAS` (by SHA-256 of the certificate;
  taken from public Content Credentials of these vendors),
* so must the signer of every manifest between this file and the ingredient
  manifest that makes the declaration, when the declaration is inherited, and
* the declaring certificate's subject organisation must be a known AI vendor
  (:data:`AI_VENDORS`) for an AI declaration to be decisive, or a known
  capture vendor (:data:`CAPTURE_VENDORS`) for a camera capture to count.

A claim by any other signer -- test certificates, a self-made certificate,
a vendor certificate that does not chain to a pinned CA -- is reported as an
``unverified`` claim, never as proof.  A manifest whose hashes no longer match
the file is reported as ``tampered``.  Expired or policy-incomplete vendor
certificates (the common state of 2023-2024 generator output) are named in
the detail but do not undo a verified chain: nobody benefits from forging a
vendor's "this is AI" on a picture whose bytes still match the signature.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from synthdetect.evidence import register_probe
from synthdetect.evidence.c2pa_signers import Signer, manifest_store, signer_of
from synthdetect.evidence.metadata import (CAPTURE_SOURCE_TYPES, SOURCE_TYPES, generator_named_in, quoted,
                                           source_type_name)
from synthdetect.images import LoadedImage
from synthdetect.messages import first_line
from synthdetect.verdict import Evidence

#: CA certificates trusted to vouch for a signer's organisation name (SHA-256 of the DER certificate).
PINNED_CAS: dict[str, str] = {
    "d4238a521f5d88edae53709c956475b158afe3e0eb74a4e8d1bd76e83fd59b78": "Truepic Lens RootCA",
    "e2202c12c00880ddfe53af5e787c0431abb6dc566382886ac5540789ffc912d9": "Truepic Lens WebClaimSigningCA",
    "40e8ceb6dcad9fe5b422a9d73925ff4b52f9b2428431cbe7daf236fe57c34a55": "Truepic Lens AndroidClaimSigningCA",
    "3e9099b5015e8f486c00bcea9d111ee721faba355a89bcf1df69561e3dc6325c": "DigiCert Assured ID Root CA",
    "b9c3073aad74b368832f5497958e279b1d2777caf8841713b28ab10a4baa0810": "DigiCert Document Signing CA",
    "23ffe2b8bdb9a1711515d4cffda04bc7f793d513c76c243f1020507d8669b7db": "Microsoft Supply Chain RSA Root CA 2022",
    "1e92ec6f4c801736ee024905210c4cb95fe4e2a42f404bdb5cc772b12336a6d9": "Microsoft SCD Claimants RSA CA",
    "338d85be1ad5b78cbb4cb8ed67737867f0d6ba9acc93548210f982cea43a0b00": "Adobe Product Services G3",
    "8d8e4288231c244f7892e935bbf1ba85a2744e8993b49993016eee63952733fe": "Adobe Product Services G4",
}
#: Signer organisations (certificate subject O) whose AI declarations are decisive once the chain is verified.
AI_VENDORS = frozenset({"OpenAI", "Microsoft Corporation", "Amazon Web Services, Inc.", "Adobe Inc.", "Google LLC",
                        "Meta Platforms, Inc.", "Stability AI Ltd", "Midjourney Inc."})
#: Signer organisations that sign camera captures.
CAPTURE_VENDORS = frozenset({"Truepic", "Leica Camera AG", "Sony Corporation", "Nikon Corporation", "Google LLC",
                             "Samsung Electronics Co., Ltd.", "Canon Inc."})

_AI_WORDS = re.compile(r"\bAI[- ]generated\b|\bgenerative\b|\btext[_ ]to[_ ]image\b", re.IGNORECASE)
#: A negation just before those words ("not AI-generated", "no generative tools", "non-generative").
_NEGATED = re.compile(r"\b(?:not|no|non|without|never)\b[\s-]+(?:\w+[\s-]+){0,2}$", re.IGNORECASE)


def _describes_ai(description: str) -> bool:
    """Whether an action's free-text description says AI made it; a description that denies it does not (it read
    as AI creation: "Captured on device, not AI-generated")."""
    return any(not _NEGATED.search(description, max(0, m.start() - 40), m.start())
               for m in _AI_WORDS.finditer(description))
_CREDENTIAL_CODES = ("signingCredential.", "timeStamp.")


@dataclass
class ManifestFacts:
    """What one manifest store says, reduced to what the verdict needs."""

    signer_org: str | None
    signer_cn: str | None
    issuer: str | None
    claim_generator: str | None
    claim: str  # ai | algorithmic | capture | edited | none
    declared: str | None
    agent: str | None
    actions: list[str]
    ingredients: list[dict[str, Any]]
    state: str | None
    integrity_failures: list[str]
    structure_problems: list[str]
    credential_notes: list[str]
    #: who signed each manifest from the active one down to where the claim was made (the declarer last)
    signers: list[Signer] = field(default_factory=list)
    pinned_ca: str | None = None  # the declarer's pinned CA, when every signer on that path chains to one
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def declarer(self) -> Signer | None:
        return self.signers[-1] if self.signers else None


def _agent_name(agent: Any) -> str | None:
    if isinstance(agent, dict):
        return agent.get("name")
    return agent if isinstance(agent, str) else None


def _actions_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    actions = []
    for assertion in manifest.get("assertions", []) or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            actions.extend((assertion.get("data") or {}).get("actions", []) or [])
    return actions


def _manifest_chain(store: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, manifest): the active manifest, then its parentOf ingredients' (where an image's history starts)."""
    manifests = store.get("manifests", {}) or {}
    chain, label, seen = [], store.get("active_manifest"), set()
    while label and label in manifests and label not in seen:
        seen.add(label)
        manifest = manifests[label]
        chain.append((label, manifest))
        parents = [i for i in manifest.get("ingredients", []) or [] if i.get("relationship") == "parentOf"]
        label = parents[0].get("active_manifest") if parents else None
    return chain


def _classify_claim(chain: list[dict[str, Any]]) -> tuple[str, str | None, str | None, list[str], int]:
    """(claim, declared source type or phrase, software agent, action names, index of the declaring manifest)."""
    action_names: list[str] = []
    best: tuple[str, str | None, str | None, int] = ("none", None, None, 0)
    rank = {"none": 0, "edited": 1, "capture": 2, "algorithmic": 3, "ai": 4}
    for depth, manifest in enumerate(chain):
        for action in _actions_of(manifest):
            name = str(action.get("action", ""))
            action_names.append(name)
            agent = _agent_name(action.get("softwareAgent"))
            source = action.get("digitalSourceType") or (action.get("parameters") or {}).get("digitalSourceType")
            claim, declared = "none", None
            if source:
                declared = source_type_name(str(source))
                signal = SOURCE_TYPES.get(declared, ("none", ""))[0]
                claim = {"ai": "ai", "human": "capture", "edited": "edited"}.get(signal, "none")
                if signal == "human" and declared not in CAPTURE_SOURCE_TYPES:
                    claim = "none"  # digital art is made by a person, but it is no camera capture
                if declared == "algorithmicMedia":
                    claim = "algorithmic"
            elif name == "c2pa.created" and (generator_named_in(agent)
                                             or _describes_ai(str(action.get("description", "")))):
                claim, declared = "ai", f"AI creation by {agent or 'an unnamed generator'}" + (
                    f" ('{action['description']}')" if action.get("description") else "")
            elif name not in ("c2pa.created", "c2pa.opened", "c2pa.placed", "c2pa.converted"):
                claim = "edited"
            if rank[claim] > rank[best[0]]:
                best = (claim, declared, agent, depth)
        for assertion in manifest.get("assertions", []) or []:
            data = assertion.get("data") or {}
            if assertion.get("label") == "stds.exif" and isinstance(data, dict) and (
                    data.get("EXIF:Make") or data.get("tiff:Make")) and rank["capture"] > rank[best[0]]:
                best = ("capture", f"camera EXIF {data.get('EXIF:Make') or data.get('tiff:Make')} "
                                   f"{data.get('EXIF:Model') or data.get('tiff:Model') or ''}".strip(), None, depth)
    return best[0], best[1], best[2], action_names, best[3]


_CONTEXTS: dict[int, Any] = {}


def _offline_context():
    """A c2pa Context that never goes to the network (no remote manifests, no OCSP): detection must stay offline.

    One per process: scan workers are forked, and a native handle must not be shared across a fork.
    """
    pid = os.getpid()
    if pid not in _CONTEXTS:
        import c2pa

        _CONTEXTS[pid] = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})
    return _CONTEXTS[pid]


def read_manifest(raw: bytes) -> ManifestFacts | None:
    """Read and validate the C2PA manifest store of ``raw``; None when the file has none."""
    import c2pa

    reader = c2pa.Reader.try_create(io.BytesIO(raw), context=_offline_context())
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        jumbf = manifest_store(reader, str(store.get("active_manifest")))
    active = (store.get("manifests") or {}).get(store.get("active_manifest"), {})
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = results.get("failure", []) or store.get("validation_status", []) or []
    successes = {s.get("code") for s in results.get("success", []) or []}
    integrity, structure, credential = [], [], []
    for failure in failures:
        code, why = str(failure.get("code", "")), str(failure.get("explanation", ""))
        if code.startswith(_CREDENTIAL_CODES):
            if code != "signingCredential.untrusted":  # untrusted is always true offline; trust is decided here
                credential.append(f"{code} ({why})")
        elif code == "assertion.dataHash.mismatch" and "exclusion" in why and "assertion.dataHash.match" in successes:
            structure.append(f"{code} ({why})")
        else:
            integrity.append(f"{code} ({why})")
    for delta in (store.get("validation_results") or {}).get("ingredientDeltas", []) or []:
        for failure in (delta.get("validationDeltas") or {}).get("failure", []) or []:
            code = str(failure.get("code", ""))
            if not code.startswith(_CREDENTIAL_CODES):
                integrity.append(f"ingredient {code} ({failure.get('explanation', '')})")
    chain = _manifest_chain(store)
    claim, declared, agent, actions, depth = _classify_claim([manifest for _, manifest in chain])
    pins = dict(PINNED_CAS)
    signers = [signer_of(jumbf, label, pins) for label, _ in chain[:depth + 1]]
    signature = active.get("signature_info") or {}
    generator = active.get("claim_generator") or ", ".join(
        str(g.get("name")) for g in active.get("claim_generator_info", []) or [] if isinstance(g, dict))
    ingredients = [{"title": i.get("title"), "relationship": i.get("relationship"),
                    "has_manifest": bool(i.get("active_manifest"))} for i in active.get("ingredients", []) or []]
    facts = ManifestFacts(
        signer_org=signature.get("issuer"), signer_cn=signature.get("common_name"), issuer=signature.get("issuer"),
        claim_generator=generator or None, claim=claim, declared=declared, agent=agent, actions=actions,
        ingredients=ingredients, state=state, integrity_failures=integrity, structure_problems=structure,
        credential_notes=credential, signers=signers,
    )
    if signers and all(s.pinned_ca for s in signers) and signers[0].serial == _hex_serial(signature):
        facts.pinned_ca = facts.declarer.pinned_ca
    facts.data = {"validation_state": state, "signer": signature.get("issuer"), "signer_cn": signature.get("common_name"),
                  "signed_at": signature.get("time"), "claim_generator": facts.claim_generator, "claim": claim,
                  "declared": declared, "declared_in": "active manifest" if depth == 0 else f"ingredient manifest "
                  f"{depth} level(s) down", "software_agent": agent, "actions": actions, "ingredients": ingredients,
                  "signing_certificates": [asdict(s) for s in signers],
                  "pinned_ca": facts.pinned_ca, "integrity_failures": integrity, "structure_problems": structure,
                  "credential_notes": credential}
    return facts


def _hex_serial(signature: dict[str, Any]) -> str | None:
    """c2pa-rs reports the serial in decimal; the signing certificate read here gives it in hex."""
    serial = str(signature.get("cert_serial_number") or "")
    return format(int(serial), "x") if serial.isdigit() else None


def _might_have_manifest(raw: bytes) -> bool:
    # Every embedded manifest store is a JUMBF box labelled "c2pa", and a manifest kept in the cloud is named by the
    # XMP property dcterms:provenance; skipping files with neither keeps the probe free for ordinary images.
    return b"c2pa" in raw or b"provenance" in raw


#: How c2pa-rs refuses a manifest that the file only links to (XMP ``dcterms:provenance``) when fetching is off.
_REMOTE = re.compile(r"^Remote: must fetch remote manifests from url (\S+)")


@register_probe("c2pa")
def probe_c2pa(image: LoadedImage) -> list[Evidence]:
    raw = image.raw
    if not raw or not _might_have_manifest(raw):
        return []
    import c2pa

    try:
        facts = read_manifest(raw)
    except c2pa.C2paError.NotSupported:
        # C2PA defines no embedding for this format (BMP, PPM...): the four bytes "c2pa" were in its pixels or a
        # comment, not a manifest.  Reporting "C2PA data present but unreadable" would invent a manifest.
        return []
    except c2pa.C2paError as exc:
        if remote := _REMOTE.match(first_line(exc) or ""):
            # Content Credentials kept in the cloud (Adobe's publish option): a manifest exists but detection is
            # offline, so nothing was read.  Said as such, not as damaged data, and not left out: a link that
            # lacked the bytes "c2pa" gave no record at all, and the verdict said "no decisive provenance found".
            url = remote.group(1)
            return [Evidence("c2pa", "none", "info",
                             f"C2PA manifest kept remotely at {quoted(url, 160)}, not fetched (detection runs "
                             f"offline): no claim was read, either way; a Content Credentials verifier can fetch it",
                             {"remote_manifest": url, "probe_failed": True})]
        reason = first_line(exc) or type(exc).__name__
        if cut_short := _cut_png_manifest(raw, reason):
            return [cut_short]
        # Nothing was read, so nothing is claimed: an unreadable store points neither way (an "unverified" record
        # would read as a signer's claim).  It is a record that could not be read, and the verdict says so.
        return [Evidence("c2pa", "none", "info",
                         f"C2PA data present but unreadable ({reason}): no claim could be read, either way",
                         {"error": reason, "probe_failed": True})]
    if facts is None:
        return []
    return [describe(facts)]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cut_png_manifest(raw: bytes, reason: str) -> Evidence | None:
    """The manifest of a PNG cut inside a later chunk (its pixel data), read from the whole chunks before the cut.

    c2pa-rs refuses the whole file ("PNG out of range"), though OpenAI's and Amazon's ``caBX`` chunk comes first and
    is intact.  It is read from those chunks closed with an IEND; the image hash then cannot match, so the record is
    ``tampered`` (never moves a label) and says the file is cut.  A hash that did match would vouch for bytes this
    file does not end with, so that reading is not used."""
    import zlib

    if not raw.startswith(_PNG_SIGNATURE):
        return None
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(raw) and at + 12 + int.from_bytes(raw[at:at + 4], "big") <= len(raw):
        at += 12 + int.from_bytes(raw[at:at + 4], "big")
    if at == len(raw) or at == len(_PNG_SIGNATURE):  # not cut inside a chunk, or nothing whole before the cut
        return None
    closed = raw[:at] + b"\0\0\0\0IEND" + zlib.crc32(b"IEND").to_bytes(4, "big")
    try:
        facts = read_manifest(closed)
    except Exception:  # noqa: BLE001 - unreadable either way: the caller reports the first reason
        return None
    if facts is None or not facts.integrity_failures:
        return None
    found = describe(facts)
    found.detail += (f" (the file is cut short at byte {len(raw):,}, inside a PNG chunk; the manifest was read from "
                     f"the {at:,} bytes of whole chunks before the cut)")
    found.data = {**(found.data or {}), "read_from": f"first {at} bytes (whole PNG chunks)",
                  "unreadable_whole": reason}
    return found


def describe(facts: ManifestFacts) -> Evidence:
    """Turn what the manifest says into one honest Evidence record.  Names, agents and descriptions are the
    manifest's own free text (a 5 KB softwareAgent with line breaks made a 5 KB reason over several lines), so the
    reason quotes them on one line, shortened; ``data`` keeps them whole."""
    signer = quoted(facts.signer_org) if facts.signer_org else "an unnamed signer"
    if facts.pinned_ca is None:  # a certificate's name is whatever its maker typed: say so wherever it is shown
        signer = (f"'{signer}'" if facts.signer_org else signer) + " (certificate not verified)"
    declared = quoted(facts.declared or "", 160)
    declares = {"ai": f"declares {declared}", "algorithmic": f"declares {declared}",
                "capture": f"declares a camera capture ({declared})",
                "edited": "records edits and no AI source", "none": "declares no source type"}[facts.claim]
    meaning = SOURCE_TYPES.get(facts.declared or "", (None, None))[1]
    if facts.claim in ("ai", "algorithmic"):
        extras = [m for m in (meaning, facts.agent) if m and m not in (facts.declared or "")]
        declares += f" ({', '.join(quoted(m) for m in extras)})" if extras else ""
    if len(facts.signers) > 1:
        declares = (f"holds a parent ingredient whose manifest, signed by "
                    f"{quoted(facts.declarer.organisation or 'an unnamed signer')}, {declares}")
    notes = "; ".join(facts.credential_notes)
    suffix = f"; note: {notes}" if notes else ""
    data = facts.data
    if facts.integrity_failures:
        return Evidence("c2pa", "tampered", "strong",
                        f"C2PA manifest signed by {signer} {declares}, but it no longer matches this file "
                        f"({'; '.join(facts.integrity_failures[:3])}): the file was changed after signing", data)
    declarer = facts.declarer.organisation if facts.declarer else None
    chain_ok = facts.pinned_ca is not None and not _revoked(facts)
    trusted_ai = chain_ok and declarer in AI_VENDORS
    trusted_capture = chain_ok and declarer in CAPTURE_VENDORS
    if facts.structure_problems:
        return Evidence("c2pa", "unverified", "weak",
                        f"C2PA manifest signed by {signer} {declares}; the image hash matches but the manifest is "
                        f"non-conforming ({'; '.join(facts.structure_problems)}), so it is a claim, not proof{suffix}",
                        data)
    verified = f"(certificate chain verified to {facts.pinned_ca})"
    if facts.claim == "algorithmic" and facts.pinned_ca is not None:
        # IPTC algorithmicMedia is procedural graphics made without training data: not what 'ai' means here
        return Evidence("c2pa", "none", "info", f"C2PA manifest signed by {signer} {declares} {verified}: "
                        f"computer-made, but not by a generative model{suffix}", data)
    if facts.claim in ("ai", "algorithmic"):
        if trusted_ai:
            return Evidence("c2pa", "ai", "decisive", f"C2PA manifest signed by {signer} {declares} {verified}"
                            f"{suffix}", data)
        return Evidence("c2pa", "unverified", "moderate",
                        f"C2PA manifest {declares}, but {_why_untrusted(facts, 'a known generator')}"
                        f"{_test_note(facts)}: an unverified claim, not proof{suffix}", data)
    if facts.claim == "capture":
        if trusted_capture:
            return Evidence("c2pa", "human", "strong", f"C2PA manifest signed by {signer} {declares} {verified}"
                            f"{suffix}", data)
        return Evidence("c2pa", "unverified", "weak",
                        f"C2PA manifest {declares}, but {_why_untrusted(facts, 'a capture vendor')}"
                        f"{_test_note(facts)}: an unverified claim{suffix}", data)
    signal = "edited" if facts.claim == "edited" else "none"
    generator = f" (claim generator {quoted(facts.claim_generator)})" if facts.claim_generator else ""
    return Evidence("c2pa", signal, "info", f"C2PA manifest signed by {signer}{generator} {declares}{suffix}", data)


def _revoked(facts: ManifestFacts) -> str | None:
    """The revocation c2pa-rs found (from OCSP data stapled in the manifest): the issuer withdrew the key, so its
    signature vouches for nothing, unlike an expired certificate or a missing EKU."""
    return next((n for n in facts.credential_notes if n.startswith(_REVOKED_CODES)), None)


_REVOKED_CODES = ("signingCredential.revoked", "signingCredential.ocsp.revoked")


def _why_untrusted(facts: ManifestFacts, vendor: str) -> str:
    """The first link that fails, from the file's own signer down to the manifest that made the claim."""
    if revoked := _revoked(facts):
        return f"its signing certificate was revoked by its issuer ({revoked})"
    for depth, signer in enumerate(facts.signers):
        whose = "its signer" if depth == 0 else "that ingredient's signer"
        name = (f"'{quoted(signer.organisation or facts.signer_org or 'unnamed')}' "
                f"({quoted(str(signer.common_name or facts.signer_cn))})")
        if signer.serial is None:
            return f"{whose}'s certificate could not be read from the signature"
        if signer.pinned_ca is None:
            return f"{whose} {name} has no certificate chain to a pinned CA"
    if facts.pinned_ca is None:  # every chain verified, yet the certificate is not the one c2pa-rs reported
        return "the signing certificate does not match the one the signature was checked with"
    return f"its signer '{quoted(str(facts.declarer.organisation))}' is not {vendor}"


def _test_note(facts: ManifestFacts) -> str:
    text = f"{facts.signer_org} {facts.signer_cn}".lower()
    return " (a test certificate)" if "test" in text else ""
