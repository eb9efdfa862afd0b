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

The irises are not part of the mesh (a warp would smear them across the eye): the warp
samples a copy of the key frame whose irises are inpainted away, and each iris disc is
then laid back at its target position, clipped by the target eyelids, so that gaze
moves the iris and closing lids cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from models.face_model import (FACE_OVAL, LEFT_EYE_CORNERS, LEFT_EYE_LOWER, LEFT_EYE_UPPER, LEFT_IRIS, MOUTH_CORNERS,
                               RIGHT_EYE_CORNERS, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER, RIGHT_IRIS, FaceModel, Similarity,
                               pose_to_similarity)

RING_SCALES = (1.15, 1.4, 1.8)
# share of the outline's own (expression) motion each ring takes: an opening jaw drags the
# neck below it instead of tearing away from it
RING_FOLLOW = (0.7, 0.4, 0.15)

WEIGHT_LEVELS = 3            # ring weights are k / 3, k = 0..3
BORDER_SPACING = 16
_SUBPIXEL_SHIFT = 4
IRIS_POINTS = RIGHT_IRIS + LEFT_IRIS
# each eye: (iris centre and rim points, eye opening as a closed ring outer corner -> upper lid -> inner corner -> lower lid)
EYES = tuple((iris, (corners[0],) + upper + (corners[1],) + tuple(reversed(lower)))
             for iris, corners, upper, lower in ((RIGHT_IRIS, RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
                                                 (LEFT_IRIS, LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER)))


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
    w = np.where(lower, np.where(ring_index == 0, 1 / 3, 0.0), 1.0)
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
    ring_anchor: np.ndarray     # (R,) the face-outline landmark each ring point belongs to
    ring_follow: np.ndarray     # (R,) how much of that landmark's expression motion it takes
    ring_weights: np.ndarray    # (R,) in [0, 1]
    depth: np.ndarray           # (V,) source depth (z), for drawing order


def build_mesh(ref_landmarks: np.ndarray, ref_pose: Similarity, ring_weights: np.ndarray, size: int) -> WarpMesh:
    rings, _ = ring_layout(ref_landmarks, size)
    inside = ((rings[:, :2] > 1) & (rings[:, :2] < size - 2)).all(axis=1)
    rings, weights = rings[inside], ring_weights[inside] / WEIGHT_LEVELS
    anchor = np.tile(FACE_OVAL, len(RING_SCALES))[inside]
    level = np.repeat(np.arange(len(RING_SCALES)), len(FACE_OVAL))[inside]
    follow = np.array(RING_FOLLOW)[level] * weights
    border = border_points(size)
    far = ref_landmarks[:, 2].max() + size
    source = np.concatenate([ref_landmarks[:, :2], rings[:, :2], border])
    depth = np.concatenate([ref_landmarks[:, 2], rings[:, 2], np.full(len(border), far)])
    in_mesh = np.setdiff1d(np.arange(len(source)), IRIS_POINTS)
    triangles = in_mesh[Delaunay(source[in_mesh]).simplices].astype(np.int64)
    return WarpMesh(source=source, triangles=triangles, num_landmarks=len(ref_landmarks),
                    ring_canonical=ref_pose.invert_points(rings), ring_anchor=anchor, ring_follow=follow,
                    ring_weights=weights, depth=depth)


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


class _Eye:
    """One eye of the key frame: its iris disc, laid back inside the target eye opening, and
    its lid colour, painted over an eye that closes."""

    def __init__(self, ref_landmarks: np.ndarray, points: tuple[int, ...], ring: tuple[int, ...]) -> None:
        self.points, self.ring = points, ring
        self.centre = ref_landmarks[points[0], :2].copy()
        rim = np.linalg.norm(ref_landmarks[list(points[1:]), :2] - self.centre, axis=1).mean()
        self.radius = max(1.0, float(rim))
        self.opening_area = _area(ref_landmarks[list(ring), :2])
        self.lid_colour: np.ndarray | None = None

    def sample_lid(self, keyframe: np.ndarray, ref_landmarks: np.ndarray) -> None:
        """Colour of the eyelid skin: just above the upper lid of the key frame."""
        upper = ref_landmarks[list(self.ring[1:8]), :2]
        width = np.linalg.norm(ref_landmarks[self.ring[0], :2] - ref_landmarks[self.ring[8], :2])
        pts = np.rint(upper - [0.0, 0.25 * width]).astype(int)
        pts = pts.clip(0, np.array(keyframe.shape[1::-1]) - 1)
        self.lid_colour = np.median(keyframe[pts[:, 1], pts[:, 0]].astype(np.float32), axis=0)

    def disc(self, shape: tuple[int, int], centre: np.ndarray, radius: float, margin: float = 0.0) -> np.ndarray:
        ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
        d = np.hypot(xs - centre[0], ys - centre[1])
        return np.clip(radius + margin - d + 0.5, 0.0, 1.0).astype(np.float32)

    def paint(self, frame: np.ndarray, keyframe: np.ndarray, target: np.ndarray) -> None:
        """Draw the iris at its target place in `frame`, clipped by the target eyelids."""
        centre = target[self.points[0], :2]
        radius = max(1.0, float(np.linalg.norm(target[list(self.points[1:]), :2] - centre, axis=1).mean()))
        opening = target[list(self.ring), :2]
        lo = np.floor(np.minimum(opening.min(axis=0), centre - radius) - 2).astype(int).clip(0, frame.shape[1] - 1)
        hi = np.ceil(np.maximum(opening.max(axis=0), centre + radius) + 2).astype(int).clip(0, frame.shape[1] - 1)
        h, w = hi[1] - lo[1] + 1, hi[0] - lo[0] + 1
        if h < 2 or w < 2:
            return
        eye = np.zeros((h, w), np.float32)
        cv2.fillPoly(eye, [np.rint((opening - lo) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)], 1.0,
                     lineType=cv2.LINE_AA, shift=_SUBPIXEL_SHIFT)
        ratio = _area(opening) / max(self.opening_area, 1e-6)
        patch = frame[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].astype(np.float32)
        # a closing eye: the squeezed eyeball between the lids gives way to lid skin
        shut = float(np.clip((0.6 - ratio) / 0.45, 0.0, 1.0))
        if shut > 0 and self.lid_colour is not None:
            lid = cv2.GaussianBlur(cv2.dilate(eye, np.ones((5, 5), np.uint8)), (0, 0), 1.0)
            patch += (shut * lid)[..., None] * (self.lid_colour - patch)
        # a nearly shut eye shows no iris (rather than a speck of it between the lids)
        fade = float(np.clip((ratio - 0.15) / 0.25, 0.0, 1.0))
        weight = fade * eye * self.disc((h, w), centre - lo, radius)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        k = self.radius / radius
        map_x = ((xs + lo[0] - centre[0]) * k + self.centre[0]).astype(np.float32)
        map_y = ((ys + lo[1] - centre[1]) * k + self.centre[1]).astype(np.float32)
        iris = cv2.remap(keyframe, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        patch += weight[..., None] * (iris.astype(np.float32) - patch)
        frame[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = np.rint(patch).astype(np.uint8)


def _inpaint_irises(keyframe: np.ndarray, eyes: list[_Eye]) -> np.ndarray:
    mask = np.zeros(keyframe.shape[:2], np.float32)
    for iris in eyes:
        mask = np.maximum(mask, iris.disc(mask.shape, iris.centre, iris.radius, margin=1.5))
    return cv2.inpaint(keyframe, (mask > 0).astype(np.uint8), 3, cv2.INPAINT_TELEA)


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
        self.mesh = build_mesh(ref_landmarks, pose_to_similarity(ref_params[:6], self.size), ring_weights, self.size)
        self._eyes = [_Eye(ref_landmarks, iris, ring) for iris, ring in EYES]
        for eye in self._eyes:
            eye.sample_lid(keyframe, ref_landmarks)
        without_irises = _inpaint_irises(keyframe, self._eyes)
        self._image = torch.from_numpy(keyframe).to(self.device).permute(2, 0, 1)[None].float().contiguous()
        self._warp_source = torch.from_numpy(without_irises).to(self.device).permute(2, 0, 1)[None].float().contiguous()
        ys, xs = np.mgrid[0:self.size, 0:self.size]
        self._source_facing = self._facing(self.mesh.source)
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
        outline = lm[m.ring_anchor, :2]
        own_motion = outline - pose.apply(self.model.reference[m.ring_anchor])[:, :2]
        target[nl:nl + nr] = (w * ring[:, :2] + (1 - w) * m.source[nl:nl + nr]
                              + m.ring_follow[:, None] * own_motion)
        depth = m.depth.copy()
        depth[:nl] = lm[:, 2]
        depth[nl:nl + nr] = ring[:, 2]
        return target, depth

    def _facing(self, points: np.ndarray) -> np.ndarray:
        """Orientation (sign of the signed area) of every triangle over `points`."""
        a, b, c = (points[self.mesh.triangles[:, i]] for i in range(3))
        return np.sign((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

    def _rasterise(self, target: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Triangle index of every output pixel (-1 where none).  Triangles that turned over
        (the far side of a turning head folding behind itself) are drawn first, then the
        rest far to near, so that visible surface covers folded surface."""
        tris = self.mesh.triangles
        order = np.lexsort((-depth[tris].mean(axis=1), self._facing(target) == self._source_facing))
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
        for eye in self._eyes:
            if moved_vertex[list(eye.points)].any():  # the eye shows the iris-free picture
                moved_vertex[list(eye.ring)] = True
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
        sampled = F.grid_sample(self._warp_source, grid[None, None], mode="bilinear",
                                padding_mode="border", align_corners=False)[0, :, 0]  # (3, P)
        out = self._image.reshape(3, -1).clone()
        out[:, use] = sampled
        img = out.reshape(3, self.size, self.size).permute(1, 2, 0)
        frame = img.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        nl = self.mesh.num_landmarks
        for iris in self._eyes:
            if moved_vertex[list(iris.ring) + list(iris.points)].any():
                iris.paint(frame, self.keyframe, target[:nl])
        return frame
