"""What travels on a live call's data channels (the tables are in docs/wire.md).

Four negotiated data channels (fixed SCTP stream ids, created by both ends before the
offer/answer, so neither waits for the other to announce them):

| label     | id | delivery                      | payload |
|-----------|----|-------------------------------|---------|
| `stream`  | 0  | reliable, ordered             | binary: record type byte + SESSION_HEADER / KEYFRAME payload |
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

from codec_core.bitstream import Keyframe, RecordType, SessionHeader, StreamError
from signaling.schema import Message, Refused, Schema


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
