"""The building block that synthesizer v2's networks (models/generator.py, models/regions.py) share."""

from __future__ import annotations

import torch.nn as nn


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions with leaky ReLUs; the first strides (`stride` 2: half the size)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
