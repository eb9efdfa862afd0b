"""The key frame's reference geometry: what both ends derive from one key frame record.

It holds the quantised canonical shape of the key frame's face, the key frame's own
(quantised) parameters and the head-ring weights for the synthesizer.  Its codeword is
the `geometry` part of a KEYFRAME record (docs/bitstream.md):

    shape   478 x 3 integers: (C_ref - mean) / geometry step, each point predicted from
            the nearest point of the mean shape coded before it
    pose    6 integers: the key frame's yaw, pitch, roll, tx, ty, log_scale levels
    rings   one integer 0..3 per head-ring point
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from codec_core.arith import ArithmeticDecoder, ArithmeticEncoder, ContextSet
from codec_core.param_coding import (EG_ORDER_INTRA, ParamDecodeError, decode_geometry, dequantise,
                                     encode_geometry, geometry_predictors, quantise, read_int, write_int)
from models.face_model import FACE_OVAL, NUM_FIXED, FaceBasis, FaceModel, canonicalise, eye_measures
from models.synthesizer import WEIGHT_LEVELS, RING_SCALES, default_ring_weights, ring_layout

NUM_RING_POINTS = len(RING_SCALES) * len(FACE_OVAL)
MAX_SHAPE_LEVEL = 4096


@lru_cache(maxsize=4)
def _predictors_for(mean_bytes: bytes) -> np.ndarray:
    return geometry_predictors(np.frombuffer(mean_bytes).reshape(-1, 3))


def _predictors(basis: FaceBasis) -> np.ndarray:
    return _predictors_for(np.ascontiguousarray(basis.mean, dtype=np.float64).tobytes())


@dataclass
class Reference:
    basis: FaceBasis
    size: int
    geometry_step: float
    shape_levels: np.ndarray    # (478, 3) int
    pose_levels: np.ndarray     # (6,) int, in parameter steps
    ring_weights: np.ndarray    # (NUM_RING_POINTS,) int 0..3
    param_steps: np.ndarray     # (num_params,) quantisation steps

    @property
    def shape(self) -> np.ndarray:
        return self.basis.mean + self.shape_levels * self.geometry_step

    def reference_levels(self) -> np.ndarray:
        """The key frame's own parameter levels: its pose, its eyes, a neutral expression."""
        eyes = quantise(eye_measures(self.shape), self.param_steps[6:10])
        return np.concatenate([self.pose_levels, eyes, np.zeros(self.basis.num_expression, np.int64)])

    def reference_params(self) -> np.ndarray:
        return dequantise(self.reference_levels(), self.param_steps)

    def face_model(self) -> FaceModel:
        return FaceModel(self.basis, self.shape, self.size, reference_eyes=self.reference_params()[6:10])

    # -- creation at the sender ---------------------------------------------------------

    @classmethod
    def from_landmarks(cls, basis: FaceBasis, landmarks: np.ndarray, size: int, geometry_step: float,
                       param_steps: np.ndarray, person: "np.ndarray | None" = None) -> "Reference":
        """Quantise a key frame's landmarks; `person` is its segmentation map (H, W) or None."""
        geometry_step = float(np.float32(geometry_step))  # as the session header carries it
        canon, _ = canonicalise(landmarks, basis, size)
        shape_levels = np.rint((canon - basis.mean) / geometry_step).astype(np.int64)
        ref = cls(basis, size, geometry_step, shape_levels, np.zeros(6, np.int64),
                  np.zeros(NUM_RING_POINTS, np.int64), param_steps)
        pose = FaceModel(basis, ref.shape, size).analyse(landmarks)[:NUM_FIXED - 4]
        ref.pose_levels = quantise(pose, param_steps[:6])
        rings, lower = ring_layout(ref.face_model().landmarks(ref.reference_params()), size)
        prob = None
        if person is not None:
            from models.segmentation import sample
            prob = sample(person, rings)
        ref.ring_weights = default_ring_weights(lower, prob)
        return ref

    # -- coding -------------------------------------------------------------------------

    def pack(self) -> bytes:
        enc = ArithmeticEncoder()
        encode_geometry(enc, self.shape_levels, _predictors(self.basis))
        ctxs = ContextSet()
        for i, v in enumerate(self.pose_levels.tolist()):
            write_int(enc, ctxs, ("pose", i), v, EG_ORDER_INTRA)
        for v in self.ring_weights.tolist():
            for bit in range(2):
                enc.encode((v >> bit) & 1, ctxs["ring", bit])
        return enc.finish()

    @classmethod
    def unpack(cls, data: bytes, basis: FaceBasis, size: int, geometry_step: float,
               param_steps: np.ndarray) -> "Reference":
        dec = ArithmeticDecoder(data)
        shape_levels = decode_geometry(dec, _predictors(basis))
        ctxs = ContextSet()
        pose = np.array([read_int(dec, ctxs, ("pose", i), EG_ORDER_INTRA) for i in range(6)], np.int64)
        rings = np.array([sum(dec.decode(ctxs["ring", bit]) << bit for bit in range(2))
                          for _ in range(NUM_RING_POINTS)], np.int64)
        if np.abs(shape_levels).max() > MAX_SHAPE_LEVEL or np.abs(pose).max() > MAX_SHAPE_LEVEL:
            raise ParamDecodeError("reference geometry is corrupt")
        return cls(basis, size, geometry_step, shape_levels, pose, np.minimum(rings, WEIGHT_LEVELS), param_steps)
