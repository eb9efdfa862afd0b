"""Global picture motion: how the whole picture (background and body) moved since the key frame.

When the camera moves (a hand-held phone, a face-following crop as in VoxCeleb) every pixel
of the picture moves, not just the face; a synthesizer that keeps the key frame's
background still is then wrong everywhere.  The sender measures that motion per frame as
one similarity (4 numbers, the stream's global-motion group, docs/bitstream.md) and the
synthesizers move the picture border and the still part of the head rings with it.

The similarity maps key-frame positions to the frame's, in grid_sample's normalised
coordinates (x_n = 2 x / size - 1 for a crop-pixel coordinate x, so the picture centre is 0):

    G(p) = exp(log_scale) * R(angle) @ p + (tx, ty)

Estimation (`GlobalMotion.estimate`): dense optical flow (OpenCV's DIS) from the key
frame's crop to the frame's at `WORK` pixels, on the pixels outside both faces' head
region (the face outline grown by `HEAD_GROW`: the face has its own motion), fitted by
least squares weighted by the key frame's local contrast (flat walls carry no motion),
re-weighted three times to shed outliers (a hand passing, hair).  Too little textured
background: no motion (zeros); a motion under a pixel or two at the picture's corners is
estimation noise or a body shifting on a still camera, and is let through only gradually
(`dead_zone`), so that still cameras give still pictures.  Numpy and OpenCV only; about
3-6 ms a frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from codec_core.format import FACE_OVAL

WORK = 128                 # side at which the flow is measured
HEAD_GROW = 1.7            # the head region: the face outline scaled by this about its centre
EDGE = 3                   # pixels next to the picture border are not used (flow there is unreliable)
MIN_WEIGHT = 300.0         # total contrast weight below which the background says nothing
CONTRAST_CAP = 40.0        # one pixel's weight is at most this (a few strong edges must not rule)
ROBUST_PX = 1.0            # residual (pixels at WORK) at which a pixel's weight starts to fall
IRLS_STEPS = 4
# a still camera: on clips filmed with one (lp__d0, lp__d18, rt__3, lp__d13) the estimate
# reaches at most 1.4-2.3 px at the picture's corners (a body shifting in front of a flat
# wall, breathing), median 0.2-1.5 px, and following it costs LPIPS and flicker; a moving
# camera moves them by 5-30 px (KatieHill median 7.7).  Below DEAD_ZONE_PX[0] of motion
# at the corners (pixels of a 256 picture) nothing moves, above DEAD_ZONE_PX[1] all of it
# does, with a continuous ramp between (no jump when a camera starts moving)
DEAD_ZONE_PX = (2.5, 4.0)
NO_MOTION = np.zeros(4)
PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM   # "fast" measured coarser: pcavs 00098 v1 LPIPS -17 % against -24 %


def head_mask(landmarks: np.ndarray, crop_size: int, size: int = WORK) -> np.ndarray:
    """(size, size) bool: the head region of a face with `landmarks` (crop pixels of a
    crop_size square), drawn at `size`."""
    pts = np.asarray(landmarks, np.float64)[list(FACE_OVAL), :2] * (size / crop_size)
    centre = pts.mean(0)
    pts = centre + (pts - centre) * HEAD_GROW
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(pts).astype(np.int32), 1)
    return mask.astype(bool)


def similarity_matrix(motion: np.ndarray) -> np.ndarray:
    """The 2x3 matrix [s R | t] of a motion (tx, ty, log_scale, angle), normalised coordinates."""
    tx, ty, log_scale, angle = (float(v) for v in motion)
    s = np.exp(log_scale)
    c, n = s * np.cos(angle), s * np.sin(angle)
    return np.array([[c, -n, tx], [n, c, ty]])


def apply_motion(points: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Normalised points (N, 2) moved by `motion`."""
    m = similarity_matrix(motion)
    return points @ m[:, :2].T + m[:, 2]


def _gray(crop: np.ndarray) -> np.ndarray:
    small = cv2.resize(crop, (WORK, WORK), interpolation=cv2.INTER_AREA) if crop.shape[0] != WORK else crop
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


class GlobalMotion:
    """Measures the global motion of frames against one key frame (its crop and landmarks)."""

    def __init__(self, key_crop: np.ndarray, key_landmarks: np.ndarray) -> None:
        self.crop_size = key_crop.shape[0]
        self._key = _gray(key_crop)
        self._key_head = head_mask(key_landmarks, self.crop_size)
        gx = cv2.Sobel(self._key, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(self._key, cv2.CV_32F, 0, 1)
        contrast = np.minimum(np.hypot(gx, gy), CONTRAST_CAP)
        inner = np.zeros((WORK, WORK), bool)
        inner[EDGE:-EDGE, EDGE:-EDGE] = True
        self._contrast = (contrast * (inner & ~self._key_head)).reshape(-1).astype(np.float64)
        axis = (np.arange(WORK) + 0.5) * (2.0 / WORK) - 1.0
        xs, ys = np.meshgrid(axis, axis)
        self._p = np.stack([xs.reshape(-1), ys.reshape(-1)], 1)
        # rows of the linear model q = [a -b; b a] p + t, unknowns (a, b, tx, ty)
        a = np.zeros((2 * len(self._p), 4))
        a[0::2, 0], a[0::2, 1], a[0::2, 2] = self._p[:, 0], -self._p[:, 1], 1.0
        a[1::2, 0], a[1::2, 1], a[1::2, 3] = self._p[:, 1], self._p[:, 0], 1.0
        self._rows = a
        self._flow = cv2.DISOpticalFlow_create(PRESET)

    def estimate(self, crop: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        """(tx, ty, log_scale, angle) of `crop` (a frame's crop, the key frame's size) against
        the key frame; `landmarks`: the frame's face (crop pixels), None when it was not found."""
        if self._contrast.sum() < MIN_WEIGHT:
            return NO_MOTION.copy()
        flow = self._flow.calc(self._key, _gray(crop), None).reshape(-1, 2).astype(np.float64)
        q = self._p + flow * (2.0 / WORK)
        weight = self._contrast.copy()
        if landmarks is not None:
            head = head_mask(landmarks, self.crop_size)
            xy = np.clip(np.floor((q + 1.0) * (WORK / 2)).astype(int), 0, WORK - 1)
            weight *= ~head[xy[:, 1], xy[:, 0]]
        if weight.sum() < MIN_WEIGHT:
            return NO_MOTION.copy()
        target = q.reshape(-1)
        base = weight
        for _ in range(IRLS_STEPS):
            w = np.repeat(weight, 2)
            solution = np.linalg.solve(self._rows.T @ (self._rows * w[:, None]) + 1e-9 * np.eye(4),
                                       self._rows.T @ (target * w))
            residual = np.hypot(*(self._rows @ solution - target).reshape(-1, 2).T) * (WORK / 2)
            weight = base / np.maximum(1.0, residual / ROBUST_PX)
        a, b, tx, ty = solution
        return dead_zone(np.array([tx, ty, 0.5 * np.log(a * a + b * b), np.arctan2(b, a)]))


def dead_zone(motion: np.ndarray) -> np.ndarray:
    """`motion` scaled down to nothing when it moves the picture's corners by less than
    DEAD_ZONE_PX (see there), continuously."""
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    reach = np.abs(apply_motion(corners, motion) - corners).max() * 128.0     # pixels of a 256 picture
    lo, hi = DEAD_ZONE_PX
    return motion * float(np.clip((reach - lo) / (hi - lo), 0.0, 1.0))
