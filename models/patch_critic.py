"""A patch critic for training the regional refiner adversarially (training only).

The refiner's losses (L1, SSIM, SqueezeNet LPIPS) reward the average of what an eye or a
mouth might look like: lashes, lid creases and teeth come out soft.  The critic scores
each small window of an eye or mouth patch as real (a frame's own patch) or drawn (the
refiner's), and the refiner is also trained to be scored real (hinge loss, as in
pix2pixHD's and SPADE's patch discriminators, spectral normalisation for a stable start).
Fully convolutional: it takes the 48 px eye and the 64 px mouth patches alike.  Off in
the shipped recipe unless `loss.adversarial` is set (models/train.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

CHANNELS = (32, 64, 96)


class PatchCritic(nn.Module):
    """Patches (B, 3, n, n) in [0, 1] -> realness scores (B, 1, n / 8, n / 8)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ins = (3,) + CHANNELS[:-1]
        for i, o in zip(ins, CHANNELS):
            layers += [spectral_norm(nn.Conv2d(i, o, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(CHANNELS[-1], 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return self.net(patch * 2.0 - 1.0)


def critic_loss(critic: PatchCritic, real: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the critic on real and drawn patches (the drawn ones detached)."""
    return F.relu(1.0 - critic(real)).mean() + F.relu(1.0 + critic(drawn.detach())).mean()


def drawn_loss(critic: PatchCritic, drawn: torch.Tensor) -> torch.Tensor:
    """The refiner's adversarial loss: its patches scored real."""
    return -critic(drawn).mean()
