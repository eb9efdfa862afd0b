"""Key frames on the `stream` channel in paced pieces, so that parameter packets and the
voice pass between them on a slow link.

A key frame sent as one message fills a slow link's queue: aiortc's SCTP sends it as fast as
its congestion window allows and hands the next message (a parameter packet) to the network
only once every chunk of it has gone out, so at 64-128 kbit/s the pictures stall for the
whole key frame (docs/call.md, "Bad networks").  Here a key frame goes out as KEYFRAME_PIECE
messages (live.wire) of `keyframe_piece_bytes`, in *rounds*:

- a round sends `window` pieces back to back;
- the next round waits until the link has drained: every piece of the round has been
  acknowledged (`live.rtt.stream_unacked`), and then a chunk sent after that (a parameter
  packet, usually the next one) came back with a round-trip time at most `pace_drained_ms`
  above the least one of the last 10 s (`live.rtt.RttProbe`: SCTP measures one per
  acknowledgement), or the newest RTT measured, of the round's own pieces when nothing else
  is sent, did;
- the window doubles after a round that raised no queue (a fast link: a sharp key frame
  goes in a few round trips), halves after one that raised it more than `pace_shrink_ms`,
  and stays otherwise (a slow link: one piece a round, one piece's worth of queue);
- a round that finds no such moment within `pace_round_wait_max_s` (no RTTs measured, a
  link that never drains) goes anyway with one piece: the fallback pace, one piece a second.

So a parameter packet waits behind one round at most, and the key frame takes what the link
leaves.  `burst` sends a key frame's pieces at once instead (the small key frame, which the
receiver needs before anything can be shown: as fast as a single message would go); the
next round still waits for the link to drain after it.  A new setup cancels what is queued
(`cancel`: a new session, a key frame request, a new crop; the receiver discards a partial
key frame when the next one starts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from live.config import DEFAULT, LiveConfig
from live.rtt import RttProbe

log = logging.getLogger(__name__)

POLL_S = 0.01          # how often a waiting round looks at the link


@dataclass
class Transfer:
    """One key frame's pieces (packed `stream` messages) and what to do once all are sent."""

    pieces: list[bytes]
    done: Callable[[], None] = lambda: None
    sent: int = 0
    started: float | None = None       # monotonic time of its first piece


@dataclass
class PacingStats:
    rounds: int = 0
    fallback_rounds: int = 0          # rounds that went without a drained link (no RTTs, or it never drained)
    pieces_sent: int = 0
    window: int = 1
    last_transfer_s: float | None = None   # first to last piece of the last paced key frame

    def snapshot(self) -> dict:
        return dict(vars(self))


@dataclass
class Link:
    """What the pacer sees of the session: how to send, and how the link is doing."""

    send: Callable[[bytes], bool]
    probe: RttProbe | None = None                       # RTT samples (None: fallback pace only)
    unacked: Callable[[], bool | None] = lambda: None   # stream pieces not yet acknowledged (None: unknown)


@dataclass
class PiecePacer:
    link: Link
    live: LiveConfig = DEFAULT
    clock: Callable[[], float] = time.time                # the clock of the RTT samples (aiortc's)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    stats: PacingStats = field(default_factory=PacingStats)
    _queue: deque[Transfer] = field(default_factory=deque)
    _task: asyncio.Task | None = None
    _round_start: float | None = None                      # clock() when the last round (or burst) went
    _adjust: bool = False                                  # whether that round may change the window

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def burst(self, pieces: list[bytes]) -> bool:
        """Send `pieces` now, back to back; False when the first could not go (no session)."""
        for i, piece in enumerate(pieces):
            if not self.link.send(piece):
                return i > 0
            self.stats.pieces_sent += 1
        self._round_start, self._adjust = self.clock(), False
        return True

    def pace(self, transfer: Transfer) -> None:
        """Queue `transfer`: its pieces go out in rounds (on the running event loop)."""
        self._queue.append(transfer)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keyframe-pieces")

    def cancel(self) -> None:
        """Drop every queued piece (what was sent is sent)."""
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self._queue:
            await self._wait_for_link()
            if not self._send_round():
                self._queue.clear()
                return

    def _send_round(self) -> bool:
        """Up to `window` pieces now; False when the session cannot take them."""
        self._round_start, self._adjust = self.clock(), True
        self.stats.rounds += 1
        for _ in range(self.stats.window):
            if not self._queue:
                break
            t = self._queue[0]
            if t.started is None:
                t.started = time.monotonic()
            if not self.link.send(t.pieces[t.sent]):
                return False
            t.sent += 1
            self.stats.pieces_sent += 1
            if t.sent == len(t.pieces):
                self._queue.popleft()
                self.stats.last_transfer_s = round(time.monotonic() - t.started, 3)
                t.done()
        return True

    async def _wait_for_link(self) -> None:
        """Until the last round's pieces are acknowledged and a packet sent after that met
        no queue; at most `pace_round_wait_max_s` (then one piece goes)."""
        if self._round_start is None:
            return
        live = self.live
        deadline = self._round_start + live.pace_round_wait_max_s
        acked_at: float | None = None
        while True:
            now = self.clock()
            if acked_at is None and self.link.unacked() is False:
                acked_at = now
            probe = self.link.probe
            if acked_at is not None and probe is not None and self._drained(probe, acked_at):
                self._resize(probe)
                return
            if now >= deadline:
                self.stats.fallback_rounds += 1
                self.stats.window = 1
                return
            await self.sleep(POLL_S)

    def _drained(self, probe: RttProbe, acked_at: float) -> bool:
        """Whether a chunk sent after the round was acknowledged met no queue, or the newest
        RTT measured, of a chunk of this round or after (the round's own last piece, when
        nothing else is sent), met none."""
        drained = self.live.pace_drained_ms
        if any(probe.queue_ms(s) <= drained for s in probe.since(acked_at)):
            return True
        newest = probe.samples[-1] if probe.samples else None
        return (newest is not None and self._round_start is not None and newest.sent_at >= self._round_start
                and probe.queue_ms(newest) <= drained)

    def _resize(self, probe: RttProbe) -> None:
        """The window after a round, from the most queue it met."""
        if not self._adjust or self._round_start is None:
            return
        worst = max((probe.queue_ms(s) for s in probe.since(self._round_start)), default=0.0)
        if worst <= self.live.pace_drained_ms:
            self.stats.window = min(self.stats.window * 2, self.live.pace_window_max)
        elif worst > self.live.pace_shrink_ms:
            self.stats.window = max(1, self.stats.window // 2)


__all__ = ["Link", "PacingStats", "PiecePacer", "Transfer"]
