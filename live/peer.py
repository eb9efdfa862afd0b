"""One WebRTC peer connection at a time, set up through the signaling server.

`PeerLink` joins a room and keeps one `Session` (an aiortc RTCPeerConnection and its three
data channels, see `live.wire`) with whichever peer is in the room:

- the peer that joins second makes the offer (the server says so in `joined`);
- when the other peer leaves (`bye`, `peer-left`) or the connection fails, the session
  closes and the link waits in the room; a peer that joins later gets a fresh session;
  when the connection broke with both still in the room, the offerer offers again after
  `LiveConfig.reoffer_delay_s`;
- an offer always replaces the current session (the other side started over), except
  when it crosses an offer of ours that is still unanswered (glare).  aiortc has no
  rollback, so the polite peer drops its pending connection and answers, and the other
  ignores the crossing offer and waits for that answer.  Which one is polite is decided
  by the two offers alone (`polite`), the same way on both ends, without a round trip;
- negotiation steps run one at a time (`_negotiating`), and a link that is closing or
  closed never offers or answers again.

The parts of a call end (`Half`: the sender half, the receiver half) hear of sessions
opening and closing and get the messages of the channels; they write through the
`Session`.  Everything runs on the event loop and nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from live.config import DEFAULT, LiveConfig
from live.jitter import use_voice_jitter_buffer
from live.rtt import stream_unacked
from live.wire import (
    CHANNELS,
    CONTROL,
    FEEDBACK,
    PARAMS,
    STREAM,
    ControlMessage,
    Loss,
    WireError,
    encode_control,
    parse_control,
)
from signaling.client import SignalingClient, SignalingError
from signaling.protocol import Answer, Bye, Candidate, Error, Offer, PeerJoined, PeerLeft

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IceServer:
    url: str
    username: str | None = None
    credential: str | None = None

    def to_rtc(self) -> RTCIceServer:
        return RTCIceServer(urls=self.url, username=self.username, credential=self.credential)


def polite(own_offer: str, their_offer: str) -> bool:
    """Whether we give way when our offer `own_offer` crosses `their_offer` (glare): the end
    whose offer has the smaller SHA-256 digest is polite.  Each end sees the same two SDP
    texts (the server relays them unchanged), so exactly one of the two ends is polite;
    the digest, unlike a role, needs no state that could differ between the ends."""
    own, theirs = (hashlib.sha256(sdp.encode()).digest() for sdp in (own_offer, their_offer))
    return own < theirs


class Half:
    """A part of a call end; the default reactions do nothing."""

    def session_opened(self, session: Session) -> None:
        pass

    def session_closed(self, session: Session, reason: str) -> None:
        pass

    def on_stream(self, data: bytes) -> None:
        pass

    def on_params(self, data: bytes) -> None:
        pass

    def on_control(self, message: ControlMessage) -> None:
        pass

    def audio_track(self, session: Session) -> MediaStreamTrack | None:
        """The voice this half sends on `session` (a new track per session), or None."""
        return None

    def on_audio(self, session: Session, track: MediaStreamTrack) -> None:
        """The other side's voice on `session` (it may never carry a packet)."""


@dataclass
class Session:
    """One peer connection with its data channels, open or not yet."""

    number: int
    pc: RTCPeerConnection
    channels: dict[str, RTCDataChannel]
    offerer: bool
    audio: RTCRtpTransceiver | None = None
    started: float = field(default_factory=time.monotonic)
    opened: bool = False
    closed: bool = False

    @property
    def is_open(self) -> bool:
        return self.opened and not self.closed

    def _send(self, label: str, data: bytes | str) -> bool:
        channel = self.channels[label]
        if self.closed or channel.readyState != "open":
            return False
        try:
            channel.send(data)
            return True
        except Exception as exc:  # aiortc raises InvalidStateError (and others) on a dying channel
            log.debug("send on %s failed: %s", label, exc)
            return False

    def send_stream(self, data: bytes) -> bool:
        return self._send(STREAM.label, data)

    def send_params(self, data: bytes) -> bool:
        return self._send(PARAMS.label, data)

    def send_control(self, message: ControlMessage) -> bool:
        """On `control`; a loss report on `feedback` (unreliable: the next report follows)."""
        return self._send(FEEDBACK.label if isinstance(message, Loss) else CONTROL.label, encode_control(message))

    def wire_bytes(self) -> tuple[int, int] | None:
        """(sent, received) bytes of this connection's DTLS transport (all data channels
        and SCTP overhead, as on the wire minus UDP/IP headers), when aiortc tells."""
        try:
            stats = next(iter(self.pc.sctp.transport._get_stats().values()))
            return stats.bytesSent, stats.bytesReceived
        except Exception:   # a private aiortc counter: absent in other versions
            return None

    async def audio_stats(self) -> tuple[dict, dict]:
        """aiortc's RTP stats of the audio track: (outbound-rtp, inbound-rtp), each {} when absent."""
        out: dict = {}
        inb: dict = {}
        t = self.audio
        if t is None or self.closed:
            return out, inb
        try:
            for stats in (await t.sender.getStats()).values():
                if stats.type == "outbound-rtp":
                    out = {"packets": stats.packetsSent, "bytes": stats.bytesSent}
            for stats in (await t.receiver.getStats()).values():
                if stats.type == "inbound-rtp":
                    inb.update(packets=stats.packetsReceived, lost=stats.packetsLost)
                elif stats.type == "remote-outbound-rtp":       # the sender's report (RTCP SR)
                    inb.update(sender_packets=stats.packetsSent, sender_bytes=stats.bytesSent)
        except Exception as exc:     # a closing transport
            log.debug("audio stats: %s", exc)
        return out, inb

    def unacked(self) -> bool:
        """Whether an open channel holds a message the other end has not acknowledged yet
        (queued, or sent and not acknowledged: aiortc's bufferedAmount is 0 once a message is
        in the association's queue, and closing the connection drops what is still there)."""
        sctp = getattr(self.pc, "sctp", None)
        for channel in self.channels.values():
            if channel.readyState != "open":
                continue
            left = stream_unacked(sctp, channel) if sctp is not None else None
            if left or (left is None and channel.bufferedAmount > 0):
                return True
        return False

    async def flush(self, timeout: float) -> None:
        """Wait until the other end has acknowledged everything sent (the `end` before a hang-up)."""
        deadline = time.monotonic() + timeout
        while self.is_open and self.unacked() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


class PeerLink:
    def __init__(self, url: str, room: str, halves: Sequence[Half], ice_servers: Sequence[IceServer] = (),
                 config: LiveConfig = DEFAULT) -> None:
        self.url = url
        self.room = room
        self.halves = list(halves)
        self.ice_servers = list(ice_servers)
        self.config = config
        self.session: Session | None = None
        self.sessions_opened = 0
        self.peer_in_room = False
        self.signaling_lost = asyncio.Event()
        self.peer_gone_since: float | None = time.monotonic()   # no open session since (monotonic)
        self._client = SignalingClient(url, config.signaling_timeout_s)
        self._task: asyncio.Task | None = None
        self._count = 0
        self._tasks: set[asyncio.Task] = set()
        self._watchers: set[asyncio.Task] = set()
        self._negotiating = asyncio.Lock()     # one offer or answer at a time
        self._reoffer: asyncio.Task | None = None
        self.closing = False                   # close() has begun: no negotiation from now on
        self.glares = 0                        # crossing offers met (the polite end counts them)

    # -- lifetime ------------------------------------------------------------------------

    async def open(self) -> None:
        """Join the room (raises SignalingError) and start serving it in the background."""
        joined = await self._client.join(self.room)
        log.info("joined room %r at %s (%s)", self.room, self.url,
                 "peer there, offering" if joined.initiator else "waiting for a peer")
        self.peer_in_room = joined.peers > 1
        self._task = asyncio.create_task(self._serve(joined.initiator), name="signaling")

    async def close(self) -> None:
        """Hang up: tell the peer, close the connection and leave the room.  From the
        first line on, nothing offers or answers again (a pending re-offer is cancelled)."""
        self.closing = True
        if self._reoffer is not None:
            self._reoffer.cancel()
        if self._task is not None:
            # cancel the signaling loop, but do not wait on it for ever: a cancellation can be
            # lost in asyncio.wait_for (Python 3.11) while a session closes, and the loop then
            # sits in receive() until the websocket closes below
            self._task.cancel()
            await asyncio.wait([self._task], timeout=self.config.task_wait_timeout_s)
        if self.session is not None and self.session.is_open:
            await self.session.flush(self.config.flush_timeout_s)
        # the bye and the websocket's closing share `signaling_close_timeout_s`: a websocket
        # whose peer reads nothing (a full buffer) holds a send for ever
        budget, start = self.config.signaling_close_timeout_s, time.monotonic()
        try:
            await asyncio.wait_for(self._client.send(Bye()), budget)
        except TimeoutError:
            log.warning("the bye did not go out within %.2f s", budget)
        spent = time.monotonic() - start
        await self._end_session("hung up")
        await self._client.close(max(0.0, budget - spent))
        for task in list(self._watchers):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.task_wait_timeout_s)

    def peer_absent_for(self) -> float:
        """Seconds since the last session closed (0 while one is open or opening)."""
        if self.session is not None and not self.session.closed:
            return 0.0
        return time.monotonic() - self.peer_gone_since if self.peer_gone_since is not None else 0.0

    # -- signaling -----------------------------------------------------------------------

    async def _serve(self, initiator: bool) -> None:
        if initiator:
            try:
                await self._offer()
            except Exception as exc:    # aiortc failing to make an offer: try again later, as after a break
                log.warning("could not make an offer: %s", exc)
                self.peer_in_room = True
                if self.session is not None:
                    await self._close_if(self.session, "the offer failed")
        while True:
            message = await self._client.receive()
            if self.closing:
                return
            if message is None:
                self.signaling_lost.set()
                log.warning("lost the signaling server: the current call goes on, but no peer can join again")
                return
            try:
                await self._handle(message)
            except Exception as exc:  # a peer's bad SDP must not end the call end
                log.warning("could not handle %s from the peer: %s", type(message).__name__, exc)
                if self.session is not None:    # the offerer offers again (nobody else would)
                    await self._close_if(self.session, "negotiation failed")

    async def _handle(self, message) -> None:
        if isinstance(message, PeerJoined):
            log.info("a peer joined the room")
            self.peer_in_room = True
            await self._end_session("replaced by a new peer")
        elif isinstance(message, Offer):
            self.peer_in_room = True
            await self._answer(message.sdp)
        elif isinstance(message, Answer):
            async with self._negotiating:
                s = self._pending_offer()
                if s is not None:
                    await s.pc.setRemoteDescription(RTCSessionDescription(message.sdp, "answer"))
                else:
                    log.debug("ignoring an answer without a pending offer")
        elif isinstance(message, Candidate):
            await self._add_candidate(message.candidate)
        elif isinstance(message, Bye):
            log.info("the peer hung up")
            await self._end_session("peer hung up")
        elif isinstance(message, PeerLeft):
            self.peer_in_room = False
            await self._end_session("peer left")
        elif isinstance(message, Error):
            log.warning("signaling server: %s (%s)", message.message, message.code.value)

    async def _add_candidate(self, candidate: dict | None) -> None:
        s = self.session
        if candidate is None or s is None or s.closed or not candidate.get("candidate"):
            return
        text = candidate["candidate"]
        cand = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        cand.sdpMid = candidate.get("sdpMid")
        cand.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await s.pc.addIceCandidate(cand)

    # -- sessions ------------------------------------------------------------------------

    def _new_session(self, offerer: bool) -> Session:
        self._count += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[s.to_rtc() for s in self.ice_servers]))
        channels = {spec.label: pc.createDataChannel(spec.label, ordered=spec.ordered,
                                                     maxRetransmits=spec.max_retransmits,
                                                     negotiated=True, id=spec.id)
                    for spec in CHANNELS}
        session = Session(self._count, pc, channels, offerer)
        if offerer:
            session.audio = pc.addTransceiver("audio", direction="sendrecv")
            self._attach_audio(session)

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and session is self.session and not session.closed:
                for half in self.halves:
                    self._guard(half.on_audio, session, track)
        for label, channel in channels.items():
            channel.on("open", lambda s=session: self._maybe_opened(s))
            channel.on("close", lambda s=session, lb=label: self._spawn(self._close_if(s, f"{lb} channel closed")))
            channel.on("message", lambda data, s=session, lb=label: self._dispatch(s, lb, data))

        @pc.on("connectionstatechange")
        def _state() -> None:
            log.debug("session %d: connection %s", session.number, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                self._spawn(self._close_if(session, f"connection {pc.connectionState}"))

        watcher = asyncio.ensure_future(self._watch_open(session))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        self.session = session
        return session

    def _pending_offer(self) -> Session | None:
        """The current session while it is our offer still waiting for its answer."""
        s = self.session
        if s is not None and not s.closed and s.offerer and s.pc.signalingState == "have-local-offer":
            return s
        return None

    async def _offer(self) -> None:
        async with self._negotiating:
            if self.closing:
                return
            await self._end_session("new offer")
            session = self._new_session(offerer=True)
            await session.pc.setLocalDescription(await session.pc.createOffer())
            if session.closed or self.closing:     # hung up while the offer was being made
                await self._drop(session, "hung up")
                return
            await self._client.send(Offer(session.pc.localDescription.sdp))

    async def _answer(self, sdp: str) -> None:
        async with self._negotiating:
            if self.closing:
                return
            pending = self._pending_offer()
            if pending is not None:
                # glare: our offer and theirs crossed in the server
                if not polite(pending.pc.localDescription.sdp, sdp):
                    log.info("offers crossed: keeping ours (session %d), the peer answers it", pending.number)
                    return
                self.glares += 1
                log.info("offers crossed: dropping ours (session %d) and answering the peer's", pending.number)
                await self._end_session("offers crossed")
            else:
                await self._end_session("peer offered again")
            session = self._new_session(offerer=False)
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            session.audio = next((t for t in session.pc.getTransceivers() if t.kind == "audio"), None)
            self._attach_audio(session)
            await session.pc.setLocalDescription(await session.pc.createAnswer())
            if session.closed or self.closing:
                await self._drop(session, "hung up")
                return
            await self._client.send(Answer(session.pc.localDescription.sdp))

    async def _drop(self, session: Session, reason: str) -> None:
        """End `session` if it is still the current one, else just close its connection."""
        if session is self.session:
            await self._end_session(reason)
        else:
            await close_connection(session.pc, self.config.pc_close_timeout_s, f"session {session.number}")

    def _attach_audio(self, session: Session) -> None:
        """Opus only on the audio m-line (our tracks yield Opus packets), the voice of the
        first half that has one, and a jitter buffer that gives up on a lost packet in time."""
        t = session.audio
        if t is None:
            return
        use_voice_jitter_buffer(t.receiver)
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        t.setCodecPreferences(opus)
        track = next((tr for tr in (h.audio_track(session) for h in self.halves) if tr is not None), None)
        if track is not None:
            t.sender.replaceTrack(track)
        t.direction = "sendrecv"

    def _maybe_opened(self, session: Session) -> None:
        if session.opened or session.closed or session is not self.session:
            return
        if all(c.readyState == "open" for c in session.channels.values()):
            session.opened = True
            self.sessions_opened += 1
            self.peer_gone_since = None
            log.info("connected to the peer (session %d)", session.number)
            for half in self.halves:
                self._guard(half.session_opened, session)

    def _dispatch(self, session: Session, label: str, data) -> None:
        if session is not self.session or session.closed:
            return
        if label in (CONTROL.label, FEEDBACK.label):
            try:
                message = parse_control(data)
            except WireError as exc:
                log.warning("dropping a control message: %s", exc)
                return
            for half in self.halves:
                self._guard(half.on_control, message)
            return
        if not isinstance(data, (bytes, bytearray)):
            log.warning("dropping a text message on the %s channel", label)
            return
        for half in self.halves:
            self._guard(half.on_stream if label == STREAM.label else half.on_params, bytes(data))

    @staticmethod
    def _guard(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("error in %s", getattr(fn, "__qualname__", fn))

    async def _watch_open(self, session: Session) -> None:
        await asyncio.sleep(self.config.session_open_timeout_s)
        if not session.opened and not session.closed:
            log.warning("could not connect to the peer within %.0f s (ICE failed? try --ice-server)",
                        self.config.session_open_timeout_s)
            await self._close_if(session, "connection timed out")

    async def _close_if(self, session: Session, reason: str) -> None:
        if session is self.session and not session.closed:
            was_offerer = session.offerer
            await self._end_session(reason)
            # both still in the room but the connection broke: the offerer starts over
            if (was_offerer and self.peer_in_room and not self.signaling_lost.is_set() and not self.closing
                    and self._reoffer is None):
                self._reoffer = asyncio.ensure_future(self._offer_again())

    async def _offer_again(self) -> None:
        """After a broken connection: offer again once `reoffer_delay_s` has passed, unless
        the link is closing, a session came meanwhile or the peer left."""
        try:
            await asyncio.sleep(self.config.reoffer_delay_s)
            if self.session is None and self.peer_in_room and not self.closing:
                log.info("offering again")
                await self._offer()
        except Exception as exc:   # aiortc failing to make an offer must not end the call end
            log.warning("could not offer again: %s", exc)
        finally:
            self._reoffer = None

    async def _end_session(self, reason: str) -> None:
        session, self.session = self.session, None
        if session is None or session.closed:
            return
        session.closed = True
        if session.opened:
            log.info("session %d ended: %s", session.number, reason)
            self.peer_gone_since = time.monotonic()
            for half in self.halves:
                self._guard(half.session_closed, session, reason)
        elif self.peer_gone_since is None:
            self.peer_gone_since = time.monotonic()
        await close_connection(session.pc, self.config.pc_close_timeout_s, f"session {session.number}")

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_CLOSING: set[asyncio.Task] = set()     # peer connections still closing after their time was up


async def close_connection(pc: RTCPeerConnection, timeout: float, what: str = "the peer connection") -> None:
    """Close `pc`, waiting at most `timeout` seconds; a close that takes longer goes on in
    the background rather than being cancelled (aiortc's close cancelled half way leaves its
    transports and tasks behind)."""
    task = asyncio.ensure_future(pc.close())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.debug("closing %s takes longer than %.2f s: it goes on in the background", what, timeout)
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
    task.add_done_callback(_closed_with)


def _closed_with(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a peer connection: %s", task.exception())


__all__ = ["Half", "IceServer", "PeerLink", "Session", "SignalingError", "close_connection", "polite"]
