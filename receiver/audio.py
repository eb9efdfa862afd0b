"""The receiver's side of the voice: the other side's Opus track in, decoded 20 ms frames
kept per session (for the output file) and handed to the playback device, numbers out.

A mute of the other side takes effect here at once: its `muted` control message comes on
the reliable control channel, ahead of the voice that was still on the way (jitter
buffers, packets in flight: 0.3-0.5 s in the browser demo's two call ends); from then on
nothing is played until it unmutes, and what the player still holds is dropped.  A mute
lasts as long as its session: when the session closes it is forgotten (the sender says
`muted` with its state at the start of every session).  The output file keeps everything
that was received.

Each session's audio is a `VoiceSegment`: the decoded mono PCM by pts, the session's
`AudioClock` mappings (`live.lipsync.ClockMap`) and the capture times of the frames that
were rendered, which is all `receiver.voicefile` needs to lay the sound under the pictures
of that session's output file at the time it was captured.  When a session ends (or the
receiver finishes) its segment is sealed; the file sink takes it when it closes the file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from live.audio import RTP_OVERHEAD_BYTES, SAMPLE_RATE, to_mono_s16
from live.clock import STAMP_MODULUS, unwrap, wall_ms
from live.lipsync import ClockMap
from live.peer import Session
from live.stats import Samples, summary
from live.wire import AudioClock, Muted

log = logging.getLogger(__name__)

STATS_EVERY = 25          # frames between two looks at aiortc's RTP counters (0.5-1.5 s)


@dataclass
class VoiceSegment:
    """One session's voice, and what places it under that session's pictures."""

    session: object          # the live.peer.Session it came on
    chunks: list[tuple[int, np.ndarray]] = field(default_factory=list)   # (pts, mono int16)
    clock: ClockMap = field(default_factory=ClockMap)
    frames: list[tuple[int, float]] = field(default_factory=list)        # (frame, capture wall ms)

    def add_frame(self, frame: int, capture_stamp: int) -> None:
        self.frames.append((frame, unwrap(capture_stamp, int(wall_ms()), STAMP_MODULUS)))

    def video_zero_ms(self, fps: float) -> float | None:
        """The sender's wall ms of the output file's time 0 (its first frame's slot): the
        median over the rendered frames of capture time minus slot time, so that one late
        capture does not move the whole sound."""
        if not self.frames:
            return None
        first = min(f for f, _ in self.frames)
        return float(np.median([t - (f - first) * 1000.0 / fps for f, t in self.frames]))


@dataclass
class VoiceStats:
    frames: int = 0              # decoded frames (one a packet)
    samples: int = 0
    sessions_with_voice: int = 0
    latency: Samples = field(default_factory=Samples)   # capture of a frame's first sample to decoded
    packets: int = 0
    lost: int = 0
    sender_packets: int = 0      # the sender's RTCP report: packets and Opus payload bytes sent
    sender_bytes: int = 0
    peer_muted: bool = False

    @property
    def payload_bytes(self) -> int:
        """Opus payload bytes received: the frames decoded at the sender's mean packet size
        (aiortc tells a receiver no packet sizes; the sender reports its own every second)."""
        if not self.sender_packets:
            return 0
        return int(round(self.frames * self.sender_bytes / self.sender_packets))

    def seconds(self) -> float | None:
        return self.samples / SAMPLE_RATE if self.samples else None

    def snapshot(self) -> dict:
        s = self.seconds()
        rate = (lambda n: round(n * 8 / 1000 / s, 3) if s else None)  # noqa: E731
        wire = self.payload_bytes + self.frames * RTP_OVERHEAD_BYTES
        return {"frames": self.frames, "seconds": round(s, 2) if s else None, "latency_ms": summary(self.latency),
                "packets": self.packets, "packets_lost": self.lost, "payload_bytes": self.payload_bytes,
                "payload_kbps": rate(self.payload_bytes), "wire_kbps": rate(wire), "peer_muted": self.peer_muted}


class VoiceReceiver:
    """Consumes the other side's audio track of each session (on the event loop)."""

    def __init__(self, play: Callable[[float, np.ndarray], None] | None = None, keep: bool = False) -> None:
        self.stats = VoiceStats()
        self.play = play                   # (capture wall ms, mono int16): the playback device
        self.flush: Callable[[], None] | None = None   # drops what the playback device still holds
        self.keep = keep                   # keep the decoded voice for an output file
        self._current: VoiceSegment | None = None
        self._sealed: list[VoiceSegment] = []
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._last_pts: int | None = None
        self._early: list[AudioClock] = []     # mappings that came before the session was open here

    # -- event loop ----------------------------------------------------------------------

    def session_opened(self, session: Session) -> None:
        self._current = VoiceSegment(session)
        self._last_pts = None
        for message in self._early:
            self._current.clock.add(message.pts, message.wall_ms)
        self._early = []

    def on_audio(self, session: Session, track: MediaStreamTrack) -> None:
        for earlier in list(self._tasks):       # an earlier session's track, one that never connected
            earlier.cancel()                    # included: aiortc never ends its recv (a task a retry)
        task = asyncio.ensure_future(self._consume(session, track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_control(self, message) -> None:
        seg = self._current
        if isinstance(message, AudioClock):
            if seg is not None:
                seg.clock.add(message.pts, message.wall_ms, self._last_pts)
            else:     # the control channel opened before the others: keep it for the session
                self._early.append(message)
        elif isinstance(message, Muted):
            self.stats.peer_muted = message.muted
            if message.muted and self.flush is not None:
                self.flush()
            log.info("the other side %s", "muted their voice" if message.muted else "unmuted their voice")

    def frame_rendered(self, frame: int, capture_stamp: int) -> None:
        if self._current is not None:
            self._current.add_frame(frame, capture_stamp)

    def seal(self) -> None:
        """The current session's voice is complete: keep it for the file sink.  The other
        side's mute ends with its session (a new one says again if it is muted)."""
        seg, self._current = self._current, None
        self._early = []
        self.stats.peer_muted = False
        if seg is not None:
            with self._lock:
                self._sealed.append(seg)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _consume(self, session: Session, track: MediaStreamTrack) -> None:
        first = True
        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            seg = self._current
            if seg is None or seg.session is not session or frame.pts is None:
                continue
            if first:
                self.stats.sessions_with_voice += 1
                log.info("the other side's voice is coming in")
                first = False
            pcm = to_mono_s16(frame)
            pts = int(frame.pts)
            self._last_pts = pts
            if self.keep:
                seg.chunks.append((pts, pcm))
            self.stats.frames += 1
            self.stats.samples += pcm.size
            captured = seg.clock.wall_of(pts)
            if captured is not None:
                self.stats.latency.append(wall_ms() - captured)
                if self.play is not None and not self.stats.peer_muted:
                    self.play(captured, pcm)
            if self.stats.frames % STATS_EVERY == 1:
                await self._count(session)

    async def _count(self, session: Session) -> None:
        _, inbound = await session.audio_stats()
        if inbound:
            self.stats.packets = inbound.get("packets", self.stats.packets)
            self.stats.lost = inbound.get("lost", self.stats.lost)
            self.stats.sender_packets = inbound.get("sender_packets", self.stats.sender_packets)
            self.stats.sender_bytes = inbound.get("sender_bytes", self.stats.sender_bytes)

    # -- the synthesis thread (file sink) ------------------------------------------------

    def take_sealed(self) -> VoiceSegment | None:
        """The newest sealed segment (older ones had no file to go into), once."""
        with self._lock:
            sealed, self._sealed = self._sealed, []
        return sealed[-1] if sealed else None


__all__ = ["VoiceReceiver", "VoiceSegment", "VoiceStats"]
