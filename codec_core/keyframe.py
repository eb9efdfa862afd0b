"""The key frame: VVC intra coding with VVenC (FFmpeg of imageio-ffmpeg), decoding with PyAV.

The sender codes the key frame, decodes it back and works from the decoded picture,
exactly as the receiver will, so both ends animate the very same pixels.  The decoder is
told the largest picture a stream may have (`format.MAX_PICTURE_PIXELS`): a picture whose
parameter sets declare more is refused before anything is decoded or allocated for it.
"""

from __future__ import annotations

import logging
import subprocess

import av
import imageio_ffmpeg
import numpy as np

from codec_core.colour import frame_to_rgb, rgb_to_yuv420
from codec_core.format import MAX_PICTURE_PIXELS

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
    try:
        proc = subprocess.run(cmd, input=yuv.tobytes(), capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise KeyframeError("VVenC took more than 120 s for one picture") from None
    if proc.returncode != 0 or not proc.stdout:
        said = " / ".join(line.strip() for line in proc.stderr.decode(errors="replace").splitlines() if line.strip())
        raise KeyframeError(f"VVenC failed: {said[-300:]}")      # one line, as every error here
    return proc.stdout


def decode_keyframe(data: bytes, max_pixels: int = MAX_PICTURE_PIXELS) -> np.ndarray:
    """The RGB picture (H x W x 3 uint8) of a raw VVC intra picture of at most `max_pixels`."""
    try:
        codec = av.CodecContext.create("vvc", "r")
        codec.options = {"max_pixels": str(max_pixels)}
        for packet in [*codec.parse(bytes(data)), *codec.parse(None)]:
            for frame in codec.decode(packet):
                return frame_to_rgb(frame)
        for frame in codec.decode(None):
            return frame_to_rgb(frame)
    except (av.FFmpegError, ValueError) as exc:
        if "max_pixels" in str(exc):      # the parser read a size past the limit; the decoder refused to open
            raise KeyframeError(f"the VVC key frame declares a picture of more than {max_pixels} pixels") from None
        raise KeyframeError(f"cannot decode the VVC key frame ({exc})") from None
    raise KeyframeError("the VVC key frame holds no picture")
