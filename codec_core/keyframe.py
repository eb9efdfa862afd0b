"""The key frame: VVC intra coding with VVenC (FFmpeg of imageio-ffmpeg), decoding with PyAV.

The sender codes the key frame, decodes it back and works from the decoded picture,
exactly as the receiver will, so both ends animate the very same pixels.  A live sender
runs VVenC through `VVenCRuns`, which it stops when it closes: the process is killed, not
waited for (seconds at 512, and the interpreter's exit joins a thread that waits).  The decoder is
told the largest picture a stream may have (`format.MAX_PICTURE_PIXELS`): a picture whose
parameter sets declare more is refused before anything is decoded or allocated for it.
"""

from __future__ import annotations

import logging
import subprocess
import threading

import av
import imageio_ffmpeg
import numpy as np

from codec_core.colour import frame_to_rgb, rgb_to_yuv420
from codec_core.format import MAX_PICTURE_PIXELS

log = logging.getLogger(__name__)
VVENC_TIMEOUT_S = 120.0   # one picture; a VVenC that takes longer is killed


class KeyframeError(Exception):
    """The key frame could not be coded or decoded."""


class VVenCRuns:
    """The VVenC processes of one owner (a live sender), so that `stop` can kill those running
    and refuse new ones (KeyframeError) from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopped = False

    def run(self, cmd: list[str], data: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        """Exit status, stdout and stderr of `cmd` fed `data`; KeyframeError when it runs past
        `timeout` seconds or was stopped."""
        with self._lock:
            if self._stopped:
                raise KeyframeError("VVenC was stopped")
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._running.add(proc)
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise KeyframeError(f"VVenC took more than {timeout:.0f} s for one picture") from None
        except (OSError, ValueError):      # killed by `stop` while being fed (a broken pipe)
            proc.wait()
            out, err = b"", b""
        finally:
            with self._lock:
                self._running.discard(proc)
        if self._stopped:
            raise KeyframeError("VVenC was stopped")
        return proc.returncode, out, err

    def stop(self) -> None:
        """Kill the running processes; every later `run` is refused."""
        with self._lock:
            self._stopped = True
            for proc in self._running:
                proc.kill()


def encode_keyframe(rgb: np.ndarray, qp: int, preset: str = "medium", runs: VVenCRuns | None = None) -> bytes:
    """One RGB picture (H x W x 3, even sides) as a VVC intra picture (raw .266 bytes);
    `runs`: the owner's VVenCRuns (None: one of its own, never stopped)."""
    h, w = rgb.shape[:2]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", "-i", "-",
           "-frames:v", "1", "-c:v", "libvvenc", "-preset", preset, "-qp", str(qp), "-qpa", "0",
           "-f", "vvc", "-"]
    yuv = rgb_to_yuv420(np.ascontiguousarray(rgb, dtype=np.uint8)[None], bit_depth=10)
    status, out, err = (runs or VVenCRuns()).run(cmd, yuv.tobytes(), VVENC_TIMEOUT_S)
    if status != 0 or not out:
        said = " / ".join(line.strip() for line in err.decode(errors="replace").splitlines() if line.strip())
        raise KeyframeError(f"VVenC failed: {said[-300:]}")      # one line, as every error here
    return out


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
