"""A WebP or AVIF file cut short is "truncated", as a cut JPEG or PNG is.

Before: libwebp and libheif refuse such a file with "could not create decoder object" / "BMFF parsing failed", and
it was called a corrupt header; the container's own lengths tell the two apart.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthdetect.images import ImageLoadError, load_image

PIXELS = Image.fromarray((np.random.default_rng(7).random((48, 48, 3)) * 255).astype(np.uint8))


def _encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    PIXELS.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, options, said", [
    ("WEBP", {"quality": 90}, "the WebP file states"),
    ("WEBP", {"lossless": True}, "the WebP file states"),
    ("AVIF", {}, "an AVIF box runs to byte"),
])
def test_a_cut_container_file_is_truncated_not_corrupt(fmt, options, said):
    raw = _encoded(fmt, **options)
    with pytest.raises(ImageLoadError) as caught:
        load_image(raw[: len(raw) // 2], name="cut")
    assert caught.value.kind == "truncated"
    assert caught.value.reason.startswith(f"truncated image data ({said}") and f"{len(raw) // 2:,}" in str(caught.value)
    assert caught.value.records is not None  # its records are read, as for a cut JPEG


def test_a_whole_length_webp_with_damaged_data_is_still_corrupt():
    raw = bytearray(_encoded("WEBP", quality=90))
    raw[20:40] = bytes(20)  # the VP8 frame header zeroed, the RIFF length still right
    with pytest.raises(ImageLoadError) as caught:
        load_image(bytes(raw), name="damaged")
    assert caught.value.kind == "corrupt"
