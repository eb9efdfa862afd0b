"""The key frame's reference: its coded geometry (codec_core.reference) read with the face basis.

From it both ends derive the same things: the key frame's canonical shape, its own
parameters, the face model that turns parameters into landmarks, and the head-ring
weights of the synthesizer.  The sender makes one from the key frame's landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec_core.format import EYES, NUM_REFERENCE_POSE, NUM_RING_POINTS, POSE
from codec_core.param_coding import dequantise, quantise
from codec_core.reference import ReferenceGeometry
from models.face_model import FaceBasis, FaceModel, canonicalise, eye_measures
from models.synthesizer import default_ring_weights, ring_layout


@dataclass
class Reference:
    basis: FaceBasis
    size: int
    geometry_step: float
    geometry: ReferenceGeometry
    param_steps: np.ndarray     # (num_params,) quantisation steps

    @property
    def shape(self) -> np.ndarray:
        return self.basis.mean + self.geometry.shape_levels * self.geometry_step

    @property
    def ring_weights(self) -> np.ndarray:
        return self.geometry.ring_weights

    def reference_levels(self) -> np.ndarray:
        """The key frame's own parameter levels: its pose, its eyes, a neutral expression."""
        eyes = quantise(eye_measures(self.shape), self.param_steps[EYES])
        return np.concatenate([self.geometry.pose_levels, eyes, np.zeros(self.basis.num_expression, np.int64)])

    def reference_params(self) -> np.ndarray:
        return dequantise(self.reference_levels(), self.param_steps)

    def face_model(self) -> FaceModel:
        return FaceModel(self.basis, self.shape, self.size, reference_eyes=self.reference_params()[EYES])

    # -- creation at the sender ---------------------------------------------------------

    @classmethod
    def from_landmarks(cls, basis: FaceBasis, landmarks: np.ndarray, size: int, geometry_step: float,
                       param_steps: np.ndarray, person: np.ndarray | None = None) -> Reference:
        """Quantise a key frame's landmarks; `person` is its segmentation map (H, W) or None."""
        geometry_step = float(np.float32(geometry_step))  # as the session header carries it
        canon, _ = canonicalise(landmarks, basis, size)
        shape_levels = np.rint((canon - basis.mean) / geometry_step).astype(np.int64)
        no_pose, no_rings = np.zeros(NUM_REFERENCE_POSE, np.int64), np.zeros(NUM_RING_POINTS, np.int64)
        ref = cls(basis, size, geometry_step, ReferenceGeometry(shape_levels, no_pose, no_rings), param_steps)
        pose_levels = quantise(FaceModel(basis, ref.shape, size).analyse(landmarks)[POSE], param_steps[POSE])
        ref.geometry = ReferenceGeometry(shape_levels, pose_levels, no_rings)
        rings, lower = ring_layout(ref.face_model().landmarks(ref.reference_params()), size)
        prob = None
        if person is not None:
            from models.segmentation import sample
            prob = sample(person, rings)
        ref.geometry = ReferenceGeometry(shape_levels, pose_levels, default_ring_weights(lower, prob))
        return ref

    # -- coding -------------------------------------------------------------------------

    def pack(self) -> bytes:
        return self.geometry.pack(self.basis.mean)

    @classmethod
    def unpack(cls, data: bytes, basis: FaceBasis, size: int, geometry_step: float,
               param_steps: np.ndarray) -> Reference:
        return cls(basis, size, geometry_step, ReferenceGeometry.unpack(data, basis.mean), param_steps)
