"""Pictures between the browser's WebRTC connection and the call halves.

- `SynthTrack`: a video track the server sends to the browser: the other side's
  synthesized face, fed by `TrackSink` from the receiver's synthesis thread.  Before the
  first picture (and while nobody is in the call) it repeats a plain placeholder so that
  the browser's video element has something to show.
- `PushSource`: the sender's frame source for pictures handed in from outside;
- `pump_camera`: reads the browser's camera track and pushes its pictures into the
  sender's `PushSource`.
- the voice: `pump_mic` hands the browser's microphone, decoded, to a `PushAudio` feed (the
  sender half re-encodes it as our 12 kbit/s Opus for the other side); `VoiceTrack` sends
  the other side's voice back to the browser, in the same MediaStream as `SynthTrack`
  (aiortc gives one peer connection's tracks one stream id), so the browser's own lip sync
  applies.  aiortc stamps its RTCP sender reports with the time it sends, so the server
  sends both at the same age: whichever comes out earlier waits (`TrackSink.hold_ms` for the
  pictures, `VoiceTrack.hold_ms` for the voice; `live.lipsync.hold`, at most 150 ms).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import Packet, VideoFrame

from live.audio import CHUNK_SAMPLES, SAMPLE_RATE, AudioFeed, Chunk, OpusEncoder, to_mono_s16
from live.clock import wall_ms
from live.config import DEFAULT
from receiver.sinks import Sink
from sender.source import Captured, FrameSource, SourceError

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
BROWSER_BITRATE = 32000          # the other side's voice, server to browser (mono Opus)
UPLINK_BUFFER_MS = 80.0          # aiortc's audio jitter buffer: 4 packets of the browser's 20 ms, before decoding
CALL_FRAME_MS = DEFAULT.voice_frame_ms   # the voice between the call ends: as every call's (live.config)


def placeholder(size: int = 256) -> np.ndarray:
    """A dark grey square with a faint head outline: 'nobody here yet'."""
    import cv2

    img = np.full((size, size, 3), 40, np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, int(size * 0.42)), (int(size * 0.17), int(size * 0.22)), 0, 0, 360, (70, 70, 70), 2)
    cv2.ellipse(img, (c, size), (int(size * 0.36), int(size * 0.3)), 0, 180, 360, (70, 70, 70), 2)
    return img


class SynthTrack(MediaStreamTrack):
    """The other side's face as a WebRTC video track (a new picture is sent as soon as it
    is synthesized; without one the last picture is repeated every `idle_s`)."""

    kind = "video"

    def __init__(self, size: int = 256, idle_s: float = 0.2) -> None:
        super().__init__()
        self._picture = placeholder(size)
        self._fresh = asyncio.Event()
        self._idle = idle_s
        self._t0: float | None = None
        self.pictures = 0

    def put(self, picture: np.ndarray) -> None:
        """A new picture (on the event loop)."""
        self._picture = picture
        self.pictures += 1
        self._fresh.set()

    def blank(self) -> None:
        self.put(placeholder(self._picture.shape[0]))

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            await asyncio.wait_for(self._fresh.wait(), self._idle)
        except TimeoutError:
            pass
        self._fresh.clear()
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(self._picture), format="rgb24")
        frame.pts = int((now - self._t0) * VIDEO_CLOCK)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        return frame


class TrackSink(Sink):
    """Receiver sink (synthesis thread) that hands each picture to a `SynthTrack`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, track: SynthTrack) -> None:
        self._loop = loop
        self._track = track
        self.shown = 0
        self.hold_ms = 0.0        # lip sync: each picture waits this long (set on the event loop)
        self._session = 0         # counts the session breaks (event loop)

    def show(self, frame: int, picture: np.ndarray) -> bool:
        self.shown += 1
        try:
            self._loop.call_soon_threadsafe(self._put, picture)
        except RuntimeError:      # loop closed: shutting down
            pass
        return True

    def _put(self, picture: np.ndarray) -> None:
        if self.hold_ms > 0:
            self._loop.call_later(self.hold_ms / 1000.0, self._put_held, picture, self._session)
        else:
            self._track.put(picture)

    def _put_held(self, picture: np.ndarray, session: int) -> None:
        if session == self._session:      # a picture held past its session's end is not shown
            self._track.put(picture)

    def _blank(self) -> None:
        self._session += 1
        self._track.blank()

    def session_break(self) -> None:
        """The other side is gone: after its last picture, the placeholder."""
        try:
            self._loop.call_soon_threadsafe(self._blank)
        except RuntimeError:
            pass


async def _pump(track: MediaStreamTrack, name: str, take: Callable[[Any], None],
                describe: Callable[[Any], str]) -> None:
    """Every frame of a browser's track handed to `take`, until the track ends (one log line
    at the first frame, one at the end)."""
    count = 0
    try:
        while True:
            frame = await track.recv()
            take(frame)
            count += 1
            if count == 1:
                log.info("the browser's %s is coming in (%s)", name, describe(frame))
    except MediaStreamError:
        log.info("the browser's %s track ended after %d frames", name, count)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("reading the browser's %s track failed", name)


async def pump_camera(track: MediaStreamTrack, source: PushSource) -> None:
    """Browser camera frames -> the sender's source, until the track ends."""
    await _pump(track, "camera", lambda frame: source.push(frame.to_ndarray(format="rgb24")),
                lambda frame: f"{frame.width}x{frame.height}")


class PushSource(FrameSource):
    """A live source fed from outside: `push(rgb)` hands in pictures (from a browser's
    WebRTC track, say) on the event loop; `next()` gives the newest one not yet taken,
    so a slow consumer skips pictures.  `finish()` ends it (next() then returns None);
    `fail(message)` ends it with a `SourceError`."""

    live = True

    def __init__(self, name: str = "pushed pictures", fps: float = 25.0) -> None:
        self.name = name
        self.fps = Fraction(fps).limit_denominator(1001)
        self._latest: Captured | None = None
        self._taken = -1
        self._count = 0
        self._ended = False
        self._error: SourceError | None = None
        self._wake = asyncio.Event()

    def push(self, rgb: np.ndarray, t_ms: float | None = None) -> None:
        self._latest = Captured(rgb, wall_ms() if t_ms is None else t_ms, self._count)
        self._count += 1
        self._wake.set()

    def finish(self) -> None:
        self._ended = True
        self._wake.set()

    def fail(self, message: str) -> None:
        self._error = SourceError(message)
        self._wake.set()

    async def next(self) -> Captured | None:
        while True:
            latest = self._latest
            if latest is not None and latest.index > self._taken:
                self._taken = latest.index
                return latest
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.finish()


# -- the voice ---------------------------------------------------------------------------------

class PushAudio(AudioFeed):
    """The browser's microphone as the sender's audio feed: decoded frames pushed in on the
    event loop, 20 ms chunks out; at most `keep` chunks wait (older ones are dropped).  A
    chunk counts as captured when it reached the server, as the camera's pictures do, less
    `buffered_ms`: what the voice waited on the way that the pictures did not (aiortc's
    audio jitter buffer holds four packets before it decodes any: `UPLINK_BUFFER_MS`)."""

    def __init__(self, name: str = "the browser's microphone", keep: int = 5, buffered_ms: float = 0.0) -> None:
        self.name = name
        self.buffered_ms = buffered_ms
        self.muted = False
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._pending = np.zeros(0, np.int16)
        self._keep = keep

    def push(self, pcm: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, pcm])
        now = wall_ms()
        while self._pending.size >= CHUNK_SAMPLES:
            chunk, self._pending = self._pending[:CHUNK_SAMPLES], self._pending[CHUNK_SAMPLES:]
            age = (self._pending.size + CHUNK_SAMPLES) * 1000.0 / SAMPLE_RATE
            if self._queue.qsize() >= self._keep:
                self._queue.get_nowait()
            self._queue.put_nowait(Chunk(chunk, now - age - self.buffered_ms))

    async def chunk(self) -> Chunk | None:
        chunk = await self._queue.get()
        if chunk is None:
            self._queue.put_nowait(None)
            return None
        if self.muted:
            chunk.samples = np.zeros(CHUNK_SAMPLES, np.int16)
        return chunk

    def close(self) -> None:
        self._queue.put_nowait(None)


async def pump_mic(track: MediaStreamTrack, feed: PushAudio) -> None:
    """Browser microphone frames -> the sender's audio feed, until the track ends."""
    await _pump(track, "microphone", lambda frame: feed.push(to_mono_s16(frame)),
                lambda frame: f"{frame.sample_rate} Hz")


class VoiceTrack(MediaStreamTrack):
    """The other side's voice to the browser: Opus packets (mono, `BROWSER_BITRATE`,
    `frame_ms` long, coded on the event loop as `live.audio` does) at real-time pace;
    silence while none is there, so the browser's stream never stalls.  `put` is called on
    the event loop with each decoded frame; its samples leave `hold_ms` after they came at
    the earliest (lip sync, when the pictures are the later side), and ones older than that
    plus `slack_ms` are dropped (the pace fell behind)."""

    kind = "audio"

    def __init__(self, slack_ms: float = 80.0, bitrate: int = BROWSER_BITRATE, frame_ms: int = 40) -> None:
        super().__init__()
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._slack = slack_ms
        self._encoder = OpusEncoder(bitrate, frame_ms)
        self._frame_s = frame_ms / 1000.0
        self.hold_ms = 0.0
        self._t0: float | None = None
        self._n = 0

    def put(self, captured_ms: float, pcm: np.ndarray) -> None:
        now = time.monotonic()
        self._drop_old(now)         # also here: a browser that never connects never pulls (`recv`)
        self._frames.append((now, pcm))

    def _drop_old(self, now: float) -> None:
        """Drop the samples older than `hold_ms` plus the slack: the newest are what matter."""
        oldest = now - (self.hold_ms + self._slack) / 1000.0
        while self._frames and self._frames[0][0] < oldest:
            self._frames.popleft()

    def flush(self) -> None:
        """Drop the samples that wait (the other side muted): silence from the next packet."""
        self._frames.clear()

    def _next(self, now: float) -> np.ndarray:
        """One packet's samples: the oldest that are due, then silence."""
        hold = self.hold_ms / 1000.0
        self._drop_old(now)
        out, need = [], self._encoder.frame_samples
        while need > 0 and self._frames and now - self._frames[0][0] >= hold:
            t, pcm = self._frames[0]
            if pcm.size <= need:
                self._frames.popleft()
                out.append(pcm)
                need -= pcm.size
            else:
                out.append(pcm[:need])
                self._frames[0] = (t, pcm[need:])
                need = 0
        if need > 0:
            out.append(np.zeros(need, np.int16))
        return np.concatenate(out) if len(out) > 1 else out[0]

    async def recv(self) -> Packet:   # type: ignore[override]  (aiortc sends an av.Packet as it is)
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            due = self._t0 + self._n * self._frame_s
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.2:                        # stalled (a busy machine): skip to now
                self._n = int((now - self._t0) / self._frame_s)
            pcm = self._next(time.monotonic())
            data = self._encoder.encode(pcm)
            n, self._n = self._n, self._n + 1
            if data is None:
                continue
            packet = Packet(data)
            packet.pts = n * self._encoder.frame_samples
            packet.time_base = Fraction(1, SAMPLE_RATE)
            return packet
