"""Synthesizer v2's motion, in torch: parameters -> target points -> a dense motion field.

Everything here is batched tensor code with no Python loops over points or pixels, so it
runs on CUDA and exports to ONNX (4-D tensors only).  `KeyGeometry` holds what depends
only on the key frame (its canonical shape, the basis, the head rings, the border), built
once per key frame with numpy; `KeyGeometry.points(params)` gives the control points of
a frame; `dense_motion` turns the control points' displacements into a backward
displacement field (for every output pixel, how far away in the key frame to sample it)
by normalised Gaussian weights
(Shepard interpolation) with a still background: far from every moving point the field
is the identity, and a frame whose points equal the key frame's is the key frame.

Coordinates are normalised as grid_sample's with align_corners=False: x_n = 2 x / size - 1
for a crop-pixel coordinate x.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from codec_core.format import EXPRESSION, EYES, I_SCALE, I_TX, I_TY, POSE
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
from models.synthesizer import RING_FOLLOW, RING_SCALES, border_points, ring_layout

MOTION_SIGMA = 0.035       # Gaussian radius of a control point's pull, normalised units (4.5 px at 256)
BACKGROUND_WEIGHT = 1e-3   # the still background's weight against the points' (sum of Gaussians)
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

    def points(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Control points of the frames (B, V, 2) in pixels, and their landmarks (B, 478, 3).
        Order: the landmarks without the irises, the head rings, the border."""
        lm = self.landmarks(params)
        ring = self._place(params, self.ring_canonical[None].expand(len(params), -1, -1))[..., :2]
        outline = lm[:, self.ring_anchor, :2]
        own = outline - self._place(params, self.reference[self.ring_anchor][None].expand(len(params), -1, -1))[..., :2]
        w = self.ring_weights[:, None]
        ring = w * ring + (1 - w) * self.ring_source + self.ring_follow[:, None] * own
        border = self.border[None].expand(len(params), -1, -1)
        return torch.cat([lm[:, self.moving, :2], ring, border], 1), lm


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


def _gaussians(coords: torch.Tensor, axis: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-(axis - c)^2 / 2 sigma^2) for every coordinate (B, V) and axis position (N,): (B, V, N)."""
    return torch.exp((axis - coords[..., None]) ** 2 * (-0.5 / sigma ** 2))


def dense_motion(source: torch.Tensor, target: torch.Tensor, size: int,
                 sigma: float = MOTION_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward displacement (B, 2, size, size) and how far each pixel moves (B, 1, size, size).

    `source` (B or 1, V, 2) and `target` (B, V, 2) are normalised control points.  Each pixel
    takes the Gaussian-weighted mean displacement of the target points near it, mixed with
    a still background of weight BACKGROUND_WEIGHT, so that far from the points, and
    wherever target == source, nothing moves.  A Gaussian is separable, so every sum over
    the points is one matrix product of the points' y-profiles with their x-profiles."""
    axis = pixel_centres(size, target.device)
    gx = _gaussians(target[..., 0], axis, sigma)                     # (B, V, W)
    gy = _gaussians(target[..., 1], axis, sigma).transpose(1, 2)     # (B, H, V)
    shift = source - target                                          # (B, V, 2)
    total = gy @ gx + BACKGROUND_WEIGHT
    dx = gy @ (gx * shift[..., :1]) / total
    dy = gy @ (gx * shift[..., 1:]) / total
    moved = gy @ (gx * shift.norm(dim=-1, keepdim=True)) / total
    return torch.stack([dx, dy], 1), moved[:, None]


def heat_maps(landmarks: torch.Tensor, size: int, sigma: float = HEAT_SIGMA) -> torch.Tensor:
    """Landmark groups (GROUPS) of normalised `landmarks` (B, 478, 2) drawn as Gaussian blobs
    (B, len(GROUPS), size, size), clipped to [0, 1]."""
    axis = pixel_centres(size, landmarks.device)
    maps = []
    for group in GROUPS:       # a fixed handful of groups: unrolled when traced, not a loop over points
        pts = landmarks[:, list(group)]
        maps.append(_gaussians(pts[..., 1], axis, sigma).transpose(1, 2) @ _gaussians(pts[..., 0], axis, sigma))
    return torch.stack(maps, 1).clamp(0.0, 1.0)
