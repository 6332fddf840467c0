"""Contract every registered probe must honour (like timm's tests over every registered model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthdetect.evidence import probe_names, run_probes
from synthdetect.images import load_image
from synthdetect.verdict import SIGNALS, STRENGTHS


def _image(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    im = Image.fromarray(arr, "RGBA").convert(mode)
    buffer = io.BytesIO()
    im.save(buffer, format=fmt)
    return buffer.getvalue()


CASES = [("RGB", (1, 1), "PNG"), ("L", (300, 260), "PNG"), ("RGBA", (260, 300), "PNG"), ("RGB", (256, 256), "JPEG"),
         ("RGB", (300, 10), "WEBP"), ("P", (64, 64), "GIF"), ("I;16", (280, 280), "PNG")]


@pytest.mark.parametrize("probe", probe_names())
@pytest.mark.parametrize("mode,size,fmt", CASES)
def test_probe_contract(probe, mode, size, fmt):
    loaded = load_image(_image(mode, size, fmt))
    found = run_probes(loaded, [probe])
    for record in found:
        assert record.kind == probe
        assert record.signal in SIGNALS and record.strength in STRENGTHS
        assert record.detail and "\n" not in record.detail
        assert not record.detail.startswith("probe failed"), record.detail
    # no metadata in these files: no probe may point anywhere
    assert all(e.signal == "none" for e in found), found


def test_a_crashing_probe_is_reported_not_fatal():
    from synthdetect.evidence import _ON_REQUEST, _PROBES, register_probe

    @register_probe("explodes", default=False)
    def explodes(image):
        raise RuntimeError("boom")

    try:
        record, = run_probes(load_image(_image("RGB", (8, 8), "PNG")), ["explodes"])
        assert (record.signal, record.strength) == ("none", "info") and "boom" in record.detail
    finally:
        _PROBES.pop("explodes")
        _ON_REQUEST.discard("explodes")
