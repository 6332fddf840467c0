"""The small CNN for small images (CIFAKE-sized, 32 px).

VGG-style blocks with batch norm: generator artefacts at this size are
high-frequency, so the first block runs both its convolutions at full
resolution and only pooling, not strided convolution, reduces it.  Width is
a hyperparameter so the same architecture serves the ELA-CNN kind.

``layout="pool-mid"`` pools *between* the two convolutions of every block
after the first (as fast CIFAR-10 trainers such as airbench do): the deeper
blocks' second convolution runs at half resolution, which cuts the
arithmetic of the 4-block, width-32 network by 40% (52.8 to 31.6 M MAC per
image) with the same parameters.  On 2 CPU cores the time is that arithmetic.

``layout="s2d"`` replaces the full-resolution first block by a lossless
space-to-depth step (each 2x2 pixel patch becomes 4x the channels, as
TResNet's stem does), so the network starts at half resolution with the
second block's width.  No pixel is discarded, so high-frequency evidence
stays available, but the most expensive part of the step goes: on 2 CPU
threads the 32-channel full-resolution block took 36% of the training step
for 20% of the arithmetic (memory-bound batch norm and thin convolutions).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn


LAYOUTS = ("vgg", "pool-mid", "s2d")


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, cout: int, pool_mid: bool = False) -> nn.Sequential:
    if pool_mid:
        return nn.Sequential(*_conv_bn_relu(cin, cout), nn.MaxPool2d(2), *_conv_bn_relu(cout, cout))
    return nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout), nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """Outputs one logit per image: log-odds that the image is AI-generated."""

    def __init__(self, width: int = 32, depth: int = 3, dropout: float = 0.2, in_channels: int = 3,
                 tta_hflip: bool = False, layout: str = "vgg"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown small-cnn layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        # depth 0 had trained a "CNN" without a convolution (a linear model of the mean colour), width 0 a network
        # of empty layers; both wrote a package without a word
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
            raise ValueError(f"small-cnn depth {depth!r}: expected a whole number of blocks, 1 or more")
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
            raise ValueError(f"small-cnn width {width!r}: expected a whole number of channels, 1 or more")
        if layout == "s2d" and depth < 2:
            raise ValueError("small-cnn layout 's2d' replaces the first block, so it needs depth 2 or more")
        self.hparams = {"width": width, "depth": depth, "dropout": dropout, "in_channels": in_channels}
        if tta_hflip:  # only recorded when used, so older cards load unchanged
            self.hparams["tta_hflip"] = True
        if layout != "vgg":
            self.hparams["layout"] = layout
        self.tta_hflip = tta_hflip
        layers: list[nn.Module] = []
        cin = in_channels
        first = 0
        if layout == "s2d":
            layers.append(nn.PixelUnshuffle(2))
            cin, first = in_channels * 4, 1
        for i in range(first, depth):
            cout = width * (2**i)
            layers.append(_block(cin, cout, pool_mid=layout == "pool-mid" and i > 0))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 1))

    def _logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x))).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Test-time augmentation lives in the module, so validation, calibration, serving and ONNX export
        # all see the same averaged logit.  Width is a multiple of 8, so a mirror keeps JPEG blocks aligned.
        if self.tta_hflip and not self.training:
            return (self._logit(x) + self._logit(x.flip(3))) / 2
        return self._logit(x)
