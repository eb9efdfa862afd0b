"""Face landmarks from MediaPipe's face mesh (478 points with irises), in pixel units.

`FaceTracker.detect(frame)` returns a (478, 3) float array: x and y in pixels of the
given frame, z in the same pixel scale (MediaPipe's z is relative to the frame width;
smaller is nearer the camera), or None when no face is found.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging quiet
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

NUM_LANDMARKS = 478


class FaceTracker:
    """One face, tracked across frames (video mode) or found afresh (still mode)."""

    def __init__(self, still: bool = False, min_confidence: float = 0.5) -> None:
        import mediapipe as mp  # imported lazily: slow, and the receiver never needs it

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=still,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks (478, 3) in pixels of `frame` (uint8 RGB, H x W x 3), or None."""
        h, w = frame.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64)
        pts[:, 0] *= w
        pts[:, 1] *= h
        pts[:, 2] *= w
        return pts

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_still(frame: np.ndarray) -> np.ndarray | None:
    """Landmarks of the one face in a single picture, or None."""
    with FaceTracker(still=True) as tracker:
        return tracker.detect(frame)
