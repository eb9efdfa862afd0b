"""PeerLink in one process: real signaling server, real aiortc peer connections on this
machine, toy halves.  Sessions open whoever joins first, messages reach the right half,
and a peer that leaves can be replaced by one that joins later."""

from __future__ import annotations

import asyncio
import time

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
                # hanging up never hangs (a lost cancellation once left the second link's
                # close waiting for the test's own timeout): a hang check, not a speed one
                started = time.monotonic()
                await link.close()
                assert time.monotonic() - started < 5.0
            port = server.port
        with pytest.raises(SignalingError, match="cannot reach the signaling server"):
            await SignalingClient(f"ws://127.0.0.1:{port}", timeout=2).join("x")
        for url in ("http://nope", "ws://127.0.0.1:99999", "ws://[::1"):     # the last two: ValueError inside
            with pytest.raises(SignalingError, match="not a websocket URL"):
                await SignalingClient(url, timeout=2).join("x")

    run(main())


async def open_pair(url: str, room: str) -> tuple[Recorder, Recorder, PeerLink, PeerLink]:
    """Two links in `room`, a first, each with a recording half, once both sessions are open."""
    a, b = Recorder(), Recorder()
    link_a, link_b = PeerLink(url, room, [a], config=LIVE), PeerLink(url, room, [b], config=LIVE)
    await link_a.open()
    await link_b.open()
    await a.wait_for("open")
    await b.wait_for("open")
    return a, b, link_a, link_b


def test_crossing_offers_are_resolved():
    """Glare: both ends start over at the same moment, so their offers cross in the server.
    One of them (the polite one) drops its own offer and answers; a session opens and
    carries messages.  Twice, so that both orders of arrival are met."""
    async def main():
        async with SignalingServer("127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            a, b, link_a, link_b = await open_pair(url, "glare")
            for round_ in (2, 3):
                await asyncio.gather(link_a._offer(), link_b._offer())
                await a.wait_for("open", round_)
                await b.wait_for("open", round_)
                assert a.session is link_a.session and b.session is link_b.session
                assert a.session.offerer != b.session.offerer
                assert b.session.send_stream(bytes([round_]))
                await a.wait_for("stream", round_ - 1)
                assert ("stream", bytes([round_])) in a.events
            await link_a.close()
            await link_b.close()

    run(main())


def test_a_closed_link_never_offers_again():
    """The connection breaks; the offerer would offer again after a second, but it hangs
    up within that second: it must stay closed (no new peer connection after close)."""
    async def main():
        async with SignalingServer("127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            a, b, link_a, link_b = await open_pair(url, "closing")
            assert link_b.session.offerer          # b joined second: b offers, and offers again
            await link_a.session.pc.close()        # a's end of the connection breaks without a bye
            await b.wait_for("closed")
            await link_b.close()                   # within the second before b would offer again
            count = link_b._count
            await asyncio.sleep(2.0)
            assert link_b.session is None, "the closed link offered again"
            assert link_b._count == count
            await link_a.close()

    run(main())


def test_a_bye_that_cannot_go_out_does_not_hold_the_hang_up():
    """A signaling websocket that takes no more data (here: its send never returns) holds
    neither the bye nor the close past `signaling_close_timeout_s` together."""
    async def main():
        async with SignalingServer("127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            a, b, link_a, link_b = await open_pair(url, "stuck-bye")
            stuck = asyncio.Event()

            async def never(message) -> bool:
                await stuck.wait()
                return True

            link_a._client.send = never
            closing = asyncio.ensure_future(link_a.close())
            done, _ = await asyncio.wait({closing}, timeout=LIVE.shutdown_budget_s)
            assert done, "the hang-up waited for a bye that could not go out"
            await link_b.close()

    run(main())


def test_a_peer_connection_that_closes_slowly_is_not_cancelled_half_way():
    """The hang-up waits `pc_close_timeout_s` for a peer connection to close; one that takes
    longer (an aiortc close stuck on a transport) finishes in the background: cancelled half
    way, aiortc leaves its transports and tasks behind."""
    from live.peer import close_connection

    class SlowToClose:
        closed = False

        async def close(self) -> None:
            await asyncio.sleep(0.3)
            self.closed = True

    async def main():
        pc = SlowToClose()
        await close_connection(pc, 0.05)
        assert not pc.closed                # back before it was done
        await asyncio.sleep(0.5)
        assert pc.closed

    run(main())


def test_an_answer_that_cannot_be_used_makes_the_offerer_offer_again():
    """The answerer's first answer is garbage: the offerer drops that session and, as after a
    broken connection, offers again; the second answer opens the call (it stalled before)."""
    from signaling.protocol import Answer

    async def main():
        async with SignalingServer("127.0.0.1", 0, ServerConfig()) as server:
            url = f"ws://127.0.0.1:{server.port}"
            a, b = Recorder(), Recorder()
            link_a = PeerLink(url, "room", [a], config=LiveConfig(session_open_timeout_s=10.0, reoffer_delay_s=0.2))
            await link_a.open()
            link_b = PeerLink(url, "room", [b], config=LIVE)
            send, spoilt = link_a._client.send, []

            async def spoil_first_answer(message):
                if isinstance(message, Answer) and not spoilt:
                    spoilt.append(message)
                    message = Answer("v=0 nothing usable")
                await send(message)

            link_a._client.send = spoil_first_answer       # a answers (b joins second and offers)
            await link_b.open()
            await a.wait_for("open")
            await b.wait_for("open")
            assert spoilt and link_b.sessions_opened == 1
            await link_b.close()
            await link_a.close()

    run(main())
