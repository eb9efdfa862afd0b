"""What a stream is: every number the stream syntax depends on, in one place.

Both ends of a call, the offline codec, the synthesizer and the parsers read these; none
of them defines its own.  Changing anything here changes the bitstream: bump
`STREAM_VERSION` and regenerate the parser fixtures (tests/fixtures/make_fixtures.py).
The tables in docs/bitstream.md describe the same numbers.  Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# -- stream identity -----------------------------------------------------------------------
MAGIC = b"FCVC"
STREAM_VERSION = 6                      # 2: feature formats (the header's format byte, step count)
                                        # 3: the global-motion group after every frame's values
                                        # 4: fomm's key points: brows as one, the face outline added
                                        # 5: the EYE_REFERENCE record (the caller's shut eyes)
                                        # 6: its third square, the caller's open mouth
FORMAT_IFVC = 1                         # the session header's format byte of format "ifvc" (below)
KEYFRAME_CODEC_VVC = 1
EYE_PATCH = 48                          # an EYE_REFERENCE square's side at a 256 picture (96 at 512)
REFERENCE_SQUARES = 3                   # its picture: right eye, left eye, mouth


def eye_reference_size(side: int) -> tuple[int, int]:
    """(width, height) of the EYE_REFERENCE picture of a stream of `side` x `side` pictures:
    the two eyes' square patches and the mouth's strips side by side."""
    n = EYE_PATCH * side // 256
    return REFERENCE_SQUARES * n, n

# -- the parameter vector, one frame ------------------------------------------------------------
POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "log_scale")
EYE_NAMES = ("eye_left", "eye_right", "gaze_x", "gaze_y")
NUM_FIXED = len(POSE_NAMES) + len(EYE_NAMES)      # then the expression coefficients
I_YAW, I_PITCH, I_ROLL, I_TX, I_TY, I_SCALE = range(6)
I_EYE_L, I_EYE_R, I_GAZE_X, I_GAZE_Y = range(6, 10)
POSE = slice(I_YAW, I_SCALE + 1)                  # yaw .. log_scale
EYES = slice(I_EYE_L, I_GAZE_Y + 1)               # eye openness (left, right), gaze (x, y)
EXPRESSION = slice(NUM_FIXED, None)
# expression coefficients per face basis version (the session header names the version)
EXPRESSION_COUNT = {"v1": 20}


def num_params(basis_version: str) -> int:
    """Parameters per frame of a stream that uses face basis `basis_version`."""
    return NUM_FIXED + EXPRESSION_COUNT[basis_version]


def param_names(num_expression: int) -> tuple[str, ...]:
    return POSE_NAMES + EYE_NAMES + tuple(f"expr_{i}" for i in range(num_expression))


# -- global picture motion (models/global_motion.py; docs/bitstream.md) ---------------------------
# Shared by every feature format: after a frame's format values come these four, a
# similarity of the whole picture since the key frame in normalised crop coordinates
# (x_n = 2 x / size - 1): G(p) = exp(log_scale) R(angle) p + (tx, ty), angle in radians.
# All four take the session header's one `global_step`.  Zero for the key frame itself.
GLOBAL_MOTION_NAMES = ("global_tx", "global_ty", "global_log_scale", "global_angle")
GLOBAL_MOTION_COUNT = len(GLOBAL_MOTION_NAMES)


# -- quantisation steps ---------------------------------------------------------------------
# An ifvc session header carries the steps as float32 in this order (other formats: their
# `FeatureFormat.step_names`, below).
STEP_NAMES = ("angle", "translation", "log_scale", "eye", "gaze", "expression", "geometry")
# the step of each fixed parameter (the expression coefficients all take "expression")
FIXED_STEPS = ("angle",) * 3 + ("translation",) * 2 + ("log_scale",) + ("eye",) * 2 + ("gaze",) * 2
I_STEP_GEOMETRY = STEP_NAMES.index("geometry")


def step_vector(steps: Sequence[float], num_params: int) -> np.ndarray:
    """Quantisation step of every entry of the parameter vector; `steps` in STEP_NAMES order.
    Rounded to float32, as the session header carries them: both ends use identical steps."""
    by_name = dict(zip(STEP_NAMES, steps, strict=True))
    names = FIXED_STEPS + ("expression",) * (num_params - NUM_FIXED)
    return np.array([by_name[n] for n in names], dtype=np.float32).astype(np.float64)


# -- parameter binarisation (docs/bitstream.md) ---------------------------------------------------
NUM_UNARY = 4                 # magnitude-1 as up to this many context-coded unary bins, then Exp-Golomb
EG_ORDER_PREDICTED = 0
EG_ORDER_INTRA = 3
EG_ORDER_GEOMETRY = 1

# -- the key frame's reference geometry ------------------------------------------------------------
NUM_LANDMARKS = 478           # MediaPipe face mesh with irises, in its point order
NUM_REFERENCE_POSE = 6        # the key frame's own yaw, pitch, roll, tx, ty, log_scale levels
# Head rings: RING_COUNT rings of points around the face outline (MediaPipe's FACEMESH_FACE_OVAL,
# an ordered closed ring), ring by ring, each ring in outline order.  Each point carries a
# weight k (how much it follows the head) as RING_WEIGHT_BITS bits, k in 0..RING_WEIGHT_MAX.
FACE_OVAL = (10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148,
             152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338)
RING_COUNT = 3
NUM_RING_POINTS = RING_COUNT * len(FACE_OVAL)
RING_WEIGHT_BITS = 2
RING_WEIGHT_MAX = 3           # weights are k / RING_WEIGHT_MAX


def geometry_predictors(mean_shape: np.ndarray) -> np.ndarray:
    """The prediction order of the reference shape, derived from the face basis's mean shape
    (the same rule for every basis version so far): each point i > 0 is predicted from the
    nearest point j < i of the mean shape; -1 for point 0."""
    return _predictors(np.ascontiguousarray(mean_shape, dtype=np.float64).tobytes())


@lru_cache(maxsize=4)
def _predictors(mean_bytes: bytes) -> np.ndarray:
    mean = np.frombuffer(mean_bytes).reshape(-1, 3)
    pred = np.full(len(mean), -1)
    for i in range(1, len(mean)):
        pred[i] = int(np.argmin(np.linalg.norm(mean[:i] - mean[i], axis=1)))
    pred.flags.writeable = False
    return pred


# -- bounds on everything that comes from outside (docs/bitstream.md, "Bounds") ------------------
# Each parser refuses a value past its bound with a one-line StreamError before it allocates
# anything for it; none of these changes the syntax, they only say which values are sane.
MAX_RECORD = 16 << 20         # bytes of one record's payload
SIDES = (256, 512)            # picture sides: square pictures only (width == height), one of these
MIN_FPS, MAX_FPS = 1, 120     # frames per second the session header may declare (fps_num / fps_den)
MAX_INTRA_INTERVAL = 1000     # the session header's intra_interval (40 s at 25 fps)
MAX_SEGMENT_FRAMES = MAX_INTRA_INTERVAL   # frames of one PARAM_SEGMENT: one intra frame, then predicted
MAX_PICTURE_BYTES = 1 << 20   # a key frame's VVC picture (a sharp 512 key frame is tens of kB)
MAX_PICTURE_PIXELS = max(SIDES) ** 2   # the VVC decoder refuses a picture declaring more, before decoding
MAX_EYE_OPENNESS = 1000.0     # |openness| an EYE_REFERENCE may carry (decoded values are a few units)
MAX_GEOMETRY_BYTES = 64 << 10  # a key frame's reference geometry codeword (a few hundred bytes)
MAX_STEP = 1e3                # quantisation steps lie in (0, MAX_STEP)
MAX_EG_VALUE = 1 << 24        # an Exp-Golomb suffix beyond this is corrupt
MAX_LEVEL = 1 << 20           # a decoded parameter level beyond this is corrupt
MAX_SHAPE_LEVEL = 4096        # a reference shape or pose level beyond this is corrupt


# -- feature formats (docs/bitstream.md, "Feature formats") ----------------------------------
# What one frame's numbers are in each format.  The session header's format byte is `id`;
# its steps are `step_names`, in that order, the key frame's geometry step always last (the
# KEYFRAME record and its reference geometry are the same in every format: both ends derive
# each format's key-frame values from it).  `value_steps` names the step group of each value.
# ifvc's values are the parameter vector above, with the expression count of face basis v1
# (the only basis so far).  What each value means geometrically: docs/formats.md.


@dataclass(frozen=True)
class FeatureFormat:
    id: int
    name: str
    step_names: tuple[str, ...]         # the header's steps, in order; "geometry" last
    value_names: tuple[str, ...]        # one per number per frame, in stream order
    value_steps: tuple[str, ...]        # the step group (a name of `step_names`) of each value

    def __post_init__(self) -> None:
        assert self.step_names[-1] == "geometry" and "geometry" not in self.value_steps, self.name
        assert len(self.value_steps) == len(self.value_names), self.name
        assert set(self.value_steps) == set(self.step_names[:-1]), self.name

    @property
    def count(self) -> int:
        """Numbers per frame."""
        return len(self.value_names)

    @property
    def frame_step_names(self) -> tuple[str, ...]:
        """The step groups of the per-frame values (every step but the key frame's geometry)."""
        return self.step_names[:-1]

    def step_vector(self, steps: Sequence[float]) -> np.ndarray:
        """Quantisation step of every value of a frame; `steps` in `step_names` order, rounded
        to float32 as the session header carries them (both ends use identical steps)."""
        by_name = dict(zip(self.step_names, steps, strict=True))
        return np.array([by_name[n] for n in self.value_steps], dtype=np.float32).astype(np.float64)


def _fomm() -> FeatureFormat:
    kp = tuple(f"kp{k}_{a}" for k in range(10) for a in "xy")
    jac = tuple(f"jac{k}_{ij}" for k in range(10) for ij in ("00", "01", "10", "11"))
    return FeatureFormat(2, "fomm", ("keypoint", "jacobian", "geometry"), kp + jac,
                         ("keypoint",) * 20 + ("jacobian",) * 40)


def _fv2v() -> FeatureFormat:
    delta = tuple(f"delta{k}_{a}" for k in range(15) for a in "xyz")
    return FeatureFormat(3, "fv2v", ("angle", "translation", "log_scale", "delta", "geometry"),
                         POSE_NAMES + delta,
                         ("angle",) * 3 + ("translation",) * 2 + ("log_scale",) + ("delta",) * 45)


def _cfte() -> FeatureFormat:
    return FeatureFormat(4, "cfte", ("feature", "geometry"), tuple(f"f{i}" for i in range(16)), ("feature",) * 16)


IFVC = FeatureFormat(FORMAT_IFVC, "ifvc", STEP_NAMES, param_names(EXPRESSION_COUNT["v1"]),
                     FIXED_STEPS + ("expression",) * EXPRESSION_COUNT["v1"])
FEATURE_FORMATS = {f.name: f for f in (IFVC, _fomm(), _fv2v(), _cfte())}
FORMAT_BY_ID = {f.id: f for f in FEATURE_FORMATS.values()}


# -- the key frame's own ifvc levels in every format ------------------------------------------
# The reference geometry carries the key frame's pose as levels in ifvc's pose steps, and both
# ends derive the key frame's eye levels in ifvc's eye and gaze steps (models/reference.py).
# A format whose header has a step of that name (ifvc all of them, fv2v the pose's) uses the
# header's; the others use these fixed steps, so that a decoder needs nothing but the stream.
KEY_LEVEL_STEPS = {"angle": 0.25, "translation": 0.001, "log_scale": 0.002, "eye": 0.03, "gaze": 0.03,
                   "expression": 0.09}


def reference_steps(feature_format: FeatureFormat, steps: Sequence[float]) -> tuple[float, ...]:
    """The ifvc steps (STEP_NAMES order) that the key frame's reference of a stream of
    `feature_format` with header steps `steps` is coded and read with."""
    by_name = {**KEY_LEVEL_STEPS, **dict(zip(feature_format.step_names, steps, strict=True))}
    return tuple(float(by_name[name]) for name in STEP_NAMES)


def format_named(name: str) -> FeatureFormat:
    """The format called `name`; ValueError with one line naming the known ones."""
    try:
        return FEATURE_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown feature format {name!r}: choose one of {', '.join(FEATURE_FORMATS)}") from None
