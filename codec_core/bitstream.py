"""The stream syntax: records that carry the session header, key frames and parameters.

A file is the magic ``FCVC``, a version byte, then records::

    type u8 | length u32 (big-endian, payload bytes) | payload | crc32 u32 of type+length+payload

The same record payloads travel on the data channels of a live call (without the file
magic and CRC; see docs/bitstream.md for the full tables).  Everything here is pure
parsing and writing: truncated, corrupt or foreign input, values past the bounds of
`codec_core.format` (picture sides, frame rate, intra interval, frames per segment, picture
and geometry bytes), and a session header whose feature format, value count or step count
does not agree with `format.FEATURE_FORMATS`, raise `StreamError` with a message that says
what is wrong, before anything is allocated for them.

Version 5 adds the optional EYE_REFERENCE record after the key frame (`EyeReference`);
version 6 gives its picture a third square, the caller's open mouth (`present` bit 2).
Version 3: every frame's values are the format's, then the global-motion group
(`format.GLOBAL_MOTION_NAMES`) with the session header's one `global_step`;
`SessionHeader.values_per_frame` is how many levels a coded frame holds.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from codec_core.format import (
    FORMAT_BY_ID,
    GLOBAL_MOTION_COUNT,
    KEYFRAME_CODEC_VVC,
    MAGIC,
    MAX_EYE_OPENNESS,
    MAX_FPS,
    MAX_GEOMETRY_BYTES,
    MAX_INTRA_INTERVAL,
    MAX_PICTURE_BYTES,
    MAX_RECORD,
    MAX_SEGMENT_FRAMES,
    MAX_STEP,
    MIN_FPS,
    SIDES,
    STREAM_VERSION,
    FeatureFormat,
)

_RECORD_HEAD = struct.Struct(">BI")
_CRC = struct.Struct(">I")


class StreamError(Exception):
    """The input is not a valid stream."""


class RecordType(IntEnum):
    SESSION_HEADER = 1
    KEYFRAME = 2
    PARAM_SEGMENT = 3
    PARAM_PACKET = 4
    EYE_REFERENCE = 5


@dataclass(frozen=True)
class SessionHeader:
    """What a receiver must know before anything else."""

    format: int              # a feature format id (format.FORMAT_BY_ID)
    width: int
    height: int
    fps_num: int
    fps_den: int
    frame_count: int         # 0 for a live session
    basis_version: str       # face basis asset, e.g. "v1"
    num_params: int          # the format's values per frame (its count), without the global motion
    intra_interval: int
    steps: tuple[float, ...]  # in the format's step_names order (its geometry step last)
    global_step: float       # the step of the four global-motion values of every frame

    _FIXED = struct.Struct(">BHHHHIBH")

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    @property
    def feature_format(self) -> FeatureFormat:
        """The stream's feature format (a header that unpacked names a known one)."""
        return FORMAT_BY_ID[self.format]

    @property
    def geometry_step(self) -> float:
        """The key frame's reference geometry step: the last of every format's steps."""
        return self.steps[-1]

    @property
    def values_per_frame(self) -> int:
        """Levels of one coded frame: the format's values, then the global-motion group."""
        return self.num_params + GLOBAL_MOTION_COUNT

    def pack(self) -> bytes:
        version = self.basis_version.encode("ascii")
        return (self._FIXED.pack(self.format, self.width, self.height, self.fps_num, self.fps_den,
                                 self.frame_count, self.num_params, self.intra_interval)
                + bytes([len(version)]) + version + bytes([len(self.steps)])
                + struct.pack(f">{len(self.steps)}f", *self.steps) + struct.pack(">f", self.global_step))

    @classmethod
    def unpack(cls, data: bytes) -> SessionHeader:
        n = cls._FIXED.size
        if len(data) < n + 1:
            raise StreamError("session header is truncated")
        fmt, w, h, fn, fd, count, nparams, intra = cls._FIXED.unpack_from(data)
        feature_format = FORMAT_BY_ID.get(fmt)
        if feature_format is None:
            raise StreamError(f"session header names unknown feature format {fmt} (known: "
                              + ", ".join(f"{f.id} {f.name}" for f in FORMAT_BY_ID.values()) + ")")
        vlen = data[n]
        steps_at = n + 1 + vlen + 1
        if len(data) < steps_at:
            raise StreamError("session header is truncated")
        num_steps = data[steps_at - 1]
        if num_steps != len(feature_format.step_names):
            raise StreamError(f"session header has {num_steps} quantisation steps; format "
                              f"{feature_format.name} has {len(feature_format.step_names)}")
        end = steps_at + 4 * num_steps + 4      # the steps, then global_step
        if len(data) != end:
            raise StreamError(f"session header has {len(data)} bytes, expected {end}")
        try:
            version = data[n + 1:n + 1 + vlen].decode("ascii")
        except UnicodeDecodeError:
            raise StreamError("session header: basis version is not ASCII") from None
        steps = struct.unpack_from(f">{num_steps}f", data, steps_at)
        (global_step,) = struct.unpack_from(">f", data, end - 4)
        if w != h or w not in SIDES:
            raise StreamError(f"session header: the picture is {w}x{h}; only square "
                              f"{' or '.join(map(str, SIDES))} pictures are allowed")
        if fn == 0 or fd == 0 or not MIN_FPS <= fn / fd <= MAX_FPS:
            raise StreamError(f"session header: frame rate {fn}/{fd} is outside {MIN_FPS}..{MAX_FPS} fps")
        if not 1 <= intra <= MAX_INTRA_INTERVAL:
            raise StreamError(f"session header: intra interval {intra} is outside 1..{MAX_INTRA_INTERVAL}")
        if nparams != feature_format.count:
            raise StreamError(f"session header has {nparams} values per frame; format {feature_format.name} "
                              f"has {feature_format.count}")
        if not all(0 < s < MAX_STEP for s in steps):
            raise StreamError("session header holds invalid quantisation steps")
        if not 0 < global_step < MAX_STEP:
            raise StreamError(f"session header holds an invalid global step ({global_step:g}; it must lie in "
                              f"(0, {MAX_STEP:g}))")
        return cls(fmt, w, h, fn, fd, count, version, nparams, intra, tuple(float(s) for s in steps),
                   float(global_step))


@dataclass(frozen=True)
class Keyframe:
    """The VVC picture plus the reference geometry (an arithmetic codeword)."""

    key_id: int
    codec: int
    picture: bytes
    geometry: bytes

    _FIXED = struct.Struct(">HBI")

    def pack(self) -> bytes:
        return self._FIXED.pack(self.key_id, self.codec, len(self.picture)) + self.picture + self.geometry

    @property
    def packed_size(self) -> int:
        """len(self.pack()), without packing it."""
        return self._FIXED.size + len(self.picture) + len(self.geometry)

    @classmethod
    def unpack(cls, data: bytes) -> Keyframe:
        n = cls._FIXED.size
        if len(data) < n:
            raise StreamError("key frame record is truncated")
        key_id, codec, plen = cls._FIXED.unpack_from(data)
        if codec != KEYFRAME_CODEC_VVC:
            raise StreamError(f"unknown key frame codec {codec}")
        if plen > MAX_PICTURE_BYTES:
            raise StreamError(f"key frame picture of {plen} bytes is too large (at most {MAX_PICTURE_BYTES})")
        if n + plen > len(data):
            raise StreamError("key frame picture is truncated")
        if len(data) - n - plen > MAX_GEOMETRY_BYTES:
            raise StreamError(f"key frame geometry of {len(data) - n - plen} bytes is too large "
                              f"(at most {MAX_GEOMETRY_BYTES})")
        return cls(key_id, codec, data[n:n + plen], data[n + plen:])


EYES_PLACE = "an eye reference must follow the key frame, once, before the parameters"


@dataclass(frozen=True)
class EyeReference:
    """The caller's shut eyes (version 5): one VVC picture of each eye's patch as it looked
    when most shut, side by side (right eye, then left eye, mirrored), and each eye's decoded
    openness value at that moment; `present` bit 0 the right eye, bit 1 the left (an eye
    that never shut has none).  Since version 6 the picture's third square holds the inside
    of the mouth when it was widest open, as two strips (models/mouth_reference.py), and
    `present` bit 2 says it is there (a mouth that never opened has none).  It belongs to the key frame `key_id`."""

    key_id: int
    codec: int
    present: int
    openness: tuple[float, float]       # (right, left): the decoded values (format I_EYE_R, I_EYE_L)
    picture: bytes

    _FIXED = struct.Struct(">HBBffI")

    def belonging_to(self, key_id: int) -> EyeReference:
        """This record, checked to be key frame `key_id`'s (StreamError when it is another's)."""
        if self.key_id != key_id:
            raise StreamError(f"the eye reference belongs to key frame {self.key_id}, the stream's is {key_id}")
        return self

    def has(self, eye: int) -> bool:
        """Whether eye 0 (right) or 1 (left), or the mouth (2), has a patch."""
        return bool(self.present >> eye & 1)

    def pack(self) -> bytes:
        return self._FIXED.pack(self.key_id, self.codec, self.present, *self.openness, len(self.picture)) + self.picture

    @classmethod
    def unpack(cls, data: bytes) -> EyeReference:
        n = cls._FIXED.size
        if len(data) < n:
            raise StreamError("eye reference record is truncated")
        key_id, codec, present, right, left, plen = cls._FIXED.unpack_from(data)
        if codec != KEYFRAME_CODEC_VVC:
            raise StreamError(f"unknown eye reference codec {codec}")
        if present == 0 or present & ~7:
            raise StreamError(f"eye reference names patches {present:#x} (bit 0 right eye, bit 1 left eye, bit 2 "
                              f"mouth, at least one)")
        if not all(abs(v) <= MAX_EYE_OPENNESS for v in (right, left)):      # (NaN fails too)
            raise StreamError(f"eye reference openness ({right:g}, {left:g}) is outside +-{MAX_EYE_OPENNESS:g}")
        if plen > MAX_PICTURE_BYTES:
            raise StreamError(f"eye reference picture of {plen} bytes is too large (at most {MAX_PICTURE_BYTES})")
        if n + plen != len(data):
            raise StreamError(f"eye reference holds {len(data) - n} picture bytes, its length says {plen}")
        return cls(key_id, codec, present, (float(right), float(left)), data[n:])


@dataclass(frozen=True)
class ParamSegment:
    """Frames first_frame .. first_frame+frame_count-1 as one codeword; the first is intra."""

    first_frame: int
    frame_count: int
    payload: bytes

    _FIXED = struct.Struct(">IH")

    def pack(self) -> bytes:
        return self._FIXED.pack(self.first_frame, self.frame_count) + self.payload

    @classmethod
    def unpack(cls, data: bytes) -> ParamSegment:
        if len(data) < cls._FIXED.size:
            raise StreamError("parameter segment is truncated")
        first, count = cls._FIXED.unpack_from(data)
        if count == 0:
            raise StreamError("parameter segment holds no frames")
        if count > MAX_SEGMENT_FRAMES:
            raise StreamError(f"parameter segment claims {count} frames (at most {MAX_SEGMENT_FRAMES})")
        return cls(first, count, data[cls._FIXED.size:])


@dataclass(frozen=True)
class ParamPacket:
    """One frame's parameters on the live channel (its own terminated codeword)."""

    frame: int               # frame number, wraps at 2**16
    capture_ms: int          # sender clock, milliseconds, wraps at 2**32
    key_id: int              # the key frame these parameters animate (low 8 bits)
    intra: bool
    payload: bytes

    _FIXED = struct.Struct(">HIBB")

    def pack(self) -> bytes:
        return self._FIXED.pack(self.frame & 0xFFFF, self.capture_ms & 0xFFFFFFFF, self.key_id & 0xFF,
                                int(self.intra)) + self.payload

    @classmethod
    def unpack(cls, data: bytes) -> ParamPacket:
        if len(data) < cls._FIXED.size:
            raise StreamError("parameter packet is truncated")
        frame, ms, key, flags = cls._FIXED.unpack_from(data)
        if flags & ~1:
            raise StreamError("parameter packet has unknown flags")
        return cls(frame, ms, key, bool(flags & 1), data[cls._FIXED.size:])


def write_record(rtype: RecordType, payload: bytes) -> bytes:
    head = _RECORD_HEAD.pack(int(rtype), len(payload))
    return head + payload + _CRC.pack(zlib.crc32(head + payload))


def write_file_start() -> bytes:
    return MAGIC + bytes([STREAM_VERSION])


def read_records(data: bytes) -> list[tuple[RecordType, bytes]]:
    """All records of a stream file, checked (magic, version, lengths, CRCs)."""
    if len(data) < len(MAGIC) + 1 or data[:len(MAGIC)] != MAGIC:
        raise StreamError("not a face-call stream (bad magic)")
    if data[len(MAGIC)] != STREAM_VERSION:
        raise StreamError(f"unsupported stream version {data[len(MAGIC)]} (this decoder reads version "
                          f"{STREAM_VERSION})")
    pos, out = len(MAGIC) + 1, []
    while pos < len(data):
        if pos + _RECORD_HEAD.size > len(data):
            raise StreamError(f"truncated record header at byte {pos}")
        rtype, length = _RECORD_HEAD.unpack_from(data, pos)
        end = pos + _RECORD_HEAD.size + length
        if length > MAX_RECORD or end + _CRC.size > len(data):
            raise StreamError(f"truncated record at byte {pos}")
        (crc,) = _CRC.unpack_from(data, end)
        if crc != zlib.crc32(data[pos:end]):
            raise StreamError(f"corrupt record at byte {pos} (CRC mismatch)")
        try:
            kind = RecordType(rtype)
        except ValueError:
            raise StreamError(f"unknown record type {rtype} at byte {pos}") from None
        out.append((kind, data[pos + _RECORD_HEAD.size:end]))
        pos = end + _CRC.size
    return out
