"""The eye reference coded: the encoder's picker of each eye's most shut moment (and of the
mouth's widest open one), and the decoder's reading of the record into the synthesizer's buffers.

The record's syntax is codec_core.bitstream.EyeReference; what the synthesizer does with it
is models/eye_reference.py and models/mouth_reference.py.  The coding lives here, above the models, because it needs the
VVC codec (PyAV): the synthesizer's graph imports without it (the lent GPU machine has none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from codec_core.bitstream import EyeReference, StreamError
from codec_core.format import KEYFRAME_CODEC_VVC, eye_reference_size
from codec_core.keyframe import KeyframeError, VVenCRuns, decode_keyframe, encode_keyframe
from models.eye_reference import START, EyePatches, cut_eye, picture_tensor
from models.mouth_reference import cut_mouth, inner_gap

log = logging.getLogger(__name__)

GREY = 128      # the picture's square of an eye (or the mouth) without a patch
MOUTH_OPEN = 0.02   # of the picture's side: inner lips at least this far apart make a mouth reference
SETTLE = 5      # a live sender takes the patches this many frames after the most shut moment
RETAKE = 0.1    # and again when an eye is this much (of the key frame's openness) more shut


@dataclass(frozen=True)
class EyeShot:
    """What a picker kept, taken at one moment: the record's picture before coding, which
    eyes it has and their openness (a live sender codes it on another thread)."""
    picture: np.ndarray             # (n, 3n, 3) uint8: right eye's patch, then the left's, then the mouth's
    present: int
    openness: tuple[float, float]

    def record(self, key_id: int, qp: int, vvenc: VVenCRuns | None = None) -> EyeReference:
        """The EYE_REFERENCE of key frame `key_id`: the picture coded by VVenC at `qp`."""
        data = encode_keyframe(self.picture, qp, runs=vvenc)
        log.info("eye reference of key frame %d: %d bytes at QP %d (openness %s)", key_id, len(data), qp,
                 np.round(self.openness, 3))
        return EyeReference(key_id, KEYFRAME_CODEC_VVC, self.present, self.openness, data)


class EyePicker:
    """The encoder's side: while frames go by, each eye's most shut moment below `START` of
    the key frame's openness, its patch cut from the frame's crop, and the moment the inner
    lips were furthest apart (at least `MOUTH_OPEN` of the side), its strips cut.  A file's encoder codes
    what it kept at the end (`record`); a live sender, which cannot wait for the end, takes
    it once the moment is past (`due`, `take`) and again when a later one is more shut."""

    def __init__(self, key_openness: np.ndarray, side: int, qp: int) -> None:
        self.key_openness = np.asarray(key_openness, np.float64)
        self.side = side
        self.qp = qp
        self.openness = np.full(2, np.nan)
        self.patches: list[np.ndarray | None] = [None, None, None]     # right eye, left eye, mouth
        self.mouth_gap = MOUTH_OPEN * side
        self.taken = np.full(2, np.inf)     # the openness of each eye's patch when last taken
        self.since = 0                      # frames seen since the last new most-shut moment

    def see(self, crop: np.ndarray, openness: np.ndarray, landmarks: np.ndarray) -> None:
        """One frame: its crop, its decoded openness (right, left: what the receiver will
        see) and its tracked landmarks in crop pixels (where its eyes really are)."""
        self.since += 1
        gap = inner_gap(landmarks)
        if gap > self.mouth_gap:
            self.mouth_gap = gap
            self.patches[2] = cut_mouth(crop, landmarks, eye_reference_size(self.side)[1])
        for eye in range(2):
            key, value = self.key_openness[eye], float(openness[eye])
            if key <= 0 or value >= START * key or value >= np.nan_to_num(self.openness[eye], nan=np.inf):
                continue
            self.openness[eye] = value
            self.patches[eye] = cut_eye(crop, landmarks, eye)
            self.since = 0

    def due(self) -> bool:
        """Whether a live sender should take the patches now: an eye is more shut than when
        they were last taken, by `RETAKE` of the key frame's openness, and that moment is
        `SETTLE` frames past (the blink is over, or the eye stays shut that much)."""
        kept = np.nan_to_num(self.openness, nan=np.inf)
        better = np.isfinite(kept) & (kept <= self.taken - RETAKE * self.key_openness)
        return bool(better.any()) and self.since >= SETTLE

    def take(self) -> EyeShot | None:
        """What was kept so far, or None when no eye shut and the mouth never opened."""
        if all(p is None for p in self.patches):
            return None
        width, n = eye_reference_size(self.side)
        picture = np.full((n, width, 3), GREY, np.uint8)
        for eye, patch in enumerate(self.patches):
            if patch is not None:
                picture[:, eye * n:(eye + 1) * n] = patch
        present = sum(1 << eye for eye, p in enumerate(self.patches) if p is not None)
        openness = tuple(float(np.float32(0.0 if np.isnan(v) else v)) for v in self.openness)
        self.taken = np.nan_to_num(self.openness, nan=np.inf)
        return EyeShot(picture, present, (openness[0], openness[1]))

    def record(self, key_id: int) -> EyeReference | None:
        """The EYE_REFERENCE of what was seen (VVenC at the picker's `qp`), or None when no eye
        shut and the mouth never opened."""
        shot = self.take()
        return None if shot is None else shot.record(key_id, self.qp)


def decode_eye_reference(record: EyeReference, side: int) -> EyePatches:
    """The record's picture decoded and checked against the stream's picture side."""
    width, n = eye_reference_size(side)
    try:
        picture = decode_keyframe(record.picture)
    except KeyframeError as exc:
        raise StreamError(f"the eye reference's picture: {exc}") from None
    if picture.shape[:2] != (n, width):
        raise StreamError(f"the eye reference is {picture.shape[1]}x{picture.shape[0]}, a {side} stream's is "
                          f"{width}x{n}")
    present = torch.tensor([[float(record.has(0)), float(record.has(1)), float(record.has(2))]])
    return EyePatches(picture_tensor(picture), torch.tensor([record.openness], dtype=torch.float32), present)
