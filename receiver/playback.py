"""The other side's voice on this machine's speakers (an ALSA device through PyAV), held so
that it matches the synthesized mouth.

Each decoded 20 ms frame is played at its capture time plus the latency the pictures have
(capture to synthesized picture, the median of the last frames) when that is later than
the sound's own, by at most `live.lipsync.MAX_HOLD_MS` more (`live.lipsync.hold`).  A
machine without a sound device (a server, this CI) gets one log line and no playback; the
voice still goes into `--output`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

import av
import numpy as np

from live.audio import SAMPLE_RATE, alsa_unavailable
from live.clock import wall_ms
from live.lipsync import Hold, hold

log = logging.getLogger(__name__)

RECENT = 50        # frames whose latencies make the running medians


class Latencies:
    """Running medians of the audio and the video latency (capture to ready, ms)."""

    def __init__(self) -> None:
        self.audio: deque[float] = deque(maxlen=RECENT)
        self.video: deque[float] = deque(maxlen=RECENT)

    def _hold(self) -> Hold:
        audio, video = list(self.audio), list(self.video)      # copies: the deques grow on the event loop
        return hold(float(np.median(audio)) if audio else None, float(np.median(video)) if video else None)

    def audio_hold_ms(self) -> float:
        """How long the voice waits for the pictures (ms)."""
        return self._hold().audio_ms

    def video_hold_ms(self) -> float:
        """How long the pictures wait for the voice (ms; the window holds them, synthesis thread)."""
        return self._hold().video_ms


class DevicePlayer:
    """Plays mono 48 kHz frames on an ALSA device at capture time + latency + hold."""

    def __init__(self, device: str, latencies: Latencies) -> None:
        self.device = device
        self.latencies = latencies
        why = alsa_unavailable()
        if why is not None:
            raise OSError(f"no sound output: {why}")
        try:
            self._container = av.open(device, "w", format="alsa")
            self._stream = self._container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
            self._container.start_encoding()       # opens the device now, not at the first frame
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise OSError(f"no sound output at ALSA device {device!r} ({exc})") from None
        self._queue: queue.Queue[tuple[float, np.ndarray] | None] = queue.Queue(maxsize=100)
        self._thread = threading.Thread(target=self._run, name="playback", daemon=True)
        self._thread.start()

    def play(self, captured_ms: float, pcm: np.ndarray) -> None:
        latency = wall_ms() - captured_ms
        self.latencies.audio.append(latency)
        due = wall_ms() + self.latencies.audio_hold_ms()
        try:
            self._queue.put_nowait((due, pcm))
        except queue.Full:
            pass

    def flush(self) -> None:
        """Drop what waits to be played (the other side muted)."""
        try:
            while True:
                if self._queue.get_nowait() is None:     # closing: keep the end for the thread
                    self._queue.put_nowait(None)
                    return
        except queue.Empty:
            pass

    def _run(self) -> None:
        n = 0
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                due, pcm = item
                delay = (due - wall_ms()) / 1000.0
                if delay > 0:
                    time.sleep(delay)
                frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
                frame.sample_rate = SAMPLE_RATE
                frame.pts = n
                n += pcm.size
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("playback on %r stopped: %s", self.device, exc)
        finally:
            self._container.close()

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass


def open_player(device: str, latencies: Latencies) -> DevicePlayer | None:
    """A player on `device` ("none": no player), or None with one log line."""
    if device == "none":
        return None
    try:
        return DevicePlayer(device, latencies)
    except OSError as exc:
        log.info("%s: the voice is not played here (it still goes into --output)", exc)
        return None


__all__ = ["DevicePlayer", "Latencies", "open_player"]
