"""What travels on a live call's data channels (the tables are in docs/wire.md).

Four negotiated data channels (fixed SCTP stream ids, created by both ends before the
offer/answer, so neither waits for the other to announce them):

| label     | id | delivery                      | payload |
|-----------|----|-------------------------------|---------|
| `stream`  | 0  | reliable, ordered | binary: type byte + SESSION_HEADER, KEYFRAME(_PIECE), EYE_REFERENCE |
| `params`  | 1  | unreliable (0 retransmits), unordered | binary: one PARAM_PACKET payload |
| `control` | 2  | reliable, ordered             | text: one JSON object with a "type" |
| `feedback`| 3  | unreliable (0 retransmits), unordered | text: a `loss` control message (repeated while it holds) |

Channels are two-way: on a two-way call each end's sender half writes `stream` and
`params` and reads `control` and `feedback`; its receiver half does the opposite.  Loss
reports go on `feedback`: on the reliable `control` channel one lost report would hold back
every later one until SCTP retransmits it (a second or more), while a report that is lost
on `feedback` is simply followed by the next (they repeat every 100 ms while the chain is
broken).  A control message's
type says which half it is for.  The control messages are msgspec structs that declare
their fields' types and limits.  Everything here is pure: bad input raises `WireError`
(or `StreamError` from the record parsers) with a one-line reason.

Key frames travel in pieces (`KEYFRAME_PIECE`, wire version 2): a KEYFRAME payload cut into
pieces of at most `PIECE_MAX_BYTES`, each its own `stream` message, so that the sender can
pace them and parameter packets and the voice pass between them (sender.pacing).
`PieceAssembler` puts them back together, all or nothing, within bounds.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Annotated

import msgspec

from codec_core.bitstream import EyeReference, Keyframe, RecordType, SessionHeader, StreamError
from codec_core.format import MAX_GEOMETRY_BYTES, MAX_PICTURE_BYTES
from signaling.schema import Message, Refused, Schema

#: The version of this wire (docs/wire.md).  2: key frames in KEYFRAME_PIECE messages.
#: 3: the session header and parameter packets of stream version 3 (the global-motion group).
#: 4: those of stream version 4 (fomm's key points redefined; the same syntax).
#: 5: stream version 5's EYE_REFERENCE record on `stream` (the caller's shut eyes, sent
#: `SETTLE` frames after an eye's most shut moment, docs/call.md); the header, key frames and packets are version 4's.
#: 6: stream version 6's EYE_REFERENCE (its third square: the caller's open mouth).
WIRE_VERSION = 6


class WireError(ValueError):
    """A data-channel message that does not follow docs/wire.md."""


@dataclass(frozen=True)
class ChannelSpec:
    label: str
    id: int
    ordered: bool
    max_retransmits: int | None   # None: reliable


STREAM = ChannelSpec("stream", 0, ordered=True, max_retransmits=None)
PARAMS = ChannelSpec("params", 1, ordered=False, max_retransmits=0)
CONTROL = ChannelSpec("control", 2, ordered=True, max_retransmits=None)
FEEDBACK = ChannelSpec("feedback", 3, ordered=False, max_retransmits=0)
CHANNELS = (STREAM, PARAMS, CONTROL, FEEDBACK)

STREAM_RECORDS = (RecordType.SESSION_HEADER, RecordType.KEYFRAME, RecordType.EYE_REFERENCE)


# -- stream channel: session header and key frames ---------------------------------------

#: The `stream` record type of a key frame piece: a live-wire record, never in stream files
#: (whose record types are codec_core.bitstream.RecordType, all below 128).
KEYFRAME_PIECE = 128
#: A piece carries at most this many bytes of its KEYFRAME payload ...
PIECE_MAX_BYTES = 1024
#: ... and every piece but the last at least this many.
PIECE_MIN_BYTES = 256
#: The longest KEYFRAME payload: its fixed fields, the largest picture and geometry.
MAX_KEYFRAME_BYTES = Keyframe._FIXED.size + MAX_PICTURE_BYTES + MAX_GEOMETRY_BYTES
#: The most pieces one key frame may come in (all but the last at least PIECE_MIN_BYTES).
MAX_PIECES = math.ceil(MAX_KEYFRAME_BYTES / PIECE_MIN_BYTES)
_PIECE = struct.Struct(">BHHH")       # record type, key_id, index, count


@dataclass(frozen=True)
class KeyframePiece:
    """Piece `index` (0-based) of `count` of the KEYFRAME payload of key frame `key_id`."""

    key_id: int
    index: int
    count: int
    data: bytes

    def pack(self) -> bytes:
        return _PIECE.pack(KEYFRAME_PIECE, self.key_id, self.index, self.count) + self.data

    @classmethod
    def unpack(cls, data: bytes) -> KeyframePiece:
        """A KEYFRAME_PIECE message (with its type byte); StreamError when it breaks a bound."""
        if len(data) < _PIECE.size + 1:
            raise StreamError("key frame piece is truncated")
        kind, key_id, index, count = _PIECE.unpack_from(data)
        if kind != KEYFRAME_PIECE:
            raise StreamError(f"record type {kind} is not a key frame piece")
        body = bytes(data[_PIECE.size:])
        if not 1 <= count <= MAX_PIECES:
            raise StreamError(f"key frame {key_id} in {count} pieces (1..{MAX_PIECES} allowed)")
        if index >= count:
            raise StreamError(f"key frame {key_id}: piece {index} of {count} is out of range")
        if len(body) > PIECE_MAX_BYTES:
            raise StreamError(f"key frame {key_id}: piece of {len(body)} bytes (at most {PIECE_MAX_BYTES})")
        if index < count - 1 and len(body) < PIECE_MIN_BYTES:
            raise StreamError(f"key frame {key_id}: piece {index} of {count} has {len(body)} bytes "
                              f"(all but the last at least {PIECE_MIN_BYTES})")
        return cls(key_id, index, count, body)


def split_keyframe(record: Keyframe, piece_bytes: int) -> list[bytes]:
    """The `stream` messages of `record` in pieces of `piece_bytes` (the last one shorter)."""
    if not PIECE_MIN_BYTES <= piece_bytes <= PIECE_MAX_BYTES:
        raise ValueError(f"key frame pieces of {piece_bytes} bytes: expected {PIECE_MIN_BYTES}..{PIECE_MAX_BYTES}")
    payload = record.pack()
    count = max(1, math.ceil(len(payload) / piece_bytes))
    return [KeyframePiece(record.key_id, i, count, payload[i * piece_bytes:(i + 1) * piece_bytes]).pack()
            for i in range(count)]


_RECORD_TYPES = {SessionHeader: RecordType.SESSION_HEADER, Keyframe: RecordType.KEYFRAME,
                 EyeReference: RecordType.EYE_REFERENCE}


def pack_stream_record(record: SessionHeader | Keyframe | EyeReference) -> bytes:
    return bytes([int(_RECORD_TYPES[type(record)])]) + record.pack()


def unpack_stream_record(data: bytes) -> SessionHeader | Keyframe | EyeReference | KeyframePiece:
    """A `stream` message as its record (a piece as it came); raises StreamError for anything else."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise StreamError("stream message is empty or not binary")
    kind, payload = data[0], bytes(data[1:])
    if kind == RecordType.SESSION_HEADER:
        return SessionHeader.unpack(payload)
    if kind == RecordType.KEYFRAME:
        return Keyframe.unpack(payload)
    if kind == RecordType.EYE_REFERENCE:
        return EyeReference.unpack(payload)
    if kind == KEYFRAME_PIECE:
        return KeyframePiece.unpack(bytes(data))
    raise StreamError(f"record type {kind} is not allowed on the stream channel")


class PieceAssembler:
    """Key frame pieces back into key frames, all or nothing (no clock of its own: callers
    pass `now` in seconds).

    The `stream` channel is ordered and reliable, so the pieces of a key frame come one
    after the other, index 0 first.  Index 0 starts a key frame (one still partial is
    discarded: the sender gave up on it, a newer key frame follows); any other piece must
    be the next one of the partial key frame (same key id and count), else it is refused
    (a duplicate: the partial stays; a gap or another key frame: the partial is discarded
    too).  A partial key frame whose last piece came more than `timeout` seconds ago, and
    one that would grow past MAX_KEYFRAME_BYTES, is discarded.  Refusals raise StreamError
    (one line); `discarded` says why the last partial one was given up, for the log."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._key: tuple[int, int] | None = None     # (key_id, count) of the partial key frame
        self._parts: list[bytes] = []
        self._size = 0
        self._last = 0.0
        self.discarded: str | None = None
        self.completed = 0
        self.pieces = 0

    @property
    def partial(self) -> bool:
        return self._key is not None

    def discard(self, why: str) -> bool:
        """Give up the partial key frame (True if there was one)."""
        had = self._key is not None
        if had:
            assert self._key is not None
            key, count = self._key
            self.discarded = f"key frame {key} discarded after {len(self._parts)} of {count} pieces: {why}"
        self._key, self._parts, self._size = None, [], 0
        return had

    def expire(self, now: float) -> bool:
        """Discard a partial key frame that has waited too long for its next piece."""
        if self._key is not None and now - self._last > self.timeout:
            return self.discard(f"no piece for {self.timeout:g} s")
        return False

    def add(self, piece: KeyframePiece, now: float) -> Keyframe | None:
        """The key frame once `piece` completes it; None while pieces are missing."""
        self.expire(now)
        if piece.index == 0:
            self.discard(f"key frame {piece.key_id} started")
            self._key = (piece.key_id, piece.count)
        elif self._key is None:
            raise StreamError(f"key frame {piece.key_id}: piece {piece.index} of {piece.count} without its first")
        elif self._key != (piece.key_id, piece.count):
            self.discard(f"a piece of key frame {piece.key_id} came")
            raise StreamError(f"key frame {piece.key_id}: piece {piece.index} of {piece.count} without its first")
        elif piece.index < len(self._parts):
            raise StreamError(f"key frame {piece.key_id}: piece {piece.index} of {piece.count} came twice")
        elif piece.index > len(self._parts):
            expected = len(self._parts)
            self.discard(f"piece {expected} is missing")
            raise StreamError(f"key frame {piece.key_id}: piece {piece.index} of {piece.count} came before "
                              f"piece {expected}")
        if self._size + len(piece.data) > MAX_KEYFRAME_BYTES:
            self.discard("too large")
            raise StreamError(f"key frame {piece.key_id} is larger than {MAX_KEYFRAME_BYTES} bytes")
        self._parts.append(piece.data)
        self._size += len(piece.data)
        self._last = now
        self.pieces += 1
        if len(self._parts) < piece.count:
            return None
        payload = b"".join(self._parts)
        self._key, self._parts, self._size = None, [], 0
        record = Keyframe.unpack(payload)
        if record.key_id != piece.key_id:
            raise StreamError(f"key frame pieces of key {piece.key_id} hold key frame {record.key_id}")
        self.completed += 1
        return record


# -- control channel: JSON messages ------------------------------------------------------
#
# The schema of the control messages: every field's type and limits are declared in the
# classes below; `parse_control` validates one message against them in one call
# (`signaling.schema`) and words whatever it refuses as a WireError.

#: The longest control message, in characters of JSON text.
MAX_CONTROL_BYTES = 4096
#: A frame number as the wire carries it (mod 2**16).
Frame = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
#: The low 8 bits of a key frame's id.
KeyId = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]


class KeyframeRequest(Message, tag="keyframe-request", frozen=True):
    """Receiver to sender: send the session header and the current key frame again."""


class Loss(Message, tag="loss", frozen=True):
    """Receiver to sender: frame `frame` (mod 2**16) is missing or its chain is broken;
    code the next parameter packet intra unless one after `frame` went out already."""

    frame: Frame


class End(Message, tag="end", frozen=True):
    """Sender to receiver: the stream is over; `frame` (mod 2**16) was its last frame,
    or None when no frame went out."""

    frame: Frame | None


class Ready(Message, tag="ready", frozen=True):
    """Receiver to sender: key frame `key_id` (low 8 bits) is decoded and synthesis is set
    up.  A file sender waits for it (a few seconds at most) before it starts playing."""

    key_id: KeyId


#: An audio RTP timestamp (48 kHz ticks, mod 2**32).
AudioPts = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
#: Wall-clock milliseconds (Unix epoch), as a float.
WallMs = Annotated[float, msgspec.Meta(ge=0.0, le=1e14)]


class AudioClock(Message, tag="audio-clock", frozen=True):
    """Sender to receiver: the decoded audio sample at `pts` (48 kHz ticks counted from the
    first packet of this session's audio track, i.e. the receiver's frame pts) was captured
    at wall-clock `wall_ms` of the sender.  Sent with the first audio packet and every
    second after (docs/call.md, "Lips in sync")."""

    pts: AudioPts
    wall_ms: WallMs


class Muted(Message, tag="muted", frozen=True):
    """Sender to receiver: the sender's microphone is muted (True) or live again (False)."""

    muted: bool


ControlMessage = KeyframeRequest | Loss | Ready | End | AudioClock | Muted
FOR_SENDER = (KeyframeRequest, Loss, Ready)
FOR_RECEIVER = (End, AudioClock, Muted)

_CONTROL: Schema[ControlMessage] = Schema(ControlMessage)
_ENCODER = msgspec.json.Encoder()


def encode_control(message: ControlMessage) -> str:
    """The JSON text of one control message (compact, as on the wire)."""
    return _ENCODER.encode(message).decode()


def parse_control(data: str | bytes) -> ControlMessage:
    """One `control` message; raises WireError when it is not one we know."""
    if not isinstance(data, str):
        raise WireError("control messages are JSON text, got binary")
    if len(data) > MAX_CONTROL_BYTES:
        raise WireError(f"control message of {len(data)} characters is too long (at most {MAX_CONTROL_BYTES})")
    try:
        return _CONTROL.decode(data)
    except Refused as exc:
        raise WireError(f"control message refused: {exc}") from None
