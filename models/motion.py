"""Synthesizer v2's motion, in torch: parameters -> target points -> a dense motion field.

Everything here is batched tensor code with no Python loops over points or pixels, so it
runs on CUDA and exports to ONNX (4-D tensors only).  `KeyGeometry` holds what depends
only on the key frame (its canonical shape, the basis, the head rings, the border), built
once per key frame with numpy; `KeyGeometry.points(params)` gives the control points of
a frame; `dense_motion` turns the control points' displacements into a backward
displacement field (for every output pixel, how far away in the key frame to sample it).

The field is piecewise affine, as synthesizer v1's mesh warp: the key frame's control
points are triangulated once (Delaunay; `SourceMesh`, with every working-size pixel's
triangle and barycentric weights), so that per frame the *forward* motion of every key
frame pixel is a gather and a weighted sum of its triangle's target corners, with no
search.  The backward field the warp needs is that forward map inverted: a first
estimate that favours the near surface (where a turning head folds, the visible cheek,
not the one behind it), a few fixed-point steps d(p) = -f(p + d(p)) (f the forward
displacement, sampled with grid_sample) and a few exact per-triangle steps.  As in v1 the
field stays exact inside the face and is smoothed elsewhere and where the surface folds.
A frame whose points equal the key frame's has f = 0 and gives the key frame back exactly.

Coordinates are normalised as grid_sample's with align_corners=False: x_n = 2 x / size - 1
for a crop-pixel coordinate x.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from codec_core.format import EXPRESSION, EYES, I_SCALE, I_TX, I_TY, NUM_LANDMARKS, POSE
from models.face_model import (
    FACE_OVAL,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
    FaceModel,
    pose_to_similarity,
)
from models.synthesizer import RING_FOLLOW, RING_SCALES, SMOOTH_SIGMA, border_points, ring_layout

INVERSION_STEPS = 4        # fixed-point steps that invert the forward field
REFINE_STEPS = 1           # then exact (per-triangle) steps
REACH = 0.5                # how far outside its triangle an exact step may reach (barycentric)
WALK_STEPS = 4             # per exact step: moves to the neighbour triangle towards the pixel
WALK_TOLERANCE = 1e-4      # barycentric: a pixel this close to its triangle stays in it
IRIS_POINTS = RIGHT_IRIS + LEFT_IRIS
# landmark groups drawn as heat maps for the generator: what it must draw at the target
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
GROUPS = (RIGHT_EYE_UPPER + RIGHT_EYE_LOWER, LEFT_EYE_UPPER + LEFT_EYE_LOWER, RIGHT_IRIS, LEFT_IRIS,
          INNER_LIPS, OUTER_LIPS, BROWS, FACE_OVAL)
HEAT_SIGMA = 0.02          # heat map blob radius, normalised units


def euler_yxz(angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) of intrinsic Y-X-Z Euler angles in degrees (yaw, pitch,
    roll), as scipy's Rotation.from_euler("YXZ")."""
    a = torch.deg2rad(angles_deg)
    cy, cx, cz = torch.cos(a[:, 0]), torch.cos(a[:, 1]), torch.cos(a[:, 2])
    sy, sx, sz = torch.sin(a[:, 0]), torch.sin(a[:, 1]), torch.sin(a[:, 2])
    one, zero = torch.ones_like(cy), torch.zeros_like(cy)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return ry @ rx @ rz


@dataclass
class KeyConstants:
    """The key frame's geometry as arrays (numpy, float32): what `KeyGeometry` is built from."""

    reference: np.ndarray        # (478, 3) canonical shape of the key frame
    expression: np.ndarray       # (K, 478*3)
    eyes: np.ndarray             # (4, 478*3)
    reference_eyes: np.ndarray   # (4,)
    ring_canonical: np.ndarray   # (R, 3) head-ring points in the key frame's canonical frame
    ring_anchor: np.ndarray      # (R,) face-outline landmark of each ring point
    ring_follow: np.ndarray      # (R,) share of that landmark's own motion the point takes
    ring_weights: np.ndarray     # (R,) 0..1: how much the point follows the head
    ring_source: np.ndarray      # (R, 2) ring points in the key frame, pixels
    border: np.ndarray           # (Q, 2) fixed points on the picture border, pixels
    size: int

    @classmethod
    def from_model(cls, model: FaceModel, ref_params: np.ndarray, ring_weights: np.ndarray) -> KeyConstants:
        """From the key frame's face model, its own parameters and its ring weights (0..3)."""
        from codec_core.format import RING_WEIGHT_MAX

        size = model.frame_size
        ref_landmarks = model.landmarks(ref_params)
        rings, _ = ring_layout(ref_landmarks, size)
        n_oval = len(FACE_OVAL)
        level = np.repeat(np.arange(len(RING_SCALES)), n_oval)
        weights = ring_weights / RING_WEIGHT_MAX
        pose = pose_to_similarity(ref_params[POSE], size)
        f32 = np.float32
        return cls(model.reference.astype(f32), model.basis.expression.astype(f32), model.basis.eyes.astype(f32),
                   np.asarray(model.reference_eyes, f32), pose.invert_points(rings).astype(f32),
                   np.tile(FACE_OVAL, len(RING_SCALES)).astype(np.int64),
                   (np.array(RING_FOLLOW)[level] * weights).astype(f32), weights.astype(f32),
                   rings[:, :2].astype(f32), border_points(size).astype(f32), size)


class KeyGeometry(torch.nn.Module):
    """Control points of a frame from its parameters (B, P), for one key frame."""

    def __init__(self, k: KeyConstants) -> None:
        super().__init__()
        self.size = k.size
        for name in ("reference", "expression", "eyes", "reference_eyes", "ring_canonical", "ring_follow",
                     "ring_weights", "ring_source", "border"):
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(getattr(k, name))))
        self.register_buffer("ring_anchor", torch.from_numpy(k.ring_anchor))
        moving = np.setdiff1d(np.arange(len(k.reference)), IRIS_POINTS)
        self.register_buffer("moving", torch.from_numpy(moving))

    def _place(self, params: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """Canonical points (B, N, 3) placed in the picture by the pose of `params`: pixels (B, N, 3)."""
        pose = params[:, POSE]
        rot = euler_yxz(pose[:, :3])
        scale = torch.exp(pose[:, I_SCALE])[:, None, None] * self.size
        t = torch.stack([pose[:, I_TX], pose[:, I_TY], torch.zeros_like(pose[:, 0])], -1)[:, None] * self.size
        return scale * pts @ rot.transpose(1, 2) + t

    def landmarks(self, params: torch.Tensor) -> torch.Tensor:
        """Crop-pixel landmarks (B, 478, 3), as FaceModel.landmarks."""
        delta = params[:, EXPRESSION] @ self.expression + (params[:, EYES] - self.reference_eyes) @ self.eyes
        canonical = self.reference + delta.view(len(params), -1, 3)
        return self._place(params, canonical)

    def points(self, params: torch.Tensor, motion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Control points of the frames (B, V, 3) in pixels, x, y and depth (larger: farther),
        and their landmarks (B, 478, 3), for parameters (B, P) and global motions (B, 4)
        (None: none).  Order: the landmarks without the irises, the head rings, the border
        (the rings and border at the depth of the face's farthest point).  The border and
        the part of each ring point that does not follow the head move with the global motion."""
        lm = self.landmarks(params)
        if motion is None:
            motion = torch.zeros(len(params), 4, dtype=params.dtype, device=params.device)
        ring = self._place(params, self.ring_canonical[None].expand(len(params), -1, -1))[..., :2]
        outline = lm[:, self.ring_anchor, :2]
        own = outline - self._place(params, self.reference[self.ring_anchor][None].expand(len(params), -1, -1))[..., :2]
        w = self.ring_weights[:, None]
        ring_still = self.ring_source + global_shift(self.ring_source, motion, self.size)
        ring = w * ring + (1 - w) * ring_still + self.ring_follow[:, None] * own
        border = self.border + global_shift(self.border, motion, self.size)
        face = lm[:, self.moving]
        far = face[..., 2:].amax(1, keepdim=True)
        rest = torch.cat([ring, border], 1)
        rest = torch.cat([rest, far.expand(-1, rest.shape[1], -1)], -1)
        return torch.cat([face, rest], 1), lm


def move_normalised(points: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Normalised points (B or 1, N, 2) moved by global motions (B, 4) (models.global_motion)."""
    scale = torch.exp(motion[:, 2:3])
    c, n = scale * torch.cos(motion[:, 3:4]), scale * torch.sin(motion[:, 3:4])
    x, y = points[..., 0], points[..., 1]
    return torch.stack([c * x - n * y + motion[:, 0:1], n * x + c * y + motion[:, 1:2]], -1)


def global_shift(pixels: torch.Tensor, motion: torch.Tensor, size: int) -> torch.Tensor:
    """How far (B, N, 2) the global motions (B, 4) move crop-pixel points (N, 2): exactly
    zero for a zero motion."""
    p = normalised(pixels, size)[None]
    return (move_normalised(p, motion) - p) * (size / 2.0)


def global_field(motion: torch.Tensor, size: int) -> torch.Tensor:
    """The backward displacement (B, 2, size, size) of the global motions alone (normalised):
    every output pixel samples the key frame at G^-1(p); exactly zero for a zero motion."""
    p = identity_grid(size, motion.device).reshape(1, -1, 2)
    scale = torch.exp(-motion[:, 2:3])
    c, n = scale * torch.cos(motion[:, 3:4]), scale * torch.sin(motion[:, 3:4])
    x, y = p[..., 0] - motion[:, 0:1], p[..., 1] - motion[:, 1:2]
    back = torch.stack([c * x + n * y, -n * x + c * y], -1)
    return (back - p).view(len(motion), size, size, 2).permute(0, 3, 1, 2)


def normalised(pixels: torch.Tensor, size: int) -> torch.Tensor:
    return pixels * (2.0 / size) - 1.0


def pixel_centres(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size,) normalised coordinates of the pixel centres along one axis (align_corners=False)."""
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0


@lru_cache(maxsize=8)
def identity_grid(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size, 2) normalised pixel-centre coordinates (x, y): grid_sample's identity
    (made once per size and device: it is a constant of every frame)."""
    c = pixel_centres(size, device)
    return torch.stack([c[None, :].expand(size, -1), c[:, None].expand(-1, size)], -1)


EXP_FLOOR = -80.0          # exp's argument kept above this: exp(-80) is 2e-35, as good as 0 next to 1e-12


def _gaussians(coords: torch.Tensor, axis: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-(axis - c)^2 / 2 sigma^2) for every coordinate (B, V) and axis position (N,): (B, V, N).
    The exponent is floored at EXP_FLOOR: far below it the CPU's exp takes ten times as long
    (the result underflows) for a value that changes no sum it enters."""
    return torch.exp(((axis - coords[..., None]) ** 2 * (-0.5 / sigma ** 2)).clamp(min=EXP_FLOOR))


@dataclass
class SourceMesh:
    """The key frame's control points triangulated, looked up at every pixel centre of a
    size x size grid (row-major): the pixel's triangle, its corners and its barycentric
    weights; and the triangulation itself with every triangle's neighbours, for the walk
    that finds an output pixel's triangle (`dense_motion`).  Built once per key frame (numpy,
    scipy).  The triangle tables are padded to `max_triangles` rows (never referenced), so
    their shape is the same for every key frame with the same number of points."""

    index: np.ndarray       # (size*size, 3) int64 control-point indices
    weight: np.ndarray      # (size*size, 3) float32, summing to 1
    simplex: np.ndarray     # (size*size,) int64: the pixel's triangle, a row of `triangles`
    triangles: np.ndarray   # (max_triangles(V), 3) int64 corner indices
    neighbours: np.ndarray  # (max_triangles(V), 3) int64: the triangle across from each corner, -1 none

    @staticmethod
    def max_triangles(num_points: int) -> int:
        """The most triangles V points can make (a triangular hull: 2 V - 5)."""
        return 2 * num_points - 5

    @classmethod
    def build(cls, source: np.ndarray, size: int) -> SourceMesh:
        """From the key frame's normalised control points (V, 2)."""
        tri = Delaunay(np.asarray(source, np.float64))
        axis = pixel_centres(size).double().numpy()
        query = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
        simplex = tri.find_simplex(query)
        outside = simplex < 0           # on the hull's edge by rounding: the nearest triangle
        if outside.any():
            centres = tri.points[tri.simplices].mean(1)
            nearest = ((query[outside, None] - centres[None]) ** 2).sum(-1).argmin(1)
            simplex[outside] = nearest
        affine = tri.transform[simplex]
        bary = np.einsum("nij,nj->ni", affine[:, :2], query - affine[:, 2])
        weight = np.concatenate([bary, 1.0 - bary.sum(1, keepdims=True)], 1)
        rows = cls.max_triangles(len(source))
        triangles = np.zeros((rows, 3), np.int64)
        neighbours = np.full((rows, 3), -1, np.int64)
        triangles[:len(tri.simplices)] = tri.simplices
        neighbours[:len(tri.simplices)] = tri.neighbors
        return cls(tri.simplices[simplex].astype(np.int64), weight.astype(np.float32), simplex.astype(np.int64),
                   triangles, neighbours)

    def tensors(self, device: torch.device | str | None = None) -> MeshTensors:
        """The tensors `dense_motion` takes, each with a batch axis of 1."""
        return MeshTensors(*(torch.from_numpy(a)[None].to(device)
                             for a in (self.index, self.weight, self.simplex, self.triangles, self.neighbours)))


class MeshTensors(NamedTuple):
    """A `SourceMesh` as `dense_motion` takes it (batch axis B or 1 first)."""

    index: torch.Tensor        # (B, N, 3) int64
    weight: torch.Tensor       # (B, N, 3) float32
    simplex: torch.Tensor      # (B, N) int64
    triangles: torch.Tensor    # (B, T, 3) int64
    neighbours: torch.Tensor   # (B, T, 3) int64


def exact_points(num_points: int) -> np.ndarray:
    """(V,) 1 for the control points whose field stays exact (the face's landmarks but its
    outline, as in v1), 0 for the rest (outline, head rings, border): `KeyGeometry.points` order."""
    exact = np.zeros(num_points, np.float32)
    moving = np.setdiff1d(np.arange(NUM_LANDMARKS), IRIS_POINTS)
    exact[: len(moving)] = 1.0
    exact[np.searchsorted(moving, FACE_OVAL)] = 0.0
    return exact


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) maps, edges replicated (two convolutions)."""
    r = int(np.ceil(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32, device=maps.device) / sigma) ** 2)
    g = g / g.sum()
    c = maps.shape[1]
    x = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


INIT_SIGMA = 0.035         # Gaussian radius of the first estimate (4.5 px at 256)
NEAR_SCALE = 0.03          # depth (normalised) over which a nearer point's weight grows e-fold


def nearest_first(source: torch.Tensor, target: torch.Tensor, depth: torch.Tensor, size: int) -> torch.Tensor:
    """A first backward field (B, 2, size, size) that favours the visible surface: every pixel
    takes the Gaussian-weighted mean displacement of the target points near it, nearer
    points weighing more, so that where the surface folds (a turning head) the estimate
    starts on the near side."""
    axis = pixel_centres(size, target.device)
    near = torch.exp(-(depth - depth.amin(1, keepdim=True)) / NEAR_SCALE)[..., None]      # (B, V, 1)
    gx = _gaussians(target[..., 0], axis, INIT_SIGMA)                     # (B, V, W)
    gy = _gaussians(target[..., 1], axis, INIT_SIGMA).transpose(1, 2)     # (B, H, V)
    shift = source.expand(len(target), -1, -1) - target
    total = gy @ (gx * near) + 1e-12
    return torch.stack([gy @ (gx * near * shift[..., :1]) / total, gy @ (gx * near * shift[..., 1:]) / total], 1)


def dense_motion(mesh: MeshTensors, source: torch.Tensor, target: torch.Tensor, exact: torch.Tensor,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward displacement (B, 2, size, size) and how far each pixel moves (B, 1, size, size).

    `mesh`: the key frame's `SourceMesh` (batch B or 1); `source` (B or 1, V, 2) and
    `target` (B, V, 3): the key frame's and the frame's normalised control points (the
    frame's with their depth, `models.learned.frame_points`); `exact` (B or 1, V):
    `exact_points`.  Forward, every key-frame pixel moves with its triangle; backward, that
    map is inverted by INVERSION_STEPS fixed-point steps, then REFINE_STEPS exact ones: the
    key-frame triangle found under the estimate, WALK_STEPS moves from it to the neighbour
    across its edge facing the output pixel (where the key frame squeezed the surface into
    triangles thinner than a pixel, as the far cheek of a turned head, the estimate lands
    beside them and the walk reaches them), the output pixel's barycentric position among
    that triangle's target corners, the same position among its key-frame corners (Newton's
    step on a piecewise-affine map).  As in v1, the field is exact inside the face and
    smoothed (SMOOTH_SIGMA) elsewhere, and where the surface folds, so that it cannot tear.
    All steps unrolled."""
    b = len(target)

    def rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """table (B or 1, R, C) at idx (b, P) -> (b, P, C): whole rows picked (`index_select`,
        faster on a CPU than `gather` element by element)."""
        if table.shape[0] == 1:
            picked = table[0].index_select(0, idx.reshape(-1))
        else:
            offsets = torch.arange(b, device=idx.device)[:, None] * table.shape[1]
            picked = table.reshape(-1, table.shape[-1]).index_select(0, (idx + offsets).reshape(-1))
        return picked.view(b, idx.shape[1], table.shape[-1])

    def corners(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """points (B or 1, V, C) at corner indices idx (b, P, 3) -> (b, P, 3, C)."""
        return rows(points, idx.reshape(b, -1)).view(b, idx.shape[1], 3, points.shape[-1])

    def det(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]

    def barycentric(t: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, v, d) of points p (b, P, 2) in triangles t (b, P, 3, 2): p = t0 + u e1 + v e2; d = det(e1, e2)."""
        e1, e2, rel = t[:, :, 1] - t[:, :, 0], t[:, :, 2] - t[:, :, 0], p - t[:, :, 0]
        d = det(e1, e2)
        safe = torch.where(d.abs() > 1e-12, d, torch.ones_like(d))
        return det(rel, e2) / safe, det(e1, rel) / safe, d

    depth, target = target[..., 2], target[..., :2]
    identity = identity_grid(size, target.device)
    moved_to = (corners(target, mesh.index.expand(b, -1, -1)) * mesh.weight.expand(b, -1, -1)[..., None]).sum(2)
    push = (moved_to.view(b, size, size, 2) - identity).permute(0, 3, 1, 2)      # forward displacement
    disp = nearest_first(source, target, depth, size)
    for _ in range(INVERSION_STEPS):
        disp = -F.grid_sample(push, identity + disp.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                              align_corners=False)
    simplex_map = mesh.simplex.expand(b, -1).view(b, 1, size, size).float()
    # per triangle: its target corners (6), the walk's table; then its key-frame corners (6) and
    # corners' exactness (3), so that a pixel's triangle is one row to pick
    triangles = mesh.triangles.expand(b, -1, -1)
    target_table = corners(target, triangles).flatten(2)
    triangle_table = torch.cat([target_table, corners(source, triangles).flatten(2),
                                corners(exact[..., None], triangles).flatten(2)], -1)
    p = identity.reshape(1, -1, 2)
    exactness = torch.zeros_like(disp[:, :1])
    for _ in range(REFINE_STEPS):
        found = F.grid_sample(simplex_map, identity + disp.permute(0, 2, 3, 1), mode="nearest",
                              padding_mode="border", align_corners=False)
        tid = found.reshape(b, -1).round().long()
        for _ in range(WALK_STEPS):
            u, v, _ = barycentric(rows(target_table, tid).view(b, -1, 3, 2), p)
            weakest, side = torch.stack([1.0 - u - v, u, v], -1).min(-1)
            across = torch.gather(rows(mesh.neighbours, tid), 2, side[..., None])[..., 0]
            tid = torch.where((weakest < -WALK_TOLERANCE) & (across >= 0), across, tid)
        picked = rows(triangle_table, tid)
        t, s = picked[..., :6].view(b, -1, 3, 2), picked[..., 6:12].view(b, -1, 3, 2)
        u, v, d = barycentric(t, p)
        # near its triangle (barycentric weights above -REACH) the affine step is trusted; far
        # outside a sliver it would fling the pixel away: that pixel keeps its estimate
        ok = (d.abs() > 1e-12) & (torch.minimum(torch.minimum(u, v), 1.0 - u - v) > -REACH)
        q = s[:, :, 0] + u[..., None] * (s[:, :, 1] - s[:, :, 0]) + v[..., None] * (s[:, :, 2] - s[:, :, 0])
        disp = torch.where(ok.view(b, 1, size, size), (q - p).view(b, size, size, 2).permute(0, 3, 1, 2), disp)
        unfolded = ok & ((d > 0) == (det(s[:, :, 1] - s[:, :, 0], s[:, :, 2] - s[:, :, 0]) > 0))
        bary = torch.stack([1.0 - u - v, u, v], -1).clamp(min=0.0)
        bary = bary / bary.sum(-1, keepdim=True).clamp(min=1e-6)
        value = (picked[..., 12:] * bary).sum(-1) * unfolded
        exactness = value.view(b, 1, size, size)
    smooth = _gaussian_blur(torch.cat([disp, exactness], 1), SMOOTH_SIGMA * size / 256)
    w = (2.0 * smooth[:, 2:] - 1.0).clamp(0.0, 1.0)      # the exact field fades out before it may jump
    disp = w * disp + (1.0 - w) * smooth[:, :2]
    return disp, disp.norm(dim=1, keepdim=True)


def heat_maps(landmarks: torch.Tensor, size: int, sigma: float = HEAT_SIGMA,
              groups: tuple[tuple[int, ...], ...] = GROUPS) -> torch.Tensor:
    """Landmark `groups` of normalised `landmarks` (B, 478, 2) drawn as Gaussian blobs
    (B, len(groups), size, size), clipped to [0, 1]."""
    axis = pixel_centres(size, landmarks.device)
    maps = []
    for group in groups:       # a fixed handful of groups: unrolled when traced, not a loop over points
        pts = landmarks[:, list(group)]
        maps.append(_gaussians(pts[..., 1], axis, sigma).transpose(1, 2) @ _gaussians(pts[..., 0], axis, sigma))
    return torch.stack(maps, 1).clamp(0.0, 1.0)
