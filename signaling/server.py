"""The signaling server: pairs two peers in a room and relays their SDP.

One asyncio task per websocket connection (websockets' own model). All room
state lives in plain dicts and lists that are only changed between awaits, so
no locks are needed. What the server enforces:

- rooms hold at most two peers; a third gets ``room-full`` and is closed (1008),
  unless a member does not answer a ping within ``member_ping_timeout`` seconds: a
  connection that vanished without closing (a laptop gone to sleep, a changed network)
  is removed then and there, so that its user rejoins at once rather than after the
  keepalive's 40 s;
- malformed messages get ``bad-message`` and the connection stays open, until
  ``max_bad_messages`` of them, then it is closed (1008);
- frames over ``max_message_bytes`` are refused by websockets' ``max_size``
  before they are read in full; that client is closed with 1009;
- a token bucket per connection; messages over the rate get ``rate-limited``
  and are dropped, and after ``max_dropped`` of them in a row the connection is
  closed (1008): a flood cannot keep the server busy for ever;
- keepalive pings: a peer that stops answering (or whose TCP connection
  vanishes) is removed from its room and the other peer gets ``peer-left``;
- a websocket from a browser page whose ``Origin`` is not on ``allowed_origins``
  is refused with HTTP 403 (:mod:`signaling.origins`); programs send no ``Origin``
  and are accepted;
- at most ``max_connections`` open connections (past the handshake) at once, and at most
  ``max_connections_per_address`` from one IP address; more are refused with HTTP 503;
- a connection that has not finished its opening handshake within ``open_timeout``
  seconds (a half-open TCP connection) is dropped, and one that has not joined a room
  within ``join_timeout`` seconds after it is closed (1008): idle connections cannot
  hold the ``max_connections`` places.

Given an ``ssl.SSLContext`` (:func:`signaling.tls.server_context`) it serves ``wss://``.

Use it as an async context manager::

    async with SignalingServer("127.0.0.1", 0) as server:
        print(server.port)
        await server.serve_forever()
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from .origins import OriginPolicy
from .protocol import (
    ROOM_CAPACITY,
    Error,
    ErrorCode,
    Join,
    Joined,
    PeerJoined,
    PeerLeft,
    ProtocolError,
    RelayMessage,
    ServerMessage,
    encode,
    parse_client_message,
)

__all__ = ["ServerConfig", "SignalingServer", "TokenBucket", "ROOM_CAPACITY"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Limits and timeouts of a :class:`SignalingServer`.

    ``rate_limit`` is in messages per second (``None``: unlimited) with bursts
    of up to ``rate_burst`` messages. ``ping_interval`` / ``ping_timeout`` are
    websockets' keepalive settings in seconds (``None`` disables them).
    ``allowed_origins`` are the browser origins (``https://host:port``) whose pages may
    connect; connections without an ``Origin`` header (programs) always may.
    """

    max_message_bytes: int = 64 * 1024
    rate_limit: float | None = 50.0
    rate_burst: int = 100
    max_bad_messages: int = 20
    max_dropped: int = 1000          # messages over the rate in a row: then the connection is closed (1008)
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    open_timeout: float = 10.0
    join_timeout: float = 10.0
    member_ping_timeout: float = 3.0   # a full room's member that does not answer a ping in this long is removed
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 4096
    max_connections_per_address: int = 256   # one address cannot take every place (NAT: many users, one address)

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be at least 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be positive (or None for no limit)")
        if self.rate_burst < 1:
            raise ValueError("rate_burst must be at least 1")
        if self.max_bad_messages < 1:
            raise ValueError("max_bad_messages must be at least 1")
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None to disable)")
        if min(self.close_timeout, self.open_timeout, self.join_timeout, self.member_ping_timeout) <= 0:
            raise ValueError("close_timeout, open_timeout, join_timeout and member_ping_timeout must be positive")
        if self.max_connections < 1 or self.max_connections_per_address < 1:
            raise ValueError("max_connections and max_connections_per_address must be at least 1")
        OriginPolicy(self.allowed_origins)  # raises ValueError for a malformed origin


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` banked."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        """Spend one token if there is one; return whether it was there."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def room_label(room: str | None) -> str:
    """How the log names a room: the first 8 hex digits of its name's SHA-256.  The name is
    the room's only key (whoever knows it can join while one side waits), and logs travel."""
    return "-" if room is None else "#" + hashlib.sha256(room.encode()).hexdigest()[:8]


@dataclass(eq=False)
class _Peer:
    """Server-side state of one connection."""

    id: int
    ws: ServerConnection
    bucket: TokenBucket | None
    room: str | None = None
    joined: bool = False        # it has been in a room (leaving one does not start the deadline again)
    bad_messages: int = 0
    dropped: int = 0            # messages over the rate since the last one within it

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    async def send(self, message: ServerMessage) -> None:
        await self.send_text(encode(message))

    async def send_text(self, text: str) -> None:
        """Send unless the connection is already going away (never raises for that)."""
        if not self.is_open:
            return  # sending on a closing connection would wait for it to close
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            pass


class SignalingServer:
    """Websocket signaling server; see the module docstring.

    ``port=0`` binds a free port; read the bound one from :attr:`port` after
    :meth:`start`. Bind to one address (a name that resolves to several would
    get one port per address).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, config: ServerConfig | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.config = config or ServerConfig()
        self.ssl_context = ssl_context
        self.origins = OriginPolicy(self.config.allowed_origins)
        self._server: Server | None = None
        self._rooms: dict[str, list[_Peer]] = {}
        self._ids: Iterator[int] = itertools.count(1)
        self._connections = 0
        self._per_address: Counter[str] = Counter()           # open connections by remote IP address
        self._closing: set[asyncio.Task[None]] = set()     # closing connections of removed members

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting connections (raises OSError if it cannot bind)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        cfg = self.config
        self._server = await websockets_serve(
            self._serve_connection,
            self.host,
            self._requested_port,
            max_size=cfg.max_message_bytes,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            close_timeout=cfg.close_timeout,
            open_timeout=cfg.open_timeout,
            process_request=self._check_request,
            ssl=self.ssl_context,
        )
        log.info("signaling server listening on %s", self.url)

    async def close(self) -> None:
        """Stop accepting, close every connection (1001) and wait for handlers."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()
        log.info("signaling server closed")

    async def serve_forever(self) -> None:
        """Wait until the server is closed (cancel this to stop waiting)."""
        if self._server is None:
            raise RuntimeError("server not started")
        await self._server.wait_closed()

    async def __aenter__(self) -> SignalingServer:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` (``wss://`` with TLS) of the bound server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl_context else 'ws'}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Websocket connections open now."""
        return self._connections

    def room_sizes(self) -> dict[str, int]:
        """Number of peers in each live room (empty rooms are deleted)."""
        return {name: len(peers) for name, peers in self._rooms.items()}

    # -- per connection ----------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the handshake: a browser origin off the list, or one connection too many, is refused."""
        refusal = self.origins.process_request(connection, request)
        if refusal is not None:
            return refusal
        if self._connections >= self.config.max_connections:
            log.warning("refused a websocket from %s: %d connections open, the limit", _address(connection),
                        self._connections)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections; try again later.\n")
        host = _host(connection)
        if self._per_address[host] >= self.config.max_connections_per_address:
            log.warning("refused a websocket from %s: %d connections open from there, the limit", host,
                        self._per_address[host])
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      "Too many connections from your address; try again later.\n")
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        cfg = self.config
        bucket = None if cfg.rate_limit is None else TokenBucket(cfg.rate_limit, cfg.rate_burst)
        peer = _Peer(next(self._ids), ws, bucket)
        self._connections += 1
        host = _host(ws)
        self._per_address[host] += 1
        log.info("peer %d connected from %s", peer.id, _address(ws))
        deadline = asyncio.create_task(self._join_deadline(peer))
        try:
            async for data in ws:
                if not await self._on_frame(peer, data):
                    break
        except ConnectionClosed:
            pass  # abnormal closure (1006 vanish, 1009 too big, 1011 ping timeout, ...)
        finally:
            deadline.cancel()
            self._connections -= 1
            self._per_address[host] -= 1
            if not self._per_address[host]:
                del self._per_address[host]
            await self._leave(peer)
            log.info("peer %d disconnected: %s", peer.id, _close_description(ws))

    async def _join_deadline(self, peer: _Peer) -> None:
        """Close `peer` unless it joined a room within `join_timeout` seconds."""
        await asyncio.sleep(self.config.join_timeout)
        if not peer.joined:
            log.info("peer %d joined no room within %g s: closed", peer.id, self.config.join_timeout)
            await peer.ws.close(CloseCode.POLICY_VIOLATION, "join a room first")

    async def _on_frame(self, peer: _Peer, data: str | bytes) -> bool:
        """Handle one incoming frame; return False to end the connection."""
        if peer.bucket is not None and not peer.bucket.take():
            peer.dropped += 1
            if peer.dropped >= self.config.max_dropped:
                log.info("peer %d sent %d messages over the rate in a row: closed", peer.id, peer.dropped)
                await peer.ws.close(CloseCode.POLICY_VIOLATION, "flooding")
                return False
            log.debug("peer %d rate-limited", peer.id)
            await peer.send(
                Error(ErrorCode.RATE_LIMITED, f"over {self.config.rate_limit:g} messages/s; message dropped")
            )
            return True
        peer.dropped = 0
        try:
            message = parse_client_message(data)
        except ProtocolError as exc:
            return await self._reject(peer, exc)
        if isinstance(message, Join):
            return await self._join(peer, message.room)
        if peer.room is None:
            return await self._reject(
                peer, ProtocolError(f"join a room before sending '{message.type}'", ErrorCode.NOT_JOINED)
            )
        await self._relay(peer, message)
        return True

    async def _reject(self, peer: _Peer, exc: ProtocolError) -> bool:
        """Answer a bad message with an error; close after too many of them."""
        peer.bad_messages += 1
        log.info("peer %d: %s: %s", peer.id, exc.code.value, exc)
        await peer.send(Error(exc.code, str(exc)))
        if peer.bad_messages >= self.config.max_bad_messages:
            log.warning("peer %d: closing after %d bad messages", peer.id, peer.bad_messages)
            await peer.ws.close(CloseCode.POLICY_VIOLATION, "too many bad messages")
            return False
        return True

    async def _join(self, peer: _Peer, room: str) -> bool:
        if peer.room is not None:
            return await self._reject(peer, ProtocolError(f"already joined room {peer.room!r}"))
        members = self._rooms.get(room, [])
        if len(members) >= ROOM_CAPACITY:
            await self._remove_unanswering(list(members))
            if not peer.is_open:
                return False
            members = self._rooms.get(room, [])
        if len(members) >= ROOM_CAPACITY:
            log.info("peer %d: room %s is full", peer.id, room_label(room))
            await peer.send(Error(ErrorCode.ROOM_FULL, f"room {room!r} already has {ROOM_CAPACITY} peers"))
            await peer.ws.close(CloseCode.POLICY_VIOLATION, "room full")
            return False
        members.append(peer)
        self._rooms[room] = members
        peer.room, peer.joined = room, True
        count = len(members)
        log.info("peer %d joined room %s (%d/%d)", peer.id, room_label(room), count, ROOM_CAPACITY)
        # The newcomer learns first, so anything the waiting peer sends on
        # peer-joined reaches it after its own "joined".
        await peer.send(Joined(room, count, initiator=count == ROOM_CAPACITY))
        for other in self._others(peer, room):
            await other.send(PeerJoined())
        return True

    async def _remove_unanswering(self, members: list[_Peer]) -> None:
        """Remove the `members` (of a full room) that do not answer a ping within
        `member_ping_timeout` seconds from their room; their connections are closed aside."""
        answered = await asyncio.gather(*(self._answers(member) for member in members))
        for member, ok in zip(members, answered):
            if ok or member.room is None:
                continue
            log.info("peer %d did not answer a ping in %g s while its room was full: removed", member.id,
                     self.config.member_ping_timeout)
            await self._leave(member)
            task = asyncio.create_task(member.ws.close(CloseCode.INTERNAL_ERROR, "ping timeout"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _answers(self, peer: _Peer) -> bool:
        """Whether `peer` answers a ping within `member_ping_timeout` seconds."""
        try:
            pong = await peer.ws.ping()
            await asyncio.wait_for(pong, self.config.member_ping_timeout)
        except (TimeoutError, ConnectionClosed):
            return False
        return True

    async def _relay(self, peer: _Peer, message: RelayMessage) -> None:
        assert peer.room is not None
        others = self._others(peer, peer.room)
        if not others:
            log.debug("peer %d: no peer in room %s, '%s' dropped", peer.id, room_label(peer.room), message.type)
            return
        text = encode(message)
        for other in others:
            await other.send_text(text)

    async def _leave(self, peer: _Peer) -> None:
        room, peer.room = peer.room, None
        if room is None:
            return
        members = self._rooms.get(room, [])
        if peer in members:
            members.remove(peer)
        if not members:
            self._rooms.pop(room, None)
        log.info("peer %d left room %s", peer.id, room_label(room))
        for other in members:
            await other.send(PeerLeft())

    def _others(self, peer: _Peer, room: str) -> list[_Peer]:
        return [p for p in self._rooms.get(room, []) if p is not peer]


def _close_description(ws: ServerConnection) -> str:
    if ws.state is State.CLOSED:
        return str(ws.close_exc)
    return "closing"


def _host(ws: ServerConnection) -> str:
    """The remote IP address of `ws` ("?" when unknown)."""
    try:
        return str(ws.remote_address[0])
    except (TypeError, IndexError):
        return "?"


def _address(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"
