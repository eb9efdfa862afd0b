"""Face tracking in a steady crop: find the face once, then follow it inside the square.

`CropTracker.start(frame)` finds the face in the whole picture and fixes the crop;
`CropTracker.track(frame)` cuts that crop from each new frame and returns the crop and
its landmarks in crop pixels (None when the face is lost or has left the crop).
`WholeFrameTracker` does the same for pre-cropped input (`encode --no-crop`): the crop
is the whole picture, which must already be square at the coded size.
`track_video` does both over a video file, as the offline encoder does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec_core.video import read_frames
from models.crop import CropBox, apply_crop, crop_around_face, face_inside
from models.face_tracker import FaceTracker, detect_still


class NoFaceError(Exception):
    """No face could be found where one was needed."""


@dataclass
class TrackedFrame:
    crop: np.ndarray                 # (size, size, 3) uint8 RGB
    landmarks: np.ndarray | None     # (478, 3) crop pixels, or None when lost


class CropTracker:
    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.box: CropBox | None = None
        self._tracker = FaceTracker(still=False)

    def start(self, frame: np.ndarray) -> CropBox:
        """Find the face in the whole frame and fix the crop around it."""
        landmarks = detect_still(frame)
        if landmarks is None:
            raise NoFaceError("no face found in the picture")
        self.box = crop_around_face(landmarks, frame.shape[1], frame.shape[0])
        return self.box

    def track(self, frame: np.ndarray) -> TrackedFrame:
        if self.box is None:
            self.start(frame)
        crop = apply_crop(frame, self.box, self.size)
        landmarks = self._tracker.detect(crop)
        if landmarks is not None and not face_inside(landmarks, self.size):
            landmarks = None
        return TrackedFrame(crop, landmarks)

    def close(self) -> None:
        self._tracker.close()


class WholeFrameTracker(CropTracker):
    """Pre-cropped input: every picture is the crop as it is (no face search, no scaling)."""

    def start(self, frame: np.ndarray) -> CropBox:
        """The whole picture as the crop; ValueError unless it is `size` x `size`."""
        h, w = frame.shape[:2]
        if (h, w) != (self.size, self.size):
            raise ValueError(f"--no-crop needs pictures of {self.size}x{self.size} (the coded size), "
                             f"not {w}x{h}")
        self.box = CropBox(0, 0, self.size)
        return self.box

    def track(self, frame: np.ndarray) -> TrackedFrame:
        if self.box is None or frame.shape[:2] != (self.size, self.size):
            self.start(frame)
        landmarks = self._tracker.detect(frame)
        if landmarks is not None and not face_inside(landmarks, self.size):
            landmarks = None
        return TrackedFrame(np.ascontiguousarray(frame), landmarks)


def track_video(path: str | Path, max_frames: int | None = None, size: int = 256) -> list[TrackedFrame]:
    """The first `max_frames` frames of a video file (all when None) cropped and tracked as the
    encoder does: the crop fixed around the face of the first frame."""
    tracker = CropTracker(size)
    tracked = []
    try:
        for i, frame in enumerate(read_frames(path, max_frames)):
            if i == 0:
                tracker.start(frame)
            tracked.append(tracker.track(frame))
    finally:
        tracker.close()
    return tracked
