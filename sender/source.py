"""Where the sender's pictures come from: a camera (OpenCV) or a video file (PyAV).

`open_source("webcam")`, `open_source("webcam:1")`, `open_source("/dev/video2")` or
`open_source("clip.mp4", loop=True, max_frames=250)`.  `await source.next()` gives the next
`Captured` picture (RGB) with its wall-clock capture time, or None at the end.

- A camera is live: a reader thread keeps only the newest picture, so a slow consumer
  skips pictures instead of falling behind.  A camera that stops delivering raises
  `SourceError`.
- A file is paced at its own frame rate once `start_clock()` has been called (frame n is
  due n / fps after the first); before that, pictures come as fast as they decode (the
  sender looks for the face in them).  A late frame is handed out at once and never
  skipped, so every run of the same file sees the same pictures.  A thread decodes ahead.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from codec.encoder import stream_fps
from codec_core.video import VideoError, probe_fps, read_frames
from live.cli import CallError
from live.clock import wall_ms

log = logging.getLogger(__name__)


class SourceError(CallError):
    """The source cannot be opened or stopped working; str() says what to do."""


@dataclass
class Captured:
    rgb: np.ndarray      # H x W x 3 uint8
    t_ms: float          # wall clock at capture (ms)
    index: int           # picture number within the source


class FrameSource:
    fps: Fraction
    live: bool
    name: str
    pass_frames: int | None = None      # a file's frames in one pass, once it has been read through

    async def next(self) -> Captured | None:
        raise NotImplementedError

    def pushback(self, captured: Captured) -> None:
        """Hand this picture out again next (files); live sources ignore it."""

    def start_clock(self) -> None:
        """Pace from now on (files)."""

    def close(self) -> None:
        pass


_END = object()


class FileSource(FrameSource):
    live = False

    def __init__(self, path: str | Path, loop: bool = False, max_frames: int | None = None, prefetch: int = 8) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise SourceError(f"no video file at {path} (give --source webcam[:INDEX] or a video file)")
        try:
            self.fps = stream_fps(probe_fps(self.path))     # one a session header can declare
        except VideoError as exc:
            raise SourceError(f"{path}: {exc}") from None
        self.loop = loop
        self.max_frames = max_frames
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._back: list[Captured] = []
        self._t0: float | None = None
        self._paced = 0
        self._thread = threading.Thread(target=self._read, name="file-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        count = 0
        try:
            while True:
                this_pass = 0
                for rgb in read_frames(self.path):
                    if self.max_frames is not None and count >= self.max_frames:
                        break
                    if not self._put((count, rgb)):
                        return
                    count += 1
                    this_pass += 1
                if this_pass == 0 and count == 0:
                    raise VideoError(f"{self.path}: holds no video frames")
                if self.pass_frames is None:
                    self.pass_frames = this_pass
                if not self.loop or this_pass == 0 or (self.max_frames is not None and count >= self.max_frames):
                    break
        except VideoError as exc:
            self._put(SourceError(str(exc)))
            return
        except Exception as exc:  # a decoder crash must end the sender with a message, not a hang
            self._put(SourceError(f"{self.path}: reading failed ({exc})"))
            return
        self._put(_END)

    async def _get(self):
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await loop.run_in_executor(None, self._queue.get, True, 0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return _END

    def start_clock(self) -> None:
        self._t0 = time.monotonic()
        self._paced = 0

    async def next(self) -> Captured | None:
        if self._t0 is not None:
            due = self._t0 + self._paced / float(self.fps)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._paced += 1
        if self._back:
            captured = self._back.pop()
            captured.t_ms = wall_ms()
            return captured
        item = await self._get()
        if item is _END:
            self._put(_END)   # stay at the end for later calls
            return None
        if isinstance(item, SourceError):
            raise item
        index, rgb = item
        return Captured(rgb, wall_ms(), index)

    def pushback(self, captured: Captured) -> None:
        self._back.append(captured)

    def close(self) -> None:
        """Stop the reader thread, and wake a `next()` waiting on an empty queue."""
        self._stop.set()
        try:
            self._queue.put_nowait(_END)
        except queue.Full:       # nobody waits on a full queue
            pass


_WEBCAM = re.compile(r"^(?:webcam(?::(\d+))?|/dev/video(\d+))$")


class CameraSource(FrameSource):
    live = True

    def __init__(self, index: int, fail_after_s: float = 2.0, default_fps: float = 25.0,
                 close_timeout_s: float = 0.2) -> None:
        import cv2

        self.index = index
        self.name = f"camera {index} (/dev/video{index})"
        self._cv2 = cv2
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2) if Path(f"/dev/video{index}").exists() else cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}: no such camera, or it is busy "
                              "(give --source FILE to send a video file instead)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = Fraction(fps).limit_denominator(1001) if fps and 1 <= fps <= 120 else Fraction(default_fps)
        self._cap = cap
        self._fail_after = fail_after_s
        self._close_timeout = close_timeout_s
        self._lock = threading.Lock()
        self._latest: Captured | None = None
        self._taken = -1
        self._error: SourceError | None = None
        self._stop = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._read, name="camera-reader", daemon=True)
        self._thread.start()

    def _notify(self) -> None:
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:   # loop closed
                pass

    def _read(self) -> None:
        try:
            self._read_until_stopped()
        finally:
            self._cap.release()      # here, never while a read is in progress

    def _read_until_stopped(self) -> None:
        count, failing_since = 0, None
        while not self._stop.is_set():
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                failing_since = None
                rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
                with self._lock:
                    self._latest = Captured(rgb, wall_ms(), count)
                count += 1
                self._notify()
                continue
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > self._fail_after:
                self._error = SourceError(f"{self.name} stopped delivering pictures (unplugged?)")
                self._notify()
                return
            time.sleep(0.05)

    async def next(self) -> Captured | None:
        if self._wake is None:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while True:
            with self._lock:
                latest = self._latest
            if latest is not None and latest.index > self._taken:
                self._taken = latest.index
                return latest
            if self._error is not None:
                raise self._error
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except TimeoutError:
                pass

    def close(self) -> None:
        """Stop the reader thread (it releases the camera); wait for it a moment at most."""
        self._stop.set()
        self._thread.join(timeout=self._close_timeout)


def open_source(spec: str, loop: bool = False, max_frames: int | None = None, fail_after_s: float = 2.0,
                default_fps: float = 25.0, close_timeout_s: float = 0.2) -> FrameSource:
    """A camera for `webcam`, `webcam:N` or `/dev/videoN`, otherwise a video file."""
    m = _WEBCAM.match(spec)
    if m:
        return CameraSource(int(m.group(1) or m.group(2) or 0), fail_after_s, default_fps, close_timeout_s)
    return FileSource(spec, loop, max_frames)
