"""Reading and writing video files (RGB frames as uint8 H x W x 3 arrays).

Containers go through PyAV.  Raw RGB sequences in the layout of the GFVC common test
conditions, `NAME_WxH_FPS_8bit_444.rgb`, are read directly: size and frame rate come from
the name, and each frame is planar, the R plane, then G, then B, each W*H bytes, row by
row (as the GFVC software's `RawReader_planar` reads them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


class VideoError(Exception):
    """A video file could not be read or written."""


# -- raw RGB 4:4:4 sequences (GFVC common test conditions) ----------------------------------

RAW_SUFFIX = ".rgb"
_RAW_NAME = re.compile(r"^(?P<name>.+)_(?P<width>\d{1,5})x(?P<height>\d{1,5})_(?P<fps>\d{1,3})_8bit_444\.rgb$",
                       re.IGNORECASE)


@dataclass(frozen=True)
class RawLayout:
    """What a raw sequence's name says: picture size and frame rate."""

    width: int
    height: int
    fps: int

    @property
    def frame_bytes(self) -> int:
        return 3 * self.width * self.height

    def file_name(self, name: str) -> str:
        """The file name of a sequence called `name` in this layout."""
        return f"{name}_{self.width}x{self.height}_{self.fps}_8bit_444{RAW_SUFFIX}"


def is_raw(path: str | Path) -> bool:
    """True for a raw RGB sequence (by its suffix)."""
    return Path(path).suffix.lower() == RAW_SUFFIX


def raw_layout(path: str | Path) -> RawLayout:
    """Size and frame rate from a raw sequence's name; VideoError when the name does not give them."""
    match = _RAW_NAME.match(Path(path).name)
    if match is None:
        raise VideoError(f"{path}: a raw RGB sequence must be named NAME_WxH_FPS_8bit_444.rgb "
                         "(e.g. seq_256x256_25_8bit_444.rgb)")
    layout = RawLayout(int(match["width"]), int(match["height"]), int(match["fps"]))
    if min(layout.width, layout.height, layout.fps) == 0:
        raise VideoError(f"{path}: the name gives a size or frame rate of 0")
    return layout


def raw_frame_count(path: str | Path, layout: RawLayout) -> int:
    """Whole frames in a raw sequence; VideoError when the file is unreadable, empty or not a
    whole number of frames (truncated, or another size than its name says)."""
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        raise VideoError(f"{path}: cannot read video ({exc.strerror})") from None
    frames, rest = divmod(size, layout.frame_bytes)
    if rest or not frames:
        raise VideoError(f"{path}: {size} bytes is not a whole number of {layout.width}x{layout.height} "
                         f"RGB 4:4:4 frames ({layout.frame_bytes} bytes each)")
    return frames


def read_raw_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """The frames of a raw planar RGB sequence, checked whole before the first is read."""
    layout = raw_layout(path)
    count = raw_frame_count(path, layout)
    if max_frames is not None:
        count = min(count, max_frames)
    with open(path, "rb") as f:
        for _ in range(count):
            planes = np.frombuffer(f.read(layout.frame_bytes), np.uint8)
            yield np.ascontiguousarray(planes.reshape(3, layout.height, layout.width).transpose(1, 2, 0))


def write_raw_frames(path: str | Path, frames: Iterable[np.ndarray]) -> int:
    """Write RGB frames as a raw planar sequence (the layout `read_raw_frames` reads); the frame count."""
    n = 0
    with open(path, "wb") as f:
        for rgb in frames:
            f.write(np.ascontiguousarray(np.asarray(rgb, np.uint8).transpose(2, 0, 1)).tobytes())
            n += 1
    return n


# -- containers (PyAV) -------------------------------------------------------------------------

def probe_fps(path: str | Path) -> Fraction:
    """The frame rate of the first video stream (25 when the file does not say); a raw
    sequence's from its name."""
    if is_raw(path):
        return Fraction(raw_layout(path).fps)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: cannot read video ({exc})") from None
    return Fraction(rate) if rate else Fraction(25)


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decoded RGB frames of the first video stream, in order (a raw sequence's frames)."""
    if is_raw(path):
        yield from read_raw_frames(path, max_frames)
        return
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
