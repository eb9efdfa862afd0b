"""The voice of a call: 20 ms chunks of mono PCM in, Opus packets at our bitrate out, as an
aiortc audio track on the call's peer connection.

aiortc's own Opus encoder is fixed at 96 kbit/s stereo.  `OpusTrack` hands aiortc packets
that are already encoded (aiortc's `RTCRtpSender` packs an `av.Packet` as it is): PyAV's
libopus, mono, `application=voip`, at `--audio-bitrate` (12 kbit/s by default), in packets
of `LiveConfig.voice_frame_ms` (40 ms: two 20 ms chunks a packet, half the packets of 20 ms,
which at 12 kbit/s is about 12 kbit/s less of RTP, UDP and IP headers on the wire).  Packet
n has pts n * 1920 (48 kHz ticks from the track's first packet; n * 960 for 20 ms packets);
aiortc adds its random RTP timestamp origin, the receiving aiortc takes it off
again (its frames' pts count from the first packet it received), so both ends count the
same ticks.  The track tells the caller, with the first packet and every second after,
which pts was captured at which wall-clock time (`AudioClock`, docs/call.md).

Where the chunks come from is an `AudioFeed` (a file's audio track paced with its video, a
microphone: `sender.audio`).  Muting is the feed's: a muted feed gives silence, so the
track's clock never stops.
"""

from __future__ import annotations

import fractions
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from live.config import DEFAULT
from live.wire import AudioClock

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
CHUNK_SAMPLES = 960                       # 20 ms at 48 kHz: one Opus packet
CHUNK_MS = 1000.0 * CHUNK_SAMPLES / SAMPLE_RATE
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
DEFAULT_BITRATE = 12000                   # bit/s: speech, mono
MIN_BITRATE, MAX_BITRATE = 6000, 128000
FRAME_MS = (20, 40, 60)                   # Opus packet durations a track may use (20: the least latency)
CLOCK_EVERY_MS = 1000.0                   # an AudioClock every second
CLOCK_TOLERANCE_MS = 5.0                  # and one at once when the capture times jump by more


@dataclass
class Chunk:
    """20 ms of mono 16-bit PCM at 48 kHz and the wall-clock ms its first sample was captured."""

    samples: np.ndarray     # (CHUNK_SAMPLES,) int16
    wall_ms: float


class AudioFeed:
    """Where a call's voice comes from.  `chunk()` waits for the next 20 ms (None: the
    source has ended); a muted feed gives silence in the same rhythm."""

    name: str = "audio"
    muted: bool = False

    async def chunk(self) -> Chunk | None:
        raise NotImplementedError

    def start(self, wall_ms: float) -> None:
        """The video started playing at `wall_ms` (a file's audio is paced from there)."""

    def close(self) -> None:
        pass


class OpusEncoder:
    """libopus through PyAV: `frame_ms` of samples in (20, 40 or 60), one packet out."""

    def __init__(self, bitrate: int = DEFAULT_BITRATE, frame_ms: int = 20) -> None:
        if frame_ms not in FRAME_MS:
            raise ValueError(f"Opus packets of {frame_ms} ms: expected one of {FRAME_MS}")
        ctx = av.CodecContext.create("libopus", "w")
        ctx.bit_rate = bitrate
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.time_base = TIME_BASE
        ctx.options = {"application": "voip", "frame_duration": str(frame_ms), "vbr": "on"}
        ctx.open()
        self._ctx = ctx
        # libopus delays its output by its look-ahead (312 samples at 48 kHz): the decoded
        # sample at pts p is the input sample at p - delay
        self.delay = int(getattr(ctx, "delay", 0) or 312)
        self.frame_samples = frame_ms * SAMPLE_RATE // 1000
        self._n = 0

    def encode(self, samples: np.ndarray) -> bytes | None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n * self.frame_samples
        self._n += 1
        packets = self._ctx.encode(frame)
        return bytes(packets[0]) if packets else None


#: Bytes an audio packet costs on the wire besides its Opus payload: RTP header (12),
#: header extensions (mid and audio level: 8), SRTP authentication tag (16: the AES-GCM profile aiortc
#: negotiates first); UDP/IP not counted,
#: as the DTLS byte counters of the data channels do not count them either.
RTP_OVERHEAD_BYTES = 36


@dataclass
class TrackCounts:
    """What a sender's `OpusTrack`s sent: packets, Opus payload bytes, clock messages."""

    source: str | None = None
    bitrate: int = DEFAULT_BITRATE
    frame_ms: int = DEFAULT.voice_frame_ms
    packets: int = 0
    payload_bytes: int = 0
    clock_messages: int = 0
    clock_bytes: int = 0
    muted: bool = False
    first_wall_ms: float | None = None
    last_wall_ms: float | None = None

    def seconds(self) -> float | None:
        return self.packets * self.frame_ms / 1000.0 if self.packets else None

    @property
    def wire_bytes(self) -> int:
        """The RTP packets' bytes on the wire (payload + RTP_OVERHEAD_BYTES each)."""
        return self.payload_bytes + self.packets * RTP_OVERHEAD_BYTES

    def snapshot(self) -> dict:
        s = self.seconds()
        rate = (lambda n: round(n * 8 / 1000 / s, 3) if s else None)  # noqa: E731
        return {"source": self.source, "bitrate": self.bitrate, "frame_ms": self.frame_ms, "packets": self.packets,
                "payload_bytes": self.payload_bytes, "payload_kbps": rate(self.payload_bytes),
                "wire_bytes": self.wire_bytes, "wire_kbps": rate(self.wire_bytes),
                "clock_messages": self.clock_messages, "clock_kbps": rate(self.clock_bytes), "muted": self.muted}


class OpusTrack(MediaStreamTrack):
    """An aiortc audio track that yields Opus packets of `feed` at `bitrate` bit/s, each
    `frame_ms` long (20 ms chunks of the feed put together); `on_clock` gets an
    `AudioClock` with the first packet, every second after, and whenever the capture times
    leave the last one (`_clock_due`)."""

    kind = "audio"

    def __init__(self, feed: AudioFeed, bitrate: int = DEFAULT_BITRATE,
                 on_clock: Callable[[AudioClock], None] | None = None,
                 counts: TrackCounts | None = None, frame_ms: int = DEFAULT.voice_frame_ms) -> None:
        super().__init__()
        if frame_ms not in FRAME_MS:
            raise ValueError(f"Opus packets of {frame_ms} ms: expected one of {FRAME_MS}")
        self.feed = feed
        self.bitrate = bitrate
        self.frame_ms = frame_ms
        self._chunks = frame_ms // int(CHUNK_MS)
        self._clock_every = max(1, int(CLOCK_EVERY_MS // frame_ms))
        self.on_clock = on_clock
        self.counts = counts if counts is not None else TrackCounts()
        self._encoder: OpusEncoder | None = None
        self._n = 0
        self._clock: tuple[int, float] | None = None     # the last mapping sent: (pts, wall ms)

    def _clock_due(self, pts: int, wall: float) -> bool:
        """A mapping goes out with the first packet, every second, and at once
        when the capture clock left the last one by more than CLOCK_TOLERANCE_MS (a source
        that paused, a sound card's drift)."""
        if self._clock is None or self._n % self._clock_every == 0:
            return True
        predicted = self._clock[1] + (pts - self._clock[0]) * 1000.0 / SAMPLE_RATE
        return abs(wall - predicted) > CLOCK_TOLERANCE_MS

    async def recv(self) -> av.Packet:   # type: ignore[override]  (aiortc packs an av.Packet as it is)
        if self.readyState != "live":
            raise MediaStreamError
        if self._encoder is None:
            self._encoder = OpusEncoder(self.bitrate, self.frame_ms)
        encoder = self._encoder
        while True:
            chunks = await self._gather()
            if not chunks:
                self.stop()
                raise MediaStreamError
            samples = np.concatenate([c.samples for c in chunks]) if len(chunks) > 1 else chunks[0].samples
            if samples.size < encoder.frame_samples:              # the source ended mid-packet
                samples = np.pad(samples, (0, encoder.frame_samples - samples.size))
            # libopus on the event loop: 0.7 ms a 40 ms packet here, where a round trip through an
            # executor waits for a loop turn (50-100 ms in the web demo on 2 cores) and, at one
            # packet per trip, let the voice fall behind its pace (docs/call.md, The event loop)
            data = encoder.encode(samples)
            if data is None:
                continue
            pts = self._n * encoder.frame_samples
            wall = chunks[0].wall_ms - 1000.0 * encoder.delay / SAMPLE_RATE
            if self.on_clock is not None and self._clock_due(pts, wall):
                self.on_clock(AudioClock(pts % (1 << 32), round(wall, 3)))
                self._clock = (pts, wall)
            self._n += 1
            self._count(len(data), chunks[0].wall_ms)
            packet = av.Packet(data)
            packet.pts = pts
            packet.time_base = TIME_BASE
            return packet

    async def _gather(self) -> list[Chunk]:
        """The feed's next chunks for one packet (fewer at its end, none after)."""
        chunks: list[Chunk] = []
        while len(chunks) < self._chunks:
            chunk = await self.feed.chunk()
            if chunk is None:
                break
            chunks.append(chunk)
        return chunks

    def _count(self, nbytes: int, wall_ms: float) -> None:
        c = self.counts
        c.packets += 1
        c.payload_bytes += nbytes
        c.first_wall_ms = c.first_wall_ms if c.first_wall_ms is not None else wall_ms
        c.last_wall_ms = wall_ms


def alsa_unavailable() -> str | None:
    """Why this machine has no ALSA sound device (None: it may have one).  Points PyAV's
    own alsa-lib at the system's configuration, without which it knows no `default`."""
    system_conf = Path("/usr/share/alsa/alsa.conf")
    if "ALSA_CONFIG_PATH" not in os.environ and system_conf.is_file():
        os.environ["ALSA_CONFIG_PATH"] = str(system_conf)
    if not Path("/dev/snd").is_dir():
        return "no sound device on this machine (/dev/snd is missing)"
    return None


def to_mono_s16(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame (aiortc gives s16 stereo, interleaved) as mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if channels == 1:
        return data.reshape(-1).astype(np.int16, copy=False)
    if frame.format.is_planar:
        data = data.reshape(channels, -1).T
    data = data.reshape(-1, channels)
    if data.dtype == np.int16:
        return ((data[:, 0].astype(np.int32) + data[:, 1]) >> 1).astype(np.int16)
    return np.clip(np.round(data.astype(np.float64).mean(axis=1)), -32768, 32767).astype(np.int16)


__all__ = ["CHUNK_MS", "CHUNK_SAMPLES", "DEFAULT_BITRATE", "FRAME_MS", "RTP_OVERHEAD_BYTES", "SAMPLE_RATE",
           "AudioFeed", "Chunk", "OpusEncoder", "OpusTrack", "TrackCounts", "alsa_unavailable", "to_mono_s16"]
