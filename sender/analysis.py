"""The sender's picture analysis: face crop, key frames and parameter levels, off the event loop.

`Analyser` owns the crop tracker (MediaPipe) and the codec's `FaceEncoder` (levels in the
feature format it was made for: ifvc, fomm, fv2v or cfte, docs/formats.md).  Its methods
block (MediaPipe takes ~5-15 ms a frame, a VVC key frame ~0.3-1.5 s), so the sender calls
them on one worker thread; key frames after the first are coded on a second thread while
tracking goes on:

- `first_keyframe(picture)`: find the face in the whole picture (the most prominent one
  when there are several), fix the crop, code the first key frame (blocking; None while
  there is no face);
- `process(picture)`: this frame's levels (its format's values, then its global motion
  measured on the crop: codec.encoder.FaceEncoder.levels).  When the face is lost or leaves the crop, the
  last levels are held (the receiver keeps showing the last face) and, every
  `face_search_interval_s`, the whole picture is searched; a face found away from the
  crop gets a new crop and a new key frame, coded in the background.  Until it is ready
  the old key frame and held levels stay in use; the frame on which it takes over carries
  it (`Analysis.keyframe`), and its levels already belong to it;
- the caller's shut eyes (ifvc, `eye_reference_qp` set): each frame's crop and decoded
  openness go to a `codec.eye_reference.EyePicker` of the current key frame; once an eye
  has shut and the moment is past (`EyePicker.due`), its patches are coded on a thread of
  their own, and the frame after that carries the EYE_REFERENCE (`Analysis.eyes`);
- `code_sharp(small)`: start coding the sharp twin of a key frame (the same crop at the
  call's QP, the same reference geometry: docs/call.md) on the key frame thread.  A new
  crop cancels a sharp key frame that has not started yet (one that has is finished first).

Face events (docs/call.md): the analyser follows one person, the one of its key frame
(`sender.identity`).  A face found in the crop after a loss, one that jumped there from
one frame to the next, and every `_CHECK_EVERY`-th frame is compared with that person; a
different face is treated as no face (levels held), never animated with the key frame
of someone else.  A search of the whole picture looks at every face (up to
`MAX_FACES`) and takes the person followed, nearest to where it was, not the largest
face.  When the person followed stays away `face_switch_s` while another face is in the
picture, the analyser follows that one (the one nearest to where the face was): a new
crop and a new key frame, even where the crop would not change.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from codec.encoder import CodedKeyframe, FaceEncoder
from codec.eye_reference import EyePicker
from codec_core.bitstream import EyeReference
from codec_core.config import CodecConfig
from codec_core.format import GLOBAL_MOTION_COUNT, IFVC, FeatureFormat, format_named
from codec_core.keyframe import VVenCRuns
from codec_core.param_coding import dequantise
from live.config import DEFAULT, LiveConfig
from live.threads import lower_priority
from models.crop import CropBox, apply_crop, crop_around_face, face_inside
from models.eye_reference import openness_of
from models.face_model import FaceBasis
from models.face_tracker import MAX_FACES, FaceTracker
from models.tracking import CropTracker, NoFaceError
from sender.identity import SAME_PERSON, Likeness, Signature, signature

log = logging.getLogger(__name__)

_CHECK_EVERY = 25       # frames followed between two looks at who it is (and a fresh signature)
_JUMP = 0.25            # the face box moved this fraction of its size in one frame: look who it is


@dataclass
class Analysis:
    levels: np.ndarray               # quantised values of this frame, its global motion last
    face: bool                       # the face was tracked in this frame (else: levels held)
    keyframe: CodedKeyframe | None   # a new key frame that takes over with this frame
    key_id: int                      # the key frame these levels animate
    eyes: EyeReference | None = None   # the caller's shut eyes for that key frame, newly coded


@dataclass
class _Candidate:
    """A face found by a search of the whole picture, cut out as a crop would be."""

    box: CropBox
    crop: np.ndarray
    landmarks: np.ndarray            # crop pixels
    signature: Signature
    distance: float                  # from the person followed


def boxes_differ(a: CropBox, b: CropBox, shift: float, scale: float) -> bool:
    """Whether crop `b` is far enough from `a` to need a new key frame."""
    ca = np.array([a.x0 + a.size / 2, a.y0 + a.size / 2])
    cb = np.array([b.x0 + b.size / 2, b.y0 + b.size / 2])
    return bool(np.linalg.norm(ca - cb) > shift * a.size or abs(b.size - a.size) > scale * a.size)


def box_distance(a: CropBox | None, b: CropBox) -> float:
    """How far crop `b` is from `a`, in sides of `a` (0 when there is no `a`)."""
    if a is None:
        return 0.0
    return float(np.hypot(b.x0 + b.size / 2 - a.x0 - a.size / 2, b.y0 + b.size / 2 - a.y0 - a.size / 2) / a.size)


def _face_box(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and size of the landmarks' bounding box."""
    lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    return (lo + hi) / 2, float(max(hi - lo))


class Analyser:
    def __init__(self, config: CodecConfig, basis: FaceBasis, live: LiveConfig = DEFAULT,
                 fmt: str = IFVC.name) -> None:
        """`fmt`: the feature format of the levels (a name of format.FEATURE_FORMATS; ValueError
        for another)."""
        self.config = config
        self.basis = basis
        self.format: FeatureFormat = format_named(fmt)
        self.live = live
        self.tracker = CropTracker(config.size)
        self.encoder: FaceEncoder | None = None
        self.vvenc = VVenCRuns()      # every VVenC of this sender: `stop_coding` kills them
        self.person: Likeness | None = None      # who the key frame shows (sender.identity)
        self.lost_frames = 0
        self.others = 0               # frames where the face in the crop was someone else's
        self.keyframes = 0
        self.switches = 0             # times the analyser went on to follow another person
        self._pending: Future | None = None      # a new key frame being coded
        self._pending_person: Likeness | None = None   # whom it shows, when someone else
        self._pending_from: np.ndarray | None = None   # the crop box before it (back to it if coding fails)
        self._sharp: Future | None = None        # the sharp twin of a key frame being coded
        self._eyes: EyePicker | None = None      # the shut eyes seen since the key frame in use
        self._eyes_key: int | None = None        # (whose key id)
        self._eyes_coding: Future | None = None  # an eye reference being coded (0.3 s)
        # on a thread of its own: a sharp key frame holds the key frame thread a second or more
        self._eyes_pool = ThreadPoolExecutor(1, thread_name_prefix="eyes", initializer=lower_priority)
        self._keyframe_pool = ThreadPoolExecutor(1, thread_name_prefix="keyframe", initializer=lower_priority)
        self._finder: FaceTracker | None = None  # every face of a whole picture (still mode)
        self._last_search = float("-inf")
        self._lost_since: float | None = None    # monotonic time the face followed was last seen
        self._last_face: tuple[np.ndarray, float] | None = None   # its box in the crop, last frame
        self._followed = 0            # frames followed since the last look at who it is
        self._holding_logged = False
        self._stranger: tuple[np.ndarray, np.ndarray] | None = None   # someone else's face in the crop

    @property
    def num_values(self) -> int:
        """Levels per frame that the parameter packets carry: the format's values, then the
        global-motion group (SessionHeader.values_per_frame)."""
        return self.format.count + GLOBAL_MOTION_COUNT

    @property
    def keyframe(self) -> CodedKeyframe | None:
        return self.encoder.keyframe if self.encoder else None

    @property
    def recropping(self) -> bool:
        """Whether a new crop's key frame is being coded (read on the event loop: a sharp key
        frame of the old crop that was being coded already is not sent)."""
        return self._pending is not None

    def first_keyframe(self, picture: np.ndarray) -> CodedKeyframe | None:
        try:
            self.tracker.start(picture)
        except NoFaceError:
            return None
        tracked = self.tracker.track(picture)
        if tracked.landmarks is None:
            self.tracker.box = None
            return None
        encoder = FaceEncoder(self.config, self.basis, self.format.name, self.vvenc)
        encoder.new_keyframe(tracked.crop, tracked.landmarks)
        self.encoder = encoder
        self.person = Likeness(signature(tracked.crop, tracked.landmarks))
        self.keyframes += 1
        log.info("key frame %d: %d bytes (QP %d), crop %s", encoder.keyframe.record.key_id,
                 len(encoder.keyframe.record.picture), encoder.keyframe.qp, self.tracker.box)
        return encoder.keyframe

    def process(self, picture: np.ndarray) -> Analysis:
        if self.encoder is None:
            raise RuntimeError("no key frame yet")
        fresh = self._adopt_pending()
        tracked = self.tracker.track(picture)
        landmarks = tracked.landmarks
        self._stranger = None
        if landmarks is not None and not self._followed_person(tracked.crop, landmarks):
            self._stranger = (tracked.crop, landmarks)
            landmarks = None          # someone else's face in the crop: as good as none
            self.others += 1
        if landmarks is not None and self._pending is None:
            self._seen(landmarks)
            levels = self.encoder.levels(landmarks, tracked.crop)
            self._watch_eyes(tracked.crop, landmarks, levels)
        else:
            levels = self.encoder.levels(None)
            if landmarks is None:
                self.lost_frames += 1
                if self._lost_since is None:
                    self._lost_since = time.monotonic()
                self._search(picture)
        key_id = self.encoder.keyframe.record.key_id
        return Analysis(levels, landmarks is not None, fresh, key_id, self._coded_eyes(key_id))

    def _watch_eyes(self, crop: np.ndarray, landmarks: np.ndarray, levels: np.ndarray) -> None:
        """Show the key frame's eye picker this frame; start coding its patches when due."""
        qp, key = self.config.eye_reference_qp, self.encoder.keyframe
        if qp is None or self.format is not IFVC:
            return
        if self._eyes_key != key.record.key_id:
            self._eyes = EyePicker(openness_of(key.reference.reference_params()), self.config.size, qp)
            self._eyes_key = key.record.key_id
        decoded = dequantise(levels[:self.format.count], self.encoder.steps)
        self._eyes.see(crop, openness_of(decoded), landmarks)
        if self._eyes_coding is None and self._eyes.due() and (shot := self._eyes.take()) is not None:
            self._eyes_coding = self._eyes_pool.submit(shot.record, key.record.key_id, qp, self.vvenc)

    def _coded_eyes(self, key_id: int) -> EyeReference | None:
        """The eye reference coded since the last frame, if it is still the key frame's in use."""
        if self._eyes_coding is None or not self._eyes_coding.done():
            return None
        future, self._eyes_coding = self._eyes_coding, None
        try:
            record = future.result()
        except Exception as exc:
            log.warning("could not code the eye reference (%s); the call goes on without it", exc)
            if self._eyes is not None and self._eyes_key == key_id:
                self._eyes.taken = np.full(2, np.inf)       # so that the next shut eye is taken anew
            return None
        return record if record.key_id == key_id else None

    def _followed_person(self, crop: np.ndarray, landmarks: np.ndarray) -> bool:
        """Whether the face in the crop is the person followed.  Looked at (a few ms) when
        there is doubt: after a loss, after a jump, and every `_CHECK_EVERY` frames."""
        centre, size = _face_box(landmarks)
        last = self._last_face
        doubt = self.lost_frames > 0 or last is None or self._followed >= _CHECK_EVERY
        if not doubt and last is not None:
            last_centre, last_size = last
            doubt = bool(np.linalg.norm(centre - last_centre) > _JUMP * last_size
                         or abs(size - last_size) > _JUMP * last_size)
        if not doubt or self.person is None:
            return True
        seen = signature(crop, landmarks)
        if not self.person.same(seen):
            log.debug("the face in the crop is not the person followed (distance %.2f)", self.person.distance(seen))
            return False
        self.person.refresh(seen)
        self._followed = 0
        return True

    def _seen(self, landmarks: np.ndarray) -> None:
        if self.lost_frames:
            log.info("the face is back after %d frames", self.lost_frames)
        self.lost_frames = 0
        self._lost_since = None
        self._holding_logged = False
        self._last_face = _face_box(landmarks)
        self._followed += 1

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
        person, self._pending_person = self._pending_person, None
        before, self._pending_from = self._pending_from, None
        try:
            coded = future.result()
        except Exception as exc:
            log.warning("could not code a new key frame (%s); keeping the old one and its crop", exc)
            self.tracker.box = before   # the levels are the old key frame's: so must the crop be
            return None
        self.encoder.use_keyframe(coded)
        if person is not None:
            self.person = person
        self._last_face = None
        self.keyframes += 1
        log.info("key frame %d: %d bytes (QP %d), crop %s", coded.record.key_id,
                 len(coded.record.picture), coded.qp, self.tracker.box)
        return coded

    def _candidates(self, picture: np.ndarray) -> list[_Candidate]:
        """Every face in the whole picture, cut out as its crop would be, with its distance
        from the person followed."""
        if self._finder is None:
            self._finder = FaceTracker(still=True, max_faces=MAX_FACES)
        height, width = picture.shape[:2]
        found = []
        for landmarks in self._finder.detect_all(picture):
            box = crop_around_face(landmarks, width, height)
            crop = apply_crop(picture, box, self.config.size)
            inner = box.to_crop(landmarks, self.config.size)
            if not face_inside(inner, self.config.size):
                continue
            seen = signature(crop, inner)
            far = self.person.distance(seen) if self.person is not None else 0.0
            found.append(_Candidate(box, crop, inner, seen, far))
        return found

    def _search(self, picture: np.ndarray) -> None:
        """The face is lost in the crop: look for it in the whole picture now and then."""
        now = time.monotonic()
        if self._pending is not None or now - self._last_search < self.live.face_search_interval_s:
            return
        self._last_search = now
        old = self.tracker.box
        faces = self._candidates(picture)
        if not faces and self._stranger is not None and old is not None:
            # a face the search of the whole picture misses (a small one) but the crop shows
            crop, landmarks = self._stranger
            faces = [_Candidate(old, crop, landmarks, signature(crop, landmarks), float("inf"))]
        if not faces:
            return
        same = [f for f in faces if f.distance <= SAME_PERSON]
        if same:
            pick = min(same, key=lambda f: box_distance(old, f.box))
            if old is not None and not boxes_differ(old, pick.box, self.live.recrop_shift, self.live.recrop_scale):
                return      # still where it was: the tracker will pick it up again
            log.info("the face moved out of the crop: new crop %s, coding a new key frame", pick.box)
            self._new_crop(picture, pick, None)
            return
        away = now - (self._lost_since if self._lost_since is not None else now)
        if away < self.live.face_switch_s:
            if not self._holding_logged:
                log.info("the face followed is gone and %d other face(s) are in the picture: holding up to %.1f s",
                         len(faces), self.live.face_switch_s)
                self._holding_logged = True
            return
        pick = min(faces, key=lambda f: box_distance(old, f.box))
        log.info("the face followed has been gone %.1f s: following another person, new crop %s, "
                 "coding a new key frame", away, pick.box)
        self.switches += 1
        self._new_crop(picture, pick, Likeness(pick.signature))

    def _new_crop(self, picture: np.ndarray, pick: _Candidate, person: Likeness | None) -> None:
        """Follow `pick` in a new crop and code its key frame in the background."""
        self._pending_from, self.tracker.box = self.tracker.box, pick.box
        tracked = self.tracker.track(picture)      # on the crop itself, as the tracker will see it
        crop, landmarks = pick.crop, pick.landmarks
        if tracked.landmarks is not None:
            centre, size = _face_box(tracked.landmarks)
            if np.linalg.norm(centre - _face_box(pick.landmarks)[0]) < _JUMP * size:
                crop, landmarks = tracked.crop, tracked.landmarks
        self._cancel_sharp()        # the old crop's sharp key frame is of no use any more
        self._pending_person = person
        self._pending = self._keyframe_pool.submit(self.encoder.code_keyframe, crop, landmarks)

    def stop_coding(self) -> None:
        """Kill the VVenC processes running for this sender and refuse new ones (any thread:
        the analysis thread itself may be waiting for the first key frame's)."""
        self.vvenc.stop()

    def close(self) -> None:
        self.stop_coding()
        self._keyframe_pool.shutdown(wait=False, cancel_futures=True)
        self._eyes_pool.shutdown(wait=False, cancel_futures=True)
        self.tracker.close()
        if self._finder is not None:
            self._finder.close()
