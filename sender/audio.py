"""Where the sender's voice comes from (`--audio-source auto|default|DEVICE|FILE|none`).

- `FileAudio`: a file's audio track, decoded ahead (PyAV, 48 kHz mono) and paced with the
  video: the sample the file shows at the time of video frame n is sent as captured at the
  same wall-clock time as frame n (`start(wall_ms)` is the capture time of frame 0; with
  `--loop` the audio loops with the video, a pass lasting the video's frames).
- `MicAudio`: an ALSA capture device through PyAV (`default`, `hw:1`, `plughw:1,0`, ...),
  read on a thread; a chunk's capture time is when its last sample came in, minus 20 ms.

`open_audio` picks one; a source without an audio track, a device that cannot be opened
and `none` each give None and one log line: the call goes on without a voice.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from live.audio import CHUNK_MS, CHUNK_SAMPLES, SAMPLE_RATE, AudioFeed, Chunk, alsa_unavailable
from live.cli import SetupError
from live.clock import wall_ms

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(default|pulse|sysdefault|[a-z]*hw:[\w,=]+|[a-z]+:[\w,=]+)$")
_WEBCAM = re.compile(r"^(?:webcam(?::\d+)?|/dev/video\d+)$")


class NoAudio(Exception):
    """This source has no voice to send; str() says why (one log line)."""


def decode_audio(path: Path) -> tuple[np.ndarray, float] | None:
    """The first audio track of a file as 48 kHz mono int16 and the seconds its first
    sample lies after the video's first frame (None: no audio track)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            video = container.streams.video[0] if container.streams.video else None
            a_start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            v_start = (float(video.start_time * video.time_base)
                       if video is not None and video.start_time is not None else 0.0)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            parts = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, OSError) as exc:
        raise SetupError(f"cannot read the audio of {path}: {exc}") from None
    pcm = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    return pcm, a_start - v_start


def video_seconds(path: Path) -> float | None:
    """Seconds of one pass of a file's video (frames / frame rate), when the file says."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            v = container.streams.video[0]
            rate = v.average_rate or v.base_rate
            if v.frames and rate:
                return float(v.frames / Fraction(rate))
            if v.duration is not None:
                return float(v.duration * v.time_base)
    except (av.error.FFmpegError, OSError):
        return None
    return None


def aligned(pcm: np.ndarray, offset_s: float, seconds: float | None) -> np.ndarray:
    """`pcm` placed on the video's timeline (index 0 = the first video frame): delayed by
    `offset_s` (or cut at the front when negative), padded or cut to `seconds`."""
    shift = int(round(offset_s * SAMPLE_RATE))
    out = np.concatenate([np.zeros(shift, np.int16), pcm]) if shift >= 0 else pcm[-shift:]
    if seconds is not None:
        n = int(round(seconds * SAMPLE_RATE))
        out = out[:n] if out.size >= n else np.concatenate([out, np.zeros(n - out.size, np.int16)])
    return out


class FileAudio(AudioFeed):
    """A file's audio, paced from `start(wall_ms)` on: chunk k is due when its last sample
    is, at wall_ms + (k + 1) * 20 ms.  A track that starts late (a second session) begins
    with the chunk of now."""

    def __init__(self, path: Path, pcm: np.ndarray, loop: bool = False, max_seconds: float | None = None) -> None:
        self.name = f"the audio of {path}"
        self.path = path
        self.pcm = pcm
        self.loop = loop
        self.max_seconds = max_seconds
        self.muted = False
        self._started = asyncio.Event()
        self._w0: float | None = None
        self._next = 0

    def start(self, wall_ms_: float) -> None:
        if self._w0 is None:
            self._w0 = wall_ms_
            self._started.set()

    def _samples(self, k: int) -> np.ndarray | None:
        n = self.pcm.size
        if n == 0:
            return None
        lo = k * CHUNK_SAMPLES
        if self.max_seconds is not None and lo >= self.max_seconds * SAMPLE_RATE:
            return None
        if not self.loop:
            if lo >= n:
                return None
            part = self.pcm[lo:lo + CHUNK_SAMPLES]
            return np.pad(part, (0, CHUNK_SAMPLES - part.size)) if part.size < CHUNK_SAMPLES else part
        idx = (np.arange(lo, lo + CHUNK_SAMPLES)) % n
        return self.pcm[idx]

    async def chunk(self) -> Chunk | None:
        await self._started.wait()
        assert self._w0 is not None
        now_k = int((wall_ms() - self._w0) // CHUNK_MS) - 1      # the newest chunk complete by now
        k = max(self._next, now_k - 1)
        due = self._w0 + (k + 1) * CHUNK_MS
        delay = (due - wall_ms()) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)
        self._next = k + 1
        samples = self._samples(k)
        if samples is None:
            return None
        if self.muted:
            samples = np.zeros(CHUNK_SAMPLES, np.int16)
        return Chunk(samples, self._w0 + k * CHUNK_MS)


class MicAudio(AudioFeed):
    """An ALSA capture device (PyAV), read on a thread that keeps the newest 0.5 s."""

    def __init__(self, device: str) -> None:
        self.name = f"microphone {device!r}"
        self.muted = False
        why = alsa_unavailable()
        if why is not None:
            raise NoAudio(f"no microphone: {why}")
        try:
            self._container = av.open(device, format="alsa", options={"channels": "1"})
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise NoAudio(f"no microphone at ALSA device {device!r} ({exc})") from None
        self._queue: queue.Queue[Chunk] = queue.Queue(maxsize=25)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="microphone", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=CHUNK_SAMPLES)
        try:
            for frame in self._container.decode(audio=0):
                if self._stop.is_set():
                    break
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)[:CHUNK_SAMPLES]
                    chunk = Chunk(np.pad(samples, (0, CHUNK_SAMPLES - samples.size)), wall_ms() - CHUNK_MS)
                    try:
                        self._queue.put_nowait(chunk)
                    except queue.Full:
                        self._queue.get_nowait()
                        self._queue.put_nowait(chunk)
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s stopped: %s; the call goes on without a voice", self.name, exc)
        finally:
            self._container.close()

    async def chunk(self) -> Chunk | None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                chunk = await loop.run_in_executor(None, self._queue.get, True, 0.5)
            except queue.Empty:
                if not self._thread.is_alive():
                    return None
                continue
            if self.muted:
                chunk.samples = np.zeros(CHUNK_SAMPLES, np.int16)
            return chunk
        return None

    def close(self) -> None:
        self._stop.set()


def is_device(spec: str) -> bool:
    """An ALSA device name (default, hw:1, plughw:1,0, ...) rather than a file path."""
    return bool(_DEVICE.match(spec)) and not Path(spec).exists()


def open_audio(spec: str, video_source: str, loop: bool = False, max_frames: int | None = None,
               fps: Fraction | None = None) -> AudioFeed | None:
    """The feed `--audio-source spec` asks for, for the video `--source video_source`;
    None (with one log line) when there is no voice to send.  A FILE that does not exist
    or cannot be read: SetupError."""
    try:
        return _open(spec, video_source, loop, max_frames, fps)
    except NoAudio as exc:
        log.info("%s: the call goes on without a voice", exc)
        return None


def _open(spec: str, video_source: str, loop: bool, max_frames: int | None, fps: Fraction | None) -> AudioFeed:
    if spec == "none":
        raise NoAudio("no audio (--audio-source none)")
    camera = bool(_WEBCAM.match(video_source))
    if spec == "auto":
        if camera:
            return MicAudio("default")
        return _file(Path(video_source), loop, max_frames, fps, own=True)
    if is_device(spec):
        return MicAudio(spec)
    path = Path(spec)
    if not path.is_file():
        raise SetupError(f"--audio-source {spec}: no such audio file (or give auto, default, an ALSA device, none)")
    return _file(path, loop and not camera, max_frames, fps, own=path == Path(video_source))


def _file(path: Path, loop: bool, max_frames: int | None, fps: Fraction | None, own: bool) -> FileAudio:
    decoded = decode_audio(path)
    if decoded is None:
        raise NoAudio(f"{path} has no audio track")
    pcm, offset = decoded
    seconds = video_seconds(path) if (own and loop) else None
    pcm = aligned(pcm, offset if own else 0.0, seconds)
    limit = float(max_frames / fps) if (max_frames is not None and fps) else None
    log.info("voice: %s (%.1f s)", path, pcm.size / SAMPLE_RATE)
    return FileAudio(path, pcm, loop, limit)


__all__ = ["FileAudio", "MicAudio", "NoAudio", "aligned", "decode_audio", "is_device", "open_audio"]
