"""Pictures between the browser's WebRTC connection and the call halves.

- `SynthTrack`: a video track the server sends to the browser: the other side's
  synthesized face, fed by `TrackSink` from the receiver's synthesis thread.  Before the
  first picture (and while nobody is in the call) it repeats a plain placeholder so that
  the browser's video element has something to show.
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

from receiver.render import Sink
from sender.source import PushSource

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
        except (asyncio.TimeoutError, TimeoutError):
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
