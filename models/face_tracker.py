"""Face landmarks from MediaPipe's face mesh (478 points with irises), in pixel units.

`FaceTracker.detect(frame)` returns a (478, 3) float array: x and y in pixels of the
given frame, z in the same pixel scale (MediaPipe's z is relative to the frame width;
smaller is nearer the camera), or None when no face is found.  With `max_faces` above 1,
`FaceTracker.detect_all(frame)` returns every face found (MediaPipe's order: the most
confident, usually the largest, first); `detect_faces(frame)` does that for one picture.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging quiet
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

NUM_LANDMARKS = 478
MAX_FACES = 4          # faces looked for when the sender searches a whole picture


class FaceTracker:
    """Faces tracked across frames (video mode) or found afresh (still mode); one by default."""

    def __init__(self, still: bool = False, min_confidence: float = 0.5, max_faces: int = 1) -> None:
        import mediapipe as mp  # imported lazily: slow, and the receiver never needs it

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=still,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def detect_all(self, frame: np.ndarray) -> list[np.ndarray]:
        """Landmarks (478, 3) in pixels of `frame` (uint8 RGB, H x W x 3) of each face found."""
        h, w = frame.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(frame))
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            pts[:, 0] *= w
            pts[:, 1] *= h
            pts[:, 2] *= w
            faces.append(pts)
        return faces

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks (478, 3) in pixels of `frame` (uint8 RGB, H x W x 3), or None."""
        faces = self.detect_all(frame)
        return faces[0] if faces else None

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


def detect_faces(frame: np.ndarray, max_faces: int = MAX_FACES) -> list[np.ndarray]:
    """Landmarks of every face (up to `max_faces`) in a single picture."""
    with FaceTracker(still=True, max_faces=max_faces) as tracker:
        return tracker.detect_all(frame)
