"""Conventional-codec anchors: VVC (VVenC) and HEVC (x265) in low delay, and freeze.

Each encoder runs as the FFmpeg binary shipped in the imageio-ffmpeg wheel
(`imageio_ffmpeg.get_ffmpeg_exe()`, FFmpeg 9 with libvvenc and libx265): raw frames go
in on stdin, the encoder writes an elementary stream (.266 / .hevc) to a temporary
file, and PyAV decodes it back.  The bit count is the size of that elementary stream
(parameter sets included).

Colour conversion is done here, in numpy, at both ends, not by swscale: RGB -> BT.601
limited-range Y'CbCr, chroma 4:2:0 by 2x2 averaging (centre siting), at the coder's bit
depth (10 bits for VVenC, 8 for x265); back with bilinear chroma upsampling (centre
siting) and the inverse matrix.  Measured on a real clip, this round trip alone costs
an RGB MSE of about 0.8 with no colour bias, against about 3.5 and a bias of -1 to -1.4
grey levels per channel for PyAV's `to_ndarray(format="rgb24")` (swscale's unscaled
YUV->RGB path without accurate rounding), which would cap the anchors' PSNR.

Both anchors use the GFVC-style test condition of one intra frame at the start and
only inter frames after it, no picture reordering:

- VVC: VVenC `-preset faster`, constant QP (`-qp`), `PicReordering=0`, `GOPSize=8`
  (VVenC's low-delay GOP; it rejects low delay with its default GOP of 32),
  `DecodingRefreshType=none` (the only refresh type VVenC allows in low delay) and an
  intra period longer than the sequence.  Perceptual QP adaptation (VVenC's default
  XPSNR-based QPA) is off by default, as in the VTM low-delay anchors; `qpa=True`
  switches it on.
- HEVC: x265 `-preset medium -tune zerolatency`, constant QP, `bframes=0`, a keyint
  longer than the sequence, no scene-cut intra frames, no encoder-info SEI.

Rates with these settings at 256x256, 25 fps, 125 frames (5 s, key frame included), in
kbps, on rt__3.mp4 (a 590x590 talking-head crop resized to 256x256) / dpe__d.mp4 (256x256):

    VVC  QP   32    35    38    41    44    47    50    54    63
    rt__3   41.2  29.6  22.0  16.5  12.4   9.5   7.5   5.9   4.5
    dpe__d  37.7  26.6  19.3  14.2  10.8   8.5   6.8   5.6   4.5

    HEVC QP   36    38    40    42    44    46    48    51
    rt__3   39.0  30.9  24.8  20.0  16.2  13.1  11.0   8.5
    dpe__d  33.2  26.1  20.4  16.6  13.2  10.9   9.2   7.6

VVenC flattens out near 4.5 kbps above QP 55 (the intra frame dominates); x265 stops
at QP 51, the HEVC maximum.  With VVenC's QPA on, the same QP costs about 2.5-3 times
the rate (QP 32: 116 kbps).  `VVC_QPS` and `HEVC_QPS` are these QP lists.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np

from codec_core.colour import frame_to_rgb, rgb_to_yuv420

log = logging.getLogger(__name__)

# Measured rates per QP: see the module docstring.
VVC_QPS: tuple[int, ...] = (32, 35, 38, 41, 44, 47, 50, 54, 63)
"""Default VVenC QPs, about 40 kbps down to VVenC's floor at 256x256, 25 fps."""

HEVC_QPS: tuple[int, ...] = (36, 38, 40, 42, 44, 46, 48, 51)
"""Default x265 QPs, about 40 kbps down to x265's floor (QP 51) at 256x256, 25 fps."""

VVC_GOP_SIZE = 8
"""VVenC low-delay GOP size."""

_STDERR_TAIL_CHARS = 2000


@dataclass
class CodedSequence:
    """One coded and decoded sequence.

    `frames` are the decoded frames (N, H, W, 3) uint8 RGB; `num_bytes` is the size of
    the elementary stream; `kbps` = 8 * num_bytes / duration / 1000; `keyframes` are the
    indices of the decoded frames that are key (intra random-access) frames.
    """

    codec: str
    qp: int
    num_bytes: int
    kbps: float
    frames: np.ndarray
    keyframes: tuple[int, ...] = ()


def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary bundled with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def kbps_for(num_bytes: int, num_frames: int, fps: float) -> float:
    """Bitrate in kbit/s of `num_bytes` spread over `num_frames` frames at `fps`."""
    return 8.0 * num_bytes * fps / num_frames / 1000.0


def _as_frames(frames: np.ndarray) -> np.ndarray:
    """Validate and return frames as a contiguous (N, H, W, 3) uint8 array."""
    arr = np.ascontiguousarray(np.asarray(frames))
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 RGB frames, got {arr.shape} {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError("no frames to encode")
    if arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"4:2:0 coding needs even width and height, got {arr.shape[2]}x{arr.shape[1]}")
    return arr


def decode_file(path: Path, fmt: str | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Decode a video file with PyAV to (N, H, W, 3) uint8 RGB and its key frame indices."""
    frames: list[np.ndarray] = []
    keys: list[int] = []
    with av.open(str(path), format=fmt) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frames.append(frame_to_rgb(frame))
            if frame.key_frame:
                keys.append(i)
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8), ()
    return np.stack(frames), tuple(keys)


def _stderr_tail(text: str) -> str:
    """Last part of an FFmpeg log, for error messages."""
    return text[-_STDERR_TAIL_CHARS:]


def _run_ffmpeg(args: list[str], stdin: bytes) -> str:
    """Run FFmpeg with `stdin` piped in; return its log, RuntimeError on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "warning", "-y", *args]
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed (exit {proc.returncode}):\n{_stderr_tail(text)}")
    return text


def _encode(
    codec: str, frames: np.ndarray, fps: float, qp: int, bit_depth: int, codec_args: list[str], fmt: str
) -> CodedSequence:
    """Code frames with FFmpeg to a raw `fmt` stream, decode it back, check the frame count."""
    frames = _as_frames(frames)
    n, h, w, _ = frames.shape
    pix_fmt = "yuv420p" if bit_depth == 8 else "yuv420p10le"
    raw_in = ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{w}x{h}", "-r", f"{fps}", "-i", "pipe:0"]
    yuv = rgb_to_yuv420(frames, bit_depth).tobytes()
    with tempfile.TemporaryDirectory(prefix=f"facecall_{codec}_") as tmp:
        path = Path(tmp) / f"stream.{fmt}"
        ffmpeg_log = _run_ffmpeg([*raw_in, *codec_args, "-pix_fmt", pix_fmt, "-f", fmt, str(path)], yuv)
        num_bytes = path.stat().st_size if path.exists() else 0
        decoded: np.ndarray = np.zeros((0, h, w, 3), dtype=np.uint8)
        keys: tuple[int, ...] = ()
        if num_bytes:
            try:
                decoded, keys = decode_file(path, fmt)
            except av.FFmpegError as exc:
                raise RuntimeError(
                    f"{codec} qp {qp}: decoding failed ({exc}); ffmpeg log:\n{_stderr_tail(ffmpeg_log)}"
                ) from exc
    if decoded.shape[0] != n:
        raise RuntimeError(
            f"{codec} qp {qp}: decoded {decoded.shape[0]} frames, expected {n}; "
            f"ffmpeg log:\n{_stderr_tail(ffmpeg_log)}"
        )
    if decoded.shape[1:] != frames.shape[1:]:
        raise RuntimeError(
            f"{codec} qp {qp}: decoded frame shape {decoded.shape[1:]} != input {frames.shape[1:]}"
        )
    if keys != (0,):
        log.warning("%s qp %d: expected one key frame at index 0, got key frames %s", codec, qp, keys)
    kbps = kbps_for(num_bytes, n, fps)
    log.debug("%s qp %d: %d frames, %d bytes, %.2f kbps", codec, qp, n, num_bytes, kbps)
    return CodedSequence(
        codec=codec, qp=qp, num_bytes=num_bytes, kbps=kbps, frames=decoded, keyframes=keys
    )


def _intra_period(num_frames: int, gop: int) -> int:
    """An intra period (a multiple of `gop`) longer than the sequence."""
    return gop * (num_frames // gop + 2)


def encode_vvc(
    frames: np.ndarray, fps: float, qp: int, preset: str = "faster", qpa: bool = False
) -> CodedSequence:
    """Code frames with VVenC in low delay (one intra frame, then inter frames, no reordering).

    Input to the encoder is 10-bit 4:2:0.  Returns the decoded frames and the rate;
    raises RuntimeError (with FFmpeg's log) if coding fails or the decoded frame count
    differs from the input.
    """
    n = _as_frames(frames).shape[0]
    params = ":".join(
        [
            "PicReordering=0",
            f"GOPSize={VVC_GOP_SIZE}",
            "DecodingRefreshType=none",
            f"IntraPeriod={_intra_period(n, VVC_GOP_SIZE)}",
        ]
    )
    args = [
        "-c:v", "libvvenc",
        "-preset", preset,
        "-qp", str(int(qp)),
        "-qpa", "1" if qpa else "0",
        "-vvenc-params", params,
    ]  # fmt: skip
    return _encode("vvc", frames, fps, qp, 10, args, "vvc")


def encode_hevc(frames: np.ndarray, fps: float, qp: int, preset: str = "medium") -> CodedSequence:
    """Code frames with x265 in low delay (one intra frame, then P frames, no B frames).

    Input to the encoder is 8-bit 4:2:0 (yuv420p).  Returns the decoded frames and the
    rate; raises RuntimeError (with FFmpeg's log) if coding fails or the decoded frame
    count differs from the input.
    """
    n = _as_frames(frames).shape[0]
    keyint = n + 1
    params = ":".join(
        [
            f"keyint={keyint}",
            f"min-keyint={keyint}",
            "scenecut=0",
            "bframes=0",
            "open-gop=0",
            "info=0",
            "log-level=error",
        ]
    )
    args = [
        "-c:v", "libx265",
        "-preset", preset,
        "-tune", "zerolatency",
        "-qp", str(int(qp)),
        "-x265-params", params,
    ]  # fmt: skip
    return _encode("hevc", frames, fps, qp, 8, args, "hevc")


def freeze(keyframe: np.ndarray, n: int) -> np.ndarray:
    """The key frame (H, W, 3) repeated n times: a new (n, H, W, 3) array."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return np.repeat(np.asarray(keyframe)[None], n, axis=0)
