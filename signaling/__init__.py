"""Signaling server: pairs two peers in a room and relays their WebRTC SDP.

A small asyncio websockets server. Peers send ``join`` with a room name, then
offers, answers, ICE candidates and ``bye``, which the server relays to the
other peer in the room unchanged. See ``docs/signaling.md`` for the protocol,
:mod:`signaling.protocol` for the message classes (the schema, with every limit),
:mod:`signaling.schema` for what the project's message schemas share and
:mod:`signaling.server` for the server. Run it with ``python -m signaling``.
"""

from .protocol import (
    Answer,
    Bye,
    Candidate,
    Error,
    ErrorCode,
    Join,
    Joined,
    Offer,
    PeerJoined,
    PeerLeft,
    ProtocolError,
    encode,
    parse_client_message,
    parse_server_message,
)
from .server import ServerConfig, SignalingServer

__all__ = [
    "Answer",
    "Bye",
    "Candidate",
    "Error",
    "ErrorCode",
    "Join",
    "Joined",
    "Offer",
    "PeerJoined",
    "PeerLeft",
    "ProtocolError",
    "ServerConfig",
    "SignalingServer",
    "encode",
    "parse_client_message",
    "parse_server_message",
]
