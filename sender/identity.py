"""Is this the same person?  A cheap appearance signature of a face, to keep following it.

The sender follows one person.  When its face is found again after a loss, jumps within
the crop, or has to be picked among several faces in the picture, the candidate is
compared with the person the key frame shows.  There is no face recognition network
here (MediaPipe's face mesh fits every face to nearly the same shape, so the landmarks
say little about who it is); the signature is what the face looks like:

- the colour of the face (a 16x16 histogram of Lab a and b inside the landmark hull), and
- its texture (local binary patterns of the face aligned on eyes and mouth, 64x64 grey,
  a 4x4 grid of 256-bin histograms).

`distance(a, b)` is the Bhattacharyya distance of the colours / 0.2 plus the chi-square
distance of the textures / 0.6.  On the test clips (../shared/data/clips, 15 people,
frames 15 apart) frames of one person are under 2.0 in 98% of pairs (under 2.35 in all),
frames of two people under 2.0 in 0.4% of pairs: `SAME_PERSON` = 2.0.  A `Likeness`
keeps the key frame's signature and a recent one (lighting drifts in a long call) and
takes the nearer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SAME_PERSON = 2.0          # distance at or under which two signatures are one person
_SIDE = 64                 # aligned face patch side (pixels)
_GRID = 4                  # texture histograms per row and column of the patch
# where the eye centres and the mouth land in the aligned patch
_TARGET = np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.78]], np.float32) * _SIDE
_LEFT_EYE, _RIGHT_EYE, _MOUTH = (33, 133), (362, 263), (13, 14)
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


@dataclass(frozen=True)
class Signature:
    colour: np.ndarray     # (16, 16) float32, sums to 1
    texture: np.ndarray    # (_GRID * _GRID * 256,) float64, each cell sums to 1


def _aligned_grey(picture: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    points = np.array([landmarks[list(_LEFT_EYE), :2].mean(0), landmarks[list(_RIGHT_EYE), :2].mean(0),
                       landmarks[list(_MOUTH), :2].mean(0)], np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(points, _TARGET)
    if matrix is None:
        matrix = cv2.getAffineTransform(points, _TARGET)
    patch = cv2.warpAffine(picture, matrix, (_SIDE, _SIDE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)


def _texture(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(np.int32)
    centre = g[1:-1, 1:-1]
    code = np.zeros_like(centre)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (g[1 + dy:g.shape[0] - 1 + dy, 1 + dx:g.shape[1] - 1 + dx] >= centre).astype(np.int32) << bit
    cell = code.shape[0] // _GRID
    hists = []
    for y in range(_GRID):
        for x in range(_GRID):
            h = np.bincount(code[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell].ravel(), minlength=256)
            hists.append(h / max(1, h.sum()))
    return np.concatenate(hists)


def _colour(picture: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    mask = np.zeros(picture.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks[:, :2]).astype(np.int32)), (255,))
    lab = cv2.cvtColor(picture, cv2.COLOR_RGB2LAB)
    hist = cv2.calcHist([lab], [1, 2], mask, [16, 16], [0, 256, 0, 256])
    total = float(hist.sum())
    return (hist / total if total > 0 else hist).astype(np.float32)


def signature(picture: np.ndarray, landmarks: np.ndarray) -> Signature:
    """The signature of the face with `landmarks` (478, 3+, pixels of `picture`, RGB uint8)."""
    return Signature(_colour(picture, landmarks), _texture(_aligned_grey(picture, landmarks)))


def distance(a: Signature, b: Signature) -> float:
    """How unlike two faces look: 0 for one picture, SAME_PERSON or less for one person."""
    colour = cv2.compareHist(a.colour, b.colour, cv2.HISTCMP_BHATTACHARYYA)
    texture = float(np.sum((a.texture - b.texture) ** 2 / (a.texture + b.texture + 1e-9))) / (_GRID * _GRID)
    return float(colour / 0.2 + texture / 0.6)


class Likeness:
    """The person being followed: the key frame's signature and a recent one."""

    def __init__(self, key: Signature) -> None:
        self.key = key
        self.recent = key

    def distance(self, candidate: Signature) -> float:
        return min(distance(self.key, candidate), distance(self.recent, candidate))

    def same(self, candidate: Signature) -> bool:
        return self.distance(candidate) <= SAME_PERSON

    def refresh(self, recent: Signature) -> None:
        """A signature taken while the face was followed without doubt."""
        self.recent = recent
