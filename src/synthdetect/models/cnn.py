"""The small CNN for small images (CIFAKE-sized, 32 px).

Three VGG-style blocks with batch norm: generator artefacts at this size are
high-frequency, so the first block runs at full resolution and only pooling,
not strided convolution, reduces it.  Width is a hyperparameter so the same
architecture serves the ELA-CNN kind.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Outputs one logit per image: log-odds that the image is AI-generated."""

    def __init__(self, width: int = 32, depth: int = 3, dropout: float = 0.2, in_channels: int = 3,
                 tta_hflip: bool = False):
        super().__init__()
        self.hparams = {"width": width, "depth": depth, "dropout": dropout, "in_channels": in_channels}
        if tta_hflip:  # only recorded when used, so older cards load unchanged
            self.hparams["tta_hflip"] = True
        self.tta_hflip = tta_hflip
        layers = []
        cin = in_channels
        for i in range(depth):
            cout = width * (2**i)
            layers.append(_block(cin, cout))
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
