"""Crop policy and aggregation of the full-size model (no encoder needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthdetect.models.multicrop import CropPolicy, aggregate, resize_short_center_crop


def _image(w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_native_crops_are_copied_pixels_inside_the_image():
    img = _image(1000, 600)
    policy = CropPolicy(size=224, native_crops=4)
    boxes = policy.native_crop_boxes(*img.size)
    assert len(boxes) == 4 and len(set(boxes)) == 4
    for left, top, right, bottom in boxes:
        assert 0 <= left and right <= 1000 and 0 <= top and bottom <= 600
        assert (right - left, bottom - top) == (224, 224)
    crops = policy.native_crops_of(img)
    left, top, right, bottom = boxes[0]
    # native resolution: the crop is exactly those pixels, no resampling
    assert np.array_equal(np.asarray(crops[0]), np.asarray(img)[top:bottom, left:right])


def test_small_image_falls_back_to_its_global_view():
    img = _image(150, 300)
    policy = CropPolicy(size=224, native_crops=4)
    crops = policy.native_crops_of(img)
    assert len(crops) == 1
    assert crops[0].size == (224, 224)
    assert np.array_equal(np.asarray(crops[0]), np.asarray(policy.global_crop(img)))


def test_global_view_is_centre_crop_of_short_side_resize():
    img = _image(448, 224)
    view = resize_short_center_crop(img, 224)
    assert view.size == (224, 224)
    assert np.array_equal(np.asarray(view), np.asarray(img)[:, 112:336])


def test_max_native_side_rescales_huge_images_first():
    img = _image(4000, 3000)
    policy = CropPolicy(size=224, native_crops=4, max_native_side=1024)
    assert all(c.size == (224, 224) for c in policy.native_crops_of(img))
    assert policy.native_crop_boxes(4000, 3000) != policy.native_crop_boxes(1365, 1024)


def test_aggregations():
    z = [1.0, 2.0, 3.0, 10.0]
    assert aggregate(z, "mean") == pytest.approx(4.0)
    assert aggregate(z, "max") == 10.0
    assert aggregate(z, "median") == pytest.approx(2.5)
    assert aggregate(z, "trimmed_mean") == pytest.approx(2.5)  # drops 1.0 and 10.0
    assert aggregate([5.0], "trimmed_mean") == 5.0
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(z, "mode")
    with pytest.raises(ValueError, match="no crop scores"):
        aggregate([], "mean")


def test_policy_round_trips_through_the_card_and_keys_differ():
    policy = CropPolicy(size=224, native_crops=9, max_native_side=2048)
    assert CropPolicy.from_dict(policy.to_dict()) == policy
    assert policy.key() == CropPolicy.from_dict(policy.to_dict()).key()
    assert policy.key() != CropPolicy().key()


def test_thumbnail_global_view_discards_resolution_and_keeps_old_policies_unchanged():
    import io

    import numpy as np
    from PIL import Image

    from synthdetect.models.multicrop import CropPolicy

    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((1600, 1200), Image.BICUBIC)
    noisy = Image.fromarray(np.clip(np.asarray(smooth, dtype=np.int16) + rng.integers(-40, 41, (1200, 1600, 3)),
                                    0, 255).astype(np.uint8))
    thumb = CropPolicy(native_crops=0, global_short_side=48, global_jpeg_quality=90)
    plain = CropPolicy(native_crops=0)
    shrink_only = CropPolicy(native_crops=0, global_short_side=48)

    def noise_seen(policy):
        a, b = (np.asarray(policy.global_crop(im), dtype=np.float64) for im in (smooth, noisy))
        return np.abs(a - b).mean()

    assert thumb.global_crop(noisy).size == (224, 224)
    assert noise_seen(shrink_only) < 0.5 * noise_seen(plain)  # the thumbnail hides most of the sensor-like noise
    assert noise_seen(thumb) < noise_seen(plain)  # and the common JPEG pass adds back less than it hid
    assert "global_short_side" not in plain.to_dict()  # older cards and feature caches keep their key
    assert CropPolicy.from_dict(thumb.to_dict()) == thumb
    small = Image.new("RGB", (40, 30), (10, 20, 30))
    assert thumb.global_crop(small).size == (224, 224)  # smaller than the thumbnail: never enlarged first


def test_a_member_on_crops_uses_the_global_view_when_the_policy_has_no_crops():
    import numpy as np

    from synthdetect.models.view_features import LinearMember

    member = LinearMember(extractor="x", view="crops", mean=np.zeros(3), scale=np.ones(3),
                          coef=np.array([1.0, 2.0, 3.0]), intercept=0.5, aggregate="mean")
    feats = {"global": np.array([1.0, 1.0, 1.0])}
    assert member.logit(feats) == 6.5


def test_a_strip_is_resized_only_where_the_centre_crop_falls(monkeypatch):
    """20000x1 was resized whole to 4,480,000x224 px on the way to its 224 px crop (24 s, 4.2 GB)."""
    rng = np.random.default_rng(0)
    strip = Image.fromarray(rng.integers(0, 255, (40, 2000, 3), dtype=np.uint8))  # aspect 50
    whole = strip.resize((11200, 224), Image.Resampling.BICUBIC).crop((5488, 0, 5712, 224))
    asked: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def recording(self, size, *args, **kw):
        asked.append(tuple(size))
        return resize(self, size, *args, **kw)

    monkeypatch.setattr(Image.Image, "resize", recording)
    out = resize_short_center_crop(strip, 224)
    assert asked == [(224, 224)]
    difference = np.abs(np.asarray(out, dtype=int) - np.asarray(whole, dtype=int))
    assert difference.mean() < 1.0 and difference.max() <= 12  # Pillow's box resize rounds a little differently

    asked.clear()
    photo = Image.fromarray(rng.integers(0, 255, (300, 1800, 3), dtype=np.uint8))  # aspect 6: as the heads saw
    expected = resize(photo, (1344, 224), Image.Resampling.BICUBIC).crop((560, 0, 784, 224))
    assert np.array_equal(np.asarray(resize_short_center_crop(photo, 224)), np.asarray(expected))
    assert asked == [(1344, 224)]
