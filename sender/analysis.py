"""The sender's picture analysis: face crop, key frames and parameter levels, off the event loop.

`Analyser` owns the crop tracker (MediaPipe) and the codec's `FaceEncoder`.  Its methods
block (MediaPipe takes ~5-15 ms a frame, a VVC key frame ~0.3-1.5 s), so the sender calls
them on one worker thread; key frames after the first are coded on a second thread while
tracking goes on:

- `first_keyframe(picture)`: find the face in the whole picture, fix the crop, code the
  first key frame (blocking; None while there is no face);
- `process(picture)`: this frame's levels.  When the face is lost or leaves the crop, the
  last levels are held (the receiver keeps showing the last face) and, every
  `face_search_interval_s`, the whole picture is searched; a face found away from the
  crop gets a new crop and a new key frame, coded in the background.  Until it is ready
  the old key frame and held levels stay in use; the frame on which it takes over carries
  it (`Analysis.keyframe`), and its levels already belong to it;
- `code_sharp(small)`: start coding the sharp twin of a key frame (the same crop at the
  call's QP, the same reference geometry: docs/call.md) on the key frame thread.  A new
  crop cancels a sharp key frame that has not started yet (one that has is finished first).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from codec.encoder import CodedKeyframe, FaceEncoder
from codec_core.config import CodecConfig
from live.config import DEFAULT, LiveConfig
from models.crop import CropBox
from models.face_model import FaceBasis
from models.tracking import CropTracker, NoFaceError

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    levels: np.ndarray               # quantised parameters of this frame
    face: bool                       # the face was tracked in this frame (else: levels held)
    keyframe: CodedKeyframe | None   # a new key frame that takes over with this frame
    key_id: int                      # the key frame these levels animate


def _lower_priority() -> None:
    """Key frames after the first are coded while the call goes on: run that thread, and
    the VVenC process it starts (children inherit the niceness of the thread that forks
    them on Linux), below the tracking and synthesis threads."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def boxes_differ(a: CropBox, b: CropBox, shift: float, scale: float) -> bool:
    """Whether crop `b` is far enough from `a` to need a new key frame."""
    ca = np.array([a.x0 + a.size / 2, a.y0 + a.size / 2])
    cb = np.array([b.x0 + b.size / 2, b.y0 + b.size / 2])
    return bool(np.linalg.norm(ca - cb) > shift * a.size or abs(b.size - a.size) > scale * a.size)


class Analyser:
    def __init__(self, config: CodecConfig, basis: FaceBasis, live: LiveConfig = DEFAULT) -> None:
        self.config = config
        self.basis = basis
        self.live = live
        self.tracker = CropTracker(config.size)
        self.encoder: FaceEncoder | None = None
        self.lost_frames = 0
        self.keyframes = 0
        self._pending: Future | None = None      # a new key frame being coded
        self._sharp: Future | None = None        # the sharp twin of a key frame being coded
        self._keyframe_pool = ThreadPoolExecutor(1, thread_name_prefix="keyframe", initializer=_lower_priority)
        self._last_search = float("-inf")

    @property
    def keyframe(self) -> CodedKeyframe | None:
        return self.encoder.keyframe if self.encoder else None

    def first_keyframe(self, picture: np.ndarray) -> CodedKeyframe | None:
        try:
            self.tracker.start(picture)
        except NoFaceError:
            return None
        tracked = self.tracker.track(picture)
        if tracked.landmarks is None:
            self.tracker.box = None
            return None
        encoder = FaceEncoder(self.config, self.basis)
        encoder.new_keyframe(tracked.crop, tracked.landmarks)
        self.encoder = encoder
        self.keyframes += 1
        log.info("key frame %d: %d bytes (QP %d), crop %s", encoder.keyframe.record.key_id,
                 len(encoder.keyframe.record.picture), encoder.keyframe.qp, self.tracker.box)
        return encoder.keyframe

    def process(self, picture: np.ndarray) -> Analysis:
        if self.encoder is None:
            raise RuntimeError("no key frame yet")
        fresh = self._adopt_pending()
        tracked = self.tracker.track(picture)
        if tracked.landmarks is not None and self._pending is None:
            self.lost_frames = 0
            levels = self.encoder.levels(tracked.landmarks)
        else:
            levels = self.encoder.levels(None)
            if tracked.landmarks is None:
                self.lost_frames += 1
                self._search(picture)
        return Analysis(levels, tracked.landmarks is not None, fresh, self.encoder.keyframe.record.key_id)

    def code_sharp(self, small: CodedKeyframe) -> Future | None:
        """Start coding the sharp twin of key frame `small` on the key frame thread: a future
        of the sharp `CodedKeyframe` (or of None when none fits), or None when the
        configuration has no sharp key frames."""
        if self.encoder is None or self.config.call_keyframe_qp is None:
            return None
        self._cancel_sharp()
        self._sharp = self._keyframe_pool.submit(self.encoder.code_sharp, small)
        return self._sharp

    def _cancel_sharp(self) -> None:
        if self._sharp is not None:
            self._sharp.cancel()
            self._sharp = None

    def _adopt_pending(self) -> CodedKeyframe | None:
        if self._pending is None or not self._pending.done():
            return None
        future, self._pending = self._pending, None
        try:
            coded = future.result()
        except Exception as exc:
            log.warning("could not code a new key frame (%s); keeping the old one", exc)
            return None
        self.encoder.use_keyframe(coded)
        self.keyframes += 1
        log.info("key frame %d: %d bytes (QP %d), crop %s", coded.record.key_id,
                 len(coded.record.picture), coded.qp, self.tracker.box)
        return coded

    def _search(self, picture: np.ndarray) -> None:
        """The face is lost in the crop: look for it in the whole picture now and then."""
        now = time.monotonic()
        if self._pending is not None or now - self._last_search < self.live.face_search_interval_s:
            return
        self._last_search = now
        old = self.tracker.box
        try:
            new = self.tracker.start(picture)
        except NoFaceError:
            self.tracker.box = old
            return
        if old is not None and not boxes_differ(old, new, self.live.recrop_shift, self.live.recrop_scale):
            self.tracker.box = old      # still where it was: the tracker will pick it up again
            return
        tracked = self.tracker.track(picture)
        if tracked.landmarks is None:
            self.tracker.box = old
            return
        log.info("the face moved out of the crop: new crop %s, coding a new key frame", new)
        self._cancel_sharp()        # the old crop's sharp key frame is of no use any more
        self._pending = self._keyframe_pool.submit(self.encoder.code_keyframe, tracked.crop, tracked.landmarks)

    def close(self) -> None:
        self._keyframe_pool.shutdown(wait=False, cancel_futures=True)
        self.tracker.close()
