"""The receiving side of the codec: key frame in, parameter levels in, pictures out.

`FaceDecoder` holds a session's state (header, key frame, reference, synthesizer) and is
shared by the file decoder and the live receiver.  `parse_stream` reads and checks a
whole stream file; `decode_frames` is the offline decoder behind `python -m codec_core
decode`, `stream_info` the numbers behind `info`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codec_core.arith import ArithmeticDecoder
from codec_core.bitstream import Keyframe, ParamSegment, RecordType, SessionHeader, StreamError, read_records
from codec_core.format import FORMAT_NAMES, I_STEP_GEOMETRY, step_vector
from codec_core.keyframe import decode_keyframe
from codec_core.param_coding import ParamFrameDecoder, check_levels, dequantise
from models.face_model import FaceBasis
from models.reference import Reference
from models.synthesizers import Synth, Synthesis

if TYPE_CHECKING:
    from models.editing import Edits

log = logging.getLogger(__name__)


@dataclass
class DecodedKeyframe:
    """A key frame made ready to animate: its picture, reference and synthesizer."""

    key_id: int
    picture: np.ndarray
    reference: Reference
    synth: Synth


class FaceDecoder:
    def __init__(self, header: SessionHeader, basis: FaceBasis | None = None,
                 synthesis: Synthesis = Synthesis()) -> None:
        basis = basis or FaceBasis.load()
        if header.basis_version != basis.version:
            raise StreamError(f"stream needs face basis {header.basis_version!r}, this decoder has {basis.version!r}")
        if header.num_params != basis.num_params:
            raise StreamError(f"stream has {header.num_params} parameters per frame, basis {basis.version} has "
                              f"{basis.num_params}")
        self.header = header
        self.basis = basis
        self.synthesis = synthesis
        self.steps = step_vector(header.steps, basis.num_params)
        self.reference: Reference | None = None
        self.keyframe: np.ndarray | None = None
        self.key_id: int | None = None
        self._synth: Synth | None = None

    def decode_keyframe(self, record: Keyframe) -> DecodedKeyframe:
        """Decode a key frame and build its synthesizer without switching to it; reads only
        the session's settings, so another thread may do it while this one renders."""
        picture = decode_keyframe(record.picture)
        if picture.shape[:2] != (self.header.height, self.header.width):
            raise StreamError(f"key frame is {picture.shape[1]}x{picture.shape[0]}, header says "
                              f"{self.header.width}x{self.header.height}")
        reference = Reference.unpack(record.geometry, self.basis, self.header.width,
                                     self.header.steps[I_STEP_GEOMETRY], self.steps)
        synth = self.synthesis.build(picture, reference.face_model(), reference.reference_params(),
                                     reference.ring_weights)
        return DecodedKeyframe(record.key_id, picture, reference, synth)

    def use_keyframe(self, decoded: DecodedKeyframe) -> None:
        """Animate `decoded` from now on."""
        self.reference = decoded.reference
        self.keyframe = decoded.picture
        self.key_id = decoded.key_id
        self._synth = decoded.synth

    def set_keyframe(self, record: Keyframe) -> None:
        """Decode a key frame and switch to it."""
        self.use_keyframe(self.decode_keyframe(record))

    def params(self, levels: np.ndarray) -> np.ndarray:
        return dequantise(levels, self.steps)

    def render(self, params: np.ndarray) -> np.ndarray:
        """The synthesized frame (H, W, 3 uint8) for a parameter vector."""
        if self._synth is None:
            raise StreamError("parameters arrived before any key frame")
        return self._synth.render(params)


def decode_segment(segment: ParamSegment, num_params: int) -> list[np.ndarray]:
    coder, dec = ParamFrameDecoder(num_params), ArithmeticDecoder(segment.payload)
    return [check_levels(coder.decode(dec, intra=(i == 0))) for i in range(segment.frame_count)]


@dataclass
class ParsedStream:
    header: SessionHeader
    keyframe: Keyframe
    segments: list[ParamSegment]
    total_bytes: int

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
    segments: list[ParamSegment] = []
    for kind, payload in records[1:]:
        if kind == RecordType.KEYFRAME:
            if keyframe is not None:
                raise StreamError("stream file holds more than one key frame")
            keyframe = Keyframe.unpack(payload)
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
    parsed = ParsedStream(header, keyframe, segments, len(data))
    if parsed.frame_count != header.frame_count:
        raise StreamError(f"stream holds {parsed.frame_count} frames, header says {header.frame_count} (truncated?)")
    return parsed


def read_stream(path: str | Path) -> ParsedStream:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StreamError(f"cannot read {path}: {exc.strerror}") from None
    return parse_stream(data)


def decode_frames(parsed: ParsedStream, synthesis: Synthesis = Synthesis(),
                  edits: Edits | None = None) -> Iterator[np.ndarray]:
    """Synthesized frames of a parsed stream, in order, with `edits` (models.editing) applied."""
    decoder = FaceDecoder(parsed.header, synthesis=synthesis)
    decoder.set_keyframe(parsed.keyframe)
    editor = None
    if edits and decoder.reference is not None:
        from models.editing import ExpressionEditor, apply_edits

        editor = ExpressionEditor.from_model(decoder.reference.face_model())
    for seg in parsed.segments:
        for levels in decode_segment(seg, parsed.header.num_params):
            params = decoder.params(levels)
            if edits and editor is not None:
                params = apply_edits(params, edits, editor)
            yield decoder.render(params)


def stream_info(parsed: ParsedStream) -> dict:
    h = parsed.header
    seconds = parsed.frame_count / h.fps if parsed.frame_count else 0.0
    param_bytes = sum(len(s.payload) for s in parsed.segments)
    kbps = (lambda n: round(n * 8 / seconds / 1000, 3) if seconds else 0.0)
    return {
        "frames": parsed.frame_count,
        "fps": round(h.fps, 3),
        "width": h.width,
        "height": h.height,
        "format": FORMAT_NAMES[h.format],
        "basis_version": h.basis_version,
        "num_params": h.num_params,
        "intra_interval": h.intra_interval,
        "keyframe_bytes": len(parsed.keyframe.picture),
        "geometry_bytes": len(parsed.keyframe.geometry),
        "param_bytes": param_bytes,
        "file_bytes": parsed.total_bytes,
        "param_kbps": kbps(param_bytes),
        "total_kbps": kbps(parsed.total_bytes),
    }
