"""The dwtDct watermark decoder agrees with the invisible-watermark library and finds the SD marks it embeds."""

from __future__ import annotations

import numpy as np
import pytest

from evidence_fakes import encode, textured_rgb
from synthdetect.evidence import run_probes
from synthdetect.evidence import watermark as wm
from synthdetect.images import load_image

imwatermark = pytest.importorskip(
    "imwatermark", reason="tests need invisible-watermark (requirements-test-nodeps.txt) and opencv-python-headless")
cv2 = pytest.importorskip("cv2")


def sd_v1_mark(rgb: np.ndarray) -> np.ndarray:
    """Exactly what the CompVis txt2img script does: RGB -> BGR uint8, encode, back to RGB."""
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bytes", b"StableDiffusionV1")
    bgr = encoder.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def sdxl_mark(rgb: np.ndarray) -> np.ndarray:
    """What diffusers' StableDiffusionXLWatermarker does: float RGB array handed over as if BGR."""
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bits", [int(b) for b in wm.SDXL_BITS])
    marked = encoder.encode(rgb.astype(np.float32), "dwtDct")
    return np.clip(np.rint(marked), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_matches_the_library_bit_for_bit(seed):
    rgb = sd_v1_mark(textured_rgb(384, seed=seed))
    decoder = imwatermark.WatermarkDecoder("bits", 136)
    library_bits = np.array(decoder.decode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct"), dtype=bool)
    ours = wm.decode_bits(wm.u_channel(rgb), 136) * 255 > 127
    assert (ours == library_bits).all()


def test_u_channel_matches_opencv():
    rgb = textured_rgb(256, seed=5)
    ours = wm.u_channel(rgb).astype(int)
    theirs = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.COLOR_BGR2YUV)[:, :, 1].astype(int)
    assert (ours == theirs).all()


def _watermark(data: bytes):
    return [e for e in run_probes(load_image(data)) if e.kind == "watermark"]


def test_sd_v1_mark_is_found_in_a_png():
    record, = _watermark(encode(sd_v1_mark(textured_rgb(512, seed=1)), "PNG"))
    assert (record.signal, record.strength, record.data["mark"]) == ("ai", "strong", "StableDiffusionV1")
    assert record.data["bit_accuracy"] >= wm.THRESHOLDS["StableDiffusionV1"]
    assert record.data["chance_probability"] < 1e-9


def test_sdxl_mark_is_found():
    record, = _watermark(encode(sdxl_mark(textured_rgb(512, seed=2)), "PNG"))
    assert record.data["mark"] == "SDXL" and record.data["encoder_variant"] == "rgb-as-bgr-float"


def test_mark_is_found_from_a_crop_of_a_wide_image():
    """Only the top-left MAX_ROWS x MAX_COLS are decoded; block numbering must follow the full width."""
    wide = np.concatenate([textured_rgb(600, seed=3)] * 3, axis=1)[:, :1500]
    record, = _watermark(encode(sd_v1_mark(np.ascontiguousarray(wide)), "PNG"))
    assert record.data["mark"] == "StableDiffusionV1"


def test_unmarked_images_are_silent():
    for seed in range(4):
        assert _watermark(encode(textured_rgb(512, seed=seed), "PNG")) == []


def test_small_images_are_skipped():
    marked = sd_v1_mark(np.ascontiguousarray(np.concatenate([textured_rgb(400, seed=1)[:200]] * 1, axis=0)))
    assert min(marked.shape[:2]) < wm.MIN_SIDE
    assert _watermark(encode(marked, "PNG")) == []


def test_chance_tail():
    assert wm.chance_tail(0.5, 2) == pytest.approx(0.75)
    assert wm.chance_tail(1.0, 48) == pytest.approx(2.0**-48)


def test_haar_approximation_equals_pywavelets_bit_for_bit():
    """The probe's own approximation band must round exactly as pywt.dwt2 does (marks sit on .5 grid points)."""
    import pywt

    rng = np.random.default_rng(0)
    for shape in ((512, 1024), (130, 262)):
        ints = rng.integers(0, 256, shape).astype(np.float64)
        assert np.array_equal(wm.haar_approximation(ints), pywt.dwt2(ints, "haar")[0])
    floats = wm.u_channel(textured_rgb(256, seed=9), float_encoder=True).astype(np.float64)
    assert np.array_equal(wm.haar_approximation(floats), pywt.dwt2(floats, "haar")[0])


@pytest.mark.parametrize("fmt, quality, probed", [("PNG", None, True), ("JPEG", 95, True), ("JPEG", 90, False),
                                                  ("JPEG", 70, False)])
def test_jpegs_too_compressed_for_a_mark_are_not_decoded(fmt, quality, probed):
    image = load_image(encode(sd_v1_mark(textured_rgb(384, seed=1)), fmt, **({"quality": quality} if quality else {})))
    assert wm.mark_can_survive(image) is probed


def test_a_mark_in_a_lightly_compressed_jpeg_is_still_found():
    record, = _watermark(encode(sd_v1_mark(textured_rgb(512, seed=1)), "JPEG", quality=97))
    assert record.data["mark"] == "StableDiffusionV1"
