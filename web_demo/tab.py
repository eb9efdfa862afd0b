"""One browser tab in a call: a two-way call peer on the server, driven by the page.

    browser camera --WebRTC--> pump_camera -> PushSource -> SenderHalf --\
                                                                          PeerLink (room, signaling) <-> other side
    browser <video> <--WebRTC-- SynthTrack <- TrackSink <- RenderWorker <- ReceiverHalf --/
                                                          (the tab's edits applied)

Everything the page needs to know goes out through `notify` (a JSON object): the call
state in words, the other side coming and going, and the stats once a second.

The call halves start and stop through `live.runner.LiveRunner`, like `python -m call`:
the tab stays in the room however long the other side is away, and hanging up takes the
runner's shutdown order (capture, outputs, peer connection) after the browser's camera
pump has stopped; the browser's own connection closes last.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from aiortc import RTCPeerConnection, RTCSessionDescription

from codec_core.config import load_config
from live.cli import CallError
from live.config import DEFAULT, LiveConfig
from live.jitter import use_voice_jitter_buffer
from live.lipsync import Hold, hold
from live.peer import Half, PeerLink, Session, close_connection
from live.runner import LiveRunner
from live.stats import kbps
from models.face_model import FaceBasis
from models.synthesizers import Synthesis
from receiver.half import ReceiverHalf
from receiver.render import RenderWorker
from sender.analysis import Analyser
from sender.half import SenderHalf, SenderOptions
from signaling.client import SignalingError
from web_demo.media import (
    CALL_FRAME_MS,
    UPLINK_BUFFER_MS,
    PushAudio,
    PushSource,
    SynthTrack,
    TrackSink,
    VoiceTrack,
    pump_camera,
    pump_mic,
)

log = logging.getLogger(__name__)

Notify = Callable[[dict], Awaitable[None]]

_PEER_LEFT_WORDS = {
    "peer left": "The other side left the call.",
    "peer hung up": "The other side hung up.",
    "connection failed": "The connection to the other side failed.",
    "connection timed out": "Could not connect to the other side.",
}


class _PeerEvents(Half):
    """Tells the page when the other side connects and leaves."""

    def __init__(self, tab: TabCall) -> None:
        self.tab = tab

    def session_opened(self, session: Session) -> None:
        self.tab._post({"type": "peer", "state": "connected", "text": "Connected to the other side."})

    def session_closed(self, session: Session, reason: str) -> None:
        # a hang-up often shows first as a closing data channel, before the signaling `bye`
        words = _PEER_LEFT_WORDS.get(reason, "The other side left the call.")
        self.tab._post({"type": "peer", "state": "left", "reason": reason,
                        "text": f"{words} You are still in room '{self.tab.room}': the call goes on when "
                                "someone joins it."})


class TabCall:
    def __init__(self, signaling_url: str, room: str, notify: Notify, basis: FaceBasis, fps: float = 25.0,
                 live: LiveConfig = DEFAULT, synthesis: Synthesis = Synthesis()) -> None:
        self.signaling_url = signaling_url
        self.room = room
        self.notify = notify
        self.basis = basis
        self.fps = fps
        self.live = live
        self.synthesis = synthesis
        self.track = SynthTrack()
        self.voice_track = VoiceTrack()
        self.source = PushSource("the browser's camera", fps)
        self.mic = PushAudio(buffered_ms=UPLINK_BUFFER_MS)
        self.sink: TrackSink | None = None
        self.analyser: Analyser | None = None
        self.sender: SenderHalf | None = None
        self.receiver: ReceiverHalf | None = None
        self.worker: RenderWorker | None = None
        self.runner: LiveRunner | None = None
        self.pc: RTCPeerConnection | None = None
        self.edits = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.finished = False           # hung up wholly: nothing of it runs any more
        self._last_rendered = 0
        self._last_latency = 0
        self._last_tick = time.monotonic()

    @property
    def closed(self) -> bool:
        """Whether the call has hung up (or ended by itself)."""
        return self._closed

    @property
    def link(self) -> PeerLink | None:
        return self.runner.link if self.runner is not None else None

    def _post(self, message: dict) -> None:
        task = asyncio.ensure_future(self.notify(message))
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)

    # -- start ---------------------------------------------------------------------------

    async def start(self, offer_sdp: str) -> str:
        """Join the room and answer the browser's offer; returns the answer SDP.
        Raises SignalingError (room full, server gone) with a readable text."""
        loop = asyncio.get_running_loop()
        config = load_config(None)
        # MediaPipe takes a moment to load: off the event loop
        self.analyser = await loop.run_in_executor(None, Analyser, config, self.basis, self.live)
        self.sender = SenderHalf(self.source, self.analyser, SenderOptions(), self.live, self.mic,
                                 audio_frame_ms=CALL_FRAME_MS)
        self.receiver = ReceiverHalf(self.basis, self.live)
        self.receiver.voice.play = self.voice_track.put
        self.receiver.voice.flush = self.voice_track.flush
        self.sink = TrackSink(loop, self.track)
        self.worker = RenderWorker(loop, self.receiver.events(), [self.sink], self.basis,
                                   self.synthesis, self.live.render_threads,
                                   max_setup=self.live.max_queued_setup_jobs)
        self.receiver.attach(self.worker)
        self.worker.set_edits(self.edits)
        self.runner = LiveRunner(self.signaling_url, self.room, sending=self.sender, receiving=self.receiver,
                                 others=[_PeerEvents(self)], config=self.live, wait_peer=math.inf)
        await self.runner.start()      # SignalingError: room full, no server
        self.pc = RTCPeerConnection()

        @self.pc.on("track")
        def _on_track(track) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.ensure_future(pump_camera(track, self.source)))
            elif track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(pump_mic(track, self.mic)))

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            log.info("browser connection: %s", self.pc.connectionState)
            if self.pc.connectionState == "failed":     # the page ends its call on this code: so does this side
                self._tasks.append(asyncio.ensure_future(self._end({
                    "type": "error", "code": "browser-connection",
                    "message": "The video connection between this page and the demo server failed."})))

        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":     # the microphone: a lost packet given up on in time
                use_voice_jitter_buffer(transceiver.receiver)
        self.pc.addTrack(self.track)
        self.pc.addTrack(self.voice_track)       # same stream id as the face: the browser syncs them
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        return self.pc.localDescription.sdp

    async def _watch(self) -> None:
        """Until hang-up: a failing camera or sender half, or a lost signaling server, is said in words."""
        try:
            reason = await self.runner.watch(self._stop)
        except CallError as exc:
            await self._end({"type": "error", "code": "camera", "message": str(exc)})
            return
        except Exception:
            log.exception("the sender half failed")
            await self._end({"type": "error", "code": "internal", "message": "The sending side failed (see the "
                             "server log)."})
            return
        log.info("call in room %r over: %s", self.room, reason)
        if not self._stop.is_set():
            await self._end({"type": "error", "code": "signaling", "message": f"The call has ended: {reason}."})

    async def _end(self, message: dict) -> None:
        """Tell the page why the call ended (`message`), then hang up this side: the call's
        --max-calls slot is free again and nothing keeps synthesizing for nobody."""
        await self.notify(message)
        await self.close()

    # -- edits and stats -----------------------------------------------------------------

    def set_edits(self, edits) -> None:
        self.edits = edits
        if self.worker is not None:
            self.worker.set_edits(edits)

    def set_muted(self, muted: bool) -> None:
        """The page's mute button: this tab's voice is silence (the other side is told)."""
        if self.sender is not None:
            self.sender.set_muted(muted)

    def _lip_hold(self) -> Hold:
        """How long the pictures or the voice to the browser wait, so that they leave together."""
        r = self.receiver.stats
        audio, video = r.voice.latency[-50:], r.latency[-50:]
        if not audio or not video:
            return Hold(0.0, 0.0)
        return hold(sorted(audio)[len(audio) // 2], sorted(video)[len(video) // 2])

    def stats(self) -> dict:
        now = time.monotonic()
        r = self.receiver.stats
        snap = r.snapshot()
        dt = max(now - self._last_tick, 1e-3)
        fps = (r.frames_rendered - self._last_rendered) / dt
        recent = r.latency[self._last_latency:]
        self._last_rendered, self._last_latency, self._last_tick = r.frames_rendered, len(r.latency), now
        s = self.sender.stats
        # parameter rates over wall-clock seconds (none before a second): a camera's frames are
        # numbered as they are analysed, so `param_kbps` (per second of frames at the header's fps)
        # would count a slow machine's 4 analysed frames a second as 25
        sent_s = (s.last_sent_t - s.first_sent_t) / 1000 if s.first_sent_t and s.last_sent_t else 0
        received_s = r.last_packet_t - r.first_packet_t if r.first_packet_t and r.last_packet_t else 0
        return {
            "type": "stats",
            "state": snap["state"],
            "looking_for_face": self.analyser is not None and self.analyser.keyframe is None,
            "received_param_kbps": kbps(r.param_bytes, received_s if received_s > 1 else None),
            "received_keyframe_bytes": snap["keyframe_bytes"] or None,
            "fps": round(fps, 1),
            "latency_ms": round(sorted(recent)[len(recent) // 2], 1) if recent else None,
            "synthesis": snap["synthesis"],
            "frames_rendered": r.frames_rendered,
            "frames_lost": snap["frames_lost"],
            "frames_undecodable": snap["frames_undecodable"],
            "sent_param_kbps": kbps(s.param_bytes, sent_s if sent_s > 1 else None),
            "sent_keyframe_bytes": s.keyframe_bytes or None,
            "frames_sent": s.frames_sent,
            "received_audio_kbps": snap["audio"]["payload_kbps"],
            "sent_audio_kbps": s.audio.snapshot()["payload_kbps"],
            "voice_latency_ms": snap["audio"]["latency_ms"]["median"],
            "lip_hold_ms": round(self.sink.hold_ms - self.voice_track.hold_ms, 1) if self.sink is not None else None,
            "muted": s.audio.muted,
            "peer_muted": snap["audio"]["peer_muted"],
        }

    async def _stats_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(1.0)
            try:
                if self.sink is not None:
                    h = self._lip_hold()
                    self.sink.hold_ms, self.voice_track.hold_ms = h.video_ms, h.audio_ms
                await self.notify(self.stats())
            except Exception:
                log.exception("stats failed")

    # -- end -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Hang up: the camera pump, stats and watch stop, the runner shuts the call down
        in its order, then the browser's connection and the track close."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self.runner is not None:
            await self.runner.shutdown()
        if self.pc is not None:
            await close_connection(self.pc, self.live.pc_close_timeout_s, "the browser connection")
        self.track.stop()
        self.voice_track.stop()
        self.finished = True


__all__ = ["SignalingError", "TabCall"]
