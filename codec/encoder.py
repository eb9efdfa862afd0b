"""The sending side of the codec: key frames and per-frame parameter levels.

`FaceEncoder` is the per-session state that a file encoder and the live sender share:
it codes a key frame (VVC, decoded back: the closed loop), derives the reference geometry
from it, and turns each frame's landmarks into quantised levels of its feature format
(ifvc's parameters, or fomm's, fv2v's or cfte's values: docs/bitstream.md, "Feature formats"),
followed by the frame's global picture motion since the key frame, measured on its crop
(models.global_motion; docs/bitstream.md, "Global motion").
`encode_video` is the offline encoder behind `python -m codec_core encode`: a video file
or a raw GFVC sequence in, cropped around the face or taken as it is (`--no-crop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from codec.eye_reference import EyePicker
from codec_core.bitstream import Keyframe, ParamSegment, RecordType, SessionHeader, write_file_start, write_record
from codec_core.config import MAX_QP, CodecConfig, ConfigError
from codec_core.container import native_to_vvc
from codec_core.format import (
    GLOBAL_MOTION_COUNT,
    IFVC,
    KEYFRAME_CODEC_VVC,
    MAX_FPS,
    MAX_LEVEL,
    MAX_SHAPE_LEVEL,
    MIN_FPS,
    format_named,
    reference_steps,
    step_vector,
)
from codec_core.keyframe import VVenCRuns, decode_keyframe, encode_keyframe
from codec_core.param_coding import dequantise, encode_segment, quantise
from codec_core.video import VideoError, VideoWriter, probe_fps, read_frames
from models.eye_reference import openness_of
from models.face_model import FaceBasis, FaceModel
from models.global_motion import GlobalMotion
from models.reference import Reference
from models.tracking import CropTracker, NoFaceError, TrackedFrame, WholeFrameTracker

if TYPE_CHECKING:
    from models.feature_formats import FormatGeometry

log = logging.getLogger(__name__)


@dataclass
class CodedKeyframe:
    record: Keyframe
    picture: np.ndarray      # the decoded key frame, exactly as the receiver will have it
    reference: Reference
    qp: int
    crop: np.ndarray         # the captured crop it was coded from
    landmarks: np.ndarray    # that crop's face landmarks (crop pixels): global motion is measured against them

    @property
    def size(self) -> int:
        """Picture and reference geometry bytes together (what the byte caps limit)."""
        return len(self.record.picture) + len(self.record.geometry)


ReferenceOf = Callable[[np.ndarray], tuple[Reference, bytes]]


def stream_fps(fps: Fraction | float) -> Fraction:
    """A video's frame rate as a session header declares it: VideoError outside MIN_FPS to
    MAX_FPS; else the nearest fraction whose numerator and denominator fit the header's u16
    fields (120000/1001, a phone's 119.88 fps, is 40999/342)."""
    if not MIN_FPS <= fps <= MAX_FPS:
        raise VideoError(f"the video's frame rate, {float(fps):.2f} a second, is outside the {MIN_FPS} to "
                         f"{MAX_FPS} a stream can declare (re-encode it, e.g. ffmpeg -i IN -r 30 OUT)")
    limit = 1001
    while (best := Fraction(fps).limit_denominator(limit)).numerator > 0xFFFF and limit > 1:
        limit //= 2
    return best


class FaceEncoder:
    def __init__(self, config: CodecConfig, basis: FaceBasis, fmt: str = IFVC.name,
                 vvenc: VVenCRuns | None = None) -> None:
        """`fmt`: the feature format of the stream (a name of format.FEATURE_FORMATS;
        ConfigError for another); `vvenc`: the owner's VVenC runs (a live sender stops them)."""
        try:
            self.format = format_named(fmt)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.format is IFVC and basis.num_params != IFVC.count:
            raise ConfigError(f"face basis {basis.version} has {basis.num_params} parameters; format ifvc has "
                              f"{IFVC.count}")
        self.config = config
        self.basis = basis
        self.vvenc = vvenc or VVenCRuns()
        self.header_steps = config.steps_of(self.format.name)        # as the session header carries them
        self.steps = self.format.step_vector(self.header_steps)       # the step of each value of a frame
        # the key frame's own ifvc levels (its pose in the reference geometry, its eyes) use these
        self.reference_steps = step_vector(reference_steps(self.format, self.header_steps), basis.num_params)
        # the global-motion group's step, rounded to float32 as the header carries it
        self.global_steps = np.full(GLOBAL_MOTION_COUNT, np.float32(config.global_step), np.float64)
        self.keyframe: CodedKeyframe | None = None
        self._model: FaceModel | None = None
        self._geometry: FormatGeometry | None = None   # the key frame's, for formats other than ifvc
        self._previous: np.ndarray | None = None
        self._motion: GlobalMotion | None = None       # the key frame's global motion estimator
        self._global = np.zeros(GLOBAL_MOTION_COUNT, np.int64)   # the last global-motion levels
        self._next_key_id = 0     # taken when a key frame is coded (one coding thread at a time)

    @property
    def num_values(self) -> int:
        """Levels per coded frame: the format's count, then the global-motion group
        (SessionHeader.values_per_frame)."""
        return self.format.count + GLOBAL_MOTION_COUNT

    def header(self, fps: Fraction, frame_count: int = 0) -> SessionHeader:
        fps = stream_fps(fps)
        return SessionHeader(self.format.id, self.config.size, self.config.size, fps.numerator, fps.denominator,
                             frame_count, self.basis.version, self.format.count, self.config.intra_interval,
                             self.header_steps, self.config.global_step)

    def code_keyframe(self, crop: np.ndarray, landmarks: np.ndarray) -> CodedKeyframe:
        """Code `crop` as a key frame without switching to it (slow: VVenC, segmentation);
        `landmarks` are its face landmarks in crop pixels.  The QP is raised from the
        configured one until picture and reference geometry together fit the byte budget."""
        from models.segmentation import person_probability

        cfg = self.config

        def reference_of(picture: np.ndarray) -> tuple[Reference, bytes]:
            reference = Reference.from_landmarks(self.basis, landmarks, cfg.size, self.header_steps[-1],
                                                 self.reference_steps, person=person_probability(picture))
            return reference, reference.pack()

        return self._code(crop, landmarks, cfg.keyframe_qp, MAX_QP, cfg.keyframe_max_bytes, cfg.keyframe_preset,
                          reference_of)

    def code_sharp(self, small: CodedKeyframe) -> CodedKeyframe | None:
        """The sharp twin of `small` for a live call (VVenC, 0.1-3 s): the same crop at
        `call_keyframe_qp` with `call_keyframe_preset`, the QP raised until it fits
        `call_keyframe_max_bytes`, with the very same reference geometry bytes, so that
        parameter levels mean the same against both.  None when the configuration has no
        sharp key frame or nothing sharper than `small` fits."""
        cfg = self.config
        if cfg.call_keyframe_qp is None or cfg.call_keyframe_qp >= small.qp:
            return None
        same_geometry: ReferenceOf = lambda picture: (small.reference, small.record.geometry)
        sharp = self._code(small.crop, small.landmarks, cfg.call_keyframe_qp, small.qp - 1, cfg.call_keyframe_max_bytes,
                           cfg.call_keyframe_preset, same_geometry)
        if cfg.call_keyframe_max_bytes is not None and sharp.size > cfg.call_keyframe_max_bytes:
            log.warning("no sharp key frame fits %d bytes below QP %d", cfg.call_keyframe_max_bytes, small.qp)
            return None
        return sharp

    def _code(self, crop: np.ndarray, landmarks: np.ndarray, qp: int, max_qp: int, max_bytes: int | None,
              preset: str, reference_of: ReferenceOf) -> CodedKeyframe:
        """VVC-code `crop` from `qp` up, until picture and geometry fit `max_bytes` or `max_qp`
        is reached; it takes the next key id."""
        while True:
            data = encode_keyframe(crop, qp, preset, self.vvenc)
            picture = decode_keyframe(data)
            reference, geometry = reference_of(picture)
            total = len(data) + len(geometry)
            if max_bytes is None or total <= max_bytes or qp >= max_qp:
                break
            log.info("key frame %d bytes at QP %d is over %d, raising QP", total, qp, max_bytes)
            qp += 1
        key_id, self._next_key_id = self._next_key_id, (self._next_key_id + 1) & 0xFFFF
        record = Keyframe(key_id, KEYFRAME_CODEC_VVC, data, geometry)
        return CodedKeyframe(record, picture, reference, qp, crop, landmarks)

    def use_keyframe(self, coded: CodedKeyframe) -> None:
        """Switch to a key frame from `code_keyframe`: parameters from now on animate it, and
        global motion is measured against its crop (starting at zero).  A sharp twin
        (`code_sharp`) is the same crop: switching the receiver to it changes nothing here."""
        self.keyframe = coded
        self._motion = GlobalMotion(coded.crop, coded.landmarks)
        self._global = np.zeros(GLOBAL_MOTION_COUNT, np.int64)
        self._model = coded.reference.face_model()
        if self.format is IFVC:
            self._previous = coded.reference.reference_levels()
        else:
            from models.feature_formats import FormatGeometry, key_features

            self._geometry = FormatGeometry.of(coded.reference)
            self._previous = quantise(key_features(self.format.name, coded.reference), self.steps)

    def new_keyframe(self, crop: np.ndarray, landmarks: np.ndarray) -> CodedKeyframe:
        """Code `crop` as the new key frame and switch to it."""
        coded = self.code_keyframe(crop, landmarks)
        self.use_keyframe(coded)
        return coded

    def levels(self, landmarks: np.ndarray | None, crop: np.ndarray | None = None) -> np.ndarray:
        """Quantised values of one frame: the stream format's, then its global motion against
        the key frame measured on `crop` (the frame's crop, the key frame's size).  A frame
        without a face holds the last levels, all of them; one without a crop holds the last
        global-motion levels."""
        if self._model is None or self._previous is None or self.keyframe is None or self._motion is None:
            raise RuntimeError("no key frame yet")
        if landmarks is not None and crop is not None:
            motion = self._motion.estimate(crop, landmarks)
            if np.all(np.isfinite(motion)):          # (a degenerate fit says nothing: hold)
                self._global = quantise(motion, self.global_steps, self._global, self.config.hysteresis)
        if landmarks is not None:
            if self.format is IFVC:
                values = self._model.analyse(landmarks)
            else:
                from models.feature_formats import analyse

                values = analyse(self.format.name, landmarks, self.keyframe.reference, self._geometry)
            self._previous = quantise(values, self.steps, self._previous, self.config.hysteresis)
        return np.concatenate([self._previous, self._global])


@dataclass
class EncodeResult:
    frames: int
    lost_frames: int
    keyframe_bytes: int
    keyframe_qp: int
    file_bytes: int
    levels: list[np.ndarray]     # every frame's quantised values: what a decoder must get back


def check_in_bounds(levels: np.ndarray, bound: int, what: str) -> None:
    """ConfigError when the steps made a level that decoders refuse as corrupt (docs/bitstream.md,
    Bounds): steps too fine for this input, e.g. too large a --quantization-factor."""
    largest = int(np.abs(levels).max(initial=0))
    if largest > bound:
        raise ConfigError(f"the quantisation steps are too fine: a {what} level of {largest} is beyond the "
                          f"format's {bound} (use a smaller --quantization-factor)")


def _first_face(tracker: CropTracker, frame: np.ndarray) -> TrackedFrame | None:
    """The frame cropped and tracked once its face is found (the crop fixed around it), or
    None while the picture shows no face."""
    try:
        tracker.start(frame)
    except NoFaceError:
        return None
    tracked = tracker.track(frame)
    if tracked.landmarks is None:
        tracker.box = None              # found in the whole picture, not in its crop: look again
        return None
    return tracked


def encode_video(source: str | Path, output: str | Path, config: CodecConfig, basis: FaceBasis,
                 max_frames: int | None = None, save_crop: str | Path | None = None,
                 progress: bool = False, no_crop: bool = False, fmt: str = IFVC.name,
                 container: str = "native") -> EncodeResult:
    """Encode a video file (or raw `.rgb` sequence) into a stream file of feature format `fmt`;
    `no_crop`: the input is already the square crop at the coded size, taken as it is;
    `container` "vvc": the stream as one VVC bitstream (codec_core.container), converted
    before anything is written (a stream that cannot be converted leaves no file)."""
    if container not in ("native", "vvc"):
        raise ValueError(f"unknown container {container!r}: native or vvc")
    encoder = FaceEncoder(config, basis, fmt)
    fps = stream_fps(probe_fps(source))        # refused before any work when a stream cannot declare it
    tracker = WholeFrameTracker(config.size) if no_crop else CropTracker(config.size)
    levels: list[np.ndarray] = []
    lost = faceless = 0     # frames without the face after the key frame / before it
    eyes: EyePicker | None = None     # the eye reference (ifvc), from the frames as they are decoded
    writer = VideoWriter(save_crop, fps, lossless=True) if save_crop else None
    try:
        frames = read_frames(source, max_frames)
        for frame in tqdm(frames, total=max_frames, disable=not progress, desc="encoding", unit="frame"):
            if encoder.keyframe is None:
                tracked = _first_face(tracker, frame)
                if tracked is None:
                    faceless += 1
                    continue
                assert tracked.landmarks is not None      # (_first_face returns a frame with its face)
                coded = encoder.new_keyframe(tracked.crop, tracked.landmarks)
                geometry = coded.reference.geometry
                if encoder.format is IFVC and config.eye_reference_qp is not None:
                    eyes = EyePicker(openness_of(coded.reference.reference_params()), config.size,
                                     config.eye_reference_qp)
                check_in_bounds(geometry.shape_levels, MAX_SHAPE_LEVEL, "reference shape")
                check_in_bounds(geometry.pose_levels, MAX_SHAPE_LEVEL, "key frame pose")
            else:
                tracked = tracker.track(frame)
            if tracked.landmarks is None:
                lost += 1
            levels.append(encoder.levels(tracked.landmarks, tracked.crop))
            check_in_bounds(levels[-1], MAX_LEVEL, "parameter")
            if eyes is not None and tracked.landmarks is not None:
                decoded = dequantise(levels[-1][:encoder.format.count], encoder.steps)
                eyes.see(tracked.crop, openness_of(decoded), tracked.landmarks)
            # frames before the first face show it, as frames after a loss show the last one
            for _ in range(faceless if len(levels) == 1 else 0):
                levels.append(levels[0])
                if writer:
                    writer.write(tracked.crop)
            if writer:
                writer.write(tracked.crop)
    finally:
        tracker.close()
        if writer:
            writer.close()
    if encoder.keyframe is None:
        raise NoFaceError(f"no face found in any of the video's {faceless} frames" if faceless
                          else "the video holds no frames")
    if faceless:
        log.warning("no face in the first %d frames: they show the first face found", faceless)
    if lost:
        log.warning("face lost in %d of %d frames: their parameters hold the last seen face", lost, len(levels))
    out = bytearray(write_file_start())
    out += write_record(RecordType.SESSION_HEADER, encoder.header(fps, len(levels)).pack())
    keyframe = encoder.keyframe
    out += write_record(RecordType.KEYFRAME, keyframe.record.pack())
    eye_record = eyes.record(keyframe.record.key_id) if eyes is not None else None
    if eye_record is not None:
        out += write_record(RecordType.EYE_REFERENCE, eye_record.pack())
    step = config.intra_interval
    for start in range(0, len(levels), step):
        chunk = levels[start:start + step]
        payload = encode_segment(chunk, encoder.num_values)
        out += write_record(RecordType.PARAM_SEGMENT, ParamSegment(start, len(chunk), payload).pack())
    if container == "vvc":
        out = bytearray(native_to_vvc(bytes(out)))
    Path(output).write_bytes(out)
    return EncodeResult(len(levels), lost, len(keyframe.record.picture), keyframe.qp, len(out), levels)
