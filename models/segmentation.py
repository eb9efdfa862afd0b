"""Person segmentation of the key frame (MediaPipe selfie segmentation), sender side only.

It tells the synthesizer which points around the face are hair and head (they move with
the pose) and which are background (they stay); the receiver gets the answer as a few
bits in the key frame record and never runs this model.
"""

from __future__ import annotations

import numpy as np

import models.face_tracker  # noqa: F401  (quiets MediaPipe's logging before it loads)


def person_probability(rgb: np.ndarray) -> np.ndarray:
    """Probability (H, W) in [0, 1] that each pixel shows the person."""
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        mask = seg.process(np.ascontiguousarray(rgb)).segmentation_mask
    return np.clip(np.asarray(mask, dtype=np.float64), 0.0, 1.0)


def sample(prob: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Values of a probability map at (N, 2+) pixel positions (nearest pixel, clamped)."""
    h, w = prob.shape
    x = np.clip(np.rint(points[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.rint(points[:, 1]).astype(int), 0, h - 1)
    return prob[y, x]
