"""What the Python API accepts as one image or many, and how it refuses the rest (one clear line)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from synthdetect import Detector, Verdict

from tiny_model import png_bytes, write_tiny_cnn


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector.load(str(write_tiny_cnn(tmp_path_factory.mktemp("tiny") / "pkg")))


def pixels(seed: int = 0, shape: tuple[int, ...] = (32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_a_uint8_array_is_one_image_not_rows(detector):
    colour, grey = pixels(1), pixels(2, (32, 32))
    verdict = detector(colour)
    assert isinstance(verdict, Verdict) and verdict.error is None
    assert verdict.p_ai == pytest.approx(detector(Image.fromarray(colour)).p_ai, abs=1e-6)
    assert detector(grey).error is None and detector(pixels(3, (32, 32, 1))).error is None
    assert detector(pixels(4, (32, 32, 4))).error is None
    many = detector([colour, grey])
    assert len(many) == 2 and all(v.error is None for v in many)
    assert many[0].file == "<array 32x32x3 uint8>"


def test_other_arrays_are_refused_in_one_line_without_stopping_the_batch(detector):
    floats, batch = pixels(1).astype(np.float32) / 255, pixels(1, (2, 32, 32, 3))
    verdicts = detector([floats, batch, pixels(5)])
    assert [v.error_kind for v in verdicts] == ["not_an_image", "not_an_image", None]
    assert "unsupported array (32x32x3 float32): send an HxW or HxWxC uint8 array" in verdicts[0].error
    assert "2x32x32x3" in verdicts[1].error


def test_detect_takes_a_single_path_as_one_image(detector, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(seed=3))
    for single in (str(path), path):
        verdicts = detector.detect(single)
        assert len(verdicts) == 1 and verdicts[0].file == str(path) and verdicts[0].error is None
    assert [v.file for v in detector.iter_detect(str(path))] == [str(path)]
    assert detector.detect(png_bytes(seed=3), names="named.png")[0].file == "named.png"


@pytest.mark.parametrize("bad", [None, 5, {"a": 1}])
def test_no_image_at_all_is_a_clear_type_error(detector, bad):
    with pytest.raises(TypeError, match="Detector takes an image .* or a list of them, not "):
        detector(bad)
    with pytest.raises(TypeError, match="not " + type(bad).__name__):
        detector.detect(bad)


def test_names_must_match_the_inputs_one_to_one(detector):
    two = [png_bytes(seed=1), png_bytes(seed=2)]
    with pytest.raises(ValueError, match="names has 1 entries for 2 inputs"):
        detector.detect(two, names=["a"])
    with pytest.raises(ValueError, match="names has 3 entries for 2 inputs"):
        detector.detect(two, names=["a", "b", "c"])
    assert [v.file for v in detector.detect(two, names=["a", "b"])] == ["a", "b"]


def test_a_web_framework_upload_object_is_read_through_its_file(detector):
    """FastAPI hands over ``UploadFile`` (async ``read``); the core reads ``.file`` and keeps ``.filename``."""
    starlette = pytest.importorskip("starlette.datastructures")
    data = png_bytes(seed=6)
    upload = starlette.UploadFile(io.BytesIO(data), filename="phone.png")
    verdict = detector(upload)
    assert verdict.error is None and verdict.file == "phone.png"
    assert verdict.p_ai == pytest.approx(detector(data).p_ai, abs=1e-6)
    assert detector([starlette.UploadFile(io.BytesIO(data), filename=None)])[0].error is None
    asyncio.run(upload.close())
