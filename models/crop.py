"""The square face crop: chosen once around the key frame's face and then held steady.

Like the VoxCeleb 256x256 crops, the square leaves room for hair above and chin below:
its side is `scale` times the landmark box, its centre a little above the face centre.
The square stays inside the picture (`apply_crop` still repeats edge pixels for boxes
that reach outside it, as a caller's own box may).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_SCALE = 1.9
DEFAULT_SHIFT_UP = 0.10


@dataclass(frozen=True)
class CropBox:
    """A square in source-frame pixels: top-left corner (x0, y0) and side length."""

    x0: int
    y0: int
    size: int

    def to_crop(self, pts: np.ndarray, out_size: int) -> np.ndarray:
        """Map source-frame points (N, 2+) into crop pixel coordinates."""
        k = out_size / self.size
        out = np.array(pts, dtype=np.float64, copy=True)
        out[:, 0] = (out[:, 0] - self.x0) * k
        out[:, 1] = (out[:, 1] - self.y0) * k
        if out.shape[1] > 2:
            out[:, 2:] *= k
        return out


def crop_around_face(landmarks: np.ndarray, frame_width: int, frame_height: int,
                     scale: float = DEFAULT_SCALE, shift_up: float = DEFAULT_SHIFT_UP) -> CropBox:
    """The square around a face given its landmarks in source-frame pixels, kept inside
    the picture: it shrinks to the picture's short side and slides inwards if needed
    (repeating edge pixels instead would smear the hair and shoulders)."""
    x0, y0 = landmarks[:, :2].min(axis=0)
    x1, y1 = landmarks[:, :2].max(axis=0)
    side = int(round(max(x1 - x0, y1 - y0) * scale))
    side = max(2, min(side, frame_width, frame_height))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - shift_up * (y1 - y0)
    left = int(np.clip(round(cx - side / 2), 0, frame_width - side))
    top = int(np.clip(round(cy - side / 2), 0, frame_height - side))
    return CropBox(x0=left, y0=top, size=side)


def apply_crop(frame: np.ndarray, box: CropBox, out_size: int) -> np.ndarray:
    """Cut the square out of `frame` (edge pixels repeated outside) and scale it."""
    h, w = frame.shape[:2]
    x0, y0, side = box.x0, box.y0, box.size
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + side - w), max(0, y0 + side - h)
    if pad_l or pad_t or pad_r or pad_b:
        frame = cv2.copyMakeBorder(frame, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad_l, y0 + pad_t
    square = frame[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > out_size else cv2.INTER_CUBIC
    return cv2.resize(square, (out_size, out_size), interpolation=interp)


def face_inside(landmarks: np.ndarray, out_size: int, min_fraction: float = 0.9) -> bool:
    """Whether the face is (mostly) inside the crop: at least `min_fraction` of its
    crop-space landmarks lie within the square.  A chin or forehead touching the edge
    is still a face; a face half out of the picture is not."""
    xy = landmarks[:, :2]
    inside = ((xy >= 0) & (xy <= out_size)).all(axis=1)
    return bool(inside.mean() >= min_fraction)
