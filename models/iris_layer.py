"""Synthesizer v2's irises: the key frame's iris discs laid at their target places, inside
the target eye openings (tensor code, exportable).

The irises are not part of the motion mesh (a warp would smear them across the eye and
never move them with the gaze).  As in v1, an eye that moves shows, inside its target
opening, an iris-free copy of the key frame warped with the face (`IrisLayer.iris_free`,
inpainted once per key frame) and the key frame's iris disc at the target iris centre,
scaled to the target iris radius; a nearly shut eye fades its iris out.  The layer is
gated per eye by how far that eye's points moved (as the generator's correction), so
the key frame's own parameters give back the key frame exactly.

Per frame it is a point-in-polygon test of every pixel (at the working size) against the
16 points of each target opening (crossing number), a disc test and one sampling of
the key frame for both irises.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.synthesizer import EYES

OPENING_FADE = (0.15, 0.40)   # opening area against the key frame's: no iris below, all of it above
GATE_SCALE = 0.004            # normalised motion at which an eye's layer is 63 % on (0.5 px at 256)
IRIS_MARGIN = 1.5             # pixels around the key iris disc that are inpainted away


def _area(polygon: torch.Tensor) -> torch.Tensor:
    """Areas (B,) of closed polygons (B, N, 2) (shoelace)."""
    x, y = polygon[..., 0], polygon[..., 1]
    return 0.5 * (x * torch.roll(y, -1, 1) - torch.roll(x, -1, 1) * y).sum(-1).abs()


def inside(polygon: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, P) 1.0 where points (P, 2) lie inside the closed polygons (B, N, 2) (crossing number)."""
    a = polygon[:, :, None]                     # (B, N, 1, 2)
    b = torch.roll(polygon, -1, 1)[:, :, None]
    px, py = points[None, None, :, 0], points[None, None, :, 1]
    spans = (a[..., 1] > py) != (b[..., 1] > py)
    dy = b[..., 1] - a[..., 1]
    dy = torch.where(dy.abs() > 1e-12, dy, torch.full_like(dy, 1e-12))
    x_cross = a[..., 0] + (py - a[..., 1]) * (b[..., 0] - a[..., 0]) / dy
    crossings = (spans & (px < x_cross)).sum(1)
    return (crossings % 2).float()


def iris_free(keyframe: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The key frame (uint8 H x W x 3) with both iris discs inpainted away, from its landmarks (pixels)."""
    size = keyframe.shape[0]
    ys, xs = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), np.uint8)
    for iris, _ in EYES:
        centre = landmarks[iris[0], :2]
        radius = max(1.0, float(np.linalg.norm(landmarks[list(iris[1:]), :2] - centre, axis=1).mean()))
        mask |= (np.hypot(xs - centre[0], ys - centre[1]) <= radius + IRIS_MARGIN).astype(np.uint8)
    return cv2.inpaint(np.ascontiguousarray(keyframe), mask, 3, cv2.INPAINT_TELEA)


def _eye(landmarks: torch.Tensor, iris: tuple[int, ...], ring: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Iris centre (B, 2), radius (B,) and opening polygon (B, 16, 2) of normalised landmarks."""
    centre = landmarks[:, iris[0]]
    radius = (landmarks[:, list(iris[1:])] - centre[:, None]).norm(dim=-1).mean(-1).clamp(min=1e-3)
    return centre, radius, landmarks[:, list(ring)]


def lay_irises(picture: torch.Tensor, warped_free: torch.Tensor, keyframe: torch.Tensor, key_landmarks: torch.Tensor,
               landmarks: torch.Tensor, grid: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """`picture` (B, 3, S, S), the warp of the key frame, with each moved eye redrawn: inside
    the target opening the warp of the iris-free key frame `warped_free`, and the key iris
    disc at its target place.  `key_landmarks` (1, 478, 2) and `landmarks` (B, 478, 2) are
    normalised; `grid` (S, S, 2) the identity grid at the picture's size, `coarse` a
    smaller one, where the openings are tested (and upsampled: soft edges, a quarter of the
    work at half the size)."""
    b, size = len(picture), picture.shape[-1]
    points, coarse_points = grid.reshape(-1, 2), coarse.reshape(-1, 2)
    pixel = 2.0 / size
    weights, discs, sources = [], [], []
    for iris, ring in EYES:     # two eyes: unrolled when traced
        c_k, r_k, open_k = _eye(key_landmarks, iris, ring)
        c_t, r_t, open_t = _eye(landmarks, iris, ring)
        moved = (landmarks[:, list(iris) + list(ring)] - key_landmarks[:, list(iris) + list(ring)]).norm(dim=-1)
        gate = 1.0 - torch.exp(-moved.amax(1) / GATE_SCALE)                                       # (B,)
        ratio = _area(open_t) / _area(open_k).clamp(min=1e-9)
        fade = ((ratio - OPENING_FADE[0]) / (OPENING_FADE[1] - OPENING_FADE[0])).clamp(0.0, 1.0)   # (B,)
        opening = inside(open_t, coarse_points).view(b, 1, *coarse.shape[:2])
        opening = F.interpolate(opening, size=(size, size), mode="bilinear", align_corners=False)
        distance = (points[None] - c_t[:, None]).norm(dim=-1).view(b, 1, size, size)
        discs.append(((r_t.view(b, 1, 1, 1) - distance) / pixel + 0.5).clamp(0.0, 1.0) * fade.view(b, 1, 1, 1))
        weights.append(opening * gate.view(b, 1, 1, 1))
        sources.append(c_k[:, None] + (points[None] - c_t[:, None]) * (r_k / r_t).view(b, 1, 1))
    # one sampling of the key frame for both irises: each pixel from the iris whose disc it is in
    first = (discs[0] >= discs[1]).view(b, -1, 1)
    source = torch.where(first, sources[0], sources[1]).view(b, size, size, 2)
    irises = F.grid_sample(keyframe.expand(b, -1, -1, -1), source, mode="bilinear", padding_mode="border",
                           align_corners=False)
    out = picture
    for weight, disc in zip(weights, discs):
        eye = warped_free + disc * (irises - warped_free)
        out = out + weight * (eye - out)
    return out
