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
