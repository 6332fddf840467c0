"""Audit of the pixel probes (watermark, ELA): what they say must match what they measured.

- A marked PNG/WebP whose EXIF orientation an editor or upload set was decoded turned, and said "no watermark".
- A JPEG decoded at a reduced scale (scan's draft mode) was decoded anyway, where no mark can survive.
- The chance figure of a found mark ignored that the best of four encoder variants is kept.
- ELA's "tile spread" was 0.00 on images holding a single tile, and a spread of single pixels under 32 px.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evidence_fakes import encode, textured_rgb
from synthdetect.evidence import run_probes
from synthdetect.evidence import watermark as wm
from synthdetect.evidence.commands import not_checked
from synthdetect.images import load_image


def _with_orientation(arr: np.ndarray, fmt: str, orientation: int, **options) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, fmt, exif=exif, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, orientation", [("PNG", 6), ("PNG", 3), ("WEBP", 8)])
def test_a_mark_is_found_in_an_exif_turned_file(fmt, orientation):
    """The mark sits on the file's pixel grid; an orientation tag only says how to show it (was: not found)."""
    pytest.importorskip("imwatermark")
    pytest.importorskip("cv2")
    from test_evidence_watermark import sd_v1_mark

    marked = sd_v1_mark(np.ascontiguousarray(textured_rgb(448, seed=1)[:320]))  # 320x448: not square
    image = load_image(_with_orientation(marked, fmt, orientation, **({"lossless": True} if fmt == "WEBP" else {})))
    assert image.orientation == orientation
    record, = [e for e in run_probes(image, ["watermark"])]
    assert record.data["mark"] == "StableDiffusionV1"


def test_the_chance_figure_counts_the_encoder_variants_tried():
    """The probe keeps the best of four decodes, so an unmarked image gets four tries at matching by chance."""
    pytest.importorskip("imwatermark")
    pytest.importorskip("cv2")
    from test_evidence_watermark import sd_v1_mark

    marked = sd_v1_mark(np.ascontiguousarray(textured_rgb(320, seed=3)))
    record, = run_probes(load_image(encode(marked, "PNG")), ["watermark"])
    single = wm.chance_tail(record.data["bit_accuracy"], 136)
    assert record.data["chance_probability"] == pytest.approx(len(wm.VARIANTS) * single)
    assert f"best of {len(wm.VARIANTS)} encoder variants" in record.detail


def test_the_decoded_corner_is_the_files_own_top_left_for_every_orientation():
    """Larger than the decoded corner on both sides, so a wrong crop box cannot pass by covering everything."""
    stored = np.random.default_rng(0).integers(0, 256, (wm.MAX_ROWS + 40, wm.MAX_COLS + 60, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        image = load_image(_with_orientation(stored, "PNG", orientation, compress_level=0))
        corner, width = wm.stored_corner(image)
        assert width == stored.shape[1]
        assert np.array_equal(np.asarray(corner), stored[: wm.MAX_ROWS, : wm.MAX_COLS]), orientation


def test_a_jpeg_decoded_at_reduced_scale_is_not_checked():
    """Scaling erases the marks: "not found" must not be said of pixels the file does not hold."""
    data = encode(textured_rgb(640, seed=2), "JPEG", quality=97)
    assert wm.why_not_decoded(load_image(data)) is None
    drafted = load_image(data, draft_size=(300, 300))
    assert drafted.size == (320, 320)
    assert "scaling erases the marks" in not_checked(drafted, ["watermark"])["watermark"]
    assert run_probes(drafted, ["watermark"]) == []


@pytest.mark.parametrize("size", [(33, 33), (500, 1), (1, 500), (40, 63)])
def test_ela_does_not_report_a_tile_spread_without_two_tiles(size):
    arr = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    record, = run_probes(load_image(encode(arr, "PNG")), ["ela"])
    assert record.data["tile_mean_spread"] is None
    assert "tile spread not measured" in record.detail and "tile spread 0.00" not in record.detail


def test_ela_tile_spread_with_two_tiles_is_measured():
    arr = np.zeros((32, 64, 3), dtype=np.uint8)
    arr[:, 32:] = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # a flat and a noisy tile
    record, = run_probes(load_image(encode(arr, "PNG")), ["ela"])
    assert record.data["tile_mean_spread"] > 10
    assert "tile spread not measured" not in record.detail


def test_the_spectrum_of_a_narrow_crop_reads_frequencies_as_the_square_does():
    """Coarse stripes (32 px period) are low-frequency content whatever the crop's shape.

    The radial profile counted index k along the long axis as the same radius as index k along the short one,
    so a 40x512 crop read them as high-frequency energy (+0.34 decades vs +0.004 for the square) and a 512x40
    crop as a slope of -3.6 (the square's: -0.08)."""
    from synthdetect.evidence.spectrum import spectrum_features

    stripes = np.tile(128 + 100 * np.sin(2 * np.pi * np.arange(512) / 32), (512, 1))
    stripes = stripes + np.random.default_rng(0).normal(0, 2, (512, 512))
    square = spectrum_features(stripes)
    for crop in (stripes[:40], stripes[:, :40]):
        narrow = spectrum_features(crop)
        assert abs(narrow["high_minus_mid"] - square["high_minus_mid"]) < 0.15, (crop.shape, narrow, square)
        assert abs(narrow["log_slope"] - square["log_slope"]) < 1.0, (crop.shape, narrow, square)


@pytest.mark.parametrize("mode", ["L", "LA", "I;16"])
def test_a_grey_image_is_not_checked_for_a_watermark(mode, tmp_path):
    """The marks are written in the colour (U) plane, which grey pixels lack: "no watermark found" claimed a look
    where no mark can be."""
    from synthdetect.evidence.commands import inspect_file

    rng = np.random.default_rng(3)
    grey = Image.fromarray(rng.integers(0, 256, (300, 320), dtype=np.uint8), "L")
    image = grey.convert(mode) if mode != "I;16" else Image.fromarray(
        rng.integers(0, 65536, (300, 320), dtype=np.uint16))
    path = tmp_path / "grey.png"
    image.save(path)
    result = inspect_file(str(path), ["watermark"])
    assert result["checked"] == [] and list(result["not_checked"]) == ["watermark"], result
    assert result["not_checked"]["watermark"] == (f"a grey image ({result['image']['mode']}) has no colour, where the "
                                                  "marks are written")
    colour = tmp_path / "colour.png"
    Image.fromarray(rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)).save(colour)
    assert inspect_file(str(colour), ["watermark"])["checked"] == ["watermark"]
