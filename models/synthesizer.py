"""Synthesizer v1: a mesh-driven warp of the key frame (torch, CPU or CUDA, no weights).

The warp mesh is built once per key frame from its reference landmarks:
  * the 478 face landmarks, which move exactly as the decoded parameters say;
  * three rings of "head" points around the face outline (hair, ears, neck), which move
    rigidly with the head pose, each by a weight in {0, 1/3, 2/3, 1} that the sender
    derives from a person segmentation of the key frame and sends along (so that hair
    moves with the head while the background next to it stays);
  * points along the picture border, which never move.
Each output frame is a piecewise-affine backward warp over that triangulation: target
triangles are rasterised (far ones first, so near ones cover them), every pixel takes its
source position from its triangle's barycentric coordinates, and the key frame is
sampled there bilinearly.  Pixels of triangles that do not move are copied unchanged,
and a frame whose mesh equals the key frame's is the key frame itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from models.face_model import FACE_OVAL, MOUTH_CORNERS, FaceModel, Similarity, pose_to_similarity

RING_SCALES = (1.25, 1.6, 2.0)
# inner lip contour, a closed ring (MediaPipe indices): the mouth opening
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
MOUTH_DARK = np.array([45.0, 18.0, 20.0])
TEETH = np.array([200.0, 185.0, 170.0])
WEIGHT_LEVELS = 3            # ring weights are k / 3, k = 0..3
BORDER_SPACING = 16
_SUBPIXEL_SHIFT = 4


def ring_layout(ref_landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Head ring points (R, 3) in crop pixels around the face outline, and whether each
    lies below the mouth (neck side).  R = len(RING_SCALES) * len(face outline)."""
    pts = ref_landmarks[list(FACE_OVAL)]
    centre = pts[:, :2].mean(axis=0)
    mouth_y = ref_landmarks[list(MOUTH_CORNERS), 1].mean()
    rings, lower = [], []
    for k in RING_SCALES:
        ring = pts.copy()
        ring[:, :2] = centre + (pts[:, :2] - centre) * k
        rings.append(ring)
        lower.append(pts[:, 1] > mouth_y)
    return np.concatenate(rings), np.concatenate(lower)


def default_ring_weights(lower: np.ndarray, person: np.ndarray | None = None) -> np.ndarray:
    """Ring weights (integers 0..3): 3 on the head side, less towards the neck, and
    scaled by the person-segmentation probability at each point when one is given."""
    n = len(lower) // len(RING_SCALES)
    ring_index = np.repeat(np.arange(len(RING_SCALES)), n)
    w = np.where(lower, np.array([2 / 3, 1 / 3, 0.0])[ring_index], 1.0)
    if person is not None:
        w = w * person
    return np.clip(np.rint(w * WEIGHT_LEVELS), 0, WEIGHT_LEVELS).astype(np.int64)


def border_points(size: int) -> np.ndarray:
    s = size - 1
    t = np.arange(0, size, BORDER_SPACING, dtype=np.float64)
    t = np.append(t[t < s], s)
    xy = np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([t, np.full_like(t, s)], 1),
                         np.stack([np.zeros_like(t), t], 1), np.stack([np.full_like(t, s), t], 1)])
    return np.unique(xy, axis=0)


@dataclass
class WarpMesh:
    """Vertices in key-frame pixels and their triangles (all built from the key frame)."""

    source: np.ndarray        # (V, 2) positions in the key frame
    triangles: np.ndarray     # (T, 3) vertex indices
    num_landmarks: int
    ring_canonical: np.ndarray  # (R, 3) ring points in the reference canonical frame
    ring_weights: np.ndarray    # (R,) in [0, 1]
    depth: np.ndarray           # (V,) source depth (z), for drawing order


def build_mesh(ref_landmarks: np.ndarray, ref_pose: Similarity, ring_weights: np.ndarray, size: int) -> WarpMesh:
    rings, _ = ring_layout(ref_landmarks, size)
    inside = ((rings[:, :2] > 1) & (rings[:, :2] < size - 2)).all(axis=1)
    rings, weights = rings[inside], ring_weights[inside] / WEIGHT_LEVELS
    border = border_points(size)
    far = ref_landmarks[:, 2].max() + size
    source = np.concatenate([ref_landmarks[:, :2], rings[:, :2], border])
    depth = np.concatenate([ref_landmarks[:, 2], rings[:, 2], np.full(len(border), far)])
    triangles = Delaunay(source).simplices.astype(np.int64)
    return WarpMesh(source=source, triangles=triangles, num_landmarks=len(ref_landmarks),
                    ring_canonical=ref_pose.invert_points(rings), ring_weights=weights, depth=depth)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


class Synthesizer:
    """Renders frames of one key frame from decoded parameter vectors."""

    def __init__(self, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
                 ring_weights: np.ndarray, device: str = "cpu") -> None:
        self.size = keyframe.shape[0]
        self.keyframe = keyframe
        self.model = model
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # per-frame tensors are small: extra threads only spin against the rest of the call
            torch.set_num_threads(1)
        ref_landmarks = model.landmarks(ref_params)
        self._ref_mouth_area = _polygon_area(ref_landmarks[list(INNER_LIPS), :2])
        self._mouth_width = np.linalg.norm(ref_landmarks[MOUTH_CORNERS[0], :2] - ref_landmarks[MOUTH_CORNERS[1], :2])
        self.mesh = build_mesh(ref_landmarks, pose_to_similarity(ref_params[:6], self.size), ring_weights, self.size)
        self._image = torch.from_numpy(keyframe).to(self.device).permute(2, 0, 1)[None].float().contiguous()
        ys, xs = np.mgrid[0:self.size, 0:self.size]
        self._pixels = torch.from_numpy(np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32)).to(self.device)

    def target_vertices(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target positions (V, 2) and depths (V,) of the mesh vertices for `params`."""
        m = self.mesh
        lm = self.model.landmarks(params)
        pose = pose_to_similarity(params[:6], self.size)
        nl, nr = m.num_landmarks, len(m.ring_canonical)
        ring = pose.apply(m.ring_canonical)
        w = m.ring_weights[:, None]
        target = m.source.copy()
        target[:nl] = lm[:, :2]
        target[nl:nl + nr] = w * ring[:, :2] + (1 - w) * m.source[nl:nl + nr]
        depth = m.depth.copy()
        depth[:nl] = lm[:, 2]
        depth[nl:nl + nr] = ring[:, 2]
        return target, depth

    def _rasterise(self, target: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Triangle index of every output pixel (-1 where none), far triangles drawn first."""
        tris = self.mesh.triangles
        order = np.argsort(-depth[tris].mean(axis=1), kind="stable")
        ids = np.full((self.size, self.size), -1, np.int32)
        pts = np.rint(target * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
        for t in order.tolist():
            cv2.fillConvexPoly(ids, pts[tris[t]], int(t), lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
        return ids

    def render(self, params: np.ndarray) -> np.ndarray:
        target, depth = self.target_vertices(params)
        moved_vertex = np.abs(target - self.mesh.source).max(axis=1) > 1e-9
        if not moved_vertex.any():
            return self.keyframe.copy()
        ids = self._rasterise(target, depth)
        tris = self.mesh.triangles
        moved_tri = moved_vertex[tris].any(axis=1)
        ids_t = torch.from_numpy(ids.reshape(-1).astype(np.int64)).to(self.device)
        use = ids_t >= 0
        use &= torch.from_numpy(moved_tri).to(self.device)[ids_t.clamp(min=0)]
        idx = ids_t[use]
        tri_t = torch.from_numpy(tris).to(self.device)[idx]              # (P, 3)
        tgt = torch.from_numpy(target.astype(np.float32)).to(self.device)[tri_t]              # (P, 3, 2)
        src = torch.from_numpy(self.mesh.source.astype(np.float32)).to(self.device)[tri_t]   # (P, 3, 2)
        p = self._pixels[use]
        v0, v1, v2 = tgt[:, 0], tgt[:, 1], tgt[:, 2]
        e1, e2, d = v1 - v0, v2 - v0, p - v0
        den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        den = torch.where(den.abs() < 1e-6, torch.full_like(den, 1e-6), den)
        b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / den
        b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / den
        b0 = 1 - b1 - b2
        source_xy = b0[:, None] * src[:, 0] + b1[:, None] * src[:, 1] + b2[:, None] * src[:, 2]
        grid = (source_xy + 0.5) / self.size * 2 - 1                        # align_corners=False
        sampled = F.grid_sample(self._image, grid[None, None], mode="bilinear",
                                padding_mode="border", align_corners=False)[0, :, 0]  # (3, P)
        out = self._image.reshape(3, -1).clone()
        out[:, use] = sampled
        img = out.reshape(3, self.size, self.size).permute(1, 2, 0)
        img = self._fill_mouth(img, target[:self.mesh.num_landmarks])
        return img.round().clamp(0, 255).to(torch.uint8).cpu().numpy()

    def _fill_mouth(self, img: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
        """Where the mouth opens wider than in the key frame, the warp can only stretch the
        lips: paint the opening as a dark mouth with the upper teeth showing instead."""
        lips = landmarks[list(INNER_LIPS)]
        extra = _polygon_area(lips) - self._ref_mouth_area
        strength = float(np.clip(extra / (0.02 * self._mouth_width ** 2 + 1e-6), 0.0, 1.0))
        if strength <= 0:
            return img
        mask = np.zeros((self.size, self.size), np.float32)
        cv2.fillPoly(mask, [np.rint(lips * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)], 1.0,
                     lineType=cv2.LINE_AA, shift=_SUBPIXEL_SHIFT)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.8)
        ys = np.arange(self.size, dtype=np.float32)[:, None]
        top, bottom = lips[:, 1].min(), lips[:, 1].max()
        teeth = np.clip((top + 0.35 * (bottom - top) - ys) / max(1.0, 0.1 * (bottom - top)), 0, 1)
        colour = teeth[..., None] * TEETH + (1 - teeth[..., None]) * MOUTH_DARK        # (H, 1, 3)
        w = torch.from_numpy(mask * strength).to(img.device)[..., None]
        fill = torch.from_numpy(np.broadcast_to(colour, (self.size, self.size, 3)).astype(np.float32)).to(img.device)
        return img * (1 - w) + fill * w
