"""Lips in sync: the audio clock tied to the capture wall clock, and how long to hold.

aiortc exposes neither the RTCP sender report's RTP/NTP pair nor the sender's RTP timestamp
origin, so the sender says it in so many words: `AudioClock(pts, wall_ms)` on the control
channel, "the decoded sample at pts was captured at wall_ms" (with the first packet and
every second after; pts counts 48 kHz ticks from the track's first packet, which is what
the receiving aiortc's frames count too).  A `ClockMap` keeps them and gives any pts its
capture time; the parameter packets carry their frames' capture times already, so both
media are on the one clock (the sender's wall clock).

What the viewer sees of a frame comes `video_latency` after its capture (analysis, network,
synthesis); what they hear, `audio_latency` after (20 ms framing, network, jitter buffer).
`hold()` says which one waits, and how long, so that both come out `max(...)` after
capture: at most `MAX_HOLD_MS`, so that a stalled side never delays the other by more.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from live.clock import unwrap

MAX_HOLD_MS = 150.0
AUDIO_RATE = 48000
PTS_MODULUS = 1 << 32


class ClockMap:
    """The `AudioClock` mappings of one session: pts (unwrapped) -> sender wall ms."""

    def __init__(self) -> None:
        self._pts: list[int] = []
        self._wall: list[float] = []

    def __bool__(self) -> bool:
        return bool(self._pts)

    def add(self, pts: int, wall_ms: float, near: int | None = None) -> None:
        """A mapping; `pts` mod 2**32 is unwrapped next to `near` (the newest frame pts)."""
        ref = near if near is not None else (self._pts[-1] if self._pts else pts)
        full = unwrap(pts, ref, PTS_MODULUS)
        i = bisect.bisect_left(self._pts, full)
        if i < len(self._pts) and self._pts[i] == full:
            self._wall[i] = wall_ms
            return
        self._pts.insert(i, full)
        self._wall.insert(i, wall_ms)

    def wall_of(self, pts: int) -> float | None:
        """The sender's wall ms at which the sample at `pts` was captured (from the mapping
        nearest before it, or the first one), None before any mapping."""
        if not self._pts:
            return None
        i = max(0, bisect.bisect_right(self._pts, pts) - 1)
        return self._wall[i] + (pts - self._pts[i]) * 1000.0 / AUDIO_RATE


@dataclass(frozen=True)
class Hold:
    """How long each side waits before it is played or shown (ms, >= 0, one of them 0)."""

    audio_ms: float
    video_ms: float


def hold(audio_latency_ms: float | None, video_latency_ms: float | None, cap_ms: float = MAX_HOLD_MS) -> Hold:
    """Hold the earlier side by the difference of the two latencies (capture to ready),
    capped at `cap_ms`; no hold while either is unknown."""
    if audio_latency_ms is None or video_latency_ms is None:
        return Hold(0.0, 0.0)
    d = video_latency_ms - audio_latency_ms
    if d >= 0:
        return Hold(min(d, cap_ms), 0.0)
    return Hold(0.0, min(-d, cap_ms))


__all__ = ["MAX_HOLD_MS", "ClockMap", "Hold", "hold"]
