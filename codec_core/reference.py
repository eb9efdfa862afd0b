"""The key frame's reference geometry: its syntax (the `geometry` part of a KEYFRAME record).

Three parts, one arithmetic codeword (docs/bitstream.md):

    shape   NUM_LANDMARKS x 3 integers: (C_ref - mean) / geometry step, each point predicted
            from the nearest point of the basis mean shape coded before it
            (format.geometry_predictors)
    pose    NUM_REFERENCE_POSE integers: the key frame's yaw, pitch, roll, tx, ty, log_scale levels
    rings   NUM_RING_POINTS weights of RING_WEIGHT_BITS bits each, one per head-ring point

What the levels mean (the face model, the synthesizer's rings) lives in `models.reference`;
this module only writes and reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec_core.arith import ArithmeticDecoder, ArithmeticEncoder, ContextSet
from codec_core.format import (
    EG_ORDER_INTRA,
    MAX_SHAPE_LEVEL,
    NUM_LANDMARKS,
    NUM_REFERENCE_POSE,
    NUM_RING_POINTS,
    RING_WEIGHT_BITS,
    RING_WEIGHT_MAX,
    geometry_predictors,
)
from codec_core.param_coding import ParamDecodeError, decode_geometry, encode_geometry, read_int, write_int


@dataclass(frozen=True)
class ReferenceGeometry:
    shape_levels: np.ndarray    # (NUM_LANDMARKS, 3) int
    pose_levels: np.ndarray     # (NUM_REFERENCE_POSE,) int, in parameter steps
    ring_weights: np.ndarray    # (NUM_RING_POINTS,) int 0..RING_WEIGHT_MAX

    def __post_init__(self) -> None:
        if (self.shape_levels.shape != (NUM_LANDMARKS, 3) or self.pose_levels.shape != (NUM_REFERENCE_POSE,)
                or self.ring_weights.shape != (NUM_RING_POINTS,)):
            raise ValueError("reference geometry has the wrong number of points")

    def pack(self, mean_shape: np.ndarray) -> bytes:
        """The codeword; `mean_shape` is the face basis's mean (it sets the prediction order)."""
        enc = ArithmeticEncoder()
        encode_geometry(enc, self.shape_levels, geometry_predictors(mean_shape))
        ctxs = ContextSet()
        for i, v in enumerate(self.pose_levels.tolist()):
            write_int(enc, ctxs, ("pose", i), v, EG_ORDER_INTRA)
        for v in self.ring_weights.tolist():
            for bit in range(RING_WEIGHT_BITS):
                enc.encode((v >> bit) & 1, ctxs["ring", bit])
        return enc.finish()

    @classmethod
    def unpack(cls, data: bytes, mean_shape: np.ndarray) -> ReferenceGeometry:
        predictors = geometry_predictors(mean_shape)
        if len(predictors) != NUM_LANDMARKS:
            raise ValueError(f"the basis mean shape has {len(predictors)} points, the format {NUM_LANDMARKS}")
        dec = ArithmeticDecoder(data)
        shape_levels = decode_geometry(dec, predictors)
        ctxs = ContextSet()
        pose = np.array([read_int(dec, ctxs, ("pose", i), EG_ORDER_INTRA) for i in range(NUM_REFERENCE_POSE)],
                        np.int64)
        rings = np.array([sum(dec.decode(ctxs["ring", bit]) << bit for bit in range(RING_WEIGHT_BITS))
                          for _ in range(NUM_RING_POINTS)], np.int64)
        if np.abs(shape_levels).max() > MAX_SHAPE_LEVEL or np.abs(pose).max() > MAX_SHAPE_LEVEL:
            raise ParamDecodeError("reference geometry is corrupt")
        return cls(shape_levels, pose, np.minimum(rings, RING_WEIGHT_MAX))
