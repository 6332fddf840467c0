"""What the Python API accepts as one image or many, and how it refuses the rest (one clear line)."""

from __future__ import annotations

import asyncio
import io
import json

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


def test_names_may_be_paths_and_the_verdicts_still_serialise(detector, tmp_path):
    """A ``Path`` name became the verdict's ``file`` as it was, and ``to_json`` raised "PosixPath is not JSON
    serializable"."""
    from pathlib import Path

    verdicts = detector.detect([png_bytes(seed=1), b"junk"], names=(n for n in [Path("a.png"), tmp_path / "b.png"]))
    assert [v.file for v in verdicts] == ["a.png", str(tmp_path / "b.png")]
    assert [json.loads(v.to_json())["file"] for v in verdicts] == ["a.png", str(tmp_path / "b.png")]
    assert detector.detect(png_bytes(seed=1), names=Path("one.png"))[0].file == "one.png"


@pytest.mark.parametrize("bad", [None, 5])
def test_streaming_no_image_at_all_is_the_same_clear_type_error(detector, bad):
    with pytest.raises(TypeError, match="Detector takes an image .* or a list of them, not "):
        list(detector.iter_detect(bad))


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


def test_an_input_that_fails_to_read_in_an_unforeseen_way_fails_alone(detector, tmp_path):
    """A closed file raised ValueError out of ``detect`` and lost the whole batch's verdicts."""
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(seed=7))
    closed = open(path, "rb")
    closed.close()
    verdicts = detector([png_bytes(seed=1), closed, str(path)])
    assert [v.error_kind for v in verdicts] == [None, "unreadable", None]
    assert verdicts[1].error == f"{path}: cannot read stream (read of closed file)"


def test_an_empty_path_is_not_the_working_directory(detector):
    """``Path("")`` is ``.``: an empty string was refused as "is a directory, not an image file"."""
    verdict = detector("")
    assert verdict.error_kind == "not_found" and verdict.error == "<empty path>: empty path"


def test_an_array_or_image_without_pixels_is_an_error_not_a_small_image(detector):
    """A 0x0 array has nothing to judge: it was an "uncertain" verdict about an image "too small" (0x0 px)."""
    empty_array, empty_image = np.zeros((0, 0, 3), np.uint8), Image.new("RGB", (0, 5))
    verdicts = detector([empty_array, empty_image, pixels(1)])
    assert [v.error_kind for v in verdicts] == ["empty", "empty", None]
    assert verdicts[0].error.endswith("empty array (0x0x3 uint8): no pixels to judge")
    assert verdicts[1].error.endswith("empty image (0x5 px): no pixels to judge")
    assert detector(np.array(7, np.uint8)).error.endswith("unsupported array (0-d uint8): send an HxW or HxWxC "
                                                          "uint8 array")


def test_a_model_failing_on_one_image_fails_only_that_image(detector, monkeypatch):
    """As in ``scan``: a model (or its runtime) that raises on one input makes one failed verdict, not a traceback."""
    model = detector.model
    prepare, score = model.prepare, model.score_prepared
    monkeypatch.setattr(model, "prepare", lambda image: "poison" if image.size == (40, 40) else prepare(image))

    def score_or_fail(prepared):
        if any(isinstance(p, str) for p in prepared):
            raise RuntimeError("runtime\nexploded")
        return score(prepared)

    monkeypatch.setattr(model, "score_prepared", score_or_fail)
    good, bad = png_bytes(seed=1), png_bytes((40, 40), seed=2)
    verdicts = detector.detect([good, bad, png_bytes(seed=3)], names=["a.png", "b.png", "c.png"])
    assert [v.error_kind for v in verdicts] == [None, "model_error", None]
    assert verdicts[1].error == "b.png: model failed (RuntimeError: runtime exploded)"
    assert verdicts[0].p_ai == pytest.approx(detector(good).p_ai, abs=1e-6)


def test_a_model_input_that_cannot_be_prepared_fails_only_that_image(detector, monkeypatch):
    prepare = detector.model.prepare

    def prepare_or_fail(image):
        if image.size == (40, 40):
            raise ValueError("cannot resize")
        return prepare(image)

    monkeypatch.setattr(detector.model, "prepare", prepare_or_fail)
    verdicts = detector.detect([png_bytes((40, 40), seed=2), png_bytes(seed=3)], names=["b.png", "c.png"])
    assert [v.error_kind for v in verdicts] == ["model_error", None]
    assert verdicts[0].error == "b.png: preparing the model input failed (ValueError: cannot resize)"


def test_probes_name_one_probe_as_a_string_and_refuse_unknown_ones_when_built(tmp_path):
    """``probes="c2pa"`` ran the probes 'c', '2', 'p', 'a' (a KeyError at the first image); a typo failed only then."""
    package = str(write_tiny_cnn(tmp_path / "pkg"))
    assert Detector.load(package, probes="c2pa").probes == ["c2pa"]
    assert Detector.load(package, probes="c2pa")(png_bytes(seed=1)).error is None
    with pytest.raises(ValueError, match="unknown evidence probe\\(s\\) 'bogus' \\(known: c2pa, "):
        Detector.load(package, probes=["c2pa", "bogus"])


def test_load_takes_a_pathlib_path_as_a_package_path(tmp_path, monkeypatch):
    """A ``Path`` failed with AttributeError; and a relative one named like a shipped model is the local package."""
    write_tiny_cnn(tmp_path / "cifake-cnn")
    assert Detector.load(tmp_path / "cifake-cnn").name == "tiny-cnn"
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    assert Detector.load(Path("cifake-cnn")).name == "tiny-cnn"
    with pytest.raises(TypeError, match="Detector.load takes a model name or a package path, not NoneType"):
        Detector.load(None)


def test_a_detector_says_what_it_is(detector):
    assert repr(detector) == "Detector(model='tiny-cnn', kind='small-cnn', evidence=all)"
    assert repr(Detector(detector.model, use_evidence=False)) == "Detector(model='tiny-cnn', kind='small-cnn', " \
                                                                 "evidence=off)"


def test_a_list_holds_one_decoded_image_at_a_time(detector, monkeypatch):
    """detect() decoded the whole list before examining any of it: 16 compressed 40 MP PNGs (2 MB) held 2.8 GB.
    Each image is now examined as it is decoded; only the small prepared inputs wait for the model pass."""
    import gc
    import weakref

    import synthdetect.api as api

    decoded: list[weakref.ref] = []
    alive_at_each_load: list[int] = []
    real_load = api.load_image

    def load_image(*args, **kwargs):
        gc.collect()
        alive_at_each_load.append(sum(ref() is not None for ref in decoded))
        loaded = real_load(*args, **kwargs)
        decoded.append(weakref.ref(loaded.rgb))
        return loaded

    monkeypatch.setattr(api, "load_image", load_image)
    verdicts = detector.detect([png_bytes((32, 32), seed=i) for i in range(5)])
    assert [v.ok for v in verdicts] == [True] * 5
    assert alive_at_each_load == [0, 0, 0, 0, 0]
