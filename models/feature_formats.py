"""Feature analysis of the four stream formats, from the sender's face geometry (docs/formats.md).

Every format's per-frame values are computed from the 478 MediaPipe landmarks the tracker
gives (crop pixels) and the key frame's `Reference`; no format runs a detector of its own.

  ifvc  the face model's 30 parameters (models.face_model.FaceModel.analyse);
  fomm  10 key points (centroids of fixed landmark groups, in [-1, 1] crop coordinates: brows,
        eyes, nose, mouth corners, lips, jaw and the face's outline) and
        a 2x2 Jacobian per key point: the least-squares linear map from the group's points
        in the face basis's mean shape to the group's points in the frame (FOMM's layout);
  fv2v  ifvc's pose (yaw, pitch, roll, tx, ty, log_scale) and 15 3D expression deltas: the
        centroids of 15 fixed landmark groups of the frame's canonical shape minus the same
        centroids of the key frame's reference shape (face-vid2vid's layout);
  cfte  16 numbers: a learned PCA projection (models/assets/cfte_v1.npz, from
        `python -m models.train_cfte`) of 68 landmarks (a dlib-68-like subset of the mesh)
        in [-1, 1] crop coordinates, mean removed.

The computations are batched over frames ((B, 478, 3) landmarks in, (B, count) values out)
so that the geometry translators (models.translators) can evaluate many candidates at once.
The names, ids and value order are codec_core.format's FEATURE_FORMATS.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from codec_core.format import FEATURE_FORMATS
from models.face_model import (
    LEFT_EYE_CORNERS,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
)
from models.reference import Reference

ASSET_DIR = Path(__file__).resolve().parent / "assets"
CFTE_ASSET = ASSET_DIR / "cfte_v1.npz"
CFTE_VERSION = "cfte_v1"

# -- landmark groups (MediaPipe face mesh indices; "right" is the subject's right, image left) --
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
RIGHT_EYE = RIGHT_EYE_CORNERS + RIGHT_EYE_UPPER + RIGHT_EYE_LOWER
LEFT_EYE = LEFT_EYE_CORNERS + LEFT_EYE_UPPER + LEFT_EYE_LOWER
NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 129, 358, 64, 294)
RIGHT_MOUTH_CORNER = (61, 185, 40, 146, 91, 78, 191, 95)
LEFT_MOUTH_CORNER = (291, 409, 270, 375, 321, 308, 415, 324)
UPPER_LIP = (0, 37, 39, 267, 269, 13, 82, 312, 81, 311, 11, 12)
LOWER_LIP = (17, 84, 314, 181, 405, 14, 87, 317, 178, 402, 15, 16)
JAW = (152, 148, 176, 149, 150, 136, 172, 377, 400, 378, 379, 365, 397, 175, 199)
CHIN = (152, 148, 176, 149, 377, 400, 378, 175, 199, 200)
RIGHT_CHEEK = (50, 101, 36, 205, 187, 123, 116, 117, 118, 119, 234, 93, 132, 58)
LEFT_CHEEK = (280, 330, 266, 425, 411, 352, 345, 346, 347, 348, 454, 323, 361, 288)
FOREHEAD = (10, 109, 67, 103, 338, 297, 332, 151, 108, 69, 337, 299, 9)
LIPS = UPPER_LIP + LOWER_LIP
# the face's outline at the sides, temple to jaw corner: the points furthest behind the nose, whose
# 2D spread tells a head turn (foreshortening, parallax) from an expression
FACE_OUTLINE = (162, 127, 234, 93, 132, 58, 172, 136, 389, 356, 454, 323, 361, 288, 397, 365)

# stream version 4: the lips one key point, the face's outline a new one (docs/formats.md, "fomm")
FOMM_GROUPS = (RIGHT_BROW, LEFT_BROW, RIGHT_EYE, LEFT_EYE, NOSE, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER, LIPS,
               JAW, FACE_OUTLINE)
FV2V_GROUPS = (RIGHT_BROW, LEFT_BROW, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, LEFT_EYE_UPPER, LEFT_EYE_LOWER, NOSE,
               RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER, UPPER_LIP, LOWER_LIP, CHIN, RIGHT_CHEEK, LEFT_CHEEK, FOREHEAD)
# dlib's 68 points on the MediaPipe mesh, in dlib's order: jaw 17, brows 5 + 5, nose 4 + 5,
# eyes 6 + 6, outer lips 12, inner lips 8
CFTE_POINTS = (162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
               71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
               168, 197, 5, 4, 75, 97, 2, 326, 305,
               33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
               61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
               78, 82, 13, 312, 308, 317, 14, 87)
assert len(FOMM_GROUPS) == 10 and len(FV2V_GROUPS) == 15 and len(CFTE_POINTS) == 68
CFTE_DIM = 16


class FormatError(ValueError):
    """An unknown feature format name, or a feature asset that cannot be used."""


def check_format(fmt: str) -> None:
    if fmt not in FEATURE_FORMATS:
        raise FormatError(f"unknown feature format {fmt!r}: choose one of {', '.join(FEATURE_FORMATS)}")


# -- the cfte projection asset -----------------------------------------------------------------

@dataclass(frozen=True)
class CfteProjection:
    """f = P^T (x - mean), x the 68 points' (x, y) in [-1, 1] crop coordinates, interleaved."""

    version: str
    mean: np.ndarray        # (136,)
    basis: np.ndarray       # (136, 16) orthonormal columns P

    def project(self, points: np.ndarray) -> np.ndarray:
        """(B, 68, 2) normalised points -> (B, 16)."""
        return (points.reshape(len(points), -1) - self.mean) @ self.basis

    def rebuild(self, features: np.ndarray) -> np.ndarray:
        """(B, 16) -> (B, 68, 2): mean + P f."""
        return (self.mean + features @ self.basis.T).reshape(len(features), -1, 2)

    def save(self, path: Path) -> None:
        np.savez(path, version=np.array(self.version), mean=self.mean.astype(np.float32),
                 basis=self.basis.astype(np.float32), points=np.array(CFTE_POINTS, np.int16))


def load_cfte(path: Path = CFTE_ASSET) -> CfteProjection:
    """The cfte projection; FormatError when it is missing or of another version."""
    return _load_cfte(str(path))


@lru_cache(maxsize=4)
def _load_cfte(path: str) -> CfteProjection:
    if not Path(path).exists():
        raise FormatError(f"cfte projection {path} not found; build it with `python -m models.train_cfte`")
    with np.load(path) as z:
        version = str(z["version"])
        if version != CFTE_VERSION:
            raise FormatError(f"cfte projection {path} is version {version!r}; this code reads {CFTE_VERSION!r}")
        if tuple(z["points"].tolist()) != CFTE_POINTS:
            raise FormatError(f"cfte projection {path} was fitted on other landmarks than this code's")
        return CfteProjection(version, z["mean"].astype(np.float64), z["basis"].astype(np.float64))


# -- batched geometry ----------------------------------------------------------------------------

def normalised(pixels: np.ndarray, size: int) -> np.ndarray:
    """Crop pixels -> [-1, 1] crop coordinates: x = 2 px / size - 1."""
    return pixels * (2.0 / size) - 1.0


def fit_similarities(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """models.face_model.fit_similarity on a batch: src (N, 3), dst (B, N, 3) -> s (B,), R (B, 3, 3), t (B, 3)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=1)
    a, b = src - mu_s, dst - mu_d[:, None]
    cov = np.einsum("bni,nj->bij", b, a) / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones((len(dst), 3))
    sign[np.linalg.det(u) * np.linalg.det(vt) < 0, -1] = -1
    R = (u * sign[:, None, :]) @ vt
    s = (d * sign).sum(axis=1) / ((a ** 2).sum() / len(src))
    t = mu_d - s[:, None] * np.einsum("bij,j->bi", R, mu_s)
    return s, R, t


def poses(s: np.ndarray, R: np.ndarray, t: np.ndarray, size: int) -> np.ndarray:
    """models.face_model.similarity_to_pose on a batch: (B, 6) yaw, pitch, roll, tx, ty, log_scale."""
    ypr = Rotation.from_matrix(R).as_euler("YXZ", degrees=True)
    return np.concatenate([ypr, t[:, :2] / size, np.log(s / size)[:, None]], axis=1)


@dataclass(frozen=True)
class FormatGeometry:
    """What the analysis of one key frame needs, computed once (models.translators keeps one)."""

    size: int
    reference_shape: np.ndarray   # (478, 3) the key frame's canonical shape
    rigid: np.ndarray             # indices of the rigid fit (the face basis's)
    fomm_pinv: tuple[np.ndarray, ...]   # per group: (M^T M)^-1 M^T of its centred mean-shape points (2, n)
    fv2v_centroids: np.ndarray    # (15, 3) group centroids of the reference shape

    @classmethod
    def of(cls, reference: Reference) -> FormatGeometry:
        mean, shape = reference.basis.mean, reference.shape
        pinv = []
        for g in FOMM_GROUPS:
            m = mean[list(g), :2] - mean[list(g), :2].mean(axis=0)
            pinv.append(np.linalg.solve(m.T @ m, m.T))
        centroids = np.stack([shape[list(g)].mean(axis=0) for g in FV2V_GROUPS])
        return cls(reference.size, shape, reference.basis.rigid, tuple(pinv), centroids)

    def fomm(self, landmarks: np.ndarray) -> np.ndarray:
        """(B, 478, 3) crop pixels -> (B, 60)."""
        pts = normalised(landmarks[..., :2], self.size)
        kps, jacs = [], []
        for g, pinv in zip(FOMM_GROUPS, self.fomm_pinv, strict=True):
            f = pts[:, list(g)]
            kp = f.mean(axis=1)
            # J = F^T M (M^T M)^-1 with F, M centred: rows of J are (pinv @ F)^T
            jacs.append(np.einsum("jn,bni->bij", pinv, f - kp[:, None]).reshape(len(f), 4))
            kps.append(kp)
        return np.concatenate([np.stack(kps, 1).reshape(len(pts), -1), np.stack(jacs, 1).reshape(len(pts), -1)], 1)

    def fv2v(self, landmarks: np.ndarray) -> np.ndarray:
        """(B, 478, 3) crop pixels -> (B, 51): ifvc's pose, then the 15 canonical centroid deltas."""
        s, R, t = fit_similarities(self.reference_shape[self.rigid], landmarks[:, self.rigid])
        canon = np.einsum("bni,bij->bnj", landmarks - t[:, None], R) / s[:, None, None]
        cent = np.stack([canon[:, list(g)].mean(axis=1) for g in FV2V_GROUPS], 1)
        return np.concatenate([poses(s, R, t, self.size), (cent - self.fv2v_centroids).reshape(len(s), -1)], 1)

    def cfte(self, landmarks: np.ndarray) -> np.ndarray:
        """(B, 478, 3) crop pixels -> (B, 16)."""
        return load_cfte().project(normalised(landmarks[:, list(CFTE_POINTS), :2], self.size))

    def values(self, fmt: str, landmarks: np.ndarray) -> np.ndarray:
        """Batched analysis of a format other than ifvc."""
        if fmt == "fomm":
            return self.fomm(landmarks)
        if fmt == "fv2v":
            return self.fv2v(landmarks)
        if fmt == "cfte":
            return self.cfte(landmarks)
        check_format(fmt)
        raise FormatError(f"format {fmt!r} has no batched geometry analysis")


def analyse(fmt: str, landmarks: np.ndarray, reference: Reference,
            geometry: FormatGeometry | None = None) -> np.ndarray:
    """One frame's values of format `fmt` (FEATURE_FORMATS[fmt].count,) float64, unquantised, in
    the registry's order, from its (478, 3) landmarks in crop pixels.  `geometry`: the key
    frame's FormatGeometry.of(reference), from a caller that analyses many frames against the
    same key frame (the encoder keeps one per key frame); None: made here."""
    check_format(fmt)
    if fmt == "ifvc":
        return reference.face_model().analyse(landmarks)
    geometry = FormatGeometry.of(reference) if geometry is None else geometry
    return geometry.values(fmt, np.asarray(landmarks, np.float64)[None])[0]


def key_features(fmt: str, reference: Reference) -> np.ndarray:
    """The key frame's own values, from its reference geometry alone (both ends have it)."""
    check_format(fmt)
    return analyse(fmt, reference.face_model().landmarks(reference.reference_params()), reference)
