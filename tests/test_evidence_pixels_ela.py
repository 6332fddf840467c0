"""ELA of an EXIF-rotated JPEG is made on the file's own 8x8 grid, then turned as the image is shown."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthdetect.evidence.ela import ela_difference, ela_features, ela_image
from synthdetect.images import load_image


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    return np.clip(smooth + rng.integers(-12, 13, size=smooth.shape), 0, 255).astype(np.uint8)


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


# Sides that are not multiples of 16 put the turned image's blocks across the file's.
@pytest.mark.parametrize("orientation", [3, 6, 8, 2, 5])
def test_ela_of_a_rotated_jpeg_is_the_stored_grids_ela_turned(orientation):
    data = jpeg_with_orientation(textured(299, 397), orientation)
    loaded = load_image(data)
    assert loaded.orientation_applied
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    expected = np.asarray(Image.fromarray(ela_difference(stored)).transpose(
        {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90,
         2: Image.Transpose.FLIP_LEFT_RIGHT, 5: Image.Transpose.TRANSPOSE}[orientation]))
    ours = ela_difference(loaded)
    assert ours.shape == np.asarray(loaded.rgb).shape  # still aligned with the picture as shown
    assert np.array_equal(ours, expected)


def test_rotation_does_not_inflate_the_error_level():
    pixels = textured(299, 397, seed=1)
    upright = ela_features(load_image(jpeg_with_orientation(pixels, 1)))
    turned = ela_features(load_image(jpeg_with_orientation(pixels, 3)))
    # On the misaligned grid the old code measured a mean about a third higher than for the same file upright.
    assert turned["mean"] == pytest.approx(upright["mean"], rel=0.02)
    assert np.asarray(ela_image(load_image(jpeg_with_orientation(pixels, 3)))).shape == (299, 397, 3)


def test_a_pil_image_and_an_upright_file_are_unchanged():
    pixels = textured(120, 90, seed=2)
    loaded = load_image(jpeg_with_orientation(pixels, 1))
    assert np.array_equal(ela_difference(loaded), ela_difference(loaded.rgb))


def test_ela_image_does_not_hold_float_copies_of_a_large_image():
    """A float32 copy is 12 bytes a pixel; at the 80 MP load limit the old amplification peaked near 3 GB."""
    import tracemalloc

    loaded = load_image(Image.fromarray(textured(1000, 1200, seed=3)))
    expected_shape = (1000, 1200, 3)
    tracemalloc.start()
    try:
        picture = ela_image(loaded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.asarray(picture).shape == expected_shape and np.asarray(picture).max() == 255
    assert peak / (1000 * 1200) < 10, f"{peak / 1e6:.0f} MB traced for a 1.2 MP image"
