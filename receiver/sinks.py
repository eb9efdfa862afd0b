"""Where the receiver's pictures go: a video file and a window on the screen.

Both are driven from the synthesis thread (`receiver.render`).

`Sink` is what every picture destination implements (the web demo's video track too).
`FileSink` writes what a viewer saw, frame slot by frame slot: a frame that was lost,
undecodable or dropped as stale is filled with the picture shown before it (up to
`max_gap_s`; longer gaps are not filled).  Each session (one connection with a peer) is
one file, closed properly when the session ends: OUT.mp4, then OUT-2.mp4, OUT-3.mp4 if
the peer comes back.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from codec_core.video import VideoWriter
from receiver.screen import Screen, ScreenError, open_screen

log = logging.getLogger(__name__)


class Sink:
    """Where pictures go (called on the synthesis thread)."""

    def set_fps(self, fps: float) -> None:
        pass

    def show(self, frame: int, picture: np.ndarray) -> bool:
        """Show one picture; False asks the call to end (window closed)."""
        return True

    def idle(self) -> bool:
        return True

    def pending(self) -> bool:
        """Pictures wait to be shown (the synthesis thread then calls `idle` more often)."""
        return False

    def session_break(self) -> None:
        pass

    def close(self) -> None:
        pass


def segment_path(path: Path, index: int) -> Path:
    """OUT.mp4 for the first session, OUT-2.mp4 for the second, ..."""
    return path if index == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


class FileSink(Sink):
    def __init__(self, path: str | Path, max_gap_s: float = 2.0) -> None:
        self.path = Path(path)
        self.max_gap_s = max_gap_s
        self.fps = 25.0
        self.segments: list[Path] = []
        self.frames_written = 0
        self.frames_repeated = 0
        self._writer: VideoWriter | None = None
        self._last_frame: int | None = None
        self._last_picture: np.ndarray | None = None

    def set_fps(self, fps: float) -> None:
        if self._writer is None:
            self.fps = fps

    def show(self, frame: int, picture: np.ndarray) -> bool:
        if self._writer is None:
            path = segment_path(self.path, len(self.segments) + 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = VideoWriter(path, self.fps)
            self.segments.append(path)
            log.info("writing %s", path)
        if self._last_frame is not None:
            gap = frame - self._last_frame - 1
            if 0 < gap <= self.max_gap_s * self.fps:
                for _ in range(gap):
                    self._writer.write(self._last_picture)
                self.frames_repeated += gap
        self._writer.write(picture)
        self.frames_written += 1
        self._last_frame, self._last_picture = frame, picture
        return True

    def session_break(self) -> None:
        if self._writer is not None:
            self._writer.close()
            log.info("closed %s", self.segments[-1])
        self._writer, self._last_frame, self._last_picture = None, None, None

    def close(self) -> None:
        self.session_break()


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# window keys: control and step (docs/call.md); r resets, q or Esc ends the call
WINDOW_KEYS = {
    "a": ("yaw", -5.0), "d": ("yaw", 5.0), "w": ("pitch", -5.0), "s": ("pitch", 5.0),
    "z": ("roll", -5.0), "x": ("roll", 5.0), "m": ("smile", 0.25), "n": ("smile", -0.25),
    "o": ("jaw_open", 0.25), "p": ("jaw_open", -0.25), "b": ("blink", 0.5), "v": ("blink", -0.5),
    "e": ("brow_raise", 0.25), "c": ("brow_raise", -0.25),
    "j": ("gaze_x", -0.25), "l": ("gaze_x", 0.25), "i": ("gaze_y", -0.25), "k": ("gaze_y", 0.25),
}


MUTE_KEY = "u"      # mute / unmute this end's voice


class WindowSink(Sink):
    """The receiver's window (receiver.screen); closing it or pressing q / Esc ends the call;
    the keys of WINDOW_KEYS edit the face live through `on_edits`."""

    def __init__(self, title: str = "facecall", on_edits=None) -> None:
        self.title = title
        self._screen: Screen | None = None
        self._failed = False
        self.on_edits = on_edits
        self.on_mute = None           # `u`: mute or unmute this end's own voice (python -m call)
        self.edits = None
        self.hold_ms: Callable[[], float] | None = None   # lip sync with the voice played here
        self._held: deque[tuple[float, np.ndarray]] = deque()

    def _key(self, key: str) -> None:
        """Live editing from the keyboard (WINDOW_KEYS); r resets."""
        from models.editing import Edits

        if key == MUTE_KEY:
            if self.on_mute is not None:
                self.on_mute()
            else:
                log.info("this end sends no voice to mute")
            return
        if key == "r":
            self.edits = Edits()
        elif key in WINDOW_KEYS:
            name, delta = WINDOW_KEYS[key]
            self.edits = (self.edits or Edits()).nudged(name, delta)
        else:
            return
        log.info("edits: %s", self.edits.to_dict() or "none")
        self.on_edits(self.edits)

    def show(self, frame: int, picture: np.ndarray) -> bool:
        if self._failed:
            return True
        hold = self.hold_ms() if self.hold_ms is not None else 0.0
        if hold <= 0 and not self._held:
            return self._display(picture)
        self._held.append((time.monotonic() + hold / 1000.0, picture))    # held for the voice to catch up
        return self._release()

    def pending(self) -> bool:
        return bool(self._held)

    def _release(self) -> bool:
        """Show the held pictures that are due (the newest of them), then look at the keys."""
        now, due = time.monotonic(), None
        while self._held and self._held[0][0] <= now:
            due = self._held.popleft()[1]
        return self._display(due) if due is not None else self._keys()

    def _display(self, picture: np.ndarray) -> bool:
        try:
            if self._screen is None:
                self._screen = open_screen(self.title)
            self._screen.show(picture)
        except ScreenError as exc:
            log.error("cannot show a window (%s); going on without it", exc)
            self._failed = True
            return True
        return self._keys()

    def idle(self) -> bool:
        if self._held:
            return self._release()
        return self._keys()

    def _keys(self) -> bool:
        if self._screen is None or self._failed:
            return True
        still_open, keys = self._screen.poll()
        for key in keys:
            if key in ("q", "Escape"):
                return False
            if self.on_edits is not None or key == MUTE_KEY:
                self._key(key)
        return still_open

    def close(self) -> None:
        if self._screen is not None:
            self._screen.close()
            self._screen = None
