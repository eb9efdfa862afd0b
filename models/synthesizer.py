"""Synthesizer v1: a mesh-driven warp of the key frame (torch, CPU or CUDA, no weights).

The warp mesh is built once per key frame from its reference landmarks:
  * the 478 face landmarks, which move exactly as the decoded parameters say;
  * three rings of "head" points around the face outline (hair, ears, neck), which move
    rigidly with the head pose, each by a weight in {0, 1/3, 2/3, 1} that the sender
    derives from a person segmentation of the key frame and sends along (so that hair
    moves with the head while the background next to it stays);
  * points along the picture border and a coarse frame of points well outside it, which
    move only with the global picture motion (models/global_motion.py: a moving camera),
    so that the mesh still covers the picture when it moves.
Each output frame is a backward warp: target triangles are rasterised (folded ones first,
then far to near, so that visible surface covers folded surface), every pixel takes its
source position from its triangle's barycentric coordinates, and that displacement field
is smoothed (a Gaussian) everywhere but inside the face, where it stays exact.  Where the
surface folds (the far cheek of a turning head, a chin dropping over the neck) the exact
field jumps from one triangle to the next and would tear the picture into saw teeth; the
smoothed field cannot jump.  The key frame is then sampled bilinearly along the field, so
a frame whose mesh equals the key frame's is the key frame itself.

The irises are not part of the mesh (a warp would smear them across the eye): an eye that
moves samples a copy of the key frame whose iris is inpainted away, and the iris disc is
then laid back at its target position, clipped by the target eyelids, so that gaze moves
the iris and closing lids cover it.  Lips that part further than in the key frame carry
the key frame's mouth interior with them in two pieces (upper teeth with the upper lip,
lower teeth and tongue with the lower lip) and open a dark cavity between them, rather
than stretching lip skin across the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from codec_core.format import POSE, RING_COUNT, RING_WEIGHT_MAX
from models.face_model import (
    FACE_OVAL,
    LEFT_EYE_CORNERS,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    MOUTH_CORNERS,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
    UPPER_LIP_INNER,
    FaceModel,
    Similarity,
    pose_to_similarity,
)
from models.global_motion import apply_motion

RING_SCALES = (1.15, 1.4, 1.8)   # one per ring of the format (RING_COUNT), outline distance from the centre
# share of the outline's own (expression) motion each ring takes: an opening jaw drags the
# neck below it instead of tearing away from it
RING_FOLLOW = (0.7, 0.4, 0.15)
assert len(RING_SCALES) == len(RING_FOLLOW) == RING_COUNT, "one scale and one follow share per ring of the format"

BORDER_SPACING = 16
OUTER = 0.5                  # the outer frame of points lies this share of the picture outside it
SMOOTH_SIGMA = 4.0           # of the displacement field outside the face, in pixels of a 256 frame
SLIVER = 2.0                 # pixels: a triangle thinner than this clamps its pixels into itself
MOVED = 1e-3                 # pixels: a smaller displacement leaves the picture as it is
# the inner lip line, corner to corner, upper and lower lip column by column (13 and 14 in the middle)
INNER_LIP_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LIP_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MID_COLUMN = INNER_LIP_UPPER.index(UPPER_LIP_INNER)      # landmarks 13 (upper) and 14 (lower)
MOUTH_DARKNESS = (0.55, 0.35)  # the cavity is the lip colour times this, next to the lips and midway between them
MOUTH_RAMP = 0.03            # extra lip gap (fraction of the frame) over which the cavity fades in
LASH_STRENGTH = 0.7          # the lash line of a shut eye, 1 = the key frame's lash colour
_SUBPIXEL_SHIFT = 4
IRIS_POINTS = RIGHT_IRIS + LEFT_IRIS
# each eye: (iris centre and rim points,
#            eye opening as a closed ring outer corner -> upper lid -> inner corner -> lower lid)
EYES = tuple((iris, (corners[0],) + upper + (corners[1],) + tuple(reversed(lower)))
             for iris, corners, upper, lower in ((RIGHT_IRIS, RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
                                                 (LEFT_IRIS, LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER)))


def ring_layout(ref_landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Head ring points (R, 3) in crop pixels around the face outline, and whether each
    lies below the mouth (neck side).  R = format.NUM_RING_POINTS, in the format's order."""
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
    return np.clip(np.rint(w * RING_WEIGHT_MAX), 0, RING_WEIGHT_MAX).astype(np.int64)


def _square(lo: float, hi: float, spacing: float) -> np.ndarray:
    t = np.arange(lo, hi, spacing, dtype=np.float64)
    t = np.append(t[t < hi], hi)
    return np.concatenate([np.stack([t, np.full_like(t, lo)], 1), np.stack([t, np.full_like(t, hi)], 1),
                           np.stack([np.full_like(t, lo), t], 1), np.stack([np.full_like(t, hi), t], 1)])


def border_points(size: int) -> np.ndarray:
    """Points on the picture border (every BORDER_SPACING pixels) and on a square OUTER
    times the picture's size around it, in pixels: what only the global motion moves."""
    margin = OUTER * size
    outer = _square(-margin, size - 1 + margin, (size - 1 + 2 * margin) / 4)
    return np.unique(np.concatenate([_square(0, size - 1, BORDER_SPACING), outer]), axis=0)


def move_pixels(points: np.ndarray, motion: np.ndarray | None, size: int) -> np.ndarray:
    """Crop-pixel points (N, 2) moved by a global motion (models.global_motion), None: unmoved."""
    if motion is None or not np.any(motion):
        return points
    return (apply_motion((points + 0.5) * (2.0 / size) - 1.0, motion) + 1.0) * (size / 2.0) - 0.5


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
    rings, weights = rings[inside], ring_weights[inside] / RING_WEIGHT_MAX
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


def lid_colours(keyframe: np.ndarray, landmarks: np.ndarray, ring: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Colours (float32 RGB, 0-255) of one eye's lid skin (just above the upper lid of the
    key frame) and of its lashes (the darker pixels along the upper lid's edge), from the
    key frame's landmarks (pixels) and the eye's opening ring (`EYES`)."""
    upper = landmarks[list(ring[1:8]), :2]
    width = np.linalg.norm(landmarks[ring[0], :2] - landmarks[ring[8], :2])
    limit = np.array(keyframe.shape[1::-1]) - 1
    skin = np.rint(upper - [0.0, 0.25 * width]).astype(int).clip(0, limit)
    lid = np.median(keyframe[skin[:, 1], skin[:, 0]].astype(np.float32), axis=0)
    edge = np.rint(upper).astype(int).clip(0, limit)
    colours = keyframe[edge[:, 1], edge[:, 0]].astype(np.float32)
    return lid, colours[np.argsort(colours.sum(axis=1))[:3]].mean(axis=0)


class _Eye:
    """One eye of the key frame: its iris disc, laid back inside the target eye opening, and
    its lid colour, painted over an eye that closes."""

    def __init__(self, ref_landmarks: np.ndarray, points: tuple[int, ...], ring: tuple[int, ...], size: int) -> None:
        self.points, self.ring = points, ring
        self.centre = ref_landmarks[points[0], :2].copy()
        rim = np.linalg.norm(ref_landmarks[list(points[1:]), :2] - self.centre, axis=1).mean()
        self.radius = max(1.0, float(rim))
        self.opening_area = _area(ref_landmarks[list(ring), :2])
        self.lid_colour: np.ndarray | None = None
        self.lash_colour: np.ndarray | None = None
        lo = np.floor(self.centre - 3 * self.radius).astype(int).clip(0, size - 1)
        hi = np.ceil(self.centre + 3 * self.radius).astype(int).clip(0, size - 1)
        self.box = np.s_[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]     # where the eye's pixels are
        self.iris_mask = self.disc((size, size), self.centre, self.radius, margin=1.5) > 0

    def sample_lid(self, keyframe: np.ndarray, ref_landmarks: np.ndarray) -> None:
        self.lid_colour, self.lash_colour = lid_colours(keyframe, ref_landmarks, self.ring)

    def closed_line(self, target: np.ndarray) -> np.ndarray:
        """Where the lids meet when the eye shuts: corner, midpoints of the lids, corner."""
        upper = target[list(self.ring[1:8]), :2]
        lower = target[list(reversed(self.ring[9:16])), :2]
        return np.concatenate([target[[self.ring[0]], :2], (upper + lower) / 2, target[[self.ring[8]], :2]])

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
            # and the lashes along the line where the lids meet
            width = float(np.linalg.norm(opening[0] - opening[8]))
            lash = np.zeros((h, w), np.float32)
            cv2.polylines(lash, [np.rint((self.closed_line(target) - lo) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)],
                          False, 1.0, thickness=max(1, round(width / 24)), lineType=cv2.LINE_AA, shift=_SUBPIXEL_SHIFT)
            lash = cv2.GaussianBlur(lash, (0, 0), 0.6)
            patch += (shut * LASH_STRENGTH * lash)[..., None] * (self.lash_colour - patch)
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


class _Mouth:
    """The mouth of the key frame, for lips that part further than there.  A mesh warp
    would stretch whatever the key frame shows between the lips across the new gap; here
    that interior instead moves in two pieces, the upper part (upper teeth) with the upper
    lip and the lower part (lower teeth, tongue) with the lower lip, and the gap that opens
    between them shows a dark cavity.  Everything is worked out in the key frame's mouth
    frame (the target mouth mapped onto the key frame's by the similarity of the corners),
    column by column along the mouth, so that a mouth that turns, stretches or opens more
    in the middle than at the corners stays joined to the lips the mesh warp has drawn."""

    def __init__(self, keyframe: np.ndarray, ref_landmarks: np.ndarray) -> None:
        self.keyframe = keyframe
        self.upper = ref_landmarks[list(INNER_LIP_UPPER), :2].astype(np.float64)
        self.lower = ref_landmarks[list(INNER_LIP_LOWER), :2].astype(np.float64)
        self.gap = float(np.linalg.norm(self.lower[MID_COLUMN] - self.upper[MID_COLUMN]))
        pts = np.rint(np.concatenate([self.upper, self.lower])).astype(int).clip(0, keyframe.shape[0] - 1)
        lip_colour = np.median(keyframe[pts[:, 1], pts[:, 0]].astype(np.float32), axis=0)
        self.edge_colour, self.deep_colour = (lip_colour * k for k in MOUTH_DARKNESS)
        # mouth axes: along (corner to corner) and across (towards the lower lip), unit length
        corner0, corner1 = self.upper[0], self.upper[-1]
        self.origin = corner0
        self.width = max(float(np.linalg.norm(corner1 - corner0)), 1e-6)
        self.along = (corner1 - corner0) / self.width
        across = np.array([-self.along[1], self.along[0]])
        self.across = across if across[1] >= 0 else -across
        mid = (self.upper + self.lower) / 2
        self.column_t = np.maximum.accumulate(self._along(mid))     # where each column sits, 0..1
        self.column_mid = self._across(mid)                         # the line the lips meet on

    def _along(self, p: np.ndarray) -> np.ndarray:
        return (p - self.origin) @ self.along / self.width

    def _across(self, p: np.ndarray) -> np.ndarray:
        return (p - self.origin) @ self.across

    def _interpolate(self, t: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per-column `values` (C,) or (C, 2) at mouth positions t, linearly."""
        if values.ndim == 1:
            return np.interp(t, self.column_t, values)
        return np.stack([np.interp(t, self.column_t, values[:, k]) for k in range(values.shape[1])], -1)

    def paint(self, frame: np.ndarray, target: np.ndarray) -> None:
        size = frame.shape[0]
        upper, lower = target[list(INNER_LIP_UPPER), :2], target[list(INNER_LIP_LOWER), :2]
        # measured in the picture, not in the mouth frame below: a turning head narrows the
        # mouth, and scaling it back to the key frame's width would make its gap look opened
        extra = float(np.linalg.norm(lower[MID_COLUMN] - upper[MID_COLUMN])) - self.gap
        alpha = float(np.clip(extra / (MOUTH_RAMP * size), 0.0, 1.0))
        if alpha <= 0:
            return
        ring = np.concatenate([upper, lower[-2:0:-1]])
        lo = np.floor(ring.min(axis=0) - 3).astype(int).clip(0, size - 1)
        hi = np.ceil(ring.max(axis=0) + 3).astype(int).clip(0, size - 1)
        mask = np.zeros((hi[1] - lo[1] + 1, hi[0] - lo[0] + 1), np.float32)
        cv2.fillPoly(mask, [np.rint((ring - lo) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)], 1.0,
                     lineType=cv2.LINE_AA, shift=_SUBPIXEL_SHIFT)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.7) * alpha
        # the target mouth in the key frame's mouth frame (its size, turn and place)
        to_key = _corner_similarity(upper[0], upper[-1], self.upper[0], self.upper[-1])
        key_upper, key_lower = to_key(upper), to_key(lower)
        ys, xs = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
        q = to_key(np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64))
        t = self._along(q)
        move_upper = self._interpolate(t, key_upper - self.upper)
        move_lower = self._interpolate(t, key_lower - self.lower)
        mid = self._interpolate(t, self.column_mid)
        from_upper, from_lower = q - move_upper, q - move_lower
        # 1 where the moved upper (lower) part covers the pixel, fading over a pixel
        w_upper = np.clip(0.5 + (mid - self._across(from_upper)), 0, 1)
        w_lower = np.clip(0.5 + (self._across(from_lower) - mid), 0, 1)
        w_lower = np.minimum(w_lower, 1 - w_upper)
        source = w_upper[:, None] * from_upper + w_lower[:, None] * from_lower
        source += (1 - w_upper - w_lower)[:, None] * q
        shape = mask.shape
        inside = cv2.remap(self.keyframe, source[:, 0].reshape(shape).astype(np.float32),
                           source[:, 1].reshape(shape).astype(np.float32), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        # the cavity darkens from the lips towards the middle of the gap
        top, bottom = mid + move_upper @ self.across, mid + move_lower @ self.across
        depth = np.clip((self._across(q) - top) / np.maximum(bottom - top, 1e-3), 0, 1)
        edge = ((2 * depth - 1) ** 2).reshape(shape)[..., None]
        cavity = self.deep_colour + edge * (self.edge_colour - self.deep_colour)
        teeth = (w_upper + w_lower).reshape(shape)[..., None]
        inside = teeth * inside + (1 - teeth) * cavity
        patch = frame[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].astype(np.float32)
        patch += mask[..., None] * (inside - patch)
        frame[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = np.rint(patch).astype(np.uint8)


def _corner_similarity(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray):
    """The 2D similarity taking points a0, a1 onto b0, b1, as a function of (N, 2) points
    (z -> k z + c in complex numbers)."""
    za0, za1, zb0, zb1 = (complex(p[0], p[1]) for p in (a0, a1, b0, b1))
    k = (zb1 - zb0) / (za1 - za0) if za1 != za0 else 1.0
    c = zb0 - k * za0

    def apply(p: np.ndarray) -> np.ndarray:
        z = k * (p[:, 0] + 1j * p[:, 1]) + c
        return np.stack([z.real, z.imag], -1)
    return apply


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _blur(maps: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) maps, edges replicated (OpenCV on the CPU, where
    it is several times faster than a torch convolution; torch elsewhere)."""
    if maps.device.type != "cpu":
        return _blur_torch(maps, kernel)
    out = cv2.sepFilter2D(np.ascontiguousarray(maps.permute(1, 2, 0).numpy()), -1, kernel, kernel,
                          borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out).permute(2, 0, 1)


def _blur_torch(maps: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """The same blur as two 1-D torch convolutions (any device)."""
    k = torch.from_numpy(kernel).to(maps.device)
    c, r = maps.shape[0], (len(kernel) - 1) // 2
    x = F.conv2d(F.pad(maps[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


class Synthesizer:
    """Renders frames of one key frame from decoded parameter vectors."""

    def __init__(self, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
                 ring_weights: np.ndarray, device: str = "cpu") -> None:
        self.size = n = keyframe.shape[0]
        self.keyframe = keyframe
        self.model = model
        self.device = torch.device(device)
        ref_landmarks = model.landmarks(ref_params)
        self.mesh = build_mesh(ref_landmarks, pose_to_similarity(ref_params[POSE], n), ring_weights, n)
        self._eyes = [_Eye(ref_landmarks, iris, ring, n) for iris, ring in EYES]
        for eye in self._eyes:
            eye.sample_lid(keyframe, ref_landmarks)
        irises = np.logical_or.reduce([eye.iris_mask for eye in self._eyes]).astype(np.uint8)
        without_irises = cv2.inpaint(keyframe, irises, 3, cv2.INPAINT_TELEA)
        self._mouth = _Mouth(keyframe, ref_landmarks)
        self._source_facing = self._facing(self.mesh.source)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self._image = tensor(keyframe).permute(2, 0, 1)[None].float()
        self._without_irises = tensor(without_irises).permute(2, 0, 1)[None].float()
        ys, xs = np.mgrid[0:n, 0:n]
        self._pixels = tensor(np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32))
        # 1 where the field stays exact: face landmarks, but not the outline where the face meets the rest
        exact = np.zeros(len(self.mesh.source), np.float32)
        exact[:self.mesh.num_landmarks] = 1.0
        exact[list(FACE_OVAL)] = 0.0
        self._vertex_exact = exact
        self._kernel = _gaussian_kernel(SMOOTH_SIGMA * n / 256)

    def target_vertices(self, params: np.ndarray, motion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Target positions (V, 2) and depths (V,) of the mesh vertices for `params` and the
        global picture motion `motion` (None: none)."""
        m = self.mesh
        lm = self.model.landmarks(params)
        pose = pose_to_similarity(params[POSE], self.size)
        nl, nr = m.num_landmarks, len(m.ring_canonical)
        ring = pose.apply(m.ring_canonical)
        w = m.ring_weights[:, None]
        target = m.source.copy()
        target[:nl] = lm[:, :2]
        outline = lm[m.ring_anchor, :2]
        own_motion = outline - pose.apply(self.model.reference[m.ring_anchor])[:, :2]
        still = move_pixels(m.source[nl:], motion, self.size)
        target[nl:nl + nr] = w * ring[:, :2] + (1 - w) * still[:nr] + m.ring_follow[:, None] * own_motion
        target[nl + nr:] = still[nr:]
        depth = m.depth.copy()
        depth[:nl] = lm[:, 2]
        depth[nl:nl + nr] = ring[:, 2]
        return target, depth

    def _facing(self, points: np.ndarray) -> np.ndarray:
        """Orientation (sign of the signed area) of every triangle over `points`."""
        a, b, c = (points[self.mesh.triangles[:, i]] for i in range(3))
        return np.sign((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

    def _rasterise(self, target: np.ndarray, depth: np.ndarray, folded: np.ndarray) -> np.ndarray:
        """Triangle index of every output pixel (-1 where none).  Triangles that turned over
        (the far side of a turning head folding behind itself) are drawn first, then the
        rest far to near, so that visible surface covers folded surface."""
        tris = self.mesh.triangles
        order = np.lexsort((-depth[tris].mean(axis=1), ~folded))
        ids = np.full((self.size, self.size), -1, np.int32)
        pts = np.rint(target * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
        for t in order.tolist():
            cv2.fillConvexPoly(ids, pts[tris[t]], int(t), lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
        return ids

    def _triangle_maps(self, target: np.ndarray, folded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per triangle, and one more row for pixels no triangle covers: the affine maps from
        an output pixel (x, y, 1) to its three barycentric coordinates (T + 1, 3, 3); the
        values at the three corners (T + 1, 3, 3), displacement x, y to the source and the
        exactness weight (0 on folded triangles); and whether the triangle is a sliver
        (T + 1,), thinner than SLIVER pixels."""
        tris = self.mesh.triangles
        v0, v1, v2 = (target[tris[:, i]] for i in range(3))
        e1, e2 = v1 - v0, v2 - v0
        den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        longest = np.max([np.hypot(*e.T) for e in (e1, e2, v2 - v1)], axis=0)
        sliver = np.abs(den) < SLIVER * longest
        den = np.where(np.abs(den) < 1e-6, np.copysign(1e-6, den), den)
        # barycentric b1, b2 of pixel p as affine functions of (x, y, 1); b0 = 1 - b1 - b2
        b1 = np.stack([e2[:, 1], -e2[:, 0], e2[:, 0] * v0[:, 1] - e2[:, 1] * v0[:, 0]], 1) / den[:, None]
        b2 = np.stack([-e1[:, 1], e1[:, 0], e1[:, 1] * v0[:, 0] - e1[:, 0] * v0[:, 1]], 1) / den[:, None]
        b0 = np.array([0.0, 0.0, 1.0]) - b1 - b2
        bary = np.stack([b0, b1, b2], 1)
        values = np.concatenate([self.mesh.source[tris] - target[tris], self._vertex_exact[tris][..., None]], 2)
        values[folded, :, 2] = 0.0
        none_bary = np.array([[[0.0, 0, 1], [0, 0, 0], [0, 0, 0]]])            # stays put, not exact
        return (np.concatenate([bary, none_bary]).astype(np.float32),
                np.concatenate([values, np.zeros((1, 3, 3))]).astype(np.float32),
                np.append(sliver, False))

    def _field(self, target: np.ndarray, depth: np.ndarray) -> torch.Tensor:
        """Backward displacement (2, H, W): where each output pixel samples the key frame,
        relative to itself; exact inside the face, smoothed elsewhere."""
        n = self.size
        folded = self._facing(target) != self._source_facing
        ids = self._rasterise(target, depth, folded).reshape(-1).astype(np.int64)
        ids[ids < 0] = len(self.mesh.triangles)
        bary_maps, corner_values, sliver = self._triangle_maps(target, folded)
        maps = torch.from_numpy(np.einsum("tvk,tvc->tck", bary_maps, corner_values)).to(self.device)
        ids = torch.from_numpy(ids).to(self.device)
        p = self._pixels
        per_pixel = maps[ids]
        values = per_pixel[:, :, 0] * p[:, :1] + per_pixel[:, :, 1] * p[:, 1:] + per_pixel[:, :, 2]   # (P, 3)
        # a pixel the rasteriser gave to a sliver triangle may lie just outside it, where the
        # triangle's map would throw it far away: its barycentric coordinates are clamped to
        # the triangle (and renormalised), which keeps it on the triangle's edge
        thin = torch.from_numpy(sliver).to(self.device)[ids].nonzero()[:, 0]
        if len(thin):
            t, q = ids[thin], p[thin]
            b_maps = torch.from_numpy(bary_maps).to(self.device)[t]
            bary = (b_maps[:, :, 0] * q[:, :1] + b_maps[:, :, 1] * q[:, 1:] + b_maps[:, :, 2]).clamp(min=0)
            bary = bary / bary.sum(1, keepdim=True).clamp(min=1e-6)
            values[thin] = torch.einsum("pv,pvc->pc", bary, torch.from_numpy(corner_values).to(self.device)[t])
        fields = values.T.reshape(3, n, n)              # displacement x, y; exactness
        smooth = _blur(fields, self._kernel)
        # the exact field fades out (continuously) before any place where it may jump
        w = (2 * smooth[2] - 1).clamp(0, 1)
        return w * fields[:2] + (1 - w) * smooth[:2]

    def render(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        target, depth = self.target_vertices(params, motion)
        moved_vertex = np.abs(target - self.mesh.source).max(axis=1) > 1e-9
        if not moved_vertex.any():
            return self.keyframe.copy()
        field = self._field(target, depth)
        moved = (field.abs().amax(0) > MOVED).cpu().numpy()
        repaint = [eye for eye in self._eyes
                   if moved_vertex[list(eye.points) + list(eye.ring)].any() or moved[eye.box].any()]
        source = self._image
        for eye in repaint:    # a moving eye is warped without its iris, then gets it back
            mask = torch.from_numpy(eye.iris_mask).to(self.device)
            source = torch.where(mask, self._without_irises, source)
        n = self.size
        grid = (self._pixels.T.reshape(2, n, n) + field + 0.5) / n * 2 - 1          # align_corners=False
        out = F.grid_sample(source, grid.permute(1, 2, 0)[None], mode="bilinear", padding_mode="border",
                            align_corners=False)[0]
        frame = out.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        landmarks = target[:self.mesh.num_landmarks]
        for eye in repaint:
            eye.paint(frame, self.keyframe, landmarks)
        self._mouth.paint(frame, landmarks)
        return frame
