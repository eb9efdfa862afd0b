"""Signaling server: pairs two peers in a room and relays their WebRTC SDP.

A small asyncio websockets server. Peers send ``join`` with a room name, then
offers, answers, ICE candidates and ``bye``, which the server relays to the
other peer in the room unchanged. See ``docs/signaling.md`` for the protocol,
:mod:`signaling.protocol` for the message classes (the schema, with every limit),
:mod:`signaling.schema` for what the project's message schemas share and
:mod:`signaling.server` for the server, :mod:`signaling.origins` for the web pages
that may connect, :mod:`signaling.rooms` for room names that cannot be guessed and
:mod:`signaling.tls` for ``wss://``. Run it with ``python -m signaling``.
"""

from .origins import OriginPolicy
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
    "OriginPolicy",
    "PeerJoined",
    "PeerLeft",
    "ProtocolError",
    "ServerConfig",
    "SignalingServer",
    "encode",
    "parse_client_message",
    "parse_server_message",
]
