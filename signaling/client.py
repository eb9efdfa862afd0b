"""A small client of the signaling server for Python peers (docs/signaling.md).

    client = SignalingClient("ws://127.0.0.1:8765")
    joined = await client.join("demo")          # connects, joins; raises SignalingError
    await client.send(Offer(sdp))
    while (message := await client.receive()) is not None:
        ...                                     # PeerJoined, PeerLeft, Offer, Answer, ...
    await client.close()

Every failure a user can cause or meet (server unreachable, bad URL, room full, the
server going away, a certificate that does not verify) is a `SignalingError` whose text
is one readable line.  Messages the server sends that do not parse are logged and
skipped, never raised.  A `wss://` server is verified against the system's CAs and those
given to `signaling.tls.trust` (`--cafile`); joining a room whose name can be guessed
(`signaling.rooms.guessable`) logs a warning.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .protocol import (
    Error,
    ErrorCode,
    Join,
    Joined,
    Message,
    ProtocolError,
    ServerMessage,
    encode,
    parse_server_message,
)
from .rooms import guessable, guessable_warning
from .tls import client_context

log = logging.getLogger(__name__)


class SignalingError(Exception):
    """The signaling server could not be reached or refused us; str() says why."""


class SignalingClient:
    """One connection to the signaling server; `ssl_context` overrides the verifying
    context of a `wss://` URL (`signaling.tls.client_context()`)."""

    def __init__(self, url: str, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._ws: ClientConnection | None = None

    async def connect(self) -> None:
        tls = None
        if self.url.lower().startswith("wss://"):
            tls = self.ssl_context or client_context()
        try:
            self._ws = await asyncio.wait_for(
                connect(self.url, open_timeout=self.timeout, max_size=1 << 20, ssl=tls), self.timeout + 1)
        except ssl.SSLCertVerificationError as exc:     # (a ValueError too: before the next)
            raise SignalingError(f"the signaling server at {self.url} has a certificate this machine does not "
                                 f"trust ({exc.verify_message}); give its CA with --cafile") from None
        except (InvalidURI, ValueError) as exc:     # ValueError: a host or port that cannot be, e.g. ws://h:99999
            raise SignalingError(f"{self.url!r} is not a websocket URL (expected ws://HOST:PORT): {exc}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise SignalingError(f"the signaling server at {self.url} refused the connection (HTTP {status}"
                                 f"{': too many connections' if status == 503 else ''})") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
            raise SignalingError(f"cannot reach the signaling server at {self.url}: {reason}") from None

    async def join(self, room: str) -> Joined:
        """Connect (if needed) and join `room`; a room name that can be guessed is warned about."""
        if guessable(room):
            log.warning("%s", guessable_warning(room))
        if self._ws is None:
            await self.connect()
        await self.send(Join(room))
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await self.receive()
                    if message is None:
                        raise SignalingError(f"the signaling server at {self.url} closed the connection on join")
                    if isinstance(message, Joined):
                        return message
                    if isinstance(message, Error):
                        if message.code == ErrorCode.ROOM_FULL:
                            raise SignalingError(f"room {room!r} already holds a call of two peers")
                        raise SignalingError(f"the signaling server refused to join {room!r}: {message.message}")
                    log.debug("before joined: ignoring %s", type(message).__name__)
        except TimeoutError:
            raise SignalingError(f"no answer from the signaling server at {self.url} to join {room!r}") from None

    async def send(self, message: Message) -> bool:
        """Send one message; False when the connection is gone."""
        if self._ws is None:
            return False
        try:
            await self._ws.send(encode(message))
            return True
        except ConnectionClosed:
            return False

    async def receive(self) -> ServerMessage | None:
        """The next server message, or None once the connection has closed."""
        while self._ws is not None:
            try:
                text = await self._ws.recv()
            except ConnectionClosed:
                return None
            try:
                return parse_server_message(text)
            except ProtocolError as exc:
                log.warning("ignoring a bad message from the signaling server: %s", exc)
        return None

    async def close(self, timeout: float = 2.0) -> None:
        """Close the websocket, waiting at most `timeout` seconds for the closing handshake."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                await asyncio.wait_for(ws.close(), timeout)
            except (TimeoutError, ConnectionClosed, OSError):
                pass
