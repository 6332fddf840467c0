"""Every file in ../shared/fixtures/provenance yields the evidence its manifest.csv expects; no camera photo gets AI evidence."""

from __future__ import annotations

import csv

import pytest

from synthdetect.evidence import run_probes
from synthdetect.images import load_image

pytestmark = pytest.mark.shared


def _rows(provenance_dir):
    with open(provenance_dir / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _evidence(provenance_dir, name):
    return run_probes(load_image(provenance_dir / name, name=name))


def _check(expected: str, evidence) -> None:
    by_kind = lambda kind: [e for e in evidence if e.kind == kind]  # noqa: E731
    # every probe read every fixture, and every reason is one line a person can read
    assert not [e for e in evidence if e.data.get("probe_failed")], evidence
    assert all(e.detail and "\n" not in e.detail and len(e.detail) < 600 for e in evidence), evidence
    if expected != "c2pa:ai":  # only a verified vendor manifest is cryptographic proof
        assert not [e for e in by_kind("c2pa") if e.strength == "decisive"], evidence
    ai = [e for e in evidence if e.signal == "ai"]
    if expected == "c2pa:ai":
        assert any(e.signal == "ai" and e.strength == "decisive" for e in by_kind("c2pa")), evidence
    elif expected == "c2pa:camera":
        c2pa = by_kind("c2pa")
        assert c2pa and all(e.data.get("claim") == "capture" for e in c2pa), evidence
        assert not ai, ai
    elif expected == "c2pa:test-claim":
        c2pa = by_kind("c2pa")
        assert c2pa and all(e.signal == "unverified" for e in c2pa), evidence
        assert "test certificate" in c2pa[0].detail and "not proof" in c2pa[0].detail
        assert not ai, ai
    elif expected == "a1111":
        assert any(e.signal == "ai" and e.strength == "decisive" and e.data.get("tool") == "a1111"
                   for e in by_kind("genparams")), evidence
    elif expected == "comfyui":
        found = [e for e in by_kind("genparams") if e.data.get("tool") == "comfyui"]
        assert found and found[0].signal == "ai" and found[0].strength == "decisive", evidence
        assert found[0].data["models"], "ComfyUI evidence names the checkpoint/model files"
    elif expected == "metadata:midjourney":  # Midjourney's own PNG record is decisive (README)
        assert any(e.signal == "ai" and e.strength == "decisive" and e.data.get("tool") == "midjourney"
                   for e in by_kind("metadata")), evidence
    elif expected == "metadata:software":
        assert any(e.signal == "edited" for e in by_kind("metadata")), evidence
        assert not ai, ai
    elif expected == "exif:camera":
        assert any(e.signal == "human" and e.strength == "weak" for e in by_kind("exif")), evidence
        assert not ai, ai
    elif expected == "none":
        assert not ai, ai
        assert not by_kind("c2pa") and not by_kind("genparams")
    else:  # a new expectation in the manifest must be taught to this test, not silently passed
        pytest.fail(f"unknown expectation '{expected}' in manifest.csv")


@pytest.mark.slow
def test_every_fixture_yields_its_expected_evidence(provenance_dir):
    """Also the camera-photo rule: camera, 'none', edited and test-claim fixtures must carry no AI evidence."""
    rows = _rows(provenance_dir)
    assert len(rows) >= 20
    failures = []
    for row in rows:
        evidence = _evidence(provenance_dir, row["file"])
        try:
            _check(row["expected"], evidence)
        except AssertionError as exc:
            failures.append(f"{row['file']} ({row['expected']}): {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_wild_dev_real_photos_never_get_ai_evidence(wild_dev):
    """Probes (default set, watermark included) over every real photo of wild-dev: no AI evidence at all."""
    with open(wild_dev / "manifest.csv", newline="") as handle:
        real = [r["path"] for r in csv.DictReader(handle) if r["label"] == "real"]
    assert len(real) > 100
    offenders = []
    for path in real:
        try:
            loaded = load_image(wild_dev / path, name=path)
        except ValueError:
            continue
        ai = [e.detail for e in run_probes(loaded) if e.signal == "ai"]
        if ai:
            offenders.append(f"{path}: {ai}")
    assert not offenders, "\n".join(offenders)
