"""Synthesizer v2's mouth reference: the caller's own open mouth, sent once, laid inside the lips.

A key frame mostly shows the mouth shut, and what is inside this person's mouth (teeth, their
colour and spacing, the tongue, how dark it gets) is nowhere in it: on the validation
people, whom they never saw, the generator and the refiner drew an opening mouth as a soft
dark band, 22 % better than v1's black oval where 25 % was asked (docs/synthesizer.md).  So
the encoder sends it, beside the eye reference in the same record and picture
(`codec_core.bitstream.EyeReference`, bit 2 of `present`, the picture's third square): the
inside of the clip's widest-open mouth, cut along its inner lips as two strips.  The upper
teeth hang from the upper lip and the lower teeth stand on the lower lip, whatever the
opening, so each strip keeps what lies at a given depth below the upper inner lip (above
the lower one), in units of the mouth's half width, not squeezed into the target's gap
(a warp from lip to lip, tried first, squeezed the open mouth's dark into the teeth:
worse than nothing on every clip).  Beyond the reference's own middle a strip repeats its
middle row.

    encoder: cut_mouth(crop, landmarks) on the frame whose inner lips are furthest apart
    decoder: the strips ride in EyePatches.patches (the third n x n square)
    per frame: lay_mouth_reference(picture, landmarks, key_landmarks, patches, present)   (tensor code, ONNX)

The strips are laid between the target's inner lips (grown by a pixel, with a soft edge),
each pixel sampling its strip at its own depth below its lip, by a share that comes in as
the lips part wider than the key frame's: the key frame's own parameters lay nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.eye_reference import landmark_tensor, picture_array, picture_tensor
from models.regions import Region, patch_frame, square_around, to_patch

# inner lips, corner to corner (models.motion.INNER_LIPS: 78 ... 308 along the upper lip, back along the lower)
UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# the mouth's frame: centred between the inner lip corners, half side half their distance
# (patch coordinates: p along the mouth, -1 and 1 at the corners; q down, in half widths)
INNER_MOUTH = Region((78, 308), 1.0, 0.5, 0.0, 0, ())
ALONG = 1.1             # a strip spans p in [-ALONG, ALONG]
ABOVE = 0.1             # and depths from ABOVE (into the lip: the grown edge) to DEPTH below it
DEPTH = 1.0
GROW = 1.0              # the laid area: the inner lips grown by this many pixels of a 256 picture,
EDGE = 1.0              # with a soft edge this wide (pixels of a 256 picture)
GAP_START = 0.5         # pixels of a 256 picture the lips part beyond the key frame's: the share starts
GAP_RAMP = 1.5          # and reaches 1 this many pixels later


def lip_curve(p: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """The lip's q at each p (B, M), piecewise linear through `knots` (B, K, 2) ordered by p,
    held flat beyond the ends: a sum of K - 1 clamped ramps (no search, exports to ONNX)."""
    x, y = knots[..., 0], knots[..., 1]
    span = (x[:, 1:] - x[:, :-1]).clamp(min=1e-4)
    slope = (y[:, 1:] - y[:, :-1]) / span
    out = y[:, :1].expand_as(p)
    for k in range(knots.shape[1] - 1):             # ten segments: unrolled when traced
        out = out + slope[:, k:k + 1] * torch.minimum((p - x[:, k:k + 1]).clamp(min=0.0), span[:, k:k + 1])
    return out


def lips_of(landmarks: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                                              torch.Tensor, torch.Tensor]:
    """The mouth's frame and its upper and lower inner lips (B, 11, 2) in that frame's
    coordinates, from normalised `landmarks` (B, 478, 2)."""
    frame = patch_frame(INNER_MOUTH, landmarks)
    return frame, to_patch(landmarks[:, list(UPPER)], *frame), to_patch(landmarks[:, list(LOWER)], *frame)


def strip_rows(depth: torch.Tensor, lower: bool, n: int) -> torch.Tensor:
    """grid_sample's y (normalised) of a `depth` in the upper (top half of an n x n square) or
    lower strip, kept within the half's row centres (bilinear never mixes the two)."""
    share = ((depth + ABOVE) / (ABOVE + DEPTH)).clamp(0.0, 1.0)
    top = (0.0 if lower else -1.0) + 1.0 / n
    return top + share * (1.0 - 2.0 / n)


def cut_mouth(picture: np.ndarray, landmarks: np.ndarray, n: int) -> np.ndarray:
    """The mouth reference (n x n x 3 uint8) of `picture` (S x S x 3 uint8) along its
    `landmarks` (478 x 2+, pixels): the upper strip over the lower one."""
    (centre, u, v), upper, lower = lips_of(landmark_tensor(landmarks, picture.shape[0]))
    half = n // 2
    p = (ALONG * ((torch.arange(n) * 2 + 1) / n - 1.0))[None].expand(half, -1).reshape(1, -1)   # column centres
    depth = torch.linspace(-ABOVE, DEPTH, half)[:, None].expand(-1, n).reshape(1, -1)
    top, bottom = lip_curve(p, upper), lip_curve(p, lower)
    middle = (top + bottom) * 0.5
    q = torch.cat([torch.minimum(top + depth, middle), torch.maximum(bottom - depth, middle)], 1)
    at = centre[:, None] + p.repeat(1, 2)[..., None] * u[:, None] + q[..., None] * v[:, None]
    strips = F.grid_sample(picture_tensor(picture), at.view(1, n, n, 2), mode="bilinear", padding_mode="border",
                           align_corners=False)
    return picture_array(strips)


def inner_gap(landmarks: np.ndarray) -> float:
    """How far apart the inner lips are at their middle (landmarks 13, 14; pixels of `landmarks`)."""
    marks = np.asarray(landmarks)
    return float(np.linalg.norm(marks[14, :2] - marks[13, :2]))


def mouth_share(landmarks: torch.Tensor, key_landmarks: torch.Tensor) -> torch.Tensor:
    """(B,) how much of the mouth reference to lay: 0 until the inner lips part GAP_START
    pixels (of a 256 picture) wider than the key frame's, 1 from GAP_RAMP pixels further."""
    def gap(marks: torch.Tensor) -> torch.Tensor:
        return (marks[:, 14] - marks[:, 13]).norm(dim=-1)
    pixel = 2.0 / 256
    return ((gap(landmarks) - gap(key_landmarks) - GAP_START * pixel) / (GAP_RAMP * pixel)).clamp(0.0, 1.0)


def lay_mouth_reference(picture: torch.Tensor, landmarks: torch.Tensor, key_landmarks: torch.Tensor,
                        strips: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """`picture` (B, 3, S, S) with the mouth reference `strips` (1, 3, n, n) laid between the
    target's inner lips (normalised `landmarks` (B, 478, 2)), by `mouth_share` times
    `present` (1,), on the pixels of the square around the mouth (`regions.square_around`,
    gathered and scattered as the refiner's patches are)."""
    batch, size, n = len(picture), int(picture.shape[-1]), strips.shape[-1]     # static: constants when traced
    frame, upper, lower = lips_of(landmarks)
    square = square_around(*frame, size)
    at = square.at.flatten(1, 2)                                     # (B, M, 2): each pixel's p, q
    p, q = at[..., 0], at[..., 1]
    top, bottom = lip_curve(p, upper), lip_curve(p, lower)
    lower_half = q > (top + bottom) * 0.5
    depth = torch.where(lower_half, bottom - q, q - top)
    y = torch.where(lower_half, strip_rows(depth, True, n), strip_rows(depth, False, n))
    grid = torch.stack([p / ALONG, y], -1)[:, None]                  # (B, 1, M, 2)
    laid = F.grid_sample(strips.expand(batch, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[:, :, 0]              # (B, 3, M)
    # between the lips, grown by GROW pixels with an EDGE-wide soft edge (q is in half widths)
    pixel = 2.0 / 256 / frame[1].norm(dim=-1, keepdim=True)               # (B, 1): a 256 picture's pixel in q units
    inside = ((depth / pixel + GROW) / EDGE + 0.5).clamp(0.0, 1.0) * (p.abs() < ALONG)
    share = (mouth_share(landmarks, key_landmarks) * present)[:, None] * inside
    flat = picture.reshape(batch, 3, size * size)
    index = square.index[:, None].expand(-1, 3, -1)
    here = flat.gather(2, index)
    flat = flat.scatter(2, index, here + share[:, None] * (laid - here))
    return flat.view(batch, 3, size, size)

