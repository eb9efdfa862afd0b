"""Our streams inside one standard VVC bitstream (`encode --container vvc`, `.266` files).

`native_to_vvc` turns a native stream file (FCVC records, docs/bitstream.md) into one Annex-B
VVC bitstream, and `vvc_to_native` gives the very same native bytes back: the key frame's
own VVC NAL units (the KEYFRAME picture, coded by VVenC) are copied unchanged, and our data
rides in prefix SEI NAL units placed in the key frame's access unit, after its parameter
sets and before its first VCL NAL unit:

* a user-data-unregistered SEI (payloadType 5) with our UUID for what has no field of its
  own: the session header (kind 1), the key frame's id and reference geometry (kind 2), the
  EYE_REFERENCE record when the stream has one (kind 4, its payload byte for byte: the
  picture of the caller's shut eyes stays inside it, it is not the key frame's picture), and
  the coded PARAM_SEGMENT bytes of `ifvc` and `cfte` (kind 3);
* for `fomm` and `fv2v`, a *face feature SEI* (payloadType `FACE_FEATURE_SEI`) shaped after
  JVET's generative face video SEI: per frame the key points' coordinates and the matrices
  as integer levels (absolute, or predicted from the previous frame), Exp-Golomb coded, with
  their quantisation steps; the frame's global motion is one more matrix (type
  `GLOBAL_MOTION_TYPE`, 1 x 4, the header's global step).  Reading re-codes the levels with our arithmetic coder into
  PARAM_SEGMENTs; the coder being deterministic, that gives back the native bytes.

The messages come in the native records' order: session header, key frame, the eye reference
(at most one, only right after the key frame), then the parameter segments in frame order; a
message out of place or twice is refused.  Every message carries a CRC-32, and the key frame
message the CRC-32 of the picture's NAL units, as the native records do.  The session header
message names the native stream version (`STREAM_VERSION`, 5); another is refused.

A plain VVC decoder ignores the SEI messages (payload types it does not know, and user data
it does not recognise) and shows one picture: the key frame.  Every corrupt input raises
`StreamError` with one line.  Pure: numpy and the wire layer only.  docs/bitstream.md,
"VVC container", is the specification.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

import numpy as np

from codec_core.bitstream import (
    EYES_PLACE,
    EyeReference,
    Keyframe,
    ParamSegment,
    RecordType,
    SessionHeader,
    StreamError,
    read_records,
    write_file_start,
    write_record,
)
from codec_core.format import (
    FEATURE_FORMATS,
    GLOBAL_MOTION_NAMES,
    MAX_LEVEL,
    MAX_SEGMENT_FRAMES,
    STREAM_VERSION,
    FeatureFormat,
)
from codec_core.param_coding import ParamDecodeError, decode_segment, encode_segment
from codec_core.sei import (
    PH_NUT,
    PREFIX_SEI_NUT,
    VCL_TYPES,
    BitReader,
    BitWriter,
    SeiMessage,
    read_sei_nal,
    sei_nal,
    split_annexb,
)

# -- the container's numbers (docs/bitstream.md, "VVC container") ------------------------------
USER_DATA_UNREGISTERED = 5      # H.274's user_data_unregistered payloadType
# Our payloadType for the face feature SEI: H.266/H.274 assign none to 250 (JVET's draft
# generative face video SEI is 223 in the JVET-AJ0207 software; ours is not its syntax, so
# it must not take its number).  A VVC decoder ignores payload types it does not know.
FACE_FEATURE_SEI = 250
CONTAINER_UUID = uuid.UUID("d94a3289-6bfc-41d9-9cf8-67c016868ffb").bytes   # uuid_iso_iec_11578 of our user data
KIND_SESSION, KIND_KEYFRAME, KIND_SEGMENT, KIND_EYES = 1, 2, 3, 4          # fc_kind of our user data
KIND_NAMES = {KIND_SESSION: "session header", KIND_KEYFRAME: "key frame", KIND_SEGMENT: "parameter segment",
              KIND_EYES: "eye reference"}
STEP_BITS = 32                  # a quantisation step travels as its IEEE-754 binary32 bits
MATRIX_TYPE_BITS = 6
PER_KEYPOINT_TYPES = (0, 1)     # matrix types with one matrix per key point (GFV's 0 and 1)
SIZED_TYPES = (2, 3)            # one matrix of the size given; types >= 7 give their count too
GLOBAL_MOTION_TYPE = 8          # one 1 x 4 matrix: the frame's global motion (format.GLOBAL_MOTION_NAMES)
GLOBAL_STEP = "global"          # the step name of the global-motion group (the header's global_step)
MAX_MATRIX_SIDE = 1 << 10       # GFV's bound on matrix counts and sides
_KEY_HEAD = struct.Struct(">HBI")        # key_id, codec, CRC-32 of the picture's NAL units
_CRC = struct.Struct(">I")


# -- how fomm and fv2v map onto the face feature SEI's fields --------------------------------

@dataclass(frozen=True)
class MatrixGroup:
    """One matrix type of the face feature SEI: its type index, the header step its elements
    use (a name of the format's steps, or GLOBAL_STEP), and the index of every element in the
    frame's levels (matrices x height x width)."""

    type_idx: int
    step: str
    indices: np.ndarray


@dataclass(frozen=True)
class FieldLayout:
    """Where a format's values sit in the face feature SEI."""

    format: FeatureFormat
    coordinate_step: str
    coordinates: np.ndarray          # value index of each key point's x, y (, z): num_kps x dims
    matrices: tuple[MatrixGroup, ...]

    @property
    def values_per_frame(self) -> int:
        """Levels of a frame: the format's values, then the global-motion group."""
        return self.format.count + len(GLOBAL_MOTION_NAMES)

    def describe(self) -> tuple:
        """What the SEI's layout fields say (compared with what a message declares)."""
        return (self.coordinates.shape, tuple((m.type_idx, m.indices.shape) for m in self.matrices))


def _indices(fmt: FeatureFormat, names: list[list[list[str]]] | list[list[str]]) -> np.ndarray:
    """Where each named value sits in a frame's levels (the format's values, then the global motion)."""
    where = {name: i for i, name in enumerate(fmt.value_names + GLOBAL_MOTION_NAMES)}
    return np.vectorize(where.__getitem__, otypes=[np.int64])(np.array(names))


def _global(fmt: FeatureFormat) -> MatrixGroup:
    return MatrixGroup(GLOBAL_MOTION_TYPE, GLOBAL_STEP, _indices(fmt, [[list(GLOBAL_MOTION_NAMES)]]))


def _layouts() -> dict[str, FieldLayout]:
    fomm, fv2v = FEATURE_FORMATS["fomm"], FEATURE_FORMATS["fv2v"]
    fomm_layout = FieldLayout(
        fomm, "keypoint", _indices(fomm, [[f"kp{k}_{a}" for a in "xy"] for k in range(10)]),
        (MatrixGroup(0, "jacobian", _indices(fomm, [[[f"jac{k}_{i}{j}" for j in "01"] for i in "01"]
                                                     for k in range(10)])),
         _global(fomm)))
    fv2v_layout = FieldLayout(
        fv2v, "delta", _indices(fv2v, [[f"delta{k}_{a}" for a in "xyz"] for k in range(15)]),
        (MatrixGroup(2, "angle", _indices(fv2v, [[["yaw", "pitch", "roll"]]])),
         MatrixGroup(3, "translation", _indices(fv2v, [[["tx", "ty"]]])),
         MatrixGroup(7, "log_scale", _indices(fv2v, [[["log_scale"]]])),
         _global(fv2v)))
    for layout in (fomm_layout, fv2v_layout):      # every level of a frame once
        used = np.concatenate([layout.coordinates.ravel()] + [m.indices.ravel() for m in layout.matrices])
        assert sorted(used.tolist()) == list(range(layout.values_per_frame)), layout.format.name
    return {"fomm": fomm_layout, "fv2v": fv2v_layout}


FIELD_LAYOUTS = _layouts()


def _value_order(layout: FieldLayout) -> np.ndarray:
    """Value indices in the order the SEI writes a frame: coordinates, then matrix elements."""
    return np.concatenate([layout.coordinates.ravel()] + [m.indices.ravel() for m in layout.matrices])


def _step_bits(step: float) -> int:
    return struct.unpack(">I", struct.pack(">f", step))[0]


def _header_steps(header: SessionHeader) -> dict[str, float]:
    """Every step of a session header by name: the format's, and GLOBAL_STEP."""
    return {**dict(zip(header.feature_format.step_names, header.steps, strict=True)), GLOBAL_STEP: header.global_step}


# -- the face feature SEI -----------------------------------------------------------------------

def write_face_features(layout: FieldLayout, header: SessionHeader, first_frame: int,
                        levels: np.ndarray) -> bytes:
    """The face feature SEI payload of frames first_frame.. (levels: frames x values per frame):
    the first frame absolute, the others predicted from the frame before."""
    steps = _header_steps(header)
    w = BitWriter()
    w.u(layout.format.id, 8)
    w.ue(first_frame)
    w.ue(len(levels) - 1)
    num_kps, dims = layout.coordinates.shape
    w.ue(num_kps - 1)
    w.u(int(dims == 3), 1)
    w.u(_step_bits(steps[layout.coordinate_step]), STEP_BITS)
    w.ue(len(layout.matrices) - 1)
    for m in layout.matrices:
        count, height, width = m.indices.shape
        w.u(m.type_idx, MATRIX_TYPE_BITS)
        if m.type_idx in PER_KEYPOINT_TYPES:
            w.u(1, 1)                                     # num_matrices_equal_to_num_kps_flag
        else:
            if m.type_idx not in SIZED_TYPES:
                w.ue(count - 1)
            w.ue(width - 1)
            w.ue(height - 1)
        w.u(_step_bits(steps[m.step]), STEP_BITS)
    order = _value_order(layout)
    n_coords = layout.coordinates.size
    previous = None
    for frame in levels:
        values = frame[order]
        coded = values if previous is None else values - previous
        w.u(int(previous is not None), 1)                 # kps_pred_flag
        for v in coded[:n_coords].tolist():
            w.abs_sign(v)
        w.u(int(previous is not None), 1)                 # matrix_pred_flag
        for v in coded[n_coords:].tolist():
            w.abs_sign(v)
        previous = values
    w.align_payload()
    fields = w.to_bytes()
    return _CRC.pack(zlib.crc32(fields)) + fields


def read_face_features(payload: bytes, header: SessionHeader, expected_first: int) -> ParamSegment:
    """A face feature SEI payload as the PARAM_SEGMENT it came from (its levels re-coded)."""
    fmt = header.feature_format
    if len(payload) < _CRC.size or _CRC.unpack_from(payload)[0] != zlib.crc32(payload[_CRC.size:]):
        raise StreamError("corrupt face feature SEI (CRC mismatch)")
    r = BitReader(payload[_CRC.size:], "face feature SEI")
    format_id = r.u(8)
    if format_id != fmt.id:
        raise StreamError(f"face feature SEI names format {format_id}, the session header {fmt.id} ({fmt.name})")
    layout = FIELD_LAYOUTS.get(fmt.name)
    if layout is None:
        raise StreamError(f"face feature SEI in a stream of format {fmt.name} (its frames travel as coded bytes)")
    first_frame = r.ue()
    if first_frame != expected_first:
        raise StreamError(f"face feature SEI starts at frame {first_frame}, expected {expected_first} "
                          "(its frame range does not follow on)")
    num_frames = r.ue() + 1
    if num_frames > MAX_SEGMENT_FRAMES:
        raise StreamError(f"face feature SEI claims {num_frames} frames (at most {MAX_SEGMENT_FRAMES})")
    steps = _header_steps(header)
    num_kps = r.ue() + 1
    dims = 3 if r.u(1) else 2
    declared_steps = [r.u(STEP_BITS)]
    num_types = r.ue() + 1
    if num_types > 1 << MATRIX_TYPE_BITS:
        raise StreamError(f"face feature SEI declares {num_types} matrix types (at most {1 << MATRIX_TYPE_BITS})")
    matrices = []
    for _ in range(num_types):
        type_idx = r.u(MATRIX_TYPE_BITS)
        if type_idx in PER_KEYPOINT_TYPES:
            if not r.u(1):
                raise StreamError("face feature SEI: per-key-point matrices whose count is not the key points'")
            shape = (num_kps, dims, dims)
        else:
            count = 1 if type_idx in SIZED_TYPES else r.ue() + 1
            width, height = r.ue() + 1, r.ue() + 1
            shape = (count, height, width)
        if max(shape) > MAX_MATRIX_SIDE:
            raise StreamError(f"face feature SEI declares matrices of {shape} (at most {MAX_MATRIX_SIDE} a side)")
        matrices.append((type_idx, shape))
        declared_steps.append(r.u(STEP_BITS))
    if ((num_kps, dims), tuple(matrices)) != layout.describe():
        raise StreamError(f"face feature SEI declares {num_kps} key points of {dims} coordinates and matrices "
                          f"{matrices}; format {fmt.name} has {layout.describe()}")
    wanted_steps = [_step_bits(steps[layout.coordinate_step])] + [_step_bits(steps[m.step]) for m in layout.matrices]
    if declared_steps != wanted_steps:
        raise StreamError("face feature SEI's quantisation steps differ from the session header's")
    order = _value_order(layout)
    n_coords = layout.coordinates.size
    levels = np.zeros((num_frames, header.values_per_frame), np.int64)
    previous: np.ndarray | None = None
    for f in range(num_frames):
        coded = np.zeros(len(order), np.int64)
        for span in (slice(0, n_coords), slice(n_coords, len(order))):   # coordinates, then matrices
            predicted = r.u(1)
            if predicted and previous is None:
                raise StreamError(f"face feature SEI: frame {first_frame + f} is predicted, but there is no "
                                  "frame before it in the message")
            values = np.array([r.abs_sign() for _ in range(span.stop - span.start)], np.int64)
            coded[span] = values + (previous[span] if predicted and previous is not None else 0)
        if np.abs(coded).max(initial=0) > MAX_LEVEL:
            raise StreamError(f"face feature SEI: a level of frame {first_frame + f} is beyond the format's bound "
                              f"{MAX_LEVEL} (corrupt)")
        levels[f, order] = coded
        previous = coded
    r.end_payload()
    return ParamSegment(first_frame, num_frames, encode_segment(list(levels), header.values_per_frame))


# -- parameter segments as levels -------------------------------------------------------------

def decode_levels(segment: ParamSegment, values_per_frame: int) -> np.ndarray:
    """The levels of a PARAM_SEGMENT (frames x values_per_frame: SessionHeader.values_per_frame);
    a StreamError when they do not decode.  (Coded as the encoder codes them:
    codec_core.param_coding.encode_segment.)"""
    try:
        return np.array(decode_segment(segment, values_per_frame))
    except ParamDecodeError as exc:
        raise StreamError(f"parameter segment at frame {segment.first_frame}: {exc}") from None


# -- the native stream's parts ------------------------------------------------------------------

@dataclass(frozen=True)
class NativeParts:
    """A native stream file split into its records (raw payloads kept, for exactness)."""

    header_payload: bytes
    header: SessionHeader
    keyframe: Keyframe
    segments: tuple[ParamSegment, ...]
    eyes: EyeReference | None = None     # the EYE_REFERENCE record (version 5), when the stream has one


def split_native(stream: bytes) -> NativeParts:
    """The parts of a native stream file, checked as the decoder checks them."""
    records = read_records(stream)
    if not records or records[0][0] != RecordType.SESSION_HEADER:
        raise StreamError("stream does not start with a session header")
    header = SessionHeader.unpack(records[0][1])
    if len(records) > 1 and records[1][0] == RecordType.EYE_REFERENCE:
        raise StreamError(EYES_PLACE)
    if len(records) < 2 or records[1][0] != RecordType.KEYFRAME:
        raise StreamError("stream holds no key frame after its session header")
    keyframe = Keyframe.unpack(records[1][1])
    rest = records[2:]
    eyes = None
    if rest and rest[0][0] == RecordType.EYE_REFERENCE:
        eyes = EyeReference.unpack(rest[0][1]).belonging_to(keyframe.key_id)
        rest = rest[1:]
    segments: list[ParamSegment] = []
    expected = 0
    for kind, payload in rest:
        if kind == RecordType.EYE_REFERENCE:
            raise StreamError(EYES_PLACE)
        if kind != RecordType.PARAM_SEGMENT:
            raise StreamError(f"unexpected {kind.name} record in a stream file")
        seg = ParamSegment.unpack(payload)
        if seg.first_frame != expected:
            raise StreamError(f"parameter segment starts at frame {seg.first_frame}, expected {expected}")
        expected += seg.frame_count
        segments.append(seg)
    if expected != header.frame_count:
        raise StreamError(f"stream holds {expected} frames, header says {header.frame_count} (truncated?)")
    return NativeParts(records[0][1], header, keyframe, tuple(segments), eyes)


def join_native(parts: NativeParts) -> bytes:
    out = bytearray(write_file_start())
    out += write_record(RecordType.SESSION_HEADER, parts.header_payload)
    out += write_record(RecordType.KEYFRAME, parts.keyframe.pack())
    if parts.eyes is not None:
        out += write_record(RecordType.EYE_REFERENCE, parts.eyes.pack())
    for seg in parts.segments:
        out += write_record(RecordType.PARAM_SEGMENT, seg.pack())
    return bytes(out)


# -- the conversions ----------------------------------------------------------------------------

def _user_data(kind: int, data: bytes) -> SeiMessage:
    body = bytes([kind]) + data
    return SeiMessage(USER_DATA_UNREGISTERED, CONTAINER_UUID + _CRC.pack(zlib.crc32(body)) + body)


def _messages(parts: NativeParts) -> list[SeiMessage]:
    fmt = parts.header.feature_format
    key = parts.keyframe
    out = [_user_data(KIND_SESSION, bytes([STREAM_VERSION]) + parts.header_payload),
           _user_data(KIND_KEYFRAME, _KEY_HEAD.pack(key.key_id, key.codec, zlib.crc32(key.picture)) + key.geometry)]
    if parts.eyes is not None:
        out.append(_user_data(KIND_EYES, parts.eyes.pack()))
    layout = FIELD_LAYOUTS.get(fmt.name)
    for seg in parts.segments:
        if layout is None:
            out.append(_user_data(KIND_SEGMENT, seg.pack()))
            continue
        levels = decode_levels(seg, parts.header.values_per_frame)
        if encode_segment(list(levels), parts.header.values_per_frame) != seg.payload:
            raise StreamError(f"parameter segment at frame {seg.first_frame} is not coded as our encoder codes its "
                              "levels: it cannot travel as face feature SEI fields")
        out.append(SeiMessage(FACE_FEATURE_SEI, write_face_features(layout, parts.header, seg.first_frame, levels)))
    return out


def native_to_vvc(stream: bytes) -> bytes:
    """A native stream file as one Annex-B VVC bitstream (a `.266` file)."""
    parts = split_native(stream)
    picture = parts.keyframe.picture
    units = split_annexb(picture)
    first_vcl = next((u for u in units if u.nal_unit_type in VCL_TYPES or u.nal_unit_type == PH_NUT), None)
    if first_vcl is None:
        raise StreamError("the key frame's VVC picture holds no coded slice")
    seis = b"".join(b"\x00\x00\x00\x01" + sei_nal([m], first_vcl.layer_id) for m in _messages(parts))
    return picture[:first_vcl.start] + seis + picture[first_vcl.start:]


def _ours(message: SeiMessage) -> bool:
    """A face feature SEI, or user data with our UUID (user data of others, which the key
    frame's own bitstream may carry, is part of its picture)."""
    if message.payload_type == USER_DATA_UNREGISTERED:
        return message.payload[:len(CONTAINER_UUID)] == CONTAINER_UUID
    return message.payload_type == FACE_FEATURE_SEI


def vvc_to_native(data: bytes) -> bytes:
    """The native stream file that `native_to_vvc` made this VVC bitstream from."""
    picture = bytearray()
    messages: list[SeiMessage] = []
    seen_vcl = False
    for unit in split_annexb(data):
        kind = unit.nal_unit_type
        seen_vcl = seen_vcl or kind in VCL_TYPES
        if kind == PREFIX_SEI_NUT and not seen_vcl:
            found = read_sei_nal(unit.data)
            if any(_ours(m) for m in found):
                if not all(_ours(m) for m in found):
                    raise StreamError("an SEI NAL unit mixes our messages with others")
                messages.extend(found)
                continue
        picture += data[unit.start:unit.end]
    if not seen_vcl:
        raise StreamError("the VVC bitstream holds no coded picture")
    return join_native(_parts_of(messages, bytes(picture)))


def _user_payload(message: SeiMessage) -> tuple[int, bytes]:
    """(kind, data) of one of our user data SEI messages."""
    payload = message.payload
    n = len(CONTAINER_UUID)
    if len(payload) < n + _CRC.size + 1:
        raise StreamError(f"user data SEI of {len(payload)} bytes is truncated")
    if payload[:n] != CONTAINER_UUID:
        raise StreamError(f"user data SEI with unknown UUID {uuid.UUID(bytes=payload[:n])}")
    if _CRC.unpack_from(payload, n)[0] != zlib.crc32(payload[n + _CRC.size:]):
        raise StreamError("corrupt user data SEI (CRC mismatch)")
    kind = payload[n + _CRC.size]
    if kind not in KIND_NAMES:
        raise StreamError(f"our user data SEI has unknown kind {kind}")
    return kind, payload[n + _CRC.size + 1:]


def _parts_of(messages: list[SeiMessage], picture: bytes) -> NativeParts:
    if not messages or messages[0].payload_type != USER_DATA_UNREGISTERED \
            or _user_payload(messages[0])[0] != KIND_SESSION:
        raise StreamError("the VVC bitstream carries no session header SEI (not one of our streams, or corrupt)")
    data = _user_payload(messages[0])[1]
    if not data or data[0] != STREAM_VERSION:
        raise StreamError(f"the VVC bitstream carries a version-{data[0] if data else '?'} stream (this decoder "
                          f"reads version {STREAM_VERSION})")
    header = SessionHeader.unpack(data[1:])
    second = _user_payload(messages[1])[0] if len(messages) > 1 and \
        messages[1].payload_type == USER_DATA_UNREGISTERED else None
    if second == KIND_EYES:
        raise StreamError("an eye reference SEI before the key frame SEI (it must follow the key frame SEI)")
    if second != KIND_KEYFRAME:
        raise StreamError("the VVC bitstream carries no key frame SEI after its session header")
    key = _user_payload(messages[1])[1]
    if len(key) < _KEY_HEAD.size:
        raise StreamError("key frame SEI is truncated")
    key_id, codec, picture_crc = _KEY_HEAD.unpack_from(key)
    keyframe = Keyframe.unpack(struct.pack(">HBI", key_id, codec, len(picture)) + picture + key[_KEY_HEAD.size:])
    if zlib.crc32(picture) != picture_crc:
        raise StreamError("corrupt VVC key frame picture (its NAL units' CRC mismatch)")
    rest = messages[2:]
    eyes = None
    if rest and rest[0].payload_type == USER_DATA_UNREGISTERED and _user_payload(rest[0])[0] == KIND_EYES:
        eyes = EyeReference.unpack(_user_payload(rest[0])[1]).belonging_to(keyframe.key_id)
        rest = rest[1:]
    fields = header.feature_format.name in FIELD_LAYOUTS
    segments: list[ParamSegment] = []
    expected = 0
    for m in rest:
        if m.payload_type == FACE_FEATURE_SEI:
            seg = read_face_features(m.payload, header, expected)
        else:
            kind, body = _user_payload(m)
            if kind == KIND_EYES and segments:
                raise StreamError("an eye reference SEI after a parameter segment SEI (it must follow the key "
                                  "frame SEI)")
            if kind != KIND_SEGMENT:
                raise StreamError(f"a second {KIND_NAMES[kind]} SEI")
            if fields:
                raise StreamError(f"a stream of format {header.feature_format.name} carries its frames in face "
                                  "feature SEI, not as coded bytes")
            seg = ParamSegment.unpack(body)
            if seg.first_frame != expected:
                raise StreamError(f"parameter segment SEI starts at frame {seg.first_frame}, expected {expected} "
                                  "(its frame range does not follow on)")
        expected += seg.frame_count
        segments.append(seg)
    if expected != header.frame_count:
        raise StreamError(f"the VVC bitstream's SEI carry {expected} frames, its session header says "
                          f"{header.frame_count} (truncated?)")
    return NativeParts(data[1:], header, keyframe, tuple(segments), eyes)


def is_vvc(data: bytes) -> bool:
    """Whether `data` looks like an Annex-B bitstream (a start code first) rather than a native
    stream file (which starts with its magic)."""
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
