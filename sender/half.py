"""The sender half of a call: capture loop, what goes on which channel, and when.

On every new session: the session header and the current key frames on `stream` (the
small one, then its sharp twin once coded: `sender.keyframes`; key frames go in pieces, the
small one at once, the sharp one paced so that parameter packets and the voice pass
between its pieces: `sender.pacing`), then one parameter packet
per captured frame on `params`, the first one intra.  On the `control` channel it answers
`keyframe-request` (header and both key frames again, next packet intra; at most at the
rate of `sender.keyframes.AnswerLimiter`, later when it must wait), `loss` (next
packet intra unless one went out after the lost frame) and `ready` for the sharp key frame
(packets animate it from the next one on, intra).  A new key frame (the face left the
crop) goes out on `stream` before the first packet that animates it, and its sharp twin
follows.  When the source ends it sends `end` and lets the channels drain.

A file source starts playing when the first peer has connected (so a scripted run sends
every frame); a camera runs all the time but is only analysed while a peer is there.
Frames are numbered per sender, one number per parameter packet made, so a receiver
sees consecutive numbers unless the network loses packets (or `drop_params` drops them:
a test option that simulates loss after coding).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from codec.encoder import CodedKeyframe
from codec_core.bitstream import EyeReference, ParamPacket, SessionHeader
from codec_core.keyframe import KeyframeError
from codec_core.param_coding import PacketParamEncoder
from live.audio import DEFAULT_BITRATE, AudioFeed, OpusTrack, TrackCounts
from live.cli import CallError
from live.clock import capture_stamp, unwrap, wall_ms
from live.config import DEFAULT, LiveConfig
from live.peer import Session
from live.rtt import stream_unacked, watch
from live.runner import SendingHalf
from live.stats import JsonLines, KeyframeTally, Samples, summary
from live.wire import (
    STREAM,
    AudioClock,
    End,
    KeyframeRequest,
    Loss,
    Muted,
    Ready,
    encode_control,
    pack_stream_record,
    split_keyframe,
)
from sender.analysis import Analyser
from sender.intra import IntraPolicy
from sender.keyframes import AnswerLimiter, KeyframePair
from sender.pacing import Link, PacingStats, PiecePacer, Transfer
from sender.source import Captured, FrameSource, SourceError

log = logging.getLogger(__name__)


class NoFaceFound(CallError):
    """The source ended without ever showing a face."""


@dataclass
class SenderOptions:
    max_frames: int | None = None      # stop after this many frames sent
    drop_params: float = 0.0           # drop this fraction of parameter packets (loss tests)
    seed: int | None = None
    dump_levels: str | None = None     # JSON lines: frame, key_id, intra, dropped, levels
    trace: str | None = None           # JSON lines: per-frame stage times (wall ms)
    dump_keyframe_crops: str | None = None   # folder: the captured crop of every key frame coded (PNG)


@dataclass
class SenderStats:
    started: float = field(default_factory=time.monotonic)
    frames_captured: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0            # by drop_params
    frames_face_lost: int = 0
    intra_packets: int = 0
    param_bytes: int = 0
    keyframes_coded: int = 0
    keyframes_sent: int = 0
    keyframe_bytes: int = 0            # VVC picture bytes of the key frame the packets animate
    sharp_switches: int = 0            # times the packets switched to a sharp key frame
    loss_reports: int = 0
    intra_after_loss: int = 0
    keyframe_requests: int = 0
    keyframe_answers: int = 0          # requests answered (the others were folded into a later answer)
    keyframe_answers_deferred: int = 0  # answers that waited for the rate limit or a full channel
    eye_references_sent: int = 0       # EYE_REFERENCE records (the caller's shut eyes; each key frame its own)
    eye_reference_bytes: int = 0       # their bytes, as stream messages
    sessions: int = 0
    format: str | None = None          # the feature format sent (docs/formats.md)
    wire_bytes_sent: int | None = None   # DTLS bytes sent on the current session (all channels)
    first_session_t: float | None = None    # wall ms: the first session opened
    first_keyframe_t: float | None = None   # wall ms: the first key frame went out (small, at once)
    first_sent_t: float | None = None    # wall ms of the first and last packet sent
    last_sent_t: float | None = None
    fps: float | None = None
    keyframes: KeyframeTally = field(default_factory=KeyframeTally)   # bytes of each key frame sent
    pacing: PacingStats = field(default_factory=PacingStats)         # key frame pieces (sender.pacing)
    audio: TrackCounts = field(default_factory=TrackCounts)          # the voice (docs/call.md)
    stages: dict[str, Samples] = field(default_factory=lambda: {
        name: Samples() for name in ("capture", "analysis", "coding")})

    def keyframe_sent(self, nbytes: int, sharp: bool) -> None:
        self.keyframes_sent += 1
        self.keyframes.add(nbytes, sharp)

    def seconds(self) -> float | None:
        """Seconds of call: the frames made for the receiver at the source's frame rate."""
        frames = self.frames_sent + self.frames_dropped
        return frames / self.fps if self.fps and frames else None

    def snapshot(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k not in ("started", "stages", "keyframes", "audio", "pacing")}
        out["duration_s"] = round(time.monotonic() - self.started, 3)
        out["stages_ms"] = {k: summary(v) for k, v in self.stages.items()}
        out.update(self.keyframes.snapshot(self.seconds()))
        out["audio"] = self.audio.snapshot()
        out["pacing"] = self.pacing.snapshot()
        seconds = self.seconds()
        face = self.param_bytes + self.keyframes.total + self.eye_reference_bytes
        out["face_payload_kbps"] = round(face * 8 / 1000 / seconds, 3) if seconds else None
        if self.wire_bytes_sent is not None:       # the DTLS bytes carry the audio RTP too (one bundle)
            face_wire = max(0, self.wire_bytes_sent - self.audio.wire_bytes)
            out["face_wire_bytes_sent"] = face_wire
            out["face_wire_kbps"] = round(face_wire * 8 / 1000 / seconds, 3) if seconds else None
        return out


class SenderHalf(SendingHalf):
    def __init__(self, source: FrameSource, analyser: Analyser, options: SenderOptions,
                 live: LiveConfig = DEFAULT, audio: AudioFeed | None = None,
                 audio_bitrate: int = DEFAULT_BITRATE, audio_frame_ms: int | None = None) -> None:
        self.source = source
        self.audio = audio
        self.audio_bitrate = audio_bitrate
        self.audio_frame_ms = audio_frame_ms if audio_frame_ms is not None else live.voice_frame_ms
        self.analyser = analyser
        self.options = options
        self.live = live
        self.stats = SenderStats(format=analyser.format.name)
        self.session: Session | None = None
        self.first_session = asyncio.Event()
        self.peer_ready = asyncio.Event()      # the receiver has the key frame and can synthesize
        self._header: SessionHeader | None = None
        self._pair: KeyframePair | None = None   # the current crop's small and sharp key frames
        self._sharp_task: asyncio.Task | None = None
        self._answers = AnswerLimiter(live.keyframe_answer_rate_bytes_s, live.keyframe_answer_max_buffered_bytes)
        self._answer_task: asyncio.Task | None = None     # a key frame request waiting to be answered
        self._ready = False           # header and key frame went out on this session
        self._coder = PacketParamEncoder(analyser.num_values)     # the values of its feature format
        self._intra = IntraPolicy(analyser.config.intra_interval)
        self._frame = 0               # next frame number (unwrapped)
        self._rng = random.Random(options.seed)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="analysis")
        self._dump = JsonLines(options.dump_levels)
        self._trace = JsonLines(options.trace)
        self._pending_clock: tuple[Session, AudioClock] | None = None
        self.stats.audio.source = audio.name if audio is not None else None
        self.stats.audio.bitrate = audio_bitrate
        self.stats.audio.frame_ms = self.audio_frame_ms
        self._pacer: PiecePacer | None = None    # the current session's key frame pieces

    def close(self) -> None:
        """Release the source and the analysis threads (after `run` has returned, or was
        cancelled while a frame was being analysed: the analyser is closed on the analysis
        thread, after that frame, never under it; a VVenC running is killed at once)."""
        self.analyser.stop_coding()
        self._pool.submit(self.analyser.close)
        self._pool.shutdown(wait=False)
        self.source.close()
        if self.audio is not None:
            self.audio.close()

    # -- the voice -----------------------------------------------------------------------

    def audio_track(self, session: Session) -> OpusTrack | None:
        if self.audio is None:
            return None
        return OpusTrack(self.audio, self.audio_bitrate, lambda m, s=session: self._clock(s, m), self.stats.audio,
                         self.audio_frame_ms)

    def _clock(self, session: Session, message: AudioClock) -> None:
        """An audio clock mapping from the track of `session`: send it now, or once the
        session is open."""
        if session.is_open and session is self.session:
            if session.send_control(message):
                self.stats.audio.clock_messages += 1
                self.stats.audio.clock_bytes += len(encode_control(message))
        elif not session.closed:
            self._pending_clock = (session, message)

    def set_muted(self, muted: bool) -> None:
        """Mute (silence, the track's clock goes on) or unmute the voice; the other side is told."""
        if self.audio is None:
            log.info("nothing to mute: this call end sends no voice")
            return
        self.audio.muted = self.stats.audio.muted = muted
        log.info("voice %s", "muted" if muted else "live again")
        if self.session is not None:
            self.session.send_control(Muted(muted))

    def toggle_mute(self) -> None:
        self.set_muted(not (self.audio is not None and self.audio.muted))

    def summary(self) -> str:
        line = (f"sent {self.stats.frames_sent} frames ({self.stats.format}) and {self.stats.keyframes_sent} "
                "key frames")
        voice = self.stats.audio.snapshot()
        if voice["packets"]:
            line += f"; voice {voice['packets'] * self.audio_frame_ms / 1000:.1f} s at {voice['payload_kbps']} kbps"
        return line

    # -- session events (event loop) -----------------------------------------------------

    def session_opened(self, session: Session) -> None:
        self._cancel_answer()
        self.session = session
        self._pacer = self._new_pacer(session)
        self.stats.sessions += 1
        self.stats.first_session_t = self.stats.first_session_t or wall_ms()
        self.first_session.set()
        self._send_setup(header=True)
        if self.audio is not None:
            if self.source.live:
                self.audio.start(wall_ms())      # a camera's voice runs from the first session on
            session.send_control(Muted(self.audio.muted))     # the other end forgot the last session's
            pending, self._pending_clock = self._pending_clock, None
            if pending is not None and pending[0] is session:
                self._clock(session, pending[1])

    def session_closed(self, session: Session, reason: str) -> None:
        if session is self.session:
            self.session, self._ready = None, False
            self._cancel_answer()
            if self._pacer is not None:
                self._pacer.cancel()
                self._pacer = None

    def _new_pacer(self, session: Session) -> PiecePacer:
        """The key frame pieces of `session`: sent on its `stream` channel, paced by its
        SCTP round-trip times (none on a session without an aiortc connection)."""
        sctp = getattr(getattr(session, "pc", None), "sctp", None)
        channel = (getattr(session, "channels", None) or {}).get(STREAM.label)
        probe = watch(sctp) if sctp is not None else None
        link = Link(session.send_stream, probe,
                    (lambda: stream_unacked(sctp, channel)) if sctp is not None and channel is not None
                    else (lambda: None))
        self.stats.pacing.window = 1
        return PiecePacer(link, self.live, stats=self.stats.pacing)

    def on_control(self, message) -> None:
        if isinstance(message, Ready):
            self._on_ready(message.key_id)
        elif isinstance(message, KeyframeRequest):
            self.stats.keyframe_requests += 1
            self._on_keyframe_request()
        elif isinstance(message, Loss):
            self.stats.loss_reports += 1
            if self._intra.on_loss(unwrap(message.frame, self._frame - 1)):
                self.stats.intra_after_loss += 1
                log.debug("loss of frame %d reported: next packet intra", message.frame)

    def _on_ready(self, key_id: int) -> None:
        """The receiver has key frame `key_id` (low 8 bits) decoded and synthesis set up."""
        pair = self._pair
        if pair is None:
            return
        if key_id == pair.small.record.key_id & 0xFF:
            self.peer_ready.set()
        elif (sharp := pair.switch(key_id)) is not None:
            self._intra.force()
            self.stats.sharp_switches += 1
            self.stats.keyframe_bytes = len(sharp.record.picture)
            log.info("the receiver is ready for the sharp key frame %d: parameters animate it from the next frame",
                     sharp.record.key_id)

    # -- key frame requests ------------------------------------------------------------

    def _stream_buffered(self) -> int:
        """Bytes the `stream` channel of the current session holds unsent (0 without one).
        Key frame pieces still queued in the pacer do not count: the answer cancels them and
        sends the key frames again."""
        channels = getattr(self.session, "channels", None) or {}
        channel = channels.get(STREAM.label)
        return channel.bufferedAmount if channel is not None else 0

    def _on_keyframe_request(self) -> None:
        if self._answer_task is not None and not self._answer_task.done():
            log.debug("the receiver asks for the key frame again; the answer is on its way")
            return
        wait = self._answers.wait(time.monotonic(), self._stream_buffered())
        if wait == 0:
            log.info("the receiver asks for the key frame")
            self._answer()
            return
        self.stats.keyframe_answers_deferred += 1
        log.info("the receiver asks for the key frame: answering in %.2f s (answer rate limit, or the "
                 "stream channel still holds %d bytes)", wait, self._stream_buffered())
        self._answer_task = asyncio.create_task(self._answer_later(wait), name="keyframe-answer")

    async def _answer_later(self, wait: float) -> None:
        while wait > 0:
            await asyncio.sleep(wait)
            if self.session is None:
                return
            wait = self._answers.wait(time.monotonic(), self._stream_buffered())
        self._answer()

    def _answer(self) -> None:
        nbytes = self._send_setup(header=True)
        if nbytes:
            self.stats.keyframe_answers += 1
            self._answers.answered(time.monotonic(), nbytes)

    def _cancel_answer(self) -> None:
        if self._answer_task is not None:
            self._answer_task.cancel()
            self._answer_task = None

    def _send_setup(self, header: bool) -> int:
        """Session header (if asked) and the current key frames: the small one at once, then
        its sharp twin (if coded) paced; the next packet is intra and animates the small one.
        Key frame pieces still queued are dropped first (what is sent now supersedes them).
        The bytes sent or queued."""
        s, pair = self.session, self._pair
        if s is None or self._header is None:
            return 0
        if self._pacer is not None:
            self._pacer.cancel()
        sent = 0
        if header:
            data = pack_stream_record(self._header)
            sent += len(data) if s.send_stream(data) else 0
        if pair is None:
            return sent
        pair.resent()
        if small := self._send_keyframe(pair.small, sharp=False):
            self._ready = True
            self._intra.force()
            sent += small
            sent += self._send_eyes(pair.eye_references(sharp=False))
        if pair.sharp is not None:
            sent += self._send_keyframe(pair.sharp, sharp=True)
            sent += self._send_eyes(pair.eye_references(sharp=True))
        return sent

    def _use_eyes(self, record: EyeReference) -> None:
        """The current crop's eye reference is coded: it goes out for each of its key frames
        (a sharp one's, queued behind the eye reference, is held by the receiver until it comes)."""
        pair = self._pair
        if pair is None or record.key_id != pair.small.record.key_id:
            return
        pair.eyes = record
        if self._ready:     # else it goes with the key frame (`_send_setup`)
            self._send_eyes(pair.eye_references(sharp=False) + pair.eye_references(sharp=True))

    def _send_eyes(self, records: list[EyeReference]) -> int:
        """Send eye references on `stream`; the bytes sent."""
        sent = 0
        for record in records:
            data = pack_stream_record(record)
            if self.session is not None and self.session.send_stream(data):
                self.stats.eye_references_sent += 1
                self.stats.eye_reference_bytes += len(data)
                sent += len(data)
                log.info("eye reference of key frame %d sent: %d bytes", record.key_id, len(data))
        return sent

    def _send_keyframe(self, coded: CodedKeyframe, sharp: bool) -> int:
        """Send a key frame on `stream` in pieces: a small one at once, a sharp one paced
        (sender.pacing).  Its bytes (as one KEYFRAME message: what the stats count), 0 when
        it could not go."""
        pacer = self._pacer
        if self.session is None or pacer is None:
            return 0
        nbytes = len(pack_stream_record(coded.record))
        pieces = split_keyframe(coded.record, self.live.keyframe_piece_bytes)
        if not sharp:
            if not pacer.burst(pieces):
                return 0
            self.stats.keyframe_sent(nbytes, sharp)
            self.stats.first_keyframe_t = self.stats.first_keyframe_t or wall_ms()
            return nbytes
        key_id = coded.record.key_id

        def done() -> None:
            self.stats.keyframe_sent(nbytes, sharp)
            log.info("sharp key frame %d sent: %d bytes in %d pieces over %.2f s (window %d)", key_id, nbytes,
                     len(pieces), self.stats.pacing.last_transfer_s or 0.0, self.stats.pacing.window)
        pacer.pace(Transfer(pieces, done))
        return nbytes

    def _use_keyframe(self, small: CodedKeyframe, header: bool) -> None:
        """A new (small) key frame takes over: send it (with the session header if asked)
        and start coding its sharp twin."""
        self._pair = KeyframePair(small)
        self.stats.keyframes_coded += 1
        self._dump_crop(small, sharp=False)
        self.stats.keyframe_bytes = len(small.record.picture)
        self._send_setup(header)
        if self._sharp_task is not None:
            self._sharp_task.cancel()
        future = self.analyser.code_sharp(small)
        if future is not None:
            self._sharp_task = asyncio.create_task(self._send_sharp(self._pair, future), name="sharp-keyframe")

    async def _send_sharp(self, pair: KeyframePair, future: Future) -> None:
        """Wait for the sharp twin of `pair.small` and send it, if its crop is still the current one."""
        try:
            sharp = await asyncio.wrap_future(future)
        except Exception as exc:
            log.warning("could not code the sharp key frame (%s); the small one stays", exc)
            return
        if sharp is None or pair is not self._pair or self.analyser.recropping:
            return                  # (of a crop given up: a new one's key frame is being coded)
        pair.sharp = sharp
        self.stats.keyframes_coded += 1
        self._dump_crop(sharp, sharp=True)
        log.info("sharp key frame %d: %d bytes (QP %d), same geometry as key frame %d", sharp.record.key_id,
                 len(sharp.record.picture), sharp.qp, pair.small.record.key_id)
        if self._ready:
            self._send_keyframe(sharp, sharp=True)
            self._send_eyes(pair.eye_references(sharp=True))

    def _dump_crop(self, coded: CodedKeyframe, sharp: bool) -> None:
        """(debug) Keep the captured crop key frame `coded` was coded from, as a lossless
        picture: DIR/key-ID-small|sharp-crop.png (`benchmarks.latency` measures the key
        frames the receiver got against it)."""
        folder = self.options.dump_keyframe_crops
        if folder is None:
            return
        path = Path(folder) / f"key-{coded.record.key_id}-{'sharp' if sharp else 'small'}-crop.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), coded.crop[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise OSError("the picture could not be written")
        except (OSError, cv2.error) as exc:
            log.warning("cannot keep the key frame's crop in %s: %s", folder, exc)

    # -- the capture loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Capture, analyse and send until the source ends or `stop` is set."""
        loop = asyncio.get_running_loop()
        try:
            if not await self._first_keyframe(stop):
                return
            if not self.source.live:
                log.info("waiting for a peer before playing %s", self.source.name)
                if not await _until(self.first_session.wait(), stop):
                    return
                try:
                    await asyncio.wait_for(_until(self.peer_ready.wait(), stop), self.live.ready_timeout_s)
                except TimeoutError:
                    log.warning("the receiver did not say it is ready within %.0f s; playing anyway",
                                self.live.ready_timeout_s)
                if stop.is_set():
                    return
                self.source.start_clock()
                if self.audio is not None:
                    self.audio.start(wall_ms())    # the file's sound is paced with its pictures
            while not stop.is_set():
                if self.options.max_frames is not None and self._frame >= self.options.max_frames:
                    break
                captured = await _until(self.source.next(), stop)
                if captured is None:
                    break
                self.stats.frames_captured += 1
                if self.source.live and self.session is None:
                    continue          # a camera with nobody watching: do not burn CPU on it
                t_start = wall_ms()
                result = await loop.run_in_executor(self._pool, self.analyser.process, captured.rgb)
                t_analysed = wall_ms()
                if not result.face:
                    self.stats.frames_face_lost += 1
                if result.keyframe is not None:
                    self._use_keyframe(result.keyframe, header=False)
                if result.eyes is not None:
                    self._use_eyes(result.eyes)
                key_id = self._pair.packet_key_id(result.key_id) if self._pair else result.key_id
                self._emit(captured, result.levels, key_id, t_start, t_analysed)
            if not stop.is_set():      # the source is over (interrupted: just hang up)
                await self._finish()
        finally:
            if self._sharp_task is not None:
                self._sharp_task.cancel()
            if self._pacer is not None:
                self._pacer.cancel()
            self._cancel_answer()
            self._dump.close()
            self._trace.close()

    async def _first_keyframe(self, stop: asyncio.Event) -> bool:
        loop = asyncio.get_running_loop()
        last_log = float("-inf")
        looked = 0
        while not stop.is_set():
            captured = await _until(self.source.next(), stop)
            if stop.is_set():
                return False
            whole = self.source.pass_frames is not None and looked >= self.source.pass_frames   # --loop: once round
            if captured is None or whole:
                raise NoFaceFound(f"no face found in {self.source.name} ({looked} pictures looked at)")
            looked += 1
            try:
                keyframe = await loop.run_in_executor(self._pool, self.analyser.first_keyframe, captured.rgb)
            except KeyframeError as exc:
                raise CallError(f"could not code the first key frame: {exc}") from None
            if keyframe is not None:
                self._header = self.analyser.encoder.header(self.source.fps)
                self.stats.fps = self._header.fps
                self.source.pushback(captured)
                self._use_keyframe(keyframe, header=True)      # a peer may be there already
                return True
            if time.monotonic() - last_log > self.live.no_face_log_interval_s:
                log.warning("no face in the picture yet; still looking")
                last_log = time.monotonic()
            if self.source.live:
                await asyncio.sleep(self.live.face_search_interval_s)
        return False

    def _emit(self, captured: Captured, levels: np.ndarray, key_id: int, t_start: float, t_analysed: float) -> None:
        frame = self._frame
        self._frame += 1
        s = self.stats
        s.stages["capture"].append(t_start - captured.t_ms)
        s.stages["analysis"].append(t_analysed - t_start)
        if self.session is None or not self._ready:
            return
        intra = self._intra.decide(frame)
        payload = self._coder.encode_packet(levels, intra)
        packet = ParamPacket(frame, capture_stamp(captured.t_ms), key_id, intra, payload).pack()
        t_coded = wall_ms()
        s.stages["coding"].append(t_coded - t_analysed)
        dropped = self.options.drop_params > 0 and self._rng.random() < self.options.drop_params
        if dropped:
            s.frames_dropped += 1
        elif self.session.send_params(packet):
            s.frames_sent += 1
            s.param_bytes += len(packet)
            s.first_sent_t = s.first_sent_t or t_coded
            s.last_sent_t = t_coded
        if frame % 10 == 0:
            wire = self.session.wire_bytes()
            s.wire_bytes_sent = wire[0] if wire else None
        s.intra_packets += intra
        self._dump.write({"frame": frame, "key_id": key_id & 0xFF, "intra": intra, "dropped": dropped,
                          "levels": levels.tolist()})
        self._trace.write({"frame": frame, "capture": round(captured.t_ms, 3), "analysis_start": round(t_start, 3),
                           "analysed": round(t_analysed, 3), "sent": round(wall_ms(), 3), "intra": intra,
                           "bytes": len(packet), "dropped": dropped})

    async def _finish(self) -> None:
        s = self.session
        if s is None:
            return
        last = (self._frame - 1) % 65536 if self._frame else None
        wire = s.wire_bytes()
        self.stats.wire_bytes_sent = wire[0] if wire else self.stats.wire_bytes_sent
        s.send_control(End(last))
        log.info("stream ended after %d frames", self._frame)
        await s.flush(self.live.flush_timeout_s)


async def _until(coro, stop: asyncio.Event):
    """Await `coro` unless `stop` is set first: its result, or None when stopped."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    return None


__all__ = ["NoFaceFound", "SenderHalf", "SenderOptions", "SenderStats", "SourceError"]
