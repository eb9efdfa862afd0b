"""Synthesizer v2's irises: the key frame's iris discs laid at their target places, inside
the target eye openings (tensor code, exportable).

The irises are not part of the motion mesh (a warp would smear them across the eye and
never move them with the gaze).  As in v1, an eye that moves shows, inside its target
opening, an iris-free copy of the key frame warped with the face (`iris_free`,
inpainted once per key frame) and the key frame's iris disc at the target iris centre,
scaled to the target iris radius; a nearly shut eye fades its iris out.  The layer is
gated per eye by how far that eye's points moved (as the generator's correction), so
the key frame's own parameters give back the key frame exactly.

A shutting eye is covered, as in v1, by the key frame's lid skin and a lash line where the
lids meet.  Per frame, `eye_targets` draws each eye's maps (the target opening by a
point-in-polygon test against its 16 points, lid skin) once, at the working size, on a
square of pixels around the eye; `lay_irises` then lays the layer at each size (the
generator's working picture, which the generator sees and corrects, and the full-size
picture), again on a square around each eye whose change is sampled back onto the
picture: the lash line (drawn at that size, so that it is as thin at 256 as v1's), a
disc test and a sampling of the key frame's iris per eye.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.synthesizer import EYES, LASH_STRENGTH, lid_colours

OPENING_FADE = (0.15, 0.40)   # opening area against the key frame's: no iris below, all of it above
GATE_SCALE = 0.004            # normalised motion at which an eye's layer is 63 % on (0.5 px at 256)
IRIS_MARGIN = 1.5             # pixels around the key iris disc that are inpainted away
LID_SHUT = (0.60, 0.15)       # opening area against the key frame's: no lid skin above, all of it below (v1's)
LASH_WIDTH = 24               # the lash line is the eye's width over this thick (v1's)
EYE_PATCH = 0.375             # the square around each eye where its maps are worked out, in frame widths


def _area(polygon: torch.Tensor) -> torch.Tensor:
    """Areas (B,) of closed polygons (B, N, 2) (shoelace)."""
    x, y = polygon[..., 0], polygon[..., 1]
    return 0.5 * (x * torch.roll(y, -1, 1) - torch.roll(x, -1, 1) * y).sum(-1).abs()


def inside(polygon: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, P) 1.0 where points (B, P, 2) lie inside the closed polygons (B, N, 2) (crossing number)."""
    a = polygon[:, :, None]                     # (B, N, 1, 2)
    b = torch.roll(polygon, -1, 1)[:, :, None]
    px, py = points[:, None, :, 0], points[:, None, :, 1]
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


class EyeTarget(NamedTuple):
    """One eye of a frame, for `lay_irises`: the key frame's iris (centre (B, 2) and radius
    (B,), or a batch of 1), the target's, how much iris shows (B,: 0 for a nearly shut eye),
    two maps (B, 1, h, w), each times the eye's gate: where the eye is redrawn (the target
    opening) and where lid skin covers it as it shuts; the target opening's polygon (B, 16, 2)
    and the strength of its lash line (B, 1, 1, 1: 0 for an open eye, times the gate)."""
    key_centre: torch.Tensor
    key_radius: torch.Tensor
    centre: torch.Tensor
    radius: torch.Tensor
    fade: torch.Tensor
    opening: torch.Tensor
    lid: torch.Tensor
    ring: torch.Tensor
    lash: torch.Tensor


def key_lid_colours(keyframe: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(2, 2, 3) float32 in [0, 1]: per eye (`EYES` order) the key frame's lid skin and lash
    colours (as v1 samples them), from the key frame (uint8) and its landmarks (pixels)."""
    return np.stack([np.stack(lid_colours(keyframe, landmarks, ring)) for _, ring in EYES]).astype(np.float32) / 255


def _patch(centre: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel-centre points (B, n*n, 2) of a square of n = EYE_PATCH * size pixels of the
    `size` grid around `centre` (B, 2), on that grid's pixels (inside the frame), and the
    square's centre (B, 2)."""
    n, pixel = round(EYE_PATCH * size), 2.0 / size
    origin = torch.round((centre + 1.0) / pixel - n / 2).clamp(0, size - n)                  # (B, 2) pixels
    steps = (torch.arange(n, dtype=centre.dtype, device=centre.device) + 0.5) * pixel
    xs = (origin[:, None, 0] * pixel - 1.0 + steps)[:, None, :].expand(-1, n, -1)            # (B, n, n)
    ys = (origin[:, None, 1] * pixel - 1.0 + steps)[:, :, None].expand(-1, -1, n)
    return torch.stack([xs, ys], -1).reshape(len(centre), n * n, 2), (origin + n / 2) * pixel - 1.0


def eye_maps(opening: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 2, P) at points (B, P, 2) on a square grid: inside the opening (B, 16, 2) and lid
    skin (the opening grown by a pixel and softened)."""
    b, n = len(points), math.isqrt(points.shape[1])
    inner = inside(opening, points).view(b, 1, n, n)
    lid = F.avg_pool2d(F.max_pool2d(inner, 3, 1, 1), 3, 1, 1, count_include_pad=False)
    return torch.cat([inner, lid], 1).view(b, 2, n * n)


def lash_line(opening: torch.Tensor, points: torch.Tensor, pixel: float) -> torch.Tensor:
    """(B, 1, P) at the points (B, P = n * n, 2) of a square grid of spacing `pixel` (rows of
    equal y, as `_patch` lays them): the lash line through the midpoints of the lids of the
    opening (B, 16, 2), the eye's width over LASH_WIDTH thick, its edges a pixel soft.  The
    line runs from corner to corner, so it is worked out per column of the grid (its height
    and slope there, from the one of its 8 segments over that column) and each pixel's
    distance to it is its height above or below, times the cosine of the slope: n * 8
    values per line rather than n * n * 8."""
    b = len(points)
    n = math.isqrt(points.shape[1])
    grid = points.view(b, n, n, 2)
    xs, ys = grid[:, 0, :, 0], grid[:, :, 0, 1]                                   # (B, n) each
    line = torch.cat([opening[:, :1], (opening[:, 1:8] + opening[:, 9:16].flip(1)) / 2, opening[:, 8:9]], 1)
    a, d = line[:, :-1, None], (line[:, 1:] - line[:, :-1])[:, :, None]          # (B, 8, 1, 2)
    dx = torch.where(d[..., 0].abs() > 1e-9, d[..., 0], torch.full_like(d[..., 0], 1e-9))
    t = (xs[:, None] - a[..., 0]) / dx                                            # (B, 8, n)
    over = ((t >= 0.0) & (t <= 1.0)).float()
    count = over.sum(1)                                                           # (B, n): 0 beyond the corners
    height = (over * (a[..., 1] + t * d[..., 1])).sum(1) / count.clamp(min=1.0)
    slope = (over * d[..., 1] / dx).sum(1) / count.clamp(min=1.0)
    cosine = torch.rsqrt(1.0 + slope * slope)
    distance = (ys[:, :, None] - height[:, None, :]).abs() * cosine[:, None, :]     # (B, n rows, n columns)
    distance = torch.where(count[:, None, :] > 0, distance, torch.full_like(distance, 1.0e3))
    half = (opening[:, 0] - opening[:, 8]).norm(dim=-1).view(b, 1, 1) / LASH_WIDTH / 2
    return ((half - distance) / pixel + 0.5).clamp(0.0, 1.0).view(b, 1, n * n)


def eye_maps_on_grid(opening: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """`eye_maps` (B, 2, h, h) of the openings (B, 16, 2) on the whole identity grid `coarse`
    (h, h, 2), worked out on a square of the grid around the opening (`EYE_PATCH` of the
    frame's width) and sampled back: its pixels are the grid's, so the sampling is exact."""
    b, size = len(opening), int(coarse.shape[0])
    points, middle = _patch(opening.mean(1), size)
    n = math.isqrt(points.shape[1])
    patch = eye_maps(opening, points).view(b, 2, n, n)
    where = (coarse[None] - middle[:, None, None]) / (n / size)
    return F.grid_sample(patch, where, mode="bilinear", padding_mode="zeros", align_corners=False)


def eye_targets(key_landmarks: torch.Tensor, landmarks: torch.Tensor, coarse: torch.Tensor) -> list[EyeTarget]:
    """Both eyes of frames with normalised `landmarks` (B, 478, 2) against the key frame's
    (1 or B, 478, 2); the maps are drawn at the identity grid `coarse` (h, h, 2) and serve
    `lay_irises` at any picture size (upsampled: soft edges).  A shutting eye as v1 draws
    it: lid skin over the opening (grown by a pixel of `coarse`) and a lash line through the
    midpoints of the lids (drawn by `lay_irises`), both coming in as the opening shrinks
    (`LID_SHUT`); the maps are worked out around each eye only (`eye_maps_on_grid`: an
    eighth of the grid's pixels)."""
    b = len(landmarks)
    eyes = []
    for iris, ring in EYES:     # two eyes: unrolled when traced
        c_k, r_k, open_k = _eye(key_landmarks, iris, ring)
        c_t, r_t, open_t = _eye(landmarks, iris, ring)
        moved = (landmarks[:, list(iris) + list(ring)] - key_landmarks[:, list(iris) + list(ring)]).norm(dim=-1)
        gate = (1.0 - torch.exp(-moved.amax(1) / GATE_SCALE)).view(b, 1, 1, 1)
        ratio = _area(open_t) / _area(open_k).clamp(min=1e-9)
        fade = ((ratio - OPENING_FADE[0]) / (OPENING_FADE[1] - OPENING_FADE[0])).clamp(0.0, 1.0)   # (B,)
        shut = ((LID_SHUT[0] - ratio) / (LID_SHUT[0] - LID_SHUT[1])).clamp(0.0, 1.0).view(b, 1, 1, 1)
        inner, lid = eye_maps_on_grid(open_t, coarse).split(1, 1)
        eyes.append(EyeTarget(c_k, r_k, c_t, r_t, fade, inner * gate, lid * shut * gate, open_t,
                              LASH_STRENGTH * shut * gate))
    return eyes


def lay_irises(picture: torch.Tensor, warp: torch.Tensor, keyframe: torch.Tensor, key_free: torch.Tensor,
               eyes: list[EyeTarget], colours: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`picture` (B, 3, S, S), the warp of `keyframe` (1 or B, 3, S, S) along the sampling
    grid `warp` (B, S, S, 2), with each moved eye redrawn: inside the target opening the
    iris-free key frame `key_free` (1 or B, 3, S, S) warped alike, lid skin and lashes (a
    line at this size's pixels) of the key frame's `colours` (1 or B, 2, 2, 3:
    `key_lid_colours`) as it shuts, and the key iris disc at its target place.  `grid` is
    the identity grid (S, S, 2).  Each eye is redrawn on a square of the picture's pixels around it (as
    `eye_maps_on_grid`) and the change is sampled back onto the picture."""
    b, size = len(picture), int(picture.shape[-1])      # static: a constant when traced
    pixel = 2.0 / size
    out = picture
    for k, eye in enumerate(eyes):
        points, middle = _patch(eye.centre, size)
        n = math.isqrt(points.shape[1])
        at = points.view(b, n, n, 2)

        def sample(image: torch.Tensor, where: torch.Tensor = at) -> torch.Tensor:
            return F.grid_sample(image.expand(b, -1, -1, -1), where, mode="bilinear", padding_mode="border",
                                 align_corners=False)

        here = sample(picture)
        free = sample(key_free, sample(warp.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))   # the warp, here only
        opening, lid = sample(torch.cat([eye.opening, eye.lid], 1)).split(1, 1)
        lash = lash_line(eye.ring, points, pixel).view(b, 1, n, n) * eye.lash
        distance = (points - eye.centre[:, None]).norm(dim=-1).view(b, 1, n, n)
        disc = ((eye.radius.view(b, 1, 1, 1) - distance) / pixel + 0.5).clamp(0.0, 1.0) * eye.fade.view(b, 1, 1, 1)
        iris = sample(keyframe, eye.key_centre[:, None, None] + (at - eye.centre[:, None, None])
                      * (eye.key_radius / eye.radius).view(b, 1, 1, 1))
        drawn = here + opening * (free - here)
        drawn = drawn + lid * (colours[:, k, 0, :, None, None] - drawn)
        drawn = drawn + lash * (colours[:, k, 1, :, None, None] - drawn)
        drawn = drawn + opening * disc * (iris - drawn)
        # the change back onto the picture: the square's pixels are the picture's, so this is exact
        where = (grid[None] - middle[:, None, None]) / (n / size)
        out = out + F.grid_sample(drawn - here, where, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out
