"""A plain WebRTC video call (VP8 over RTP, aiortc) of the same 256x256 face crop, as the
baseline of the latency benchmark.

    python -m benchmarks.vp8_call send --signaling URL --room NAME --source FILE [--frames N] [--loop]
                                       [--no-audio] [--stats FILE.json] [--trace FILE.jsonl]
    python -m benchmarks.vp8_call receive --signaling URL --room NAME [--stats FILE.json] [--trace FILE.jsonl]

The sender crops every frame of the file with a crop fixed on the first frame's face
(the crop our sender uses; no per-frame face tracking, which a plain video call does not
need), paces it at the file's frame rate, and hands it to aiortc's VP8 encoder.  Each
frame's capture time travels on a data channel beside the video, keyed by its RTP
timestamp, so the receiver measures latency exactly as ours does: from capture to the
moment the decoded picture is available as RGB.  The sender makes the offer; the
receiver answers.

With the file's sound (unless `--no-audio`) it is a plain VP8 + Opus call: the audio track,
paced with the video like our sender's (`sender.audio.FileAudio`), goes to aiortc's own
Opus encoder as PCM (48 kHz, 96 kbit/s stereo: aiortc's fixed setting); its RTP bytes are
counted apart from the video's.
"""

from __future__ import annotations

import os

# torch's OpenMP worker threads spin between frames and take a third of a core each on a
# 2-core machine; the live ends run torch single-threaded (synthesis: --threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import json
import logging
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from live import eventloop
from live.audio import CHUNK_SAMPLES, SAMPLE_RATE, AudioFeed
from live.cli import SetupError, fail, install_stop_signals, setup_logging
from live.clock import age_ms, capture_stamp, wall_ms
from live.stats import JsonLines, summary, write_json_atomic
from models.crop import apply_crop
from models.tracking import CropTracker, NoFaceError
from sender.audio import open_audio
from sender.source import FileSource, SourceError
from signaling.client import SignalingClient, SignalingError
from signaling.protocol import Answer, Bye, Offer, PeerJoined, PeerLeft

PROG = "python -m benchmarks.vp8_call"
log = logging.getLogger("vp8_call")
CLOCK = 90000


class CropTrack(MediaStreamTrack):
    """Paced 256x256 crops of a file, with their capture stamps sent on a data channel."""

    kind = "video"

    def __init__(self, source: FileSource, box, size: int, stamps, trace: JsonLines, max_frames: int | None,
                 audio: AudioFeed | None = None) -> None:
        super().__init__()
        self.source, self.box, self.size = source, box, size
        self.audio = audio
        self.stamps, self.trace = stamps, trace
        self.max_frames = max_frames
        self.sent = 0
        self.finished = asyncio.Event()
        self._started = False

    async def recv(self) -> av.VideoFrame:
        if not self._started:
            self.source.start_clock()
            if self.audio is not None:
                self.audio.start(wall_ms())
            self._started = True
        captured = None
        if self.max_frames is None or self.sent < self.max_frames:
            captured = await self.source.next()
        if captured is None:
            self.finished.set()
            self.stop()
            raise MediaStreamError
        crop = apply_crop(captured.rgb, self.box, self.size)
        frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
        frame.pts = round(self.sent * CLOCK / float(self.source.fps))
        frame.time_base = Fraction(1, CLOCK)
        if self.stamps.readyState == "open":
            self.stamps.send(json.dumps({"pts": frame.pts, "frame": self.sent,
                                         "capture": capture_stamp(captured.t_ms)}))
        self.trace.write({"frame": self.sent, "pts": frame.pts, "capture": round(captured.t_ms, 3)})
        self.sent += 1
        return frame


class PcmTrack(MediaStreamTrack):
    """The file's sound as PCM frames for aiortc's own Opus encoder (what a plain call sends)."""

    kind = "audio"

    def __init__(self, feed: AudioFeed) -> None:
        super().__init__()
        self.feed = feed
        self._n = 0

    async def recv(self) -> av.AudioFrame:
        chunk = await self.feed.chunk()
        if chunk is None:
            self.stop()
            raise MediaStreamError
        frame = av.AudioFrame.from_ndarray(chunk.samples[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n * CHUNK_SAMPLES
        frame.time_base = Fraction(1, SAMPLE_RATE)
        self._n += 1
        return frame


def _new_pc() -> tuple[RTCPeerConnection, object]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stamps = pc.createDataChannel("stamps", negotiated=True, id=0)
    return pc, stamps


async def run_sender(args) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        source = FileSource(args.source, args.loop, args.frames)
    except SourceError as exc:
        return fail(PROG, str(exc))
    first = await source.next()
    if first is None:
        return fail(PROG, f"{args.source} holds no frames")
    tracker = CropTracker(args.size)
    try:
        box = tracker.start(first.rgb)
    except NoFaceError:
        return fail(PROG, f"no face in the first frame of {args.source}")
    finally:
        tracker.close()
    source.pushback(first)
    try:
        audio = None if args.no_audio else open_audio("auto", args.source, args.loop, args.frames, source.fps)
    except SetupError as exc:
        return fail(PROG, str(exc))
    client = SignalingClient(args.signaling)
    try:
        joined = await client.join(args.room)
    except SignalingError as exc:
        return fail(PROG, str(exc))
    trace = JsonLines(args.trace)
    pc, stamps = _new_pc()
    track = CropTrack(source, box, args.size, stamps, trace, args.frames, audio)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
    transceiver.setCodecPreferences(vp8)
    if audio is not None:
        voice = pc.addTransceiver(PcmTrack(audio), direction="sendonly")
        voice.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                   if c.mimeType.lower() == "audio/opus"])
    started = time.monotonic()
    try:
        if not joined.initiator:
            while not isinstance(await client.receive(), PeerJoined):
                pass
        await pc.setLocalDescription(await pc.createOffer())
        await client.send(Offer(pc.localDescription.sdp))
        while True:
            message = await client.receive()
            if message is None:
                return fail(PROG, "lost the signaling server")
            if isinstance(message, Answer):
                await pc.setRemoteDescription(RTCSessionDescription(message.sdp, "answer"))
                break
        waiter = asyncio.ensure_future(track.finished.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        waiter.cancel()
        await asyncio.sleep(0.3)           # let the last frame's packets go
        if stamps.readyState == "open":
            stamps.send(json.dumps({"end": track.sent}))
        await asyncio.sleep(0.2)
        report = await pc.getStats()
        out = next((s for s in report.values() if s.type == "outbound-rtp" and s.kind == "video"), None)
        sound = next((s for s in report.values() if s.type == "outbound-rtp" and s.kind == "audio"), None)
        wire = next((s for s in report.values() if s.type == "transport"), None)
        stats = {"frames_sent": track.sent, "duration_s": round(time.monotonic() - started, 3),
                 "rtp_bytes_sent": out.bytesSent if out else None, "rtp_packets_sent": out.packetsSent if out else None,
                 "audio_rtp_bytes_sent": sound.bytesSent if sound else None,
                 "audio_rtp_packets_sent": sound.packetsSent if sound else None,
                 "wire_bytes_sent": wire.bytesSent if wire else None, "fps": float(source.fps)}
        if args.stats:
            write_json_atomic(Path(args.stats), stats)
        log.info("sent %d frames", track.sent)
        return 0
    finally:
        trace.close()
        source.close()
        if audio is not None:
            audio.close()
        await client.send(Bye())
        await pc.close()
        await client.close()


async def run_receiver(args) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    client = SignalingClient(args.signaling)
    try:
        await client.join(args.room)
    except SignalingError as exc:
        return fail(PROG, str(exc))
    pc, stamps_channel = _new_pc()
    stamps: dict[int, tuple[int, int]] = {}       # pts -> (frame, capture stamp)
    arrivals: list[tuple[int, float]] = []        # (pts, ready wall ms)
    end = {"frames": None, "at": None}
    done = asyncio.Event()

    @stamps_channel.on("message")
    def _stamp(text) -> None:
        obj = json.loads(text)
        if "end" in obj:
            end["frames"], end["at"] = obj["end"], time.monotonic()
        else:
            stamps[obj["pts"]] = (obj["frame"], obj["capture"])

    async def consume(track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            frame.to_ndarray(format="rgb24")       # the picture, ready to show
            arrivals.append((frame.pts, wall_ms()))
        done.set()

    audio_frames = [0]

    async def drain(track) -> None:          # the sound: decoded and counted
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            audio_frames[0] += 1

    pc.on("track", lambda track: asyncio.ensure_future(consume(track) if track.kind == "video" else drain(track)))

    async def signaling() -> None:
        while True:
            message = await client.receive()
            if message is None or isinstance(message, (PeerLeft, Bye)):
                done.set()
                return
            if isinstance(message, Offer):
                await pc.setRemoteDescription(RTCSessionDescription(message.sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await client.send(Answer(pc.localDescription.sdp))

    serving = asyncio.ensure_future(signaling())
    started = time.monotonic()
    try:
        while not stop.is_set() and not done.is_set():
            if end["at"] is not None and time.monotonic() - end["at"] > 1.0:
                break
            await asyncio.sleep(0.05)
    finally:
        serving.cancel()
        await pc.close()
        await client.close()
    # match pictures to capture stamps by RTP timestamp (the receiver counts from its first packet)
    offset = (min(p for p, _ in arrivals) - min(stamps)) if arrivals and stamps else 0
    trace = JsonLines(args.trace)
    latency = []
    for pts, ready in arrivals:
        hit = stamps.get(pts - offset)
        if hit is None:
            continue
        frame, capture = hit
        latency.append(age_ms(capture, ready))
        trace.write({"frame": frame, "ready": round(ready, 3), "latency": round(latency[-1], 3)})
    trace.close()
    stats = {"frames_received": len(arrivals), "frames_matched": len(latency), "frames_sent": end["frames"],
             "audio_frames_received": audio_frames[0],
             "latency_ms": summary(latency), "duration_s": round(time.monotonic() - started, 3), "final": True}
    if args.stats:
        write_json_atomic(Path(args.stats), stats)
    log.info("received %d frames, latency median %s ms", len(arrivals), stats["latency_ms"]["median"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("send", "receive"):
        p = sub.add_parser(role)
        p.add_argument("--signaling", required=True)
        p.add_argument("--room", required=True)
        p.add_argument("--stats")
        p.add_argument("--trace")
        p.add_argument("--log-level", default="INFO", type=str.upper)
        if role == "send":
            p.add_argument("--source", required=True)
            p.add_argument("--frames", type=int)
            p.add_argument("--loop", action="store_true")
            p.add_argument("--no-audio", action="store_true", help="video only (default: the file's sound too)")
            p.add_argument("--size", type=int, default=256)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return eventloop.run(run_sender(args) if args.role == "send" else run_receiver(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
