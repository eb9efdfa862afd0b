"""The key frame: VVC intra coding with VVenC (FFmpeg of imageio-ffmpeg), decoding with PyAV.

The sender codes the key frame, decodes it back and works from the decoded picture,
exactly as the receiver will, so both ends animate the very same pixels.
"""

from __future__ import annotations

import io
import logging
import subprocess

import av
import imageio_ffmpeg
import numpy as np

from codec_core.colour import frame_to_rgb, rgb_to_yuv420

log = logging.getLogger(__name__)


class KeyframeError(Exception):
    """The key frame could not be coded or decoded."""


def encode_keyframe(rgb: np.ndarray, qp: int, preset: str = "medium") -> bytes:
    """One RGB picture (H x W x 3, even sides) as a VVC intra picture (raw .266 bytes)."""
    h, w = rgb.shape[:2]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", "-i", "-",
           "-frames:v", "1", "-c:v", "libvvenc", "-preset", preset, "-qp", str(qp), "-qpa", "0",
           "-f", "vvc", "-"]
    yuv = rgb_to_yuv420(np.ascontiguousarray(rgb, dtype=np.uint8)[None], bit_depth=10)
    proc = subprocess.run(cmd, input=yuv.tobytes(), capture_output=True, timeout=120)
    if proc.returncode != 0 or not proc.stdout:
        raise KeyframeError(f"VVenC failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return proc.stdout


def decode_keyframe(data: bytes) -> np.ndarray:
    """The RGB picture (H x W x 3 uint8) of a raw VVC intra picture."""
    try:
        with av.open(io.BytesIO(data), mode="r", format="vvc") as container:
            for frame in container.decode(video=0):
                return frame_to_rgb(frame)
    except (av.FFmpegError, ValueError) as exc:
        raise KeyframeError(f"cannot decode the VVC key frame ({exc})") from None
    raise KeyframeError("the VVC key frame holds no picture")
