"""Seeded training augmentation: geometry, compression, blur, resize, and Mixup / CutMix.

Written on torch + Pillow because torchvision cannot be installed beside the
CPU torch build we pin.  Every random draw comes from the ``torch.Generator``
the trainer passes in, so a seed reproduces a run, resume included.

Pixel augmentations take and return a uint8-valued NHWC batch.  Mixing
(:func:`mix_batch`) works on the normalised NCHW batch and returns *soft*
labels, used with binary cross-entropy on the single AI logit.
"""

from __future__ import annotations

import io
import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter


@dataclass
class AugmentConfig:
    """Each augmentation is off when its strength/probability is 0 (flip and shift excepted)."""

    hflip: bool = True
    flip_mode: str = "random"  # or "alternate": each image shows the other mirror each time it is drawn
    shift: int = 2  # reflect-padded translation in px (the CIFAKE recipe)
    crop_scale: float = 0.0  # random resized crop: min area share, e.g. 0.6; 0 = off
    rotation: float = 0.0  # max degrees either way
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    resize_prob: float = 0.0
    resize_scale: tuple[float, float] = (0.4, 0.9)  # downscale then back up: lost resolution
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0
    mix_prob: float = 1.0  # share of batches mixed when mixup/cutmix are on

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse a setting that would crash mid-training (after decoding) or quietly do other than asked.

        A quality range given high-low, a negative shift or a shift as wide as the image stopped the first
        training step with a torch RuntimeError; a negative or NaN Mixup alpha, a probability above 1 or a
        crop share above 1 were taken without a word.
        """
        problem = _config_problem(self)
        if problem:
            raise ValueError(problem)

    def check_input_size(self, size: tuple[int, int]) -> None:
        """The reflect-padded shift needs fewer pixels than the image has; said before decoding, not at step 1."""
        if self.shift >= min(size):
            raise ValueError(f"--augment shift:{self.shift} needs an input of more than {self.shift} px a side, "
                             f"not {size[0]}x{size[1]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def spec(self) -> str:
        """The ``--augment`` text that gives exactly this configuration (``parse_augment(c.spec()) == c``)."""
        items = ["none"]
        if self.hflip:
            items.append("flip:alt" if self.flip_mode == "alternate" else "flip")
        if self.shift:
            items.append(f"shift:{self.shift}")
        if self.crop_scale:
            items.append(f"crop:{self.crop_scale:g}")
        if self.rotation:
            items.append(f"rot:{self.rotation:g}")
        for name, prob, (lo, hi) in (("jpeg", self.jpeg_prob, self.jpeg_quality),
                                     ("blur", self.blur_prob, self.blur_sigma),
                                     ("resize", self.resize_prob, self.resize_scale)):
            if prob:
                items.append(f"{name}:{prob:g}@{lo:g}-{hi:g}")
        for name, alpha in (("mixup", self.mixup), ("cutmix", self.cutmix)):
            if alpha:
                items.append(f"{name}:{alpha:g}")
        if (self.mixup or self.cutmix) and self.mix_prob != 1.0:  # mixprob:0 too: "mixup:0.2" alone would mix
            items.append(f"mixprob:{self.mix_prob:g}")
        return ",".join(items) if len(items) > 1 else "none"

    @property
    def alternates_flip(self) -> bool:
        return self.hflip and self.flip_mode == "alternate"

    @property
    def mixes(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_prob > 0


def _config_problem(c: AugmentConfig) -> str | None:
    if c.flip_mode not in ("random", "alternate"):
        return f"flip mode {c.flip_mode!r} is not 'random' or 'alternate'"
    if isinstance(c.shift, bool) or not isinstance(c.shift, numbers.Integral) or c.shift < 0:
        return f"shift {c.shift!r}: expected a whole number of pixels, 0 or more"
    if not 0 <= c.crop_scale <= 1:
        return f"crop {c.crop_scale:g}: the smallest share of the area kept is above 0 and at most 1 (0 = off)"
    if not 0 <= c.rotation <= 180:
        return f"rot {c.rotation:g}: expected 0 to 180 degrees"
    for name, prob in (("jpeg probability", c.jpeg_prob), ("blur probability", c.blur_prob),
                       ("resize probability", c.resize_prob), ("mixprob", c.mix_prob)):
        if not 0 <= prob <= 1:
            return f"{name} {prob:g}: expected 0 to 1"
    lo, hi = c.jpeg_quality
    if not (float(lo).is_integer() and float(hi).is_integer() and 0 <= lo <= hi <= 100):
        return f"jpeg quality {lo}-{hi}: expected whole numbers LO-HI with 0 <= LO <= HI <= 100"
    lo, hi = c.blur_sigma
    if not 0 <= lo <= hi < math.inf:
        return f"blur sigma {lo:g}-{hi:g}: expected LO-HI with 0 <= LO <= HI (pixels)"
    lo, hi = c.resize_scale
    if not 0 < lo <= hi <= 1:
        return f"resize scale {lo:g}-{hi:g}: expected LO-HI with 0 < LO <= HI <= 1 (the share of the side kept)"
    for name, alpha in (("mixup", c.mixup), ("cutmix", c.cutmix)):
        if not 0 <= alpha < math.inf:
            return f"{name} alpha {alpha:g}: Beta(alpha, alpha) needs alpha above 0 (0 = off)"
    return None


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=generator))


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, min_scale: float) -> torch.Tensor:
    """Per image: crop a random box covering ``min_scale``..1 of the area (aspect 3:4..4:3), resize back."""
    n, h, w, _ = x.shape
    out = torch.empty_like(x, dtype=torch.float32)
    for i in range(n):
        area = _uniform(generator, min_scale, 1.0) * h * w
        aspect = math.exp(_uniform(generator, math.log(3 / 4), math.log(4 / 3)))
        ch = min(h, max(1, int(round(math.sqrt(area / aspect)))))
        cw = min(w, max(1, int(round(math.sqrt(area * aspect)))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = x[i, top : top + ch, left : left + cw].permute(2, 0, 1).unsqueeze(0).float()
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    return out


def random_rotation(x: torch.Tensor, generator: torch.Generator, degrees: float) -> torch.Tensor:
    """Rotate each image by up to ``degrees`` either way, reflecting at the borders.

    ``affine_grid`` works in coordinates normalised to -1..1 on each axis, so the rotation is scaled by the
    aspect ratio to stay a rotation in pixels (unscaled, a wide image was sheared and squashed instead).
    """
    n, h, w, _ = x.shape
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.stack([torch.stack([cos, -sin * h / w, torch.zeros(n)], 1),
                         torch.stack([sin * w / h, cos, torch.zeros(n)], 1)], 1)
    nchw = x.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta, list(nchw.shape), align_corners=False)
    return F.grid_sample(nchw, grid, mode="bilinear", padding_mode="reflection", align_corners=False).permute(0, 2, 3, 1)


def _pil_ops(x: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """JPEG re-compression, Gaussian blur and down-up resizing, each applied per image with its probability."""
    arrays = x.clamp(0, 255).round().to(torch.uint8).numpy()
    for i in range(arrays.shape[0]):
        draws = torch.rand(3, generator=generator)
        im = None
        if draws[0] < config.resize_prob:
            im = Image.fromarray(arrays[i])
            scale = _uniform(generator, *config.resize_scale)
            small = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(small, Image.Resampling.BILINEAR).resize(im.size, Image.Resampling.BILINEAR)
        if draws[1] < config.blur_prob:
            im = im or Image.fromarray(arrays[i])
            im = im.filter(ImageFilter.GaussianBlur(_uniform(generator, *config.blur_sigma)))
        if draws[2] < config.jpeg_prob:
            im = im or Image.fromarray(arrays[i])
            lo, hi = config.jpeg_quality
            quality = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=quality)
            im = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        if im is not None:
            arrays[i] = np.asarray(im)
    return torch.from_numpy(arrays)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate the batch by up to ``max_shift`` px, reflect-padded (the same draw as the CIFAKE recipe)."""
    _, h, w, _ = x.shape
    if max_shift >= min(h, w):
        raise ValueError(f"--augment shift:{max_shift} needs an input of more than {max_shift} px a side, not {w}x{h}")
    padded = F.pad(x.permute(0, 3, 1, 2).float(), (max_shift,) * 4, mode="reflect")
    dx, dy = (int(v) for v in torch.randint(0, 2 * max_shift + 1, (2,), generator=generator))
    return padded[:, :, dy : dy + h, dx : dx + w].permute(0, 2, 3, 1)


class AlternatingFlip:
    """Derandomised mirroring (Jordan 2024, airbench's "alternating flip"): each image shows the other mirror
    every time it is drawn, its first draw a coin toss.

    A coin toss per draw shows some images the same way several draws running, so short schedules spend steps on
    views already seen; alternating shows both views in any two consecutive draws.  Counting *draws* rather than
    epochs keeps the alternation under selective backprop, where an image can sit out epochs.
    """

    def __init__(self, n_images: int, generator: torch.Generator):
        self.first = torch.rand(n_images, generator=generator) < 0.5
        self.draws = torch.zeros(n_images, dtype=torch.int64)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """The mirror mask for the images ``idx`` (distinct, as in one batch); counts this draw."""
        flip = self.first[idx] ^ (self.draws[idx] % 2 == 1)
        self.draws[idx] += 1
        return flip

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"first": self.first.clone(), "draws": self.draws.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.first, self.draws = state["first"].clone(), state["draws"].clone()


@dataclass(frozen=True)
class PixelAugmenter:
    """The training loop's ``augment(x, generator, flip=None)`` for one config.

    It carries ``alternates_flip`` so the loop reads the flip schedule from the
    augmentation it was given, rather than from a second argument that could
    disagree with it.
    """

    config: AugmentConfig

    @property
    def alternates_flip(self) -> bool:
        return self.config.alternates_flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator, flip: torch.Tensor | None = None) -> torch.Tensor:
        return augment_pixels(x, generator, self.config, flip)


def augment_pixels(x: torch.Tensor, generator: torch.Generator, config: AugmentConfig,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the switched-on pixel augmentations to a uint8 NHWC batch (returns NHWC of whole numbers in 0..255).

    ``flip`` (one bool per image) is the training loop's mirror schedule for ``flip_mode="alternate"``;
    without it a switched-on flip is a coin toss per image.  Crop and rotation interpolate, and the loop
    casts the result to uint8, which truncates: unrounded, every pixel they touched lost half a level on average.
    """
    if config.crop_scale > 0:
        x = random_resized_crop(x, generator, config.crop_scale)
    if config.rotation > 0:
        x = random_rotation(x, generator, config.rotation)
    if config.jpeg_prob > 0 or config.blur_prob > 0 or config.resize_prob > 0:
        x = _pil_ops(x, generator, config)
    if flip is None and config.hflip:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(2), x)
    if config.shift:
        x = random_shift(x, generator, config.shift)
    return x.round() if x.is_floating_point() else x


@dataclass
class MixResult:
    x: torch.Tensor
    y: torch.Tensor
    lam: float  # share of each image (and label) that is its own
    perm: torch.Tensor  # index of the partner each image was mixed with
    kind: str  # "mixup", "cutmix" or "none"


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator) -> MixResult:
    """Mixup (Zhang et al. 2018): a convex blend of image pairs; labels blend by the same weight."""
    lam = float(_numpy_rng(generator).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator)
    return MixResult(lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm], lam, perm, "mixup")


def cutmix(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator) -> MixResult:
    """CutMix (Yun et al. 2019) on NCHW: paste a box from the partner; labels weight by the pasted area."""
    n, _, h, w = x.shape
    lam = float(_numpy_rng(generator).beta(alpha, alpha))
    perm = torch.randperm(n, generator=generator)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the box was clipped: weight by the area really pasted
    return MixResult(mixed, lam * y + (1 - lam) * y[perm], lam, perm, "cutmix")


def mix_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> MixResult:
    """Mixup or CutMix (one of them per batch, chosen at random when both are on), with ``mix_prob``."""
    if not config.mixes or float(torch.rand(1, generator=generator)) >= config.mix_prob:
        return MixResult(x, y, 1.0, torch.arange(x.shape[0]), "none")
    use_cutmix = config.cutmix > 0 and (config.mixup <= 0 or float(torch.rand(1, generator=generator)) < 0.5)
    if use_cutmix:
        return cutmix(x, y, config.cutmix, generator)
    return mixup(x, y, config.mixup, generator)


_EXAMPLE = ("e.g. flip,crop:0.6,rot:10,jpeg:0.5@60-95,blur:0.3,resize:0.3,mixup:0.2,cutmix:1.0,mixprob:0.5,"
            "flip:alt,noflip,shift:0,none")

#: names that set the same thing: giving two of them is a contradiction or a typo, never a choice
_SETTING = {"flip": "flip", "noflip": "flip", "rot": "rot", "rotation": "rot"}


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a whole number") from None


def _span(text: str, what: str, convert) -> tuple:
    lo, sep, hi = text.partition("-")
    if not (lo and sep and hi):
        raise ValueError(f"{what} {text!r}: expected LO-HI")
    return convert(lo, what), convert(hi, what)


def parse_augment(spec: str | None, base: AugmentConfig | None = None) -> AugmentConfig:
    """``"flip,crop:0.6,rot:10,jpeg:0.5@60-95,blur:0.3,resize:0.3,mixup:0.2,cutmix:1.0,noflip,shift:0"``.

    Items change ``base`` (default: flip and a 2 px shift); ``none`` first starts from nothing instead.
    ``flip:alt`` mirrors each image every other time it is drawn instead of at random (see ``AlternatingFlip``).
    Each setting may be given once, and every value is checked here, so a bad one fails in one line before
    any image is decoded rather than with a torch error at the first training step.
    """
    config = AugmentConfig(**(base or AugmentConfig()).to_dict())
    if not spec:
        return config
    seen: set[str] = set()
    for position, item in enumerate(part.strip().lower() for part in spec.split(",") if part.strip()):
        name, colon, value = item.partition(":")
        try:
            setting = _SETTING.get(name, name)
            if setting in seen:
                raise ValueError(f"{name} sets what an earlier item set; give each setting once")
            seen.add(setting)
            if colon and name in ("noflip", "none"):
                raise ValueError(f"{name} takes no value")
            if name == "flip":
                if value not in ("", "random", "alt", "alternate"):
                    raise ValueError(f"flip mode {value!r} is not 'random' or 'alt'")
                config.hflip = True
                config.flip_mode = "alternate" if value.startswith("alt") else "random"
            elif name == "noflip":
                config.hflip = False
            elif name == "shift":
                config.shift = _whole(value, "shift")
            elif name == "crop":
                config.crop_scale = _number(value or "0.6", "crop")
            elif name in ("rot", "rotation"):
                config.rotation = _number(value or "10", "rot")
            elif name in ("jpeg", "blur", "resize"):
                prob, _, span = (value or "0.5").partition("@")
                setattr(config, f"{name}_prob", _number(prob, f"{name} probability"))
                if span:
                    if name == "jpeg":
                        config.jpeg_quality = _span(span, "jpeg quality", _whole)
                    else:
                        setattr(config, "blur_sigma" if name == "blur" else "resize_scale",
                                _span(span, f"{name} {'sigma' if name == 'blur' else 'scale'}", _number))
            elif name in ("mixup", "cutmix"):
                setattr(config, name, _number(value or ("0.2" if name == "mixup" else "1.0"), f"{name} alpha"))
            elif name == "mixprob":
                config.mix_prob = _number(value, "mixprob")
            elif name == "none":
                if position:
                    raise ValueError("none turns off everything given before it; put it first")
                config = AugmentConfig(hflip=False, shift=0)
            else:
                raise ValueError(f"unknown augmentation '{name}'")
            config.check()
        except ValueError as exc:
            raise ValueError(f"--augment {item!r}: {exc} ({_EXAMPLE})") from None
    if "mixprob" in seen and not (config.mixup > 0 or config.cutmix > 0):
        # it was taken and dropped without a word: the printed augmentation simply lacked it
        raise ValueError(f"--augment 'mixprob:{config.mix_prob:g}': mixprob is the share of batches mixed, and "
                         f"nothing is mixed without mixup or cutmix; add mixup:ALPHA or cutmix:ALPHA, or leave it out")
    return config
