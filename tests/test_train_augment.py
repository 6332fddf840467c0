"""Augmentation: Mixup/CutMix soft labels, seeded pixel augmentations, the --augment grammar."""

from __future__ import annotations

import pytest
import torch

from synthdetect.train.augment import (
    AlternatingFlip, AugmentConfig, augment_pixels, cutmix, mix_batch, mixup, parse_augment,
)


def _constant_batch(n: int = 6, size: int = 16):
    # image i is filled with the value i, so every output pixel says where it came from
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    y = torch.tensor([1.0, 0.0] * (n // 2))
    return x, y


def test_mixup_blends_images_and_labels_by_the_same_weight():
    x, y = _constant_batch()
    result = mixup(x, y, alpha=0.4, generator=torch.Generator().manual_seed(1))
    lam, perm = result.lam, result.perm
    assert 0.0 <= lam <= 1.0 and result.kind == "mixup"
    assert torch.allclose(result.y, lam * y + (1 - lam) * y[perm])
    expected_pixels = lam * torch.arange(6.0) + (1 - lam) * perm.float()
    assert torch.allclose(result.x[:, 0, 0, 0], expected_pixels)
    mixed_pairs = perm != torch.arange(6)
    # a soft label strictly between 0 and 1 wherever an AI image met a human one
    cross = mixed_pairs & (y != y[perm])
    if 0 < lam < 1:
        assert ((result.y[cross] > 0) & (result.y[cross] < 1)).all()


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_labels_match_the_pasted_area(seed):
    x, y = _constant_batch(size=20)
    result = cutmix(x, y, alpha=1.0, generator=torch.Generator().manual_seed(seed))
    for i in range(6):
        j = int(result.perm[i])
        if i != j:  # an image paired with itself stays itself; its label is unchanged either way
            assert (result.x[i, 0] == i).float().mean().item() == pytest.approx(result.lam, abs=1e-6)
        assert result.y[i].item() == pytest.approx(result.lam * y[i].item() + (1 - result.lam) * y[j].item(), abs=1e-6)


def test_mix_batch_is_off_by_default_and_seeded_when_on():
    x, y = _constant_batch()
    off = mix_batch(x, y, torch.Generator().manual_seed(0), AugmentConfig())
    assert off.kind == "none" and torch.equal(off.y, y)
    config = AugmentConfig(mixup=0.2, cutmix=1.0)
    a = mix_batch(x, y, torch.Generator().manual_seed(5), config)
    b = mix_batch(x, y, torch.Generator().manual_seed(5), config)
    assert a.kind in ("mixup", "cutmix") and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


@pytest.mark.parametrize("spec", ["flip", "crop:0.5", "rot:20", "jpeg:1.0@40-60", "blur:1.0", "resize:1.0@0.3-0.5",
                                  "noflip,shift:0"])
def test_pixel_augmentations_keep_shape_and_are_seeded(spec):
    config = parse_augment(spec)
    x = torch.randint(0, 256, (4, 24, 24, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = augment_pixels(x, torch.Generator().manual_seed(9), config)
    b = augment_pixels(x, torch.Generator().manual_seed(9), config)
    assert a.shape == x.shape and torch.equal(a.float(), b.float())
    assert float(a.min()) >= -1e-3 and float(a.max()) <= 255 + 1e-3
    if spec == "noflip,shift:0":
        assert torch.equal(a, x)
    else:
        assert not torch.equal(a.float(), x.float())


def test_parse_augment_grammar_and_errors():
    config = parse_augment("crop:0.6,rot:10,jpeg:0.5@60-95,mixup:0.2,cutmix:1.0,noflip")
    assert (config.crop_scale, config.rotation, config.jpeg_prob, config.jpeg_quality) == (0.6, 10.0, 0.5, (60, 95))
    assert config.mixup == 0.2 and config.cutmix == 1.0 and not config.hflip and config.mixes
    assert parse_augment(None) == AugmentConfig()
    with pytest.raises(ValueError, match="unknown augmentation 'sharpen'"):
        parse_augment("sharpen")


def test_alternating_flip_shows_the_other_mirror_on_every_draw():
    flips = AlternatingFlip(1000, torch.Generator().manual_seed(0))
    everyone = torch.arange(1000)
    first = flips(everyone)
    assert 400 < int(first.sum()) < 600  # the first draw is a coin toss per image
    some = torch.tensor([3, 7, 500])
    assert torch.equal(flips(some), ~first[some])  # their second draw
    second = flips(everyone)  # the third draw for 3, 7 and 500, the second for the rest
    expected = ~first
    expected[some] = first[some]
    assert torch.equal(second, expected)
    restored = AlternatingFlip(1000, torch.Generator().manual_seed(99))
    restored.load_state_dict(flips.state_dict())
    assert torch.equal(restored(everyone), flips(everyone))


def test_a_given_flip_mask_mirrors_exactly_those_images():
    config = parse_augment("flip:alt,shift:0")
    assert config.alternates_flip and config.flip_mode == "alternate"
    assert parse_augment("flip").flip_mode == "random" and not parse_augment("flip:alt,noflip").alternates_flip
    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, False, True])
    out = augment_pixels(x, torch.Generator().manual_seed(1), config, flip=mask)
    assert torch.equal(out[mask], x[mask].flip(2)) and torch.equal(out[~mask], x[~mask])
    with pytest.raises(ValueError, match="flip mode 'sometimes'"):
        parse_augment("flip:sometimes")
