"""The face representation: landmarks <-> pose, expression and eye parameters.

A face in a frame is the key frame's own canonical shape, deformed in its canonical
(frontal, unit-size) frame and then placed in the picture by a similarity transform:

    S = s * R @ (C_ref + E^T c + b_left * (o_l - o_l,ref) + b_right * (o_r - o_r,ref)
                 + G^T (g - g_ref)) + t

where R comes from yaw/pitch/roll, s from log_scale, t from tx/ty, c are expression
coefficients on a learned orthonormal basis E, o are eye openness values and g the gaze,
each measured directly from the landmarks and so meaningful on its own.  The basis
(mean shape, rigid points, E, b and G) is a small versioned asset learned by
`models.train_basis` from the clips in ../shared/data.

Parameter vector layout (all floats; codec_core.format names it):
    yaw, pitch, roll      degrees (yaw about the vertical axis, pitch about the
                          horizontal, roll in the image plane)
    tx, ty                position of the face origin, fractions of the frame width
    log_scale             natural log of the face scale in frame widths
    eye_left, eye_right   eye openness: lid gap over eye width (about 0.3 open, 0 shut)
    gaze_x, gaze_y        iris offset from the eye centre over eye width
    expr_0 .. expr_{K-1}  expression coefficients (canonical units, RMS face radius 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

# The parameter layout, and the face outline (MediaPipe's FACEMESH_FACE_OVAL) that the head
# rings of the reference geometry follow, are part of the stream format.
from codec_core.format import EXPRESSION, EYES, FACE_OVAL, I_SCALE, I_TX, I_TY, NUM_FIXED, POSE, param_names  # noqa: F401

ASSET_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_BASIS = ASSET_DIR / "face_basis_v1.npz"


# MediaPipe face mesh indices.  "Right" is the subject's right (image left).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)
RIGHT_IRIS = tuple(range(468, 473))
LEFT_IRIS = tuple(range(473, 478))
MOUTH_CORNERS = (61, 291)
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
FOREHEAD, CHIN = 10, 152
EYE_POINTS = tuple(sorted(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER + LEFT_EYE_UPPER + LEFT_EYE_LOWER
                              + RIGHT_IRIS + LEFT_IRIS + RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS)))
# Points that move little with expression: forehead, nose bridge, temples, eye corners.
SEED_RIGID = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 109, 338, 67, 297, 103, 332,
              33, 133, 362, 263, 127, 356, 234, 454, 162, 389, 21, 251, 54, 284, 93, 323)


@dataclass(frozen=True)
class Similarity:
    """x_image = s * R @ x_canonical + t (3D; only x and y reach the picture)."""

    s: float
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)

    def apply(self, pts: np.ndarray) -> np.ndarray:
        return self.s * pts @ self.R.T + self.t

    def invert_points(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self.t) @ self.R / self.s


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity mapping src points onto dst points (Umeyama, 3D)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    R = u @ np.diag(sign) @ vt
    var_a = (a ** 2).sum() / len(src)
    s = float((d * sign).sum() / var_a)
    t = mu_d - s * R @ mu_s
    return Similarity(s, R, t)


def pose_to_similarity(pose: np.ndarray, frame_size: int) -> Similarity:
    """Pose vector (yaw, pitch, roll, tx, ty, log_scale) to a similarity in crop pixels."""
    R = Rotation.from_euler("YXZ", pose[:3], degrees=True).as_matrix()
    s = float(np.exp(pose[I_SCALE])) * frame_size
    t = np.array([pose[I_TX] * frame_size, pose[I_TY] * frame_size, 0.0])
    return Similarity(s, R, t)


def similarity_to_pose(sim: Similarity, frame_size: int) -> np.ndarray:
    ypr = Rotation.from_matrix(sim.R).as_euler("YXZ", degrees=True)
    return np.array([ypr[0], ypr[1], ypr[2], sim.t[0] / frame_size, sim.t[1] / frame_size,
                     np.log(sim.s / frame_size)])


def eye_measures(c: np.ndarray) -> np.ndarray:
    """(open_left, open_right, gaze_x, gaze_y) of a canonical shape (478, 3)."""

    def openness(upper, lower, corners):
        width = np.linalg.norm(c[corners[0], :2] - c[corners[1], :2])
        gap = np.mean([c[lo, 1] - c[up, 1] for up, lo in zip(upper[2:5], lower[2:5])])
        return gap / width, width

    o_r, w_r = openness(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_CORNERS)
    o_l, w_l = openness(LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_EYE_CORNERS)
    g_r = (c[RIGHT_IRIS[0], :2] - c[list(RIGHT_EYE_CORNERS), :2].mean(axis=0)) / w_r
    g_l = (c[LEFT_IRIS[0], :2] - c[list(LEFT_EYE_CORNERS), :2].mean(axis=0)) / w_l
    g = (g_r + g_l) / 2
    return np.array([o_l, o_r, g[0], g[1]])


@dataclass(frozen=True)
class FaceBasis:
    """The learned face model asset."""

    version: str
    mean: np.ndarray         # (478, 3) canonical mean shape, frontal, RMS radius 1
    rigid: np.ndarray        # indices of points used for the rigid fit
    expression: np.ndarray   # (K, 478*3) orthonormal rows
    expression_std: np.ndarray  # (K,) spread of each coefficient in the training data
    eyes: np.ndarray         # (4, 478*3) displacement per unit of open_l, open_r, gaze_x, gaze_y

    @property
    def num_expression(self) -> int:
        return self.expression.shape[0]

    @property
    def num_params(self) -> int:
        return NUM_FIXED + self.num_expression

    def param_names(self) -> list[str]:
        return list(param_names(self.num_expression))

    def save(self, path: Path) -> None:
        np.savez_compressed(path, version=np.array(self.version), mean=self.mean.astype(np.float32),
                            rigid=self.rigid.astype(np.int16), expression=self.expression.astype(np.float32),
                            expression_std=self.expression_std.astype(np.float32),
                            eyes=self.eyes.astype(np.float32))

    @classmethod
    def load(cls, path: Path = DEFAULT_BASIS) -> FaceBasis:
        if not Path(path).exists():
            raise FileNotFoundError(f"face basis {path} not found; build it with `python -m models.train_basis`")
        with np.load(path) as z:
            return cls(version=str(z["version"]), mean=z["mean"].astype(np.float64),
                       rigid=z["rigid"].astype(np.int64), expression=z["expression"].astype(np.float64),
                       expression_std=z["expression_std"].astype(np.float64),
                       eyes=z["eyes"].astype(np.float64))


class FaceModel:
    """Analysis (landmarks -> parameters) and reconstruction (parameters -> landmarks)
    relative to one key frame's canonical shape."""

    def __init__(self, basis: FaceBasis, reference: np.ndarray, frame_size: int,
                 reference_eyes: np.ndarray | None = None) -> None:
        self.basis = basis
        self.reference = reference            # canonical shape of the key frame (478, 3)
        self.frame_size = frame_size
        # the eye values at which the reference shape's eyes are (default: as measured)
        self.reference_eyes = eye_measures(reference) if reference_eyes is None else reference_eyes

    def analyse(self, landmarks: np.ndarray) -> np.ndarray:
        """Parameter vector of crop-space landmarks (478, 3)."""
        b = self.basis
        sim = fit_similarity(self.reference[b.rigid], landmarks[b.rigid])
        canon = sim.invert_points(landmarks)
        eyes = eye_measures(canon)
        delta = (canon - self.reference).reshape(-1)
        delta = delta - (eyes - self.reference_eyes) @ b.eyes
        expr = b.expression @ delta
        return np.concatenate([similarity_to_pose(sim, self.frame_size), eyes, expr])

    def canonical(self, params: np.ndarray) -> np.ndarray:
        """The deformed canonical shape (478, 3) that `params` describe."""
        b = self.basis
        delta = params[EXPRESSION] @ b.expression + (params[EYES] - self.reference_eyes) @ b.eyes
        return self.reference + delta.reshape(-1, 3)

    def landmarks(self, params: np.ndarray) -> np.ndarray:
        """Crop-space landmarks (478, 3) that `params` describe."""
        return pose_to_similarity(params[POSE], self.frame_size).apply(self.canonical(params))


def canonicalise(landmarks: np.ndarray, basis: FaceBasis, frame_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Key frame analysis: its canonical shape and its pose against the mean face."""
    sim = fit_similarity(basis.mean[basis.rigid], landmarks[basis.rigid])
    return sim.invert_points(landmarks), similarity_to_pose(sim, frame_size)

