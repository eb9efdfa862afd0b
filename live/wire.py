"""What travels on a live call's data channels (the tables are in docs/wire.md).

Three negotiated data channels (fixed SCTP stream ids, created by both ends before the
offer/answer, so neither waits for the other to announce them):

| label     | id | delivery                      | payload |
|-----------|----|-------------------------------|---------|
| `stream`  | 0  | reliable, ordered             | binary: record type byte + SESSION_HEADER / KEYFRAME payload |
| `params`  | 1  | unreliable (0 retransmits), unordered | binary: one PARAM_PACKET payload |
| `control` | 2  | reliable, ordered             | text: one JSON object with a "type" |

Channels are two-way: on a two-way call each end's sender half writes `stream` and
`params` and reads `control`; its receiver half does the opposite.  A control message's
type says which half it is for.  Everything here is pure: bad input raises `WireError`
(or `StreamError` from the record parsers) with a one-line reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar, Union

from codec_core.bitstream import Keyframe, RecordType, SessionHeader, StreamError


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
CHANNELS = (STREAM, PARAMS, CONTROL)

MAX_CONTROL_BYTES = 4096
STREAM_RECORDS = (RecordType.SESSION_HEADER, RecordType.KEYFRAME)


# -- stream channel: session header and key frames ---------------------------------------

def pack_stream_record(record: SessionHeader | Keyframe) -> bytes:
    rtype = RecordType.SESSION_HEADER if isinstance(record, SessionHeader) else RecordType.KEYFRAME
    return bytes([int(rtype)]) + record.pack()


def unpack_stream_record(data: bytes) -> SessionHeader | Keyframe:
    """A `stream` message as its record; raises StreamError for anything else."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise StreamError("stream message is empty or not binary")
    kind, payload = data[0], bytes(data[1:])
    if kind == RecordType.SESSION_HEADER:
        return SessionHeader.unpack(payload)
    if kind == RecordType.KEYFRAME:
        return Keyframe.unpack(payload)
    raise StreamError(f"record type {kind} is not allowed on the stream channel")


# -- control channel: JSON messages ------------------------------------------------------

@dataclass(frozen=True)
class KeyframeRequest:
    """Receiver to sender: send the session header and the current key frame again."""

    type: ClassVar[str] = "keyframe-request"

    def to_dict(self) -> dict:
        return {"type": self.type}


@dataclass(frozen=True)
class Loss:
    """Receiver to sender: frame `frame` (mod 2**16) is missing or its chain is broken;
    code the next parameter packet intra unless one after `frame` went out already."""

    frame: int
    type: ClassVar[str] = "loss"

    def to_dict(self) -> dict:
        return {"type": self.type, "frame": self.frame}


@dataclass(frozen=True)
class End:
    """Sender to receiver: the stream is over; `frame` (mod 2**16) was its last frame,
    or None when no frame went out."""

    frame: int | None
    type: ClassVar[str] = "end"

    def to_dict(self) -> dict:
        return {"type": self.type, "frame": self.frame}


@dataclass(frozen=True)
class Ready:
    """Receiver to sender: key frame `key_id` (low 8 bits) is decoded and synthesis is set
    up.  A file sender waits for it (a few seconds at most) before it starts playing."""

    key_id: int
    type: ClassVar[str] = "ready"

    def to_dict(self) -> dict:
        return {"type": self.type, "key_id": self.key_id}


ControlMessage = Union[KeyframeRequest, Loss, Ready, End]
FOR_SENDER = (KeyframeRequest, Loss, Ready)
FOR_RECEIVER = (End,)


def encode_control(message: ControlMessage) -> str:
    return json.dumps(message.to_dict(), separators=(",", ":"))


def _frame_field(obj: dict, nullable: bool) -> int | None:
    if "frame" not in obj:
        raise WireError(f"'{obj['type']}' message has no 'frame'")
    value = obj["frame"]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise WireError(f"'frame' must be an integer 0..65535, got {value!r:.40}")
    return value


def parse_control(data: str | bytes) -> ControlMessage:
    """One `control` message; raises WireError when it is not one we know."""
    if not isinstance(data, str):
        raise WireError("control messages are JSON text, got binary")
    if len(data) > MAX_CONTROL_BYTES:
        raise WireError(f"control message of {len(data)} characters is too long")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"control message is not JSON ({exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise WireError("control message is not a JSON object with a string 'type'")
    kind = obj["type"]
    allowed = {"keyframe-request": {"type"}, "loss": {"type", "frame"}, "ready": {"type", "key_id"},
               "end": {"type", "frame"}}
    if kind not in allowed:
        raise WireError(f"unknown control message type {kind[:40]!r}")
    extra = set(obj) - allowed[kind]
    if extra:
        raise WireError(f"'{kind}' message has unexpected field(s) {', '.join(sorted(extra))}")
    if kind == "keyframe-request":
        return KeyframeRequest()
    if kind == "loss":
        return Loss(_frame_field(obj, nullable=False))
    if kind == "ready":
        key = obj.get("key_id")
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 256:
            raise WireError(f"'key_id' must be an integer 0..255, got {key!r:.40}")
        return Ready(key)
    return End(_frame_field(obj, nullable=True))
