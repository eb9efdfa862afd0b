"""Round-trip times of a session's SCTP association, as its SACKs measure them.

The sender paces key frame pieces by the queue they build on the way (sender.pacing), and
the queue shows in the round-trip time: a packet that waits behind others at the
bottleneck is acknowledged that much later.  SCTP measures an RTT for almost every
acknowledgement (RFC 4960 6.3.1: a chunk sent once, the first one a SACK newly
acknowledges), and the receiver acknowledges every packet, so a call's 25 parameter
packets a second give 25 samples a second, with no extra traffic on the wire.

aiortc keeps those samples to itself (`RTCSctpTransport._update_rto`, private); `RttProbe`
wraps that method on one transport instance to see each sample as it is taken.  Where this
aiortc has no such method, `watch` returns None (logged once) and the pacer goes at its
fallback pace.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KEEP = 256            # samples kept (10 s of parameter packets)
BASE_WINDOW_S = 10.0  # the base RTT: the least one measured in the last this many seconds
_HOOKED = "_facecall_rtt_probe"
_warned = False


@dataclass(frozen=True)
class Sample:
    sent_at: float     # time.time() when the chunk was sent (aiortc's clock for it)
    rtt_ms: float


@dataclass
class RttProbe:
    """The newest RTT samples of one association and its base RTT (`min_ms`): the least
    RTT measured in the last `window_s` seconds, so that a route that became longer (a base
    RTT that rose for good) is the new base once the window has passed."""

    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=KEEP))
    window_s: float = BASE_WINDOW_S
    min_ms: float | None = None
    count: int = 0
    # (measured at, rtt ms) of the window's samples that no later one beat: RTTs rise front to back
    _lows: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, now: float, rtt_s: float) -> None:
        rtt_ms = rtt_s * 1000.0
        self.samples.append(Sample(now - rtt_s, rtt_ms))
        lows = self._lows
        while lows and lows[-1][1] >= rtt_ms:
            lows.pop()
        lows.append((now, rtt_ms))
        while lows[0][0] < now - self.window_s:
            lows.popleft()
        self.min_ms = lows[0][1]
        self.count += 1

    def queue_ms(self, sample: Sample) -> float:
        """How much longer than the base RTT `sample` took: the queue it met."""
        return sample.rtt_ms - (self.min_ms if self.min_ms is not None else sample.rtt_ms)

    def since(self, sent_at: float) -> list[Sample]:
        """The samples of chunks sent at or after `sent_at` (oldest first)."""
        return [s for s in self.samples if s.sent_at >= sent_at]


def watch(sctp: Any) -> RttProbe | None:
    """An `RttProbe` fed by `sctp` (an aiortc RTCSctpTransport); the same one when asked
    again; None when this aiortc does not measure RTTs where expected."""
    global _warned
    probe = getattr(sctp, _HOOKED, None)
    if isinstance(probe, RttProbe):
        return probe
    original = getattr(sctp, "_update_rto", None)
    if not callable(original):
        if not _warned:
            log.warning("this aiortc measures no SCTP round-trip times where expected: key frame pieces go "
                        "at the fallback pace")
            _warned = True
        return None
    probe = RttProbe()

    def hooked(rtt: float) -> None:
        probe.add(time.time(), rtt)
        original(rtt)

    sctp._update_rto = hooked
    setattr(sctp, _HOOKED, probe)
    return probe


def stream_unacked(sctp: Any, channel: Any) -> bool | None:
    """Whether `channel` (an aiortc RTCDataChannel on `sctp`) still has messages that the
    other end has not acknowledged: waiting in the channel, or chunks queued or in flight
    in the association.  None when this aiortc keeps them elsewhere."""
    try:
        if channel.bufferedAmount > 0:
            return True
        sid = channel.id
        for queue in (sctp._outbound_queue, sctp._sent_queue):
            for chunk in queue:
                if chunk.stream_id == sid and not chunk._acked and not chunk._abandoned:
                    return True
        return False
    except (AttributeError, TypeError):
        return None


__all__ = ["RttProbe", "Sample", "stream_unacked", "watch"]
