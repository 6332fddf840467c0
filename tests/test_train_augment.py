"""Augmentation: Mixup/CutMix soft labels, seeded pixel augmentations, the --augment grammar."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from synth_data import write_folder
from synthdetect.train.augment import (
    AlternatingFlip, AugmentConfig, augment_pixels, cutmix, mix_batch, mixup, parse_augment, random_rotation,
    random_shift,
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
    assert parse_augment("flip").flip_mode == "random" and not parse_augment("noflip").alternates_flip
    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, False, True])
    out = augment_pixels(x, torch.Generator().manual_seed(1), config, flip=mask)
    assert torch.equal(out[mask], x[mask].flip(2)) and torch.equal(out[~mask], x[~mask])
    with pytest.raises(ValueError, match="flip mode 'sometimes'"):
        parse_augment("flip:sometimes")


@pytest.mark.parametrize("spec, message", [
    ("mixup:-1", "mixup alpha -1: Beta(alpha, alpha) needs alpha above 0"),  # was taken, and mixing silently off
    ("cutmix:nan", "cutmix alpha nan"),
    ("jpeg:0.5@95-60", "jpeg quality 95-60: expected whole numbers LO-HI"),  # was a torch RuntimeError at step 1
    ("jpeg:0.5@50-120", "jpeg quality 50-120"),
    ("jpeg:0.5@60", "jpeg quality '60': expected LO-HI"),  # was "not enough values to unpack"
    ("jpeg:1.5", "jpeg probability 1.5: expected 0 to 1"),
    ("blur:0.5@2-1", "blur sigma 2-1"),
    ("resize:0.5@0.5-2", "resize scale 0.5-2"),
    ("crop:1.5", "crop 1.5"),
    ("rot:-10", "rot -10: expected 0 to 180 degrees"),
    ("shift:-1", "shift -1: expected a whole number of pixels"),  # was a torch RuntimeError at step 1
    ("shift:1.5", "shift '1.5' is not a whole number"),
    ("mixprob:2", "mixprob 2: expected 0 to 1"),
    ("noflip:1", "noflip takes no value"),
])
def test_parse_augment_refuses_values_that_would_crash_mid_training_or_be_ignored(spec, message):
    with pytest.raises(ValueError) as caught:
        parse_augment(spec)
    assert message in str(caught.value) and str(caught.value).startswith(f"--augment {spec!r}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("spec, item", [("mixup:0.2,mixup:0.4", "mixup:0.4"), ("flip:alt,noflip", "noflip"),
                                        ("rot:10,rotation:20", "rotation:20"), ("jpeg,blur,jpeg:0.3", "jpeg:0.3")])
def test_parse_augment_refuses_a_setting_given_twice(spec, item):
    """The last one used to win without a word: a typo or a contradiction, never a choice."""
    with pytest.raises(ValueError, match=f"--augment '{item}': .* give each setting once"):
        parse_augment(spec)


def test_none_starts_from_nothing_only_when_first():
    assert parse_augment("none,jpeg:0.5") == AugmentConfig(hflip=False, shift=0, jpeg_prob=0.5)
    with pytest.raises(ValueError, match="none turns off everything given before it; put it first"):
        parse_augment("jpeg:0.5,none")  # used to drop jpeg silently
    assert parse_augment("FLIP:ALT").alternates_flip  # names and values alike ignore case


def test_a_config_built_directly_is_checked_too():
    """Autopilot builds AugmentConfig from its candidates' dicts, not from a spec."""
    with pytest.raises(ValueError, match="mixup alpha -0.5"):
        AugmentConfig(mixup=-0.5)
    assert AugmentConfig(jpeg_quality=[60, 95]).jpeg_quality == [60, 95]  # a card's JSON list reads back


@pytest.mark.parametrize("spec", ["crop:0.6,noflip,shift:0", "rot:10,noflip,shift:0", "crop:0.5,rot:15"])
def test_interpolating_augmentations_return_whole_pixel_values(spec):
    """The loop casts the batch to uint8, which truncates: unrounded, crop and rotation darkened every pixel they
    touched by half a level on average."""
    x = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = augment_pixels(x, torch.Generator().manual_seed(1), parse_augment(spec))
    assert torch.equal(out, out.round()) and float(out.min()) >= 0 and float(out.max()) <= 255


def test_rotation_is_a_rotation_on_a_wide_image():
    """affine_grid's coordinates are normalised per axis: unscaled, a 16x48 image was sheared, not rotated."""
    h, w = 16, 48
    x = torch.zeros(1, h, w, 3)
    x[0, 7:9, 31:33] = 255  # a dot 8 px right of the centre
    ys, xs = torch.meshgrid(torch.arange(h).float() - (h - 1) / 2, torch.arange(w).float() - (w - 1) / 2,
                            indexing="ij")
    for seed in range(6):
        angle = float(torch.rand(1, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * 30
        out = random_rotation(x, torch.Generator().manual_seed(seed), 30.0)[0, ..., 0]
        dy, dx = float((out * ys).sum() / out.sum()), float((out * xs).sum() / out.sum())
        assert math.hypot(dx, dy) == pytest.approx(8, abs=0.2)
        assert math.degrees(math.atan2(dy, dx)) == pytest.approx(-angle, abs=1.5)  # the grid maps output to input


def test_a_shift_as_wide_as_the_input_is_refused_in_one_line_before_decoding(tmp_path):
    """torch's reflect padding needs fewer pixels than the side; it failed with a RuntimeError at step 1."""
    from synthdetect.cli import app

    with pytest.raises(ValueError, match="shift:8 needs an input of more than 8 px a side, not 8x8"):
        random_shift(torch.zeros(2, 8, 8, 3), torch.Generator(), 8)
    data = write_folder(tmp_path / "data", n_per_class=6, size=16)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "--input-size", "8",
                                      "--augment", "flip,shift:8", "--val-fraction", "0.4", "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert "error: --augment shift:8 needs an input of more than 8 px a side, not 8x8" in result.output
    assert "decode train" not in result.output
    lite = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "lite"), "--model", "efficientnet-lite0",
                                    "--input-size", "16", "--augment", "flip,shift:16", "--val-fraction", "0.4"])
    assert lite.exit_code == 2, lite.output  # checked before the weights are needed or anything is decoded
    assert "error: --augment shift:16 needs an input of more than 16 px a side, not 16x16" in lite.output


@pytest.mark.parametrize("spec", ["", "none", "flip:alt,shift:0", "noflip,crop:0.6,rot:10",
                                  "jpeg:0.5@60-95,blur:0.3@0.1-1.5,resize:0.25@0.4-0.9",
                                  "mixup:0.2,cutmix:1.0,mixprob:0.5", "none,shift:3"])
def test_a_configuration_is_written_as_the_augment_text_that_gives_it(spec):
    config = parse_augment(spec)
    assert parse_augment(config.spec()) == config

