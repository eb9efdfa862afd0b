"""JSON message syntax of the signaling protocol.

Every message is one websocket *text* frame holding one JSON object with a
``"type"`` field. This module turns those frames into small frozen dataclasses
and back, and says precisely what is wrong with anything that does not parse,
by raising :class:`ProtocolError`. It does no I/O; both the server and Python
clients use it.

Client to server::

    {"type": "join", "room": NAME}               NAME: 1-64 chars of [A-Za-z0-9_.-]
    {"type": "offer", "sdp": STR}                relayed to the other peer
    {"type": "answer", "sdp": STR}               relayed to the other peer
    {"type": "candidate", "candidate": {...}|null}  relayed to the other peer
    {"type": "bye"}                              relayed to the other peer

Server to client::

    {"type": "joined", "room": NAME, "peers": N, "initiator": BOOL}
    {"type": "peer-joined"}
    {"type": "peer-left"}
    {"type": "error", "code": CODE, "message": STR}
    ... and the relayed offer / answer / candidate / bye, unchanged.

Objects may not carry fields other than the ones listed for their type, so a
relayed message is exactly what its sender wrote (re-serialised canonically).
The ``candidate`` object is free-form (it is the browser's
``RTCIceCandidate.toJSON()``), but its well-known fields are type-checked.
See ``docs/signaling.md`` for the full description.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Mapping, Union

__all__ = [
    "ROOM_PATTERN",
    "ProtocolError",
    "ErrorCode",
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
    "parse_client_message",
    "parse_server_message",
    "encode",
]

#: Room names: 1 to 64 characters out of letters, digits, ``_``, ``.``, ``-``.
ROOM_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ErrorCode(str, Enum):
    """The ``code`` of a server ``error`` message."""

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


@dataclass(frozen=True)
class Join:
    """Client asks to enter ``room``."""

    room: str
    type: ClassVar[str] = "join"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "room": self.room}


@dataclass(frozen=True)
class Offer:
    """SDP offer, relayed to the other peer."""

    sdp: str
    type: ClassVar[str] = "offer"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "sdp": self.sdp}


@dataclass(frozen=True)
class Answer:
    """SDP answer, relayed to the other peer."""

    sdp: str
    type: ClassVar[str] = "answer"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "sdp": self.sdp}


@dataclass(frozen=True)
class Candidate:
    """Trickled ICE candidate (``None``: end of candidates), relayed."""

    candidate: Mapping[str, Any] | None
    type: ClassVar[str] = "candidate"

    def to_dict(self) -> dict[str, Any]:
        value = None if self.candidate is None else dict(self.candidate)
        return {"type": self.type, "candidate": value}


@dataclass(frozen=True)
class Bye:
    """Hang-up notice, relayed to the other peer."""

    type: ClassVar[str] = "bye"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


@dataclass(frozen=True)
class Joined:
    """Server confirms a join; ``initiator`` is true for the peer that should offer."""

    room: str
    peers: int
    initiator: bool
    type: ClassVar[str] = "joined"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "room": self.room, "peers": self.peers, "initiator": self.initiator}


@dataclass(frozen=True)
class PeerJoined:
    """Server tells the waiting peer that a second peer arrived."""

    type: ClassVar[str] = "peer-joined"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


@dataclass(frozen=True)
class PeerLeft:
    """Server tells a peer that the other one left or its connection dropped."""

    type: ClassVar[str] = "peer-left"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


@dataclass(frozen=True)
class Error:
    """Server reports a problem with the client's last message."""

    code: ErrorCode
    message: str
    type: ClassVar[str] = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "code": ErrorCode(self.code).value, "message": self.message}


RelayMessage = Union[Offer, Answer, Candidate, Bye]
ClientMessage = Union[Join, RelayMessage]
ServerMessage = Union[Joined, PeerJoined, PeerLeft, Error, RelayMessage]
Message = Union[ClientMessage, ServerMessage]


def encode(message: Message) -> str:
    """Serialise a message to the compact JSON text sent on the wire."""
    return json.dumps(message.to_dict(), separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------
# Parsing


def _load_object(data: str | bytes) -> dict[str, Any]:
    """Decode one text frame into a JSON object, or raise ProtocolError."""
    if not isinstance(data, str):
        raise ProtocolError("binary frames are not accepted; send JSON as a text frame")
    try:
        value = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or an integer literal too long to convert
        raise ProtocolError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("invalid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"message must be a JSON object, got {_json_kind(value)}")
    kind = value.get("type")
    if "type" not in value:
        raise ProtocolError("message has no 'type' field")
    if not isinstance(kind, str):
        raise ProtocolError(f"'type' must be a string, got {_json_kind(kind)}")
    return value


def _json_kind(value: Any) -> str:
    """Name of a decoded JSON value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_fields(obj: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Require exactly the fields ``allowed`` (plus ``type``)."""
    kind = obj["type"]
    for name in allowed:
        if name not in obj:
            raise ProtocolError(f"'{kind}' message is missing the '{name}' field")
    extra = sorted(set(obj) - set(allowed) - {"type"})
    if extra:
        names = ", ".join(repr(name) for name in extra)
        raise ProtocolError(f"'{kind}' message has unexpected field(s) {names}")


def _string(obj: Mapping[str, Any], name: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise ProtocolError(f"'{name}' must be a string, got {_json_kind(value)}")
    return value


def _room(obj: Mapping[str, Any]) -> str:
    room = _string(obj, "room")
    if not ROOM_PATTERN.fullmatch(room):
        raise ProtocolError(
            f"invalid room name {room[:80]!r}: use 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return room


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}

# Well-known fields of RTCIceCandidateInit and the JSON types they may take.
_CANDIDATE_FIELDS: dict[str, tuple[type, ...]] = {
    "candidate": (str,),
    "sdpMid": (str, type(None)),
    "sdpMLineIndex": (int, type(None)),
    "usernameFragment": (str, type(None)),
}


def _candidate(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    value = obj["candidate"]
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"'candidate' must be an object or null, got {_json_kind(value)}")
    for name, types in _CANDIDATE_FIELDS.items():
        if name in value:
            field_value = value[name]
            if isinstance(field_value, bool) or not isinstance(field_value, types):
                wanted = " or ".join("null" if t is type(None) else _TYPE_NAMES[t] for t in types)
                raise ProtocolError(
                    f"'candidate.{name}' must be {wanted}, got {_json_kind(field_value)}"
                )
    return value


def _parse_relay(obj: Mapping[str, Any]) -> RelayMessage | None:
    """Parse a relayable message, or return None if the type is not one."""
    kind = obj["type"]
    if kind in ("offer", "answer"):
        _check_fields(obj, ("sdp",))
        sdp = _string(obj, "sdp")
        return Offer(sdp) if kind == "offer" else Answer(sdp)
    if kind == "candidate":
        _check_fields(obj, ("candidate",))
        return Candidate(_candidate(obj))
    if kind == "bye":
        _check_fields(obj, ())
        return Bye()
    return None


_CLIENT_TYPES = ("join", "offer", "answer", "candidate", "bye")
_SERVER_TYPES = ("joined", "peer-joined", "peer-left", "error", "offer", "answer", "candidate", "bye")


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Parse and validate one frame a client sent to the server.

    Raises :class:`ProtocolError` (code ``bad-message``) when the frame is
    binary, not JSON, not an object, of an unknown type, or has missing,
    extra or mistyped fields.
    """
    obj = _load_object(data)
    kind = obj["type"]
    if kind == "join":
        _check_fields(obj, ("room",))
        return Join(_room(obj))
    relay = _parse_relay(obj)
    if relay is None:
        raise ProtocolError(
            f"unknown message type {kind[:40]!r}; expected one of {', '.join(_CLIENT_TYPES)}"
        )
    return relay


def parse_server_message(data: str | bytes) -> ServerMessage:
    """Parse one frame the server sent to a client (for Python clients)."""
    obj = _load_object(data)
    kind = obj["type"]
    if kind == "joined":
        _check_fields(obj, ("room", "peers", "initiator"))
        peers, initiator = obj["peers"], obj["initiator"]
        if isinstance(peers, bool) or not isinstance(peers, int):
            raise ProtocolError(f"'peers' must be an integer, got {_json_kind(peers)}")
        if not isinstance(initiator, bool):
            raise ProtocolError(f"'initiator' must be a boolean, got {_json_kind(initiator)}")
        return Joined(_room(obj), peers, initiator)
    if kind == "peer-joined":
        _check_fields(obj, ())
        return PeerJoined()
    if kind == "peer-left":
        _check_fields(obj, ())
        return PeerLeft()
    if kind == "error":
        _check_fields(obj, ("code", "message"))
        code = _string(obj, "code")
        try:
            error_code = ErrorCode(code)
        except ValueError:
            raise ProtocolError(f"unknown error code {code[:40]!r}") from None
        return Error(error_code, _string(obj, "message"))
    relay = _parse_relay(obj)
    if relay is None:
        raise ProtocolError(
            f"unknown message type {kind[:40]!r}; expected one of {', '.join(_SERVER_TYPES)}"
        )
    return relay
