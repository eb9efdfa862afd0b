"""Synthesizer v2's network: key-frame features warped along the motion, and a generator
that draws what the warp cannot (an opening mouth, closing eyes, what a turn uncovers).

    key frame (once) --KeyEncoder--> features at 1/1, 1/2, 1/4, 1/8 of the working size
    per frame: warp each level along the motion field (4-D grid_sample)
               + target heat maps (eyes, irises, lips, brows, outline) and where the picture moves
               --FrameDecoder--> a colour correction of the warped key frame

The correction is applied through the occlusion gate of models/learned.py (where the
picture moves), so the network only draws where the warp may be wrong; its last layer
starts at zero, so an untrained network gives the plain warp.

The working size is 128 (`WORK`): the generator's correction is drawn there and upsampled
onto the full-resolution warp.  Small on purpose (about 0.7 M parameters): it trains on
two CPU cores and runs per frame in a call.  The eyes and the mouth are drawn once more at
the picture's own resolution by the regional refiner (models/regions.py), part of the
same weights (`Generator.regions`) and trained after the rest (models/train.py, stage
"regions").
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers import conv_block
from models.motion import GROUPS
from models.regions import RegionRefiner

WORK = 128
CHANNELS = (16, 32, 48, 64)
FRAME_INPUTS = len(GROUPS) + 1 + 3      # heat maps, motion magnitude, warped key frame


class KeyEncoder(nn.Module):
    """Key frame (1, 3, WORK, WORK) in [0, 1] -> feature maps at four scales (run once per key frame)."""

    def __init__(self) -> None:
        super().__init__()
        ins = (3,) + CHANNELS[:-1]
        self.levels = nn.ModuleList(conv_block(i, o, 1 if k == 0 else 2) for k, (i, o) in enumerate(zip(ins, CHANNELS)))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        out, x = [], image
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class FrameDecoder(nn.Module):
    """Warped key features + target conditions -> colour correction (B, 3, WORK, WORK) in (-1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        ins = (FRAME_INPUTS,) + CHANNELS[:-1]
        self.cond = nn.ModuleList(conv_block(i, o, 1 if k == 0 else 2) for k, (i, o) in enumerate(zip(ins, CHANNELS)))
        ups = []
        for k in range(len(CHANNELS) - 1, 0, -1):
            below = CHANNELS[k] * 2 if k == len(CHANNELS) - 1 else CHANNELS[k]
            ups.append(conv_block(below + 2 * CHANNELS[k - 1], CHANNELS[k - 1]))
        self.ups = nn.ModuleList(ups)
        self.bottom = conv_block(2 * CHANNELS[-1], 2 * CHANNELS[-1])
        self.out = nn.Conv2d(CHANNELS[0], 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, warped: list[torch.Tensor], conditions: torch.Tensor) -> torch.Tensor:
        skips, x = [], conditions
        for level in self.cond:
            x = level(x)
            skips.append(x)
        x = self.bottom(torch.cat([warped[-1], skips[-1]], 1))
        for k, up in zip(range(len(CHANNELS) - 2, -1, -1), self.ups):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = up(torch.cat([x, warped[k], skips[k]], 1))
        return torch.tanh(self.out(x))


class Generator(nn.Module):
    """The learned part of synthesizer v2, with its version (what a weight file must match)."""

    VERSION = "synth-v2.7"

    def __init__(self) -> None:
        super().__init__()
        self.key_encoder = KeyEncoder()
        self.decoder = FrameDecoder()
        self.regions = RegionRefiner()


def warp_features(features: list[torch.Tensor], grid: torch.Tensor) -> list[torch.Tensor]:
    """Each feature map (1 or B, C, h, w) sampled along the backward grid (B, H, W, 2), resized to its level."""
    out = []
    g = grid.permute(0, 3, 1, 2)
    for f in features:
        gl = grid if f.shape[-2:] == grid.shape[1:3] else F.interpolate(
            g, size=f.shape[-2:], mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        out.append(F.grid_sample(f.expand(len(grid), -1, -1, -1), gl, mode="bilinear", padding_mode="border",
                                 align_corners=False))
    return out
