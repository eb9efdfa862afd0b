"""The receiving side of the codec: key frame in, parameter levels in, pictures out.

`FaceDecoder` holds a session's state (header, key frame, reference, synthesizer) and is
shared by the file decoder and the live receiver.  It plays a stream of any feature format
with the synthesizer of its own format, the decoder format (the stream's unless told):
when they differ, each key frame gets a translator (models.translators) that every frame's
dequantised values go through before synthesis; the frame's global picture motion (the four
values after the format's, docs/bitstream.md "Global motion") goes to the synthesizer as it
is, whatever the formats.  `parse_stream` reads and checks a
whole stream file, `read_stream` one from disk, native or in a VVC bitstream (told apart by
their first bytes, never by the file's name); `decode_frames` is the offline decoder behind `python -m codec_core
decode`, `stream_info` the numbers behind `info`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from codec.translation import DEFAULT_TRANSLATOR, TRANSLATOR_METHODS
from codec_core.bitstream import (
    EYES_PLACE,
    EyeReference,
    Keyframe,
    ParamSegment,
    RecordType,
    SessionHeader,
    StreamError,
    read_records,
)
from codec_core.container import is_vvc, vvc_to_native
from codec_core.format import GLOBAL_MOTION_COUNT, IFVC, FeatureFormat, format_named, reference_steps, step_vector
from codec_core.keyframe import decode_keyframe
from codec_core.param_coding import decode_segment, dequantise
from models.face_model import FaceBasis
from models.reference import Reference
from models.synthesizers import Synth, Synthesis

if TYPE_CHECKING:
    from models.editing import Edits
    from models.eye_reference import EyePatches

log = logging.getLogger(__name__)


class DecoderFormatError(ValueError):
    """A decoder format, translator or synthesizer choice that cannot play a stream (one line)."""


class Translator(Protocol):
    def translate(self, values: np.ndarray) -> np.ndarray: ...


@dataclass
class DecodedKeyframe:
    """A key frame made ready to animate: its picture, reference, synthesizer and, when the
    decoder's format differs from the stream's, the translator of its frames."""

    key_id: int
    picture: np.ndarray
    reference: Reference
    synth: Synth
    key_params: np.ndarray                 # the key frame's own values in the decoder's format
    translator: Translator | None = None
    synthesis: Synthesis | None = None     # what built `synth` (ifvc decoder format; None: the format's own)
    eyes: EyePatches | None = None         # its eye reference, decoded (ifvc decoder format)
    eye_reference: EyeReference | None = None   # (the record they came from)


def check_decoder_choice(decoder_format: FeatureFormat, synthesis: Synthesis, translator: str) -> None:
    """DecoderFormatError (one line) when this decoder format, translator method and synthesizer
    cannot go together; builds nothing."""
    if translator not in TRANSLATOR_METHODS:
        raise DecoderFormatError(f"unknown translator {translator!r}: choose one of {', '.join(TRANSLATOR_METHODS)}")
    if decoder_format is not IFVC and synthesis.resolved(ifvc=False).synth != "warp":
        raise DecoderFormatError(f"--synth {synthesis.synth} runs on ifvc parameters only; decoder format "
                                 f"{decoder_format.name} has its own motion model (use --synth warp)")


class FaceDecoder:
    def __init__(self, header: SessionHeader, basis: FaceBasis | None = None,
                 synthesis: Synthesis = Synthesis(), decoder_format: str | None = None,
                 translator: str = DEFAULT_TRANSLATOR) -> None:
        """`decoder_format`: the format whose synthesizer makes the pictures (a name of
        format.FEATURE_FORMATS; None: the stream's own); `translator`: how other formats'
        values reach it (TRANSLATOR_METHODS)."""
        basis = basis or FaceBasis.load()
        if header.basis_version != basis.version:
            raise StreamError(f"stream needs face basis {header.basis_version!r}, this decoder has {basis.version!r}")
        self.stream_format = header.feature_format
        if self.stream_format is IFVC and header.num_params != basis.num_params:
            raise StreamError(f"stream has {header.num_params} parameters per frame, basis {basis.version} has "
                              f"{basis.num_params}")
        self.decoder_format = self.stream_format if decoder_format is None else format_named(decoder_format)
        synthesis = synthesis.resolved(self.decoder_format is IFVC)      # --synth auto: what plays this format
        check_decoder_choice(self.decoder_format, synthesis, translator)
        self.header = header
        self.basis = basis
        self.synthesis = synthesis
        self.translator_method = translator
        self.steps = self.stream_format.step_vector(header.steps)      # the step of each value of a frame
        self.global_steps = np.full(GLOBAL_MOTION_COUNT, np.float32(header.global_step), np.float64)
        self.reference_steps = step_vector(reference_steps(self.stream_format, header.steps), basis.num_params)
        self.reference: Reference | None = None
        self.keyframe: np.ndarray | None = None
        self.key_id: int | None = None
        self._synth: Synth | None = None
        self._translator: Translator | None = None
        self._in_use: DecodedKeyframe | None = None

    @property
    def translates(self) -> bool:
        """Whether frames go through a translator (the decoder's format is not the stream's)."""
        return self.decoder_format is not self.stream_format

    def decode_keyframe(self, record: Keyframe, eyes: EyeReference | None = None) -> DecodedKeyframe:
        """Decode a key frame (and its eye reference, when the stream has one) and build its
        synthesizer (and translator) without switching to it; reads only the session's
        settings, so another thread may do it while this one renders."""
        picture = decode_keyframe(record.picture)
        if picture.shape[:2] != (self.header.height, self.header.width):
            raise StreamError(f"key frame is {picture.shape[1]}x{picture.shape[0]}, header says "
                              f"{self.header.width}x{self.header.height}")
        reference = Reference.unpack(record.geometry, self.basis, self.header.width, self.header.geometry_step,
                                     self.reference_steps)
        name = self.decoder_format.name
        synthesis = patches = None
        if self.decoder_format is IFVC:
            key_params = reference.reference_params()
            synthesis = self.synthesis
            patches = self._eye_patches(record.key_id, eyes)
            synth = synthesis.build(picture, reference.face_model(), key_params, reference.ring_weights, patches)
        else:
            from models.feature_formats import key_features
            from models.format_motion import build_format_synth

            key_params = key_features(name, reference)
            synth = build_format_synth(name, picture, reference, device=self.synthesis.device)
        translator = None
        if self.translates:
            from models.translators import TranslatorError, make_translator

            try:
                translator = make_translator(self.stream_format.name, name, reference, self.translator_method,
                                             steps=self.steps)
            except TranslatorError as exc:
                raise DecoderFormatError(str(exc)) from None
        return DecodedKeyframe(record.key_id, picture, reference, synth, key_params, translator, synthesis, patches,
                               eyes if self.decoder_format is IFVC else None)

    def _eye_patches(self, key_id: int, eyes: EyeReference | None) -> EyePatches | None:
        """Key frame `key_id`'s eye reference decoded (StreamError when it is another's or
        its picture does not fit)."""
        if eyes is None:
            return None
        from codec.eye_reference import decode_eye_reference

        return decode_eye_reference(eyes.belonging_to(key_id), self.header.width)

    def add_eyes(self, decoded: DecodedKeyframe, eyes: EyeReference) -> None:
        """Give a decoded key frame the eye reference that came after it (a live call): its
        synthesizer lays it from the next frame on (v1's ignores it).  StreamError when it is
        another key frame's or its picture does not fit."""
        if self.decoder_format is not IFVC:
            return
        patches = self._eye_patches(decoded.key_id, eyes)
        lay = getattr(decoded.synth, "set_eyes", None)      # v2's synthesizers; v1 has no use for it
        if lay is not None:
            lay(patches)
        decoded.eyes, decoded.eye_reference = patches, eyes     # only once laid

    def set_synthesis(self, synthesis: Synthesis) -> None:
        """Make the pictures with `synthesis` from now on (a live receiver stepping down:
        receiver.pace): key frames decoded from now on are built with it, and the one in use,
        or one decoded before, gets a synthesizer of it when it is used."""
        synthesis = synthesis.resolved(self.decoder_format is IFVC)
        check_decoder_choice(self.decoder_format, synthesis, self.translator_method)
        self.synthesis = synthesis
        if self._in_use is not None:
            self.use_keyframe(self._in_use)

    def use_keyframe(self, decoded: DecodedKeyframe) -> None:
        """Animate `decoded` from now on (built again first when its synthesizer is not of this
        decoder's `synthesis`)."""
        self.fit_synthesis(decoded)
        self._in_use = decoded
        self.reference = decoded.reference
        self.keyframe = decoded.picture
        self.key_id = decoded.key_id
        self._synth = decoded.synth
        self._translator = decoded.translator

    def fit_synthesis(self, decoded: DecodedKeyframe) -> bool:
        """Build `decoded`'s synthesizer again when it is not of this decoder's `synthesis`
        (set since it was decoded); whether it was."""
        synthesis = self.synthesis
        if decoded.synthesis is None or decoded.synthesis == synthesis:
            return False
        decoded.synth = synthesis.build(decoded.picture, decoded.reference.face_model(), decoded.key_params,
                                        decoded.reference.ring_weights, decoded.eyes)
        decoded.synthesis = synthesis
        return True

    @property
    def lays_eyes(self) -> bool:
        """Whether the pictures now lay the caller's shut eyes (v2 with a key frame that has
        an eye reference; v1 ignores it)."""
        return self._in_use is not None and self._in_use.eyes is not None and hasattr(self._synth, "set_eyes")

    def set_keyframe(self, record: Keyframe, eyes: EyeReference | None = None) -> None:
        """Decode a key frame (and its eye reference) and switch to it."""
        self.use_keyframe(self.decode_keyframe(record, eyes))

    def values(self, levels: np.ndarray) -> np.ndarray:
        """A frame's dequantised values in the stream's format (`levels`: the frame's levels, its
        global motion after them, or the format's alone)."""
        return dequantise(np.asarray(levels)[:self.header.num_params], self.steps)

    def motion(self, levels: np.ndarray) -> np.ndarray:
        """A frame's global picture motion (tx, ty, log_scale, angle: format.GLOBAL_MOTION_NAMES),
        dequantised: what `render` takes as `motion`."""
        n = self.header.num_params
        group = np.asarray(levels)[n:n + GLOBAL_MOTION_COUNT]
        if len(group) != GLOBAL_MOTION_COUNT:
            raise StreamError(f"a frame of {len(levels)} levels has no global motion (expected "
                              f"{self.header.values_per_frame})")
        return dequantise(group, self.global_steps)

    def params(self, levels: np.ndarray) -> np.ndarray:
        """A frame's values in the decoder's format, what `render` takes: dequantised and, when
        the formats differ, translated (the translator keeps state across the frames of one key
        frame: call this once per frame, in order)."""
        values = self.values(levels)
        if not self.translates:
            return values
        if self._translator is None:
            raise StreamError("parameters arrived before any key frame")
        return np.asarray(self._translator.translate(values), dtype=np.float64)

    def render(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """The synthesized frame (H, W, 3 uint8) for a frame's values in the decoder's format and
        its global motion (`motion`; None: the picture does not move)."""
        if self._synth is None:
            raise StreamError("parameters arrived before any key frame")
        return self._synth.render(params, motion)


@dataclass
class ParsedStream:
    header: SessionHeader
    keyframe: Keyframe
    segments: list[ParamSegment]
    total_bytes: int
    eyes: EyeReference | None = None

    @property
    def frame_count(self) -> int:
        return sum(s.frame_count for s in self.segments)


def parse_stream(data: bytes) -> ParsedStream:
    """Split a stream file into its parts and check how they fit together."""
    records = read_records(data)
    if not records or records[0][0] != RecordType.SESSION_HEADER:
        raise StreamError("stream does not start with a session header")
    header = SessionHeader.unpack(records[0][1])
    keyframe: Keyframe | None = None
    eyes: EyeReference | None = None
    segments: list[ParamSegment] = []
    for kind, payload in records[1:]:
        if kind == RecordType.KEYFRAME:
            if keyframe is not None:
                raise StreamError("stream file holds more than one key frame")
            keyframe = Keyframe.unpack(payload)
        elif kind == RecordType.EYE_REFERENCE:
            if keyframe is None or eyes is not None or segments:
                raise StreamError(EYES_PLACE)
            eyes = EyeReference.unpack(payload).belonging_to(keyframe.key_id)
        elif kind == RecordType.PARAM_SEGMENT:
            if keyframe is None:
                raise StreamError("parameters come before the key frame")
            seg = ParamSegment.unpack(payload)
            expected = sum(s.frame_count for s in segments)
            if seg.first_frame != expected:
                raise StreamError(f"parameter segment starts at frame {seg.first_frame}, expected {expected}")
            segments.append(seg)
        else:
            raise StreamError(f"unexpected {kind.name} record in a stream file")
    if keyframe is None:
        raise StreamError("stream holds no key frame")
    parsed = ParsedStream(header, keyframe, segments, len(data), eyes)
    if parsed.frame_count != header.frame_count:
        raise StreamError(f"stream holds {parsed.frame_count} frames, header says {header.frame_count} (truncated?)")
    return parsed


def read_stream(path: str | Path) -> ParsedStream:
    """A stream file, parsed: a native one (it starts with the magic), or a VVC bitstream made
    by `encode --container vvc` (it starts with an Annex-B start code), whatever its name;
    `total_bytes` is the file's."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StreamError(f"cannot read {path}: {exc.strerror}") from None
    if is_vvc(data):
        return replace(parse_stream(vvc_to_native(data)), total_bytes=len(data))
    return parse_stream(data)


def decode_frames(parsed: ParsedStream, synthesis: Synthesis = Synthesis(), edits: Edits | None = None,
                  decoder_format: str | None = None, translator: str = DEFAULT_TRANSLATOR) -> Iterator[np.ndarray]:
    """Synthesized frames of a parsed stream, in order, made by the synthesizer of
    `decoder_format` (None: the stream's own), with `edits` (models.editing) applied.  Edits
    work on ifvc parameters: with another decoder format they are a DecoderFormatError."""
    decoder = FaceDecoder(parsed.header, synthesis=synthesis, decoder_format=decoder_format, translator=translator)
    log.info("drawn by %s", decoder.synthesis.describe() if decoder.decoder_format is IFVC
             else f"the {decoder.decoder_format.name} format's own motion model")
    if edits and decoder.decoder_format is not IFVC:
        raise DecoderFormatError(f"--edit works on ifvc parameters; decoder format {decoder.decoder_format.name} "
                                 "has none (decode with --decoder-format ifvc)")
    decoder.set_keyframe(parsed.keyframe, parsed.eyes)
    editor = None
    if edits and decoder.reference is not None:
        from models.editing import ExpressionEditor, apply_edits

        editor = ExpressionEditor.from_model(decoder.reference.face_model())
    for seg in parsed.segments:
        for levels in decode_segment(seg, parsed.header.values_per_frame):
            params = decoder.params(levels)
            if edits and editor is not None:
                params = apply_edits(params, edits, editor)
            yield decoder.render(params, decoder.motion(levels))


def global_motion_extent(parsed: ParsedStream) -> dict[str, float]:
    """How far the stream's global motion goes: the largest translation (pixels of the picture),
    scale change (percent) and rotation (degrees) of any frame; the segments are decoded."""
    h = parsed.header
    step = float(np.float32(h.global_step))
    shift = log_scale = angle = 0.0
    for seg in parsed.segments:
        for levels in decode_segment(seg, h.values_per_frame):
            tx, ty, ls, an = (float(v) * step for v in levels[h.num_params:])
            shift, log_scale, angle = max(shift, float(np.hypot(tx, ty))), max(log_scale, abs(ls)), max(angle, abs(an))
    return {"global_max_translation_px": round(shift * h.width / 2, 2),     # normalised units: width / 2 pixels
            "global_max_scale_percent": round(float(np.expm1(log_scale) * 100), 2),
            "global_max_angle_deg": round(float(np.degrees(angle)), 2)}


def stream_info(parsed: ParsedStream) -> dict:
    """The numbers behind `info` (the parameter segments are decoded for the global motion's extent)."""
    h = parsed.header
    seconds = parsed.frame_count / h.fps if parsed.frame_count else 0.0
    param_bytes = sum(len(s.payload) for s in parsed.segments)
    kbps = (lambda n: round(n * 8 / seconds / 1000, 3) if seconds else 0.0)
    return {
        "frames": parsed.frame_count,
        "fps": round(h.fps, 3),
        "width": h.width,
        "height": h.height,
        "format": h.feature_format.name,
        "values_per_frame": h.values_per_frame,
        "steps": {name: float(str(np.float32(step))) for name, step in      # as float32 prints them
                  zip(h.feature_format.step_names, h.steps, strict=True)},
        "global_step": float(str(np.float32(h.global_step))),
        **global_motion_extent(parsed),
        "basis_version": h.basis_version,
        "num_params": h.num_params,
        "intra_interval": h.intra_interval,
        "keyframe_bytes": len(parsed.keyframe.picture),
        "geometry_bytes": len(parsed.keyframe.geometry),
        "eye_reference_bytes": len(parsed.eyes.picture) if parsed.eyes else 0,
        "param_bytes": param_bytes,
        "file_bytes": parsed.total_bytes,
        "param_kbps": kbps(param_bytes),
        "total_kbps": kbps(parsed.total_bytes),
    }
