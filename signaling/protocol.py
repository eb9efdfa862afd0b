"""JSON message syntax of the signaling protocol: the schema of every message, with its limits.

Every message is one websocket *text* frame holding one JSON object with a
``"type"`` field. Each message is a frozen ``msgspec.Struct`` below (a
:class:`signaling.schema.Message`) that declares its fields, their types and limits;
parsing validates a frame against the union of the messages one side may send in one
call and raises :class:`ProtocolError` saying precisely what is wrong. It does no I/O;
both the server and Python clients use it.

Client to server::

    {"type": "join", "room": NAME}               NAME: 1-64 chars of [A-Za-z0-9_.-]
    {"type": "offer", "sdp": STR}                relayed to the other peer
    {"type": "answer", "sdp": STR}               relayed to the other peer
    {"type": "candidate", "candidate": {...}|null}  relayed to the other peer
    {"type": "bye"}                              relayed to the other peer

Server to client::

    {"type": "joined", "room": NAME, "peers": 1|2, "initiator": BOOL}
    {"type": "peer-joined"}
    {"type": "peer-left"}
    {"type": "error", "code": CODE, "message": STR}
    ... and the relayed offer / answer / candidate / bye, unchanged.

Objects may not carry fields other than the ones listed for their type, so a
relayed message is exactly what its sender wrote (re-serialised canonically).
The ``candidate`` object is free-form (it is the browser's
``RTCIceCandidate.toJSON()``): its well-known fields are type-checked, the others
pass through and may hold strings, numbers, booleans or null. The size of a frame
is the server's limit (``ServerConfig.max_message_bytes``), enforced by websockets
before a frame is read. See ``docs/signaling.md`` for the full description.
"""

from __future__ import annotations

import re
from enum import Enum, StrEnum
from typing import Annotated, TypeVar

import msgspec

from . import schema

__all__ = [
    "ROOM_PATTERN",
    "ROOM_CAPACITY",
    "Room",
    "ProtocolError",
    "ErrorCode",
    "IceCandidateInit",
    "Join",
    "Offer",
    "Answer",
    "Candidate",
    "Bye",
    "Joined",
    "PeerJoined",
    "PeerLeft",
    "Error",
    "ClientMessage",
    "RelayMessage",
    "ServerMessage",
    "Message",
    "parse_client_message",
    "parse_server_message",
    "encode",
]

_ROOM_REGEX = r"[A-Za-z0-9_.-]{1,64}"
#: Room names: 1 to 64 characters out of letters, digits, ``_``, ``.``, ``-`` (use ``fullmatch``).
ROOM_PATTERN = re.compile(_ROOM_REGEX)
#: A room name as a field type (``\A``/``\Z``: ``$`` would let a trailing newline through).
Room = Annotated[str, msgspec.Meta(pattern=rf"\A{_ROOM_REGEX}\Z")]
_ROOM_RULE = "invalid room name: use 1-64 characters of letters, digits, '_', '.', '-'"

#: A call has two ends.
ROOM_CAPACITY = 2


class ErrorCode(StrEnum):
    """The ``code`` of a server ``error`` message."""

    # str() and format() as before (``ErrorCode.ROOM_FULL``), not StrEnum's bare value.
    __str__ = Enum.__str__
    __format__ = Enum.__format__

    ROOM_FULL = "room-full"
    BAD_MESSAGE = "bad-message"
    # Oversized frames are refused by the websocket layer before they are read,
    # so the server reports them with close code 1009, not in-band; the code
    # exists so that clients can name the condition.
    TOO_LARGE = "too-large"
    RATE_LIMITED = "rate-limited"
    NOT_JOINED = "not-joined"


class ProtocolError(ValueError):
    """A message that is not valid protocol; ``str(exc)`` says why."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_MESSAGE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# Messages

#: What the free-form fields of a candidate object may hold.
JsonScalar = str | int | float | bool | None


class IceCandidateInit(msgspec.Struct, frozen=True):
    """The well-known fields of a ``candidate`` object and their types (all optional)."""

    candidate: str | msgspec.UnsetType = msgspec.UNSET
    sdpMid: str | None | msgspec.UnsetType = msgspec.UNSET
    sdpMLineIndex: int | None | msgspec.UnsetType = msgspec.UNSET
    usernameFragment: str | None | msgspec.UnsetType = msgspec.UNSET


class Join(schema.Message, tag="join", frozen=True):
    """Client asks to enter ``room``."""

    room: Room


class Offer(schema.Message, tag="offer", frozen=True):
    """SDP offer, relayed to the other peer."""

    sdp: str


class Answer(schema.Message, tag="answer", frozen=True):
    """SDP answer, relayed to the other peer."""

    sdp: str


class Candidate(schema.Message, tag="candidate", frozen=True):
    """Trickled ICE candidate (``None``: end of candidates), relayed with every field it has."""

    candidate: dict[str, JsonScalar] | None

    def __post_init__(self) -> None:
        if self.candidate is None:
            return
        try:
            msgspec.convert(self.candidate, IceCandidateInit)
        except msgspec.ValidationError as exc:
            # msgspec reports the field as `$.NAME`: it is `$.candidate.NAME` in the message
            raise ValueError(str(exc).replace(" - at `$", " - at `$.candidate", 1)) from None


class Bye(schema.Message, tag="bye", frozen=True):
    """Hang-up notice, relayed to the other peer."""


class Joined(schema.Message, tag="joined", frozen=True):
    """Server confirms a join; ``initiator`` is true for the peer that should offer."""

    room: Room
    peers: Annotated[int, msgspec.Meta(ge=1, le=ROOM_CAPACITY)]
    initiator: bool


class PeerJoined(schema.Message, tag="peer-joined", frozen=True):
    """Server tells the waiting peer that a second peer arrived."""


class PeerLeft(schema.Message, tag="peer-left", frozen=True):
    """Server tells a peer that the other one left or its connection dropped."""


class Error(schema.Message, tag="error", frozen=True):
    """Server reports a problem with the client's last message."""

    code: ErrorCode
    message: str


RelayMessage = Offer | Answer | Candidate | Bye
ClientMessage = Join | RelayMessage
ServerMessage = Joined | PeerJoined | PeerLeft | Error | RelayMessage
Message = ClientMessage | ServerMessage
_M = TypeVar("_M", ClientMessage, ServerMessage)

_CLIENT: schema.Schema[ClientMessage] = schema.Schema(ClientMessage, {"room": _ROOM_RULE})
_SERVER: schema.Schema[ServerMessage] = schema.Schema(ServerMessage, {"room": _ROOM_RULE})
_ENCODER = msgspec.json.Encoder()


def encode(message: Message) -> str:
    """Serialise a message to the compact JSON text sent on the wire."""
    return _ENCODER.encode(message).decode()


# --------------------------------------------------------------------------
# Parsing


def _parse(messages: schema.Schema[_M], data: str | bytes) -> _M:
    if not isinstance(data, str):
        raise ProtocolError("binary frames are not accepted; send JSON as a text frame")
    try:
        return messages.decode(data)
    except schema.Refused as exc:
        raise ProtocolError(str(exc)) from None


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Parse and validate one frame a client sent to the server.

    Raises :class:`ProtocolError` (code ``bad-message``) when the frame is
    binary, not JSON, not an object, of an unknown type, or has missing,
    extra, mistyped or out-of-limit fields.
    """
    return _parse(_CLIENT, data)


def parse_server_message(data: str | bytes) -> ServerMessage:
    """Parse one frame the server sent to a client (for Python clients)."""
    return _parse(_SERVER, data)
