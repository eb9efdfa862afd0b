"""Synthesizer v2's regional refiner: the eyes and the mouth drawn again at the picture's size.

The generator (models/generator.py) draws at 128 px, where an eye is about 14 px wide, and
its correction is upsampled onto the full-size picture: lashes, lid creases and teeth come
out soft.  The refiner cuts each eye and the mouth out of the full-size picture (the warp,
the iris layer and the generator's correction, at 256 px) on a square patch aligned with
the region's corners (both eyes the same way round: the left eye's patch is mirrored), and
a small U-Net per kind of region draws a colour correction of the patch from it, the key
frame's patch of the same region (cut along the key frame's own landmarks: what this
person's eye or mouth looks like) and Gaussian maps of the region's landmarks in both.
The correction fades out towards the patch's edge, is gated by how far the region's
landmarks moved from the key frame's (the key frame's own parameters give back the key
frame exactly), and is laid back by sampling it at each picture pixel's place in the patch,
on a square of pixels around the region (`lay_back`: a gather and a scatter of those pixels).

    picture (B, 3, S, S) --cut along each Region's frame--> patches (eyes 48 px, mouth 64 px)
        + the key frame's patches and maps (`key_patches`, once per key frame)
        --RegionNet--> correction --window, gate, laid back--> picture

Everything is tensor code (the patches' frames are a few vector operations, cutting and
laying back are 4-D `grid_sample`), so it runs on CUDA and exports to ONNX with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.face_model import (
    LEFT_EYE_CORNERS,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    MOUTH_CORNERS,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
)
from models.layers import conv_block
from models.motion import INNER_LIPS, OUTER_LIPS, heat_maps, identity_grid

SCALE = 256             # patches are cut from the picture at this size (resized when it is another)
MAP_SIGMA = 0.06        # landmark blobs, in patch units (about 1.5 px of a 256 picture)
FEATHER = 0.25          # the correction fades to zero over this share of the patch's half side
GATE_SCALE = 0.004      # normalised landmark motion at which the correction is 63 % on (0.5 px at 256)
CHANNELS = (12, 24, 32)
SQUARE = 0.5            # a patch is laid back on a square of this share of the picture's side


@dataclass(frozen=True)
class Region:
    """Where a patch is cut: its axis runs from `corners[0]` to `corners[1]` (landmark
    indices), `down` (+-1) turns it a quarter so that the patch's second axis points down
    the face, its half side is `half` times the corners' distance, its centre is the
    corners' midpoint moved `shift` half sides down; `patch` pixels a side; `groups` of
    landmarks drawn as maps."""
    corners: tuple[int, int]
    down: float
    half: float
    shift: float
    patch: int
    groups: tuple[tuple[int, ...], ...]

    @property
    def points(self) -> list[int]:
        return sorted({i for g in self.groups for i in g})


# outer corner to inner corner: the left eye's patch is the mirror image of the right's
RIGHT_EYE = Region((RIGHT_EYE_CORNERS[0], RIGHT_EYE_CORNERS[1]), 1.0, 1.0, 0.0, 48,
                   (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_IRIS))
LEFT_EYE = Region((LEFT_EYE_CORNERS[0], LEFT_EYE_CORNERS[1]), -1.0, 1.0, 0.0, 48,
                  (LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_IRIS))
MOUTH = Region(MOUTH_CORNERS, 1.0, 0.75, 0.25, 64,
               (OUTER_LIPS[:11], OUTER_LIPS[10:] + OUTER_LIPS[:1], INNER_LIPS[:11], INNER_LIPS[10:] + INNER_LIPS[:1]))
EYES = (RIGHT_EYE, LEFT_EYE)
REGIONS = EYES + (MOUTH,)


Frame = tuple[torch.Tensor, torch.Tensor, torch.Tensor]     # a patch's centre and axes (`patch_frame`)


def patch_frame(region: Region, landmarks: torch.Tensor) -> Frame:
    """The patch's centre (B, 2) and its two axes scaled to its half side (B, 2 each), from
    normalised `landmarks` (B, 478, 2): patch point (p, q) in [-1, 1]^2 is at centre + p u + q v."""
    a, b = landmarks[:, region.corners[0]], landmarks[:, region.corners[1]]
    width = (b - a).norm(dim=-1, keepdim=True).clamp(min=1e-3)
    axis = (b - a) / width
    u = axis * (region.half * width)
    v = region.down * torch.stack([-u[:, 1], u[:, 0]], -1)
    centre = (a + b) * 0.5 + region.shift * v
    return centre, u, v


def to_patch(points: torch.Tensor, centre: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Normalised picture points (1 or B, N, 2) -> patch coordinates (B, N, 2): one matrix
    product (u and v are orthogonal, both as long as the half side)."""
    axes = torch.stack([u, v], 2) / (u * u).sum(-1)[:, None, None]       # (B, 2, 2): columns u, v
    return (points - centre[:, None]) @ axes


def cut(picture: torch.Tensor, centre: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: int) -> torch.Tensor:
    """The patch (B, 3, size, size) of `picture` (1 or B, 3, H, W) on the frame (centre, u, v)."""
    base = identity_grid(size, picture.device)
    grid = centre[:, None, None] + base[..., :1] * u[:, None, None] + base[..., 1:] * v[:, None, None]
    return F.grid_sample(picture.expand(len(centre), -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


class Square(NamedTuple):
    """The square of picture pixels a patch is laid back on: their flat indices (B, m * m)
    in the picture's rows and their places in the patch (B, m, m, 2)."""
    index: torch.Tensor
    at: torch.Tensor


def square_around(centre: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: int) -> Square:
    """The square of `SQUARE` of a `size` picture's side around the patch (centre, u, v),
    inside the picture: the patch, turned any way, lies within it for regions up to a sixth
    of the picture wide (a face's eyes and mouth are a tenth to a fifth of the crop)."""
    side, pixel = round(SQUARE * size), 2.0 / size
    steps = torch.arange(side, dtype=centre.dtype, device=centre.device)
    origin = torch.round((centre + 1.0) / pixel - side / 2).clamp(0, size - side)           # (B, 2) pixels
    xs = (origin[:, None, 0] + steps)[:, None, :].expand(-1, side, -1)                      # (B, side, side)
    ys = (origin[:, None, 1] + steps)[:, :, None].expand(-1, -1, side)
    at = to_patch((torch.stack([xs, ys], -1).reshape(len(centre), side * side, 2) + 0.5) * pixel - 1.0, centre, u, v)
    return Square((ys * size + xs).long().reshape(len(centre), side * side), at.view(len(centre), side, side, 2))


def lay_back(patch: torch.Tensor, frame: Frame, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`patch` (B, C, n, n) sampled at the pixels of the square around its `frame` in a
    `size` picture: (B, C, m * m), zero outside the patch, and the pixels' flat indices
    (B, C, m * m), for gathering from and scattering into the picture's rows (B, C, S * S).
    Equal to sampling it at every pixel of the picture, and a sixteenth of the work."""
    square = square_around(*frame, size)
    laid = F.grid_sample(patch, square.at, mode="bilinear", padding_mode="zeros", align_corners=False)
    return laid.flatten(2), square.index[:, None].expand(-1, patch.shape[1], -1)


def window(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size): 1 inside, fading linearly to 0 over the last FEATHER of each half side."""
    base = identity_grid(size, device)
    fade = ((1.0 - base.abs()) / FEATHER).clamp(0.0, 1.0)
    return fade[..., 0] * fade[..., 1]


def region_gate(region: Region, landmarks: torch.Tensor, key_landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1): 0 where the region's landmarks are the key frame's, rising as they move."""
    moved = (landmarks[:, region.points] - key_landmarks[:, region.points]).norm(dim=-1).amax(1)
    return (1.0 - torch.exp(-moved / GATE_SCALE)).view(-1, 1, 1, 1)


def region_inputs(picture: torch.Tensor, landmarks: torch.Tensor, region: Region) -> tuple[torch.Tensor, Frame]:
    """The patch of `picture` (at SCALE) and the maps of its landmarks (B, 3 + groups, n, n),
    and the patch's frame."""
    frame = patch_frame(region, landmarks)
    maps = heat_maps(to_patch(landmarks, *frame), region.patch, MAP_SIGMA, region.groups)
    return torch.cat([cut(picture, *frame, region.patch), maps], 1), frame


class RegionNet(nn.Module):
    """A three-level U-Net: the frame's patch and maps, the key frame's -> a colour correction
    (B, 3, n, n) in (-1, 1); its last layer starts at zero (no correction)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        ins = (2 * (3 + groups),) + CHANNELS[:-1]
        self.down = nn.ModuleList(conv_block(i, o, 1 if k == 0 else 2) for k, (i, o) in enumerate(zip(ins, CHANNELS)))
        self.ups = nn.ModuleList(conv_block(CHANNELS[k] + CHANNELS[k - 1], CHANNELS[k - 1])
                                 for k in range(len(CHANNELS) - 1, 0, -1))
        self.out = nn.Conv2d(CHANNELS[0], 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(torch.cat([F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False), skip], 1))
        return torch.tanh(self.out(x))


class RegionRefiner(nn.Module):
    """One RegionNet for both eyes (the left one seen mirrored) and one for the mouth."""

    def __init__(self) -> None:
        super().__init__()
        self.eyes = RegionNet(len(RIGHT_EYE.groups))
        self.mouth = RegionNet(len(MOUTH.groups))

    def corrections(self, picture: torch.Tensor, landmarks: torch.Tensor, key: list[torch.Tensor],
                    key_landmarks: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, Frame]]:
        """Per region (REGIONS: the eyes, then the mouth): its patch of `picture` (B, 3, n, n;
        at SCALE), the gated, windowed correction of it and the patch's frame; `key` is
        `key_patches` of the key frame."""
        batch = len(landmarks)
        cuts = [region_inputs(picture, landmarks, r) for r in REGIONS]
        inputs = [torch.cat([x, k.expand(batch, -1, -1, -1)], 1) for (x, _), k in zip(cuts, key)]
        eyes = self.eyes(torch.cat(inputs[:2], 0))
        out = []
        for region, (x, frame), c in zip(REGIONS, cuts, (eyes[:batch], eyes[batch:], self.mouth(inputs[2]))):
            gate = region_gate(region, landmarks, key_landmarks)
            out.append((x[:, :3], c * window(region.patch, c.device) * gate, frame))
        return out

    def forward(self, picture: torch.Tensor, landmarks: torch.Tensor, key: list[torch.Tensor],
                key_landmarks: torch.Tensor) -> torch.Tensor:
        """`picture` (B, 3, S, S) with its eyes and mouth corrected."""
        batch, size = len(picture), int(picture.shape[-1])
        flat = picture.reshape(batch, 3, size * size)
        for _, correction, frame in self.corrections(at_scale(picture), landmarks, key, key_landmarks):
            laid, index = lay_back(correction, frame, size)
            flat = flat.scatter(2, index, flat.gather(2, index) + laid)
        return flat.view(batch, 3, size, size)


def at_scale(picture: torch.Tensor) -> torch.Tensor:
    """`picture` (B, 3, S, S) at SCALE: each square of S / SCALE pixels averaged (the sizes
    streams have are 256 and 512; a box filter exports to ONNX, an antialiased resize does not)."""
    factor = picture.shape[-1] // SCALE
    if factor * SCALE != picture.shape[-1]:
        raise ValueError(f"the regional refiner needs a multiple of {SCALE} pixels a side, not {picture.shape[-1]}")
    return picture if factor == 1 else F.avg_pool2d(picture, factor)


def key_patches(keyframe: torch.Tensor, key_landmarks: torch.Tensor) -> list[torch.Tensor]:
    """What the refiner needs of the key frame (1 or B, 3, S, S), once per key frame: per
    region, its patch and maps cut along its own landmarks (normalised, (1 or B, 478, 2))."""
    source = at_scale(keyframe)
    return [region_inputs(source, key_landmarks, r)[0] for r in REGIONS]
