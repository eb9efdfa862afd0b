"""Reading and writing video files with PyAV (RGB frames as uint8 H x W x 3 arrays)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


class VideoError(Exception):
    """A video file could not be read or written."""


def probe_fps(path: str | Path) -> Fraction:
    """The frame rate of the first video stream (25 when the file does not say)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: cannot read video ({exc})") from None
    return Fraction(rate) if rate else Fraction(25)


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decoded RGB frames of the first video stream, in order."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: cannot open video ({exc})") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and count >= max_frames:
                    return
                yield frame.to_ndarray(format="rgb24")
                count += 1
        except av.FFmpegError as exc:
            if count == 0:
                raise VideoError(f"{path}: cannot decode video ({exc})") from None
            log.warning("%s: decoding stopped after %d frames (%s)", path, count, exc)


class VideoWriter:
    """Writes RGB frames to a file: H.264 (yuv420p, crf 18) or losslessly (RGB, qp 0)."""

    def __init__(self, path: str | Path, fps: Fraction | float, lossless: bool = False) -> None:
        self._container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        if lossless:
            self._stream = self._container.add_stream("libx264rgb", rate=rate,
                                                      options={"qp": "0", "preset": "veryfast"})
            self._stream.pix_fmt = "rgb24"
        else:
            self._stream = self._container.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
            self._stream.pix_fmt = "yuv420p"
        self._open = False

    def write(self, rgb: np.ndarray) -> None:
        if not self._open:
            self._stream.height, self._stream.width = rgb.shape[:2]
            self._open = True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._open:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
