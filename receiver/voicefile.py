"""The voice in the output file: each session's sound laid under its pictures at the time
it was captured, as the file's audio track (AAC, 48 kHz mono).

The file's time 0 is the capture time of its first frame slot (`VoiceSegment.video_zero_ms`);
a decoded audio frame at pts p goes to file time `clock.wall_of(p) - zero`.  So the file is
in sync by construction, whatever the network and the synthesis did to either side: the
acceptance test measures that from the pictures (tests/test_voice.py).  Stretches without
sound (loss, a late start) are silence; sound outside the pictures is cut.

The video is written first (`FileSink`); when the segment closes, `mux_voice` copies its
video packets and the voice into a new file beside it and renames it over the old one, so
a process killed meanwhile still leaves the whole video-only file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np

from live.audio import SAMPLE_RATE
from receiver.audio import VoiceReceiver, VoiceSegment
from receiver.sinks import FileSink

log = logging.getLogger(__name__)

AAC_BITRATE = 64000
AAC_FRAME = 1024


def place_voice(segment: VoiceSegment, fps: float, seconds: float) -> np.ndarray | None:
    """`seconds` of 48 kHz mono int16 holding the segment's sound at its capture times
    relative to the file's time 0; None when there is nothing to place."""
    zero = segment.video_zero_ms(fps)
    if zero is None or not segment.chunks or not segment.clock:
        return None
    total = int(round(seconds * SAMPLE_RATE))
    out = np.zeros(total, np.int16)
    for pts, pcm in segment.chunks:
        wall = segment.clock.wall_of(pts)
        assert wall is not None
        start = int(round((wall - zero) * SAMPLE_RATE / 1000.0))
        lo, hi = max(0, start), min(total, start + pcm.size)
        if hi > lo:
            out[lo:hi] = pcm[lo - start:hi - start]
    return out


def mux_voice(video: Path, pcm: np.ndarray) -> None:
    """Rewrite `video` with `pcm` (48 kHz mono int16 from its time 0) as its audio track."""
    tmp = video.with_name(video.stem + ".voice" + video.suffix)
    with av.open(str(video)) as src, av.open(str(tmp), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        aout.bit_rate = AAC_BITRATE
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        for i in range(0, pcm.size, AAC_FRAME):
            part = pcm[i:i + AAC_FRAME]
            frame = av.AudioFrame.from_ndarray(part[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = i
            for packet in aout.encode(frame):
                dst.mux(packet)
        for packet in aout.encode(None):
            dst.mux(packet)
    os.replace(tmp, video)


class VoiceFileSink(FileSink):
    """A `FileSink` that puts the session's voice into each file it closes."""

    def __init__(self, path: str | Path, voice: VoiceReceiver, max_gap_s: float = 2.0) -> None:
        super().__init__(path, max_gap_s)
        self.voice = voice
        voice.keep = True
        self._segment_frames = 0

    def show(self, frame: int, picture: np.ndarray) -> bool:
        before = self.frames_written + self.frames_repeated
        result = super().show(frame, picture)
        self._segment_frames += self.frames_written + self.frames_repeated - before
        return result

    def session_break(self) -> None:
        had_file = self._writer is not None
        frames, self._segment_frames = self._segment_frames, 0
        fps = self.fps
        super().session_break()
        segment = self.voice.take_sealed()
        if not had_file or segment is None or frames == 0:
            return
        path = self.segments[-1]
        pcm = place_voice(segment, fps, frames / fps)
        if pcm is None:
            log.info("no voice came with %s", path)
            return
        try:
            mux_voice(path, pcm)
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("could not add the voice to %s (%s); it stays silent", path, exc)
            return
        log.info("the voice is in %s (%.1f s)", path, pcm.size / SAMPLE_RATE)


__all__ = ["VoiceFileSink", "mux_voice", "place_voice"]
