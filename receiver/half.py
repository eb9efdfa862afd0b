"""The receiver half of a call: records and packets in, render jobs and feedback out.

Runs on the event loop and does only cheap work there (parsing, the prediction-chain
bookkeeping, arithmetic decoding of ~10 bytes); key frames and synthesis go to the
`RenderWorker` thread.  Feedback on the `control` channel:

- `loss` when a frame is missing or cannot be decoded (see `receiver.chain`);
- `keyframe-request` when parameters keep arriving for a key frame it does not have, or a
  key frame the sender uses or is about to use failed to decode (at most one every
  `keyframe_request_interval_s`; one that has to wait goes out with the next packet after);
- `ready` when a key frame it has (current or pending, `receiver.chain`) is decoded and
  synthesis is set up: a file sender starts playing on the first, and a sender switches
  its packets to a sharp key frame on it (docs/call.md).

Key frames change all or nothing: one that fails to decode leaves the key frame in use (its
picture, reference, key id and synthesizer) as it was.  A new one that fails is forgotten
and asked for again; a sharp twin that fails is just forgotten (the small one stays, and the
sender never switches to a key frame the receiver has not said `ready` for); a copy of the
key frame in use sent again that fails leaves the earlier copy in use.

Key frames come in pieces (KEYFRAME_PIECE, live.wire): `PieceAssembler` puts them back
together, all or nothing; a piece it refuses (a duplicate, one out of range or out of
order) is dropped with a log line, and a partial key frame is given up when the next key
frame starts (the sender cancelled it: normal, an INFO line) or no piece has come for
`keyframe_piece_timeout_s` (a WARNING).  A whole KEYFRAME message is read as before.

Parameter packets go through `receiver.chain` with its reorder window: the packets held
after a gap (a few) are kept here until it fills or the window passes.  Session headers,
key frames and eye references the synthesis thread has no room for
(`max_queued_setup_jobs`, together) are dropped, logged and counted.

Feature formats: a session header of any known format is taken (its `num_params` is that
format's count, which `SessionHeader.unpack` checks, and sizes the packet decoder); one that
names an unknown format, or another face basis, is dropped as malformed.  The synthesis
thread plays it with this receiver's `DecoderChoice` (translating when the formats differ);
when that cannot play it (`--synth learned` with another format, the learned translator
without its weights), one line says so and no key frame is asked for until the sender sends
another header or a new session starts (the synthesis thread says which header it could not
play, so a late word about an earlier header changes nothing).

Anything malformed (from a buggy or hostile peer) is dropped with a log line; the first
few are logged, then one in a hundred.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from codec_core.bitstream import EyeReference, Keyframe, ParamPacket, SessionHeader, StreamError
from codec_core.format import IFVC
from codec_core.param_coding import PacketParamDecoder, ParamDecodeError, check_levels
from live.clock import unwrap, wall_ms
from live.config import DEFAULT, LiveConfig
from live.peer import Session
from live.runner import ReceivingHalf
from live.stats import JsonLines
from live.wire import (
    AudioClock,
    End,
    KeyframePiece,
    KeyframeRequest,
    Loss,
    Muted,
    PieceAssembler,
    Ready,
    unpack_stream_record,
)
from models.face_model import FaceBasis
from receiver.audio import VoiceReceiver
from receiver.chain import PredictionChain, Verdict
from receiver.playback import DevicePlayer
from receiver.render import NATIVE, DecoderChoice, Rendered, RenderEvents, RenderJob, RenderWorker
from receiver.sinks import WindowSink
from receiver.stats import ReceiverStats

log = logging.getLogger(__name__)


@dataclass
class EndMark:
    frame: int | None       # last frame (unwrapped), None: the stream had no frames
    at: float               # monotonic time the end message came


class ReceiverHalf(ReceivingHalf):
    def __init__(self, basis: FaceBasis, live: LiveConfig = DEFAULT, dump_levels: str | None = None,
                 trace: str | None = None, dump_keyframes: str | None = None,
                 choice: DecoderChoice = NATIVE) -> None:
        self.basis = basis
        self.live = live
        self.choice = choice
        self.chain = PredictionChain(live.loss_report_interval_s, window=live.reorder_window_frames)
        self.pieces = PieceAssembler(live.keyframe_piece_timeout_s)
        self.voice = VoiceReceiver()
        self.player: DevicePlayer | None = None      # the voice on this machine's speakers
        self.window: WindowSink | None = None        # the viewer's window, if any
        self.stats = ReceiverStats(self.chain.counts, voice=self.voice.stats)
        self.worker: RenderWorker | None = None
        self.session: Session | None = None
        self.header: SessionHeader | None = None
        self.end: EndMark | None = None
        self.quit_requested = False
        self._decoder: PacketParamDecoder | None = None
        self._unknown_key_since: float | None = None
        self._last_request = float("-inf")
        self._request_due: str | None = None     # a key frame request waiting for the interval
        self._cannot_play: str | None = None     # why the decoder choice cannot play this session's stream
        self._held: dict[int, tuple[ParamPacket, float]] = {}   # frame -> packet, arrival: held by the chain
        self._dump = JsonLines(dump_levels)
        self._trace = JsonLines(trace)
        self._keyframe_dir = Path(dump_keyframes) if dump_keyframes else None

    def attach(self, worker: RenderWorker) -> None:
        self.worker = worker

    def attach_player(self, player: DevicePlayer | None) -> None:
        self.player = player
        self.voice.play = player.play if player is not None else None
        self.voice.flush = player.flush if player is not None else None

    def events(self) -> RenderEvents:
        return RenderEvents(self._rendered, self._keyframe_ready, self._keyframe_failed, self._skipped, self._quit,
                            self._unplayable)

    async def finalise(self, timeout: float) -> None:
        """Render what is queued and close the output files (on the synthesis thread, at
        most `timeout` seconds), then the dumps; the stats say the call has ended."""
        self.voice.seal()
        if self.worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.stop, timeout)
        self.voice.stop()
        if self.player is not None:
            self.player.close()
        self._dump.close()
        self._trace.close()
        self.stats.state = "ended"

    def summary(self) -> str:
        s = self.stats.snapshot()
        played = ""
        if s["stream_format"] is not None:
            played = f"{s['stream_format']} stream" + (
                f" played as {s['decoder_format']} ({s['translator']} translator)" if s["translator"] else "") + "; "
        return (played + f"received {s['frames_received']} frames, rendered {s['frames_rendered']}, "
                f"lost {s['frames_lost']}; "
                f"latency median {s['latency_ms']['median']} ms, p95 {s['latency_ms']['p95']} ms; "
                f"params {s['param_kbps']} kbps"
                + (f"; drawn by {', '.join(f'{k}: {n}' for k, n in s['synthesis_frames'].items())} frames"
                   if s["synthesis_frames"] else "")
                + (f"; voice {s['audio']['seconds']} s, latency median {s['audio']['latency_ms']['median']} ms"
                   if s["audio"]["frames"] else ""))

    # -- session events ------------------------------------------------------------------

    def session_opened(self, session: Session) -> None:
        self.session = session
        self.header, self._decoder, self.end = None, None, None
        self._unknown_key_since, self._request_due, self._cannot_play = None, None, None
        self._held.clear()
        self.pieces.discard("new session")
        self.chain.new_session()
        self.voice.session_opened(session)
        self.stats.sessions += 1
        self.stats.state = "in call"

    def session_closed(self, session: Session, reason: str) -> None:
        if session is not self.session:
            return
        self.session = None
        self.stats.state = "ended" if self.end else "peer gone"
        self.voice.seal()           # and forgets the other side's mute: the next session says it again
        self.worker.session_break()

    def on_audio(self, session: Session, track) -> None:
        self.voice.on_audio(session, track)

    def on_control(self, message) -> None:
        if isinstance(message, (AudioClock, Muted)):
            self.voice.on_control(message)
        elif isinstance(message, End):
            last = None
            if message.frame is not None:
                ref = self.chain.expected - 1 if self.chain.expected is not None else message.frame
                last = unwrap(message.frame, ref)
            self.end = EndMark(last, time.monotonic())
            log.info("the sender's stream ended (last frame %s)", last)

    def in_session(self) -> bool:
        return self.session is not None

    def finished(self) -> bool:
        """The stream has ended and its last frame is in (or will not come)."""
        if self.end is None:
            return False
        if self.end.frame is None or (self.chain.expected is not None and self.chain.expected > self.end.frame):
            return True
        if time.monotonic() - self.end.at > self.live.end_grace_s:
            self.chain.stream_ended(self.end.frame)     # the last frames were lost
            return True
        return False

    # -- stream channel ------------------------------------------------------------------

    def _bad(self, what: str, exc: Exception) -> None:
        self.stats.bad_messages += 1
        n = self.stats.bad_messages
        if n <= 5 or n % 100 == 0:
            log.warning("dropping a bad %s (%s)%s", what, exc, f" [{n} so far]" if n > 5 else "")

    def on_stream(self, data: bytes) -> None:
        try:
            record = unpack_stream_record(data)
        except StreamError as exc:
            self._bad("stream message", exc)
            return
        if isinstance(record, KeyframePiece):
            self._on_piece(record)
        elif isinstance(record, SessionHeader):
            self._on_header(record)
        elif isinstance(record, EyeReference):
            self._on_eyes(record, len(data))
        else:
            if self.pieces.discard(f"a whole key frame {record.key_id} came"):
                log.info("%s", self.pieces.discarded)       # the sender gave it up: normal
            self._on_keyframe(record, len(data))

    def _on_piece(self, piece: KeyframePiece) -> None:
        """A piece of a key frame: the key frame once it is complete.  A partial key frame
        that a new one replaces (the sender cancelled it) is an INFO line; one that timed out,
        or that a refused piece broke, a WARNING."""
        pieces = self.pieces
        now = time.monotonic()
        if pieces.expire(now):
            log.warning("%s", pieces.discarded)
        discarded = pieces.discarded
        try:
            record, refused = pieces.add(piece, now), False
        except StreamError as exc:
            self._bad("key frame piece", exc)
            record, refused = None, True
        if pieces.discarded is not discarded and pieces.discarded is not None:
            (log.warning if refused else log.info)("%s", pieces.discarded)
        if record is not None:
            self._on_keyframe(record, 1 + record.packed_size)       # as one KEYFRAME message: type byte and record

    def _on_keyframe(self, record: Keyframe, nbytes: int) -> None:
        """A whole key frame (`nbytes`: as one KEYFRAME message) for the synthesis thread."""
        if self.header is None:
            self._bad("key frame", StreamError("it came before any session header"))
            return
        sharp = self.stats.keyframe(record, nbytes)
        if self.worker.set_keyframe(record) is False:
            self.stats.keyframes_dropped += 1
            self._bad("key frame", StreamError(f"key frame {record.key_id}: the synthesis thread has "
                                               f"{self.live.max_queued_setup_jobs} waiting already"))
            return
        self.chain.new_key(record.key_id)
        self._unknown_key_since, self._request_due = None, None
        log.info("%s key frame %d: %d bytes", "sharp" if sharp else "small", record.key_id, nbytes)
        self._dump_keyframe(record, sharp)

    def _on_eyes(self, record: EyeReference, nbytes: int) -> None:
        """A key frame's eye reference (it may come before a sharp key frame's last piece)."""
        if self.header is None:
            self._bad("eye reference", StreamError("it came before any session header"))
            return
        if self.worker.set_eyes(record) is False:
            self._bad("eye reference", StreamError(f"eye reference of key frame {record.key_id}: the synthesis "
                                                   f"thread has {self.live.max_queued_setup_jobs} waiting already"))
            return
        self.stats.eye_references_received += 1
        self.stats.eye_reference_bytes += nbytes
        log.info("eye reference of key frame %d: %d bytes", record.key_id, nbytes)

    def _dump_keyframe(self, record: Keyframe, sharp: bool) -> None:
        """(debug) Keep the KEYFRAME payload as it came: DIR/NNN-key-ID-small|sharp.bin."""
        if self._keyframe_dir is None:
            return
        name = f"{self.stats.keyframes_received:03d}-key-{record.key_id}-{'sharp' if sharp else 'small'}.bin"
        try:
            self._keyframe_dir.mkdir(parents=True, exist_ok=True)
            (self._keyframe_dir / name).write_bytes(record.pack())
        except OSError as exc:
            log.warning("cannot keep the key frame in %s: %s", self._keyframe_dir, exc)

    def _on_header(self, header: SessionHeader) -> None:
        """A session header of any known feature format (unpacking refused unknown ones, and a
        count of values that is not its format's)."""
        if header.basis_version != self.basis.version:
            self._bad("session header", StreamError(
                f"the sender uses face basis {header.basis_version!r}, this receiver has {self.basis.version!r}"))
            return
        if header.feature_format is IFVC and header.num_params != self.basis.num_params:
            self._bad("session header", StreamError(
                f"the sender's ifvc stream has {header.num_params} parameters, face basis {self.basis.version} "
                f"has {self.basis.num_params}"))
            return
        if header != self.header:
            if self.worker.set_header(header) is False:
                self._bad("session header", StreamError("the synthesis thread has "
                                                        f"{self.live.max_queued_setup_jobs} jobs waiting already"))
                return
            self.header = header
            self._decoder = PacketParamDecoder(header.values_per_frame)   # its format's values, then global motion
            self.chain.key_id = None
            self._cannot_play = None
            self.stats.fps = header.fps
            played = self.choice.describe(header.feature_format)
            self.stats.set_formats(**played)
            log.info("session header: %dx%d at %.2f fps, format %s (%d values), intra every %d frames; "
                     "played as %s%s", header.width, header.height, header.fps, played["stream_format"],
                     header.num_params, header.intra_interval, played["decoder_format"],
                     f" through the {played['translator']} translator" if played["translator"] else "")

    # -- params channel ------------------------------------------------------------------

    def on_params(self, data: bytes) -> None:
        arrival = wall_ms()
        try:
            packet = ParamPacket.unpack(data)
        except StreamError as exc:
            self._bad("parameter packet", exc)
            return
        now = time.monotonic()
        if self.pieces.expire(now):
            log.warning("%s", self.pieces.discarded)
        if self._request_due is not None and now - self._last_request >= self.live.keyframe_request_interval_s:
            self._request_keyframe(self._request_due)
        if self._decoder is None:
            self._maybe_request_keyframe()
            return
        self.stats.packet(len(data))
        decision = self.chain.accept(packet.frame, packet.key_id, packet.intra, now)
        report = decision.report
        if decision.verdict is Verdict.FOREIGN:
            self._maybe_request_keyframe()
        else:
            self._unknown_key_since = None
        if decision.held:
            self._held[decision.frame] = (packet, arrival)
        if decision.verdict is Verdict.DECODE:
            frames = decision.release or (decision.frame,)
            for i, frame in enumerate(frames):
                kept = (packet, arrival) if frame == decision.frame else self._held.pop(frame, None)
                if not self._decode(frame, kept):
                    report = self.chain.decode_failed(frame, now, skipped=len(frames) - 1 - i)
                    break
        if self._held:
            held = self.chain.held
            self._held = {f: kept for f, kept in self._held.items() if f in held}
        if report is not None:
            self._send(Loss(report))
            self.stats.loss_reports_sent += 1

    def _decode(self, frame: int, kept: tuple[ParamPacket, float] | None) -> bool:
        """Decode the packet of (unwrapped) `frame` and queue its picture; False when it does
        not decode (the chain is broken)."""
        assert self._decoder is not None and self.worker is not None
        if kept is None:
            self._bad("parameter packet", StreamError(f"frame {frame} was to be held and is not"))
            return False
        packet, arrival = kept
        try:
            levels = check_levels(self._decoder.decode_packet(packet.payload, packet.intra))
        except ParamDecodeError as exc:
            self._bad("parameter packet", exc)
            return False
        decoded = wall_ms()
        self._dump.write({"frame": frame, "key_id": packet.key_id, "intra": packet.intra, "levels": levels.tolist()})
        stale = self.worker.render(RenderJob(frame, packet.key_id, levels, packet.capture_ms, arrival, decoded))
        if stale is not None:
            self.stats.frames_dropped_stale += 1
        return True

    def _maybe_request_keyframe(self) -> None:
        if self._cannot_play is not None:
            return          # a key frame would fail the same way
        now = time.monotonic()
        if self._unknown_key_since is None:
            self._unknown_key_since = now
        if (now - self._unknown_key_since >= self.live.keyframe_request_after_s
                and now - self._last_request >= self.live.keyframe_request_interval_s):
            self._request_keyframe("parameters arrive for a key frame this receiver does not have")

    def _ask_for_keyframe(self, why: str) -> None:
        """Ask for the key frame now, or with the first packet after the request interval
        (not while the decoder choice cannot play the stream: it would fail the same way)."""
        if self._cannot_play is not None:
            return
        if time.monotonic() - self._last_request >= self.live.keyframe_request_interval_s:
            self._request_keyframe(why)
        else:
            self._request_due = why

    def _request_keyframe(self, why: str) -> None:
        now = time.monotonic()
        self._last_request, self._request_due = now, None
        if self._send(KeyframeRequest()):
            self.stats.keyframe_requests_sent += 1
            log.info("asking for the key frame: %s", why)

    def _send(self, message) -> bool:
        return self.session is not None and self.session.send_control(message)

    # -- from the synthesis thread (run on the loop) -------------------------------------

    def _rendered(self, r: Rendered) -> None:
        latency = self.stats.rendered(r)
        j = r.job
        self.voice.frame_rendered(j.frame, j.capture_ms)
        if self.player is not None:
            self.player.latencies.video.append(latency)
        self._trace.write({"frame": j.frame, "arrival": round(j.arrival_ms, 3), "decoded": round(j.decoded_ms, 3),
                           "render_start": round(r.start_ms, 3), "ready": round(r.ready_ms, 3),
                           "latency": round(latency, 3)})

    def _keyframe_ready(self, key_id: int) -> None:
        if self.chain.known(key_id):
            self._send(Ready(key_id))

    def _keyframe_failed(self, key_id: int | None, why: str, kept: bool = False) -> None:
        """Key frame `key_id` (None: the session header) cannot be used; `kept`: an earlier
        copy of it (same key id) decoded and stays in use."""
        self.stats.keyframes_failed += 1
        if key_id is None or (key_id == self.chain.key_id and not kept):
            log.warning("key frame %s unusable (%s); asking for a new one", "" if key_id is None else key_id, why)
            self.chain.key_id = None
            self._ask_for_keyframe("the key frame did not decode")
        elif kept:
            log.warning("key frame %d sent again did not decode (%s); the copy before it stays in use", key_id, why)
        elif key_id in self.stats.sharp_keys:
            log.warning("sharp key frame %d unusable (%s); staying with the small one", key_id, why)
            self.chain.drop_key(key_id)
        else:
            log.warning("key frame %d unusable (%s); staying with the current one and asking for a new one",
                        key_id, why)
            self.chain.drop_key(key_id)
            self._ask_for_keyframe(f"key frame {key_id} did not decode")

    def _skipped(self, job: RenderJob) -> None:
        """The synthesis thread has no decoded key frame for a frame the chain let through
        (it failed, or was forgotten among too many): ask for one."""
        self.stats.frames_skipped += 1
        if job.key_id == self.chain.key_id:
            self._ask_for_keyframe(f"the synthesis thread has no key frame {job.key_id}")

    def _unplayable(self, header: SessionHeader, why: str) -> None:
        """This receiver's decoder choice cannot play the stream of `header`: one line (once
        per reason and header), and no key frame requests for it.  Said about a header that
        is no longer the current one (a new one came meanwhile): ignored."""
        if header != self.header:
            log.debug("the synthesis thread could not play an earlier session header (%s): ignored", why)
            return
        self.stats.keyframes_failed += 1
        if why != self._cannot_play:
            log.error("cannot play the sender's stream: %s", why)
        self._cannot_play = self.stats.unplayable = why
        self._request_due = None

    def _quit(self) -> None:
        self.quit_requested = True
