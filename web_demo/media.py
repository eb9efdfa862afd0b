"""Pictures between the browser's WebRTC connection and the call halves.

- `SynthTrack`: a video track the server sends to the browser: the other side's
  synthesized face, fed by `TrackSink` from the receiver's synthesis thread.  Before the
  first picture (and while nobody is in the call) it repeats a plain placeholder so that
  the browser's video element has something to show.
- `PushSource`: the sender's frame source for pictures handed in from outside;
- `pump_camera`: reads the browser's camera track and pushes its pictures into the
  sender's `PushSource`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from fractions import Fraction

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from live.clock import wall_ms
from receiver.sinks import Sink
from sender.source import Captured, FrameSource, SourceError

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000


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

    def show(self, frame: int, picture: np.ndarray) -> bool:
        self.shown += 1
        try:
            self._loop.call_soon_threadsafe(self._track.put, picture)
        except RuntimeError:      # loop closed: shutting down
            pass
        return True

    def session_break(self) -> None:
        """The other side is gone: after its last picture, the placeholder."""
        try:
            self._loop.call_soon_threadsafe(self._track.blank)
        except RuntimeError:
            pass


async def pump_camera(track: MediaStreamTrack, source: PushSource) -> None:
    """Browser camera frames -> the sender's source, until the track ends."""
    count = 0
    try:
        while True:
            frame = await track.recv()
            source.push(frame.to_ndarray(format="rgb24"))
            count += 1
            if count == 1:
                log.info("first camera picture from the browser: %dx%d", frame.width, frame.height)
    except MediaStreamError:
        log.info("the browser's camera track ended after %d pictures", count)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("reading the browser's camera track failed")

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
