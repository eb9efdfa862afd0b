"""PeerLink in one process: real signaling server, real aiortc peer connections on this
machine, toy halves.  Sessions open whoever joins first, messages reach the right half,
and a peer that leaves can be replaced by one that joins later."""

from __future__ import annotations

import asyncio

import pytest

from live.config import LiveConfig
from live.peer import Half, PeerLink
from live.wire import End, Loss
from signaling import ServerConfig, SignalingServer
from signaling.client import SignalingClient, SignalingError

TIMEOUT = 30.0
LIVE = LiveConfig(session_open_timeout_s=10.0, flush_timeout_s=0.5)


class Recorder(Half):
    def __init__(self) -> None:
        self.events: list = []
        self.session = None
        self.changed = asyncio.Event()

    def _note(self, *event) -> None:
        self.events.append(event)
        self.changed.set()

    def session_opened(self, session) -> None:
        self.session = session
        self._note("open", session.number)

    def session_closed(self, session, reason) -> None:
        self.session = None
        self._note("closed", reason)

    def on_stream(self, data) -> None:
        self._note("stream", data)

    def on_params(self, data) -> None:
        self._note("params", data)

    def on_control(self, message) -> None:
        self._note("control", message)

    async def wait_for(self, kind: str, count: int = 1) -> None:
        while sum(1 for e in self.events if e[0] == kind) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 15.0)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def test_sessions_messages_and_a_peer_coming_back():
    async def main():
        async with SignalingServer("127.0.0.1", 0, ServerConfig(ping_interval=1, ping_timeout=1)) as server:
            url = f"ws://127.0.0.1:{server.port}"
            a, b, c = Recorder(), Recorder(), Recorder()
            link_a = PeerLink(url, "room", [a], config=LIVE)
            await link_a.open()
            link_b = PeerLink(url, "room", [b], config=LIVE)
            await link_b.open()
            await a.wait_for("open")
            await b.wait_for("open")
            assert b.session.send_stream(b"\x01header")
            assert b.session.send_params(b"packet")
            assert a.session.send_control(Loss(3))
            b.session.send_control(End(9))
            await a.wait_for("params")
            await b.wait_for("control")
            assert ("stream", b"\x01header") in a.events
            assert ("control", Loss(3)) in b.events
            await a.wait_for("control")
            assert ("control", End(9)) in a.events
            # b hangs up; a stays in the room and c takes its place
            await link_b.close()
            await a.wait_for("closed")
            assert link_a.peer_absent_for() >= 0
            link_c = PeerLink(url, "room", [c], config=LIVE)
            await link_c.open()
            await a.wait_for("open", 2)
            await c.wait_for("open")
            c.session.send_stream(b"\x02again")
            await a.wait_for("stream", 2)
            assert ("stream", b"\x02again") in a.events
            await link_c.close()
            await link_a.close()

    run(main())


def test_room_full_and_unreachable_server():
    async def main():
        async with SignalingServer("127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            links = [PeerLink(url, "full", [Half()], config=LIVE) for _ in range(2)]
            for link in links:
                await link.open()
            with pytest.raises(SignalingError, match="already holds a call"):
                await PeerLink(url, "full", [Half()], config=LIVE).open()
            for link in links:
                await link.close()
            port = server.port
        with pytest.raises(SignalingError, match="cannot reach the signaling server"):
            await SignalingClient(f"ws://127.0.0.1:{port}", timeout=2).join("x")
        with pytest.raises(SignalingError, match="not a websocket URL"):
            await SignalingClient("http://nope", timeout=2).join("x")

    run(main())
