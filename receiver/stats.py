"""The receiver's numbers: what arrived, what was shown, how late, at what rate.

Updated on the event loop only.  `snapshot()` is what `--stats FILE.json` holds:

| key | meaning |
|---|---|
| frames_received | parameter packets with a new frame number |
| frames_lost | frame numbers that never arrived (gaps) |
| frames_undecodable | arrived after a loss, before the next intra packet: not shown |
| frames_late | arrived after a newer frame and too late for the reorder window, or twice: dropped |
| frames_reordered | arrived after a newer frame, within the reorder window: not lost (decoded if it could be) |
| frames_other_keyframe | for a key frame this receiver does not have (yet) |
| frames_decoded | parameter packets decoded |
| frames_dropped_stale | decoded, but a newer frame came before synthesis was free |
| frames_rendered | synthesized pictures |
| frames_expected | frames_received + frames_lost |
| rendered_ratio | frames_rendered / frames_expected |
| latency_ms | sender's capture to synthesized picture ready: median, p95 (of the newest |
| | `LiveConfig.stats_window` frames), mean, max, count (of all of them) |
| stages_ms | capture_to_arrival (sender's analysis, coding, network), decoding, queue (before synthesis), synthesis |
| param_kbps | parameter packet bytes (8-byte packet header included) per second of frames |
| keyframe_bytes | VVC picture bytes of the current key frame (keyframe_record_bytes: the whole record) |
| keyframe_bytes_small / _sharp | stream message bytes of each key frame received (newest 64), small and sharp apart |
| keyframes_failed | key frames that did not decode (docs/wire.md, "Bounds") |
| keyframes_dropped | key frames the synthesis thread had no room for |
| keyframe_bytes_total | all of them together; keyframe_kbps: as kbit/s over the call (seconds as param_kbps) |
| sharp_after_first_ms | wall ms from the first picture synthesized to the first from a sharp key frame |
| face_payload_kbps | parameter packets and key frames together, per second of frames |
| stream_format | the feature format of the sender's stream (docs/formats.md), None before a header |
| decoder_format | the format whose synthesizer makes the pictures (the stream's own unless --decoder-format) |
| translator | the translator method when the two differ (geometry, learned), else None |
| unplayable | why this receiver cannot play the stream (e.g. no weights for the learned translator), else None |
| audio | the voice: frames, seconds, latency_ms (a frame's first sample captured to decoded), |
| | packets, packets_lost, payload_bytes / payload_kbps, wire_kbps (payload + RTP/SRTP headers), peer_muted |
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from codec_core.bitstream import Keyframe
from live.clock import age_ms
from live.stats import KeyframeTally, Samples, kbps, summary
from receiver.audio import VoiceStats
from receiver.chain import ChainCounts
from receiver.render import Rendered


def is_sharp_twin(previous: Keyframe | None, record: Keyframe) -> bool:
    """Whether `record` is the sharp twin of the key frame received before it: the same
    reference geometry bytes and a later key id (docs/call.md).  A small key frame sent
    again after its twin (a key frame request) has an earlier id, so it counts as small."""
    if previous is None or record.geometry != previous.geometry:
        return False
    return 0 < (record.key_id - previous.key_id) % 0x10000 < 0x8000


@dataclass
class ReceiverStats:
    chain: ChainCounts
    voice: VoiceStats = field(default_factory=VoiceStats)
    started: float = field(default_factory=time.monotonic)
    state: str = "waiting"
    sessions: int = 0
    fps: float | None = None
    frames_rendered: int = 0
    frames_dropped_stale: int = 0
    frames_skipped: int = 0        # decoded for a key frame that did not (yet) decode
    param_bytes: int = 0
    param_packets: int = 0
    keyframes_received: int = 0
    keyframe_bytes: int = 0
    keyframe_record_bytes: int = 0
    eye_references_received: int = 0          # EYE_REFERENCE records (the caller's shut eyes)
    eye_reference_bytes: int = 0              # their bytes, as stream messages
    eye_reference_frames: int = 0             # frames drawn laying one (v2 only)
    keyframes: KeyframeTally = field(default_factory=KeyframeTally)   # bytes of each key frame received
    sharp_keys: set[int] = field(default_factory=set)    # low 8 bits of the sharp key frames received
    first_picture_ms: float | None = None     # wall ms: the first picture synthesized
    first_sharp_ms: float | None = None       # and the first one from a sharp key frame
    _last_keyframe: Keyframe | None = None
    loss_reports_sent: int = 0
    keyframe_requests_sent: int = 0
    keyframes_failed: int = 0
    keyframes_dropped: int = 0
    bad_messages: int = 0
    stream_format: str | None = None
    decoder_format: str | None = None
    translator: str | None = None      # the method, when the decoder format is not the stream's
    unplayable: str | None = None
    first_packet_t: float | None = None
    last_packet_t: float | None = None
    latency: Samples = field(default_factory=Samples)
    synthesis_frames: dict[str, int] = field(default_factory=dict)    # frames rendered per setting (--synth auto)
    synthesis: str | None = None       # the setting that drew the latest frame
    stages: dict[str, Samples] = field(default_factory=lambda: {
        name: Samples() for name in ("capture_to_arrival", "decoding", "queue", "synthesis")})

    def set_formats(self, stream_format: str, decoder_format: str, translator: str | None) -> None:
        """A session header was taken: what it sends and how it is played."""
        self.stream_format, self.decoder_format, self.translator = stream_format, decoder_format, translator
        self.unplayable = None

    def packet(self, nbytes: int) -> None:
        now = time.monotonic()
        self.param_bytes += nbytes
        self.param_packets += 1
        self.first_packet_t = self.first_packet_t or now
        self.last_packet_t = now

    def keyframe(self, record: Keyframe, nbytes: int) -> bool:
        """A key frame record of `nbytes` (the stream message) arrived; whether it is sharp."""
        sharp = is_sharp_twin(self._last_keyframe, record)
        self._last_keyframe = record
        self.keyframes_received += 1
        self.keyframe_bytes = len(record.picture)
        self.keyframe_record_bytes = nbytes
        self.keyframes.add(nbytes, sharp)
        key = record.key_id & 0xFF
        if sharp:
            self.sharp_keys.add(key)
        else:
            self.sharp_keys.discard(key)
        return sharp

    def rendered(self, r: Rendered) -> float:
        self.frames_rendered += 1
        self.synthesis = r.synthesis
        self.synthesis_frames[r.synthesis] = self.synthesis_frames.get(r.synthesis, 0) + 1
        self.eye_reference_frames += r.eyes
        if self.first_picture_ms is None:
            self.first_picture_ms = r.ready_ms
        if self.first_sharp_ms is None and r.job.key_id in self.sharp_keys:
            self.first_sharp_ms = r.ready_ms
        latency = age_ms(r.job.capture_ms, r.ready_ms)
        self.latency.append(latency)
        self.stages["capture_to_arrival"].append(age_ms(r.job.capture_ms, r.job.arrival_ms))
        self.stages["decoding"].append(r.job.decoded_ms - r.job.arrival_ms)
        self.stages["queue"].append(r.start_ms - r.job.decoded_ms)
        self.stages["synthesis"].append(r.ready_ms - r.start_ms)
        return latency

    def param_seconds(self) -> float | None:
        expected = self.chain.received + self.chain.lost
        if self.fps and expected:
            return expected / self.fps
        if self.first_packet_t is not None and self.last_packet_t > self.first_packet_t:
            return self.last_packet_t - self.first_packet_t
        return None

    def snapshot(self) -> dict:
        c = self.chain
        expected = c.received + c.lost
        seconds = self.param_seconds()
        return {
            "state": self.state,
            "stream_format": self.stream_format,
            "decoder_format": self.decoder_format,
            "translator": self.translator,
            "unplayable": self.unplayable,
            "duration_s": round(time.monotonic() - self.started, 3),
            "sessions": self.sessions,
            "frames_received": c.received,
            "frames_rendered": self.frames_rendered,
            "frames_lost": c.lost,
            "frames_undecodable": c.broken,
            "frames_late": c.stale,
            "frames_reordered": c.reordered,
            "frames_other_keyframe": c.foreign,
            "frames_decoded": c.decoded,
            "frames_dropped_stale": self.frames_dropped_stale,
            "frames_skipped": self.frames_skipped,
            "frames_expected": expected,
            "rendered_ratio": round(self.frames_rendered / expected, 4) if expected else None,
            "synthesis": self.synthesis,
            "synthesis_frames": dict(self.synthesis_frames),
            "latency_ms": summary(self.latency),
            "stages_ms": {k: summary(v) for k, v in self.stages.items()},
            "param_kbps": kbps(self.param_bytes, seconds),
            "param_bytes": self.param_bytes,
            "param_packets": self.param_packets,
            "fps": self.fps,
            "keyframe_bytes": self.keyframe_bytes,
            "keyframe_record_bytes": self.keyframe_record_bytes,
            "keyframes_received": self.keyframes_received,
            "eye_references_received": self.eye_references_received,
            "eye_reference_bytes": self.eye_reference_bytes,
            "eye_reference_frames": self.eye_reference_frames,
            **self.keyframes.snapshot(seconds),
            "sharp_after_first_ms": (round(self.first_sharp_ms - self.first_picture_ms, 1)
                                     if self.first_sharp_ms is not None and self.first_picture_ms is not None
                                     else None),
            "loss_reports_sent": self.loss_reports_sent,
            "keyframe_requests_sent": self.keyframe_requests_sent,
            "keyframes_failed": self.keyframes_failed,
            "keyframes_dropped": self.keyframes_dropped,
            "bad_messages": self.bad_messages,
            "face_payload_kbps": kbps(self.param_bytes + self.keyframes.total + self.eye_reference_bytes, seconds),
            "audio": self.voice.snapshot(),
        }
