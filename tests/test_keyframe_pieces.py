"""Key frames in pieces (docs/wire.md, KEYFRAME_PIECE): splitting, reassembly all or
nothing, the refusals, and the sender's pacing of the pieces by the link's round-trip
times (sender/pacing.py) against a fake link."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from test_receiver_input import FakeSession, FakeWorker

from codec_core.bitstream import Keyframe, SessionHeader, StreamError
from live.config import LiveConfig
from live.rtt import RttProbe, stream_unacked, watch
from live.wire import (
    KEYFRAME_PIECE,
    MAX_KEYFRAME_BYTES,
    MAX_PIECES,
    PIECE_MAX_BYTES,
    PIECE_MIN_BYTES,
    KeyframePiece,
    PieceAssembler,
    pack_stream_record,
    split_keyframe,
    unpack_stream_record,
)
from models.face_model import FaceBasis
from receiver.half import ReceiverHalf
from sender.pacing import Link, PiecePacer, Transfer

KEY = Keyframe(5, 1, bytes(range(256)) * 10, b"geometry")       # 2560 picture bytes


def pieces_of(record: Keyframe, size: int = 1000) -> list[KeyframePiece]:
    return [KeyframePiece.unpack(m) for m in split_keyframe(record, size)]


# -- the wire ----------------------------------------------------------------------------

def test_split_and_reassemble():
    messages = split_keyframe(KEY, 1000)
    payload = KEY.pack()
    assert len(messages) == math.ceil(len(payload) / 1000) == 3
    assert all(m[0] == KEYFRAME_PIECE for m in messages)
    pieces = [unpack_stream_record(m) for m in messages]
    assert [(p.key_id, p.index, p.count) for p in pieces] == [(5, 0, 3), (5, 1, 3), (5, 2, 3)]
    assert b"".join(p.data for p in pieces) == payload
    assembler = PieceAssembler(timeout=10)
    assert assembler.add(pieces[0], 0.0) is None and assembler.partial
    assert assembler.add(pieces[1], 0.1) is None
    assert assembler.add(pieces[2], 0.2) == KEY and not assembler.partial
    assert len(split_keyframe(Keyframe(1, 1, b"x", b""), 256)) == 1      # a tiny one: one piece
    with pytest.raises(ValueError):
        split_keyframe(KEY, PIECE_MAX_BYTES + 1)


@pytest.mark.parametrize("data, words", [
    (bytes([KEYFRAME_PIECE, 0, 1, 0, 0, 0, 1]), "truncated"),                         # no data
    (bytes([KEYFRAME_PIECE, 0, 1, 0, 0, 0, 0, 7]), "in 0 pieces"),
    (bytes([KEYFRAME_PIECE, 0, 1, 0, 3, 0, 3, 7]), "out of range"),                   # index 3 of 3
    (bytes([KEYFRAME_PIECE, 0, 1, 0, 0, 0xFF, 0xFF, 7]), f"1..{MAX_PIECES}"),          # too many pieces
    (bytes([KEYFRAME_PIECE, 0, 1, 0, 0, 0, 2]) + b"x" * (PIECE_MAX_BYTES + 1), "at most"),
    (bytes([KEYFRAME_PIECE, 0, 1, 0, 0, 0, 2]) + b"x" * (PIECE_MIN_BYTES - 1), "at least"),
])
def test_pieces_out_of_bounds_are_refused(data, words):
    with pytest.raises(StreamError, match=words):
        unpack_stream_record(data)


def test_the_piece_limit_comes_from_the_largest_key_frame():
    assert MAX_PIECES * PIECE_MIN_BYTES >= MAX_KEYFRAME_BYTES > (MAX_PIECES - 1) * PIECE_MIN_BYTES


def test_refusals_and_discards():
    a, b, c = pieces_of(KEY)
    assembler = PieceAssembler(timeout=10)
    with pytest.raises(StreamError, match="without its first"):
        assembler.add(b, 0.0)
    assembler.add(a, 0.0)
    assembler.add(b, 0.1)
    with pytest.raises(StreamError, match="came twice"):                # a duplicate: the partial stays
        assembler.add(b, 0.15)
    assert assembler.partial
    assert assembler.add(c, 0.2) == KEY                                  # and completes
    assembler.add(a, 1.0)
    with pytest.raises(StreamError, match="came before piece 1"):       # a gap: all or nothing
        assembler.add(c, 1.1)
    assert not assembler.partial and "piece 1 is missing" in assembler.discarded
    # a newer key frame discards a partial one
    other = pieces_of(Keyframe(6, 1, b"y" * 1500, b"g"))
    assembler.add(a, 2.0)
    assembler.add(other[0], 2.1)
    assert "key frame 6 started" in assembler.discarded
    with pytest.raises(StreamError, match="without its first"):         # the rest of key 5: refused
        assembler.add(b, 2.2)
    assert not assembler.partial                                         # and key 6's partial is gone too


def test_a_partial_key_frame_times_out():
    a, b, _ = pieces_of(KEY)
    assembler = PieceAssembler(timeout=2.0)
    assembler.add(a, 0.0)
    assert not assembler.expire(1.9) and assembler.expire(2.1)
    assert "no piece for 2 s" in assembler.discarded
    with pytest.raises(StreamError, match="without its first"):
        assembler.add(b, 2.2)


def test_pieces_that_hold_another_key_or_garbage_are_refused():
    wrong = split_keyframe(Keyframe(7, 1, b"p" * 600, b""), 256)
    relabelled = [KeyframePiece(8, p.index, p.count, p.data) for p in map(KeyframePiece.unpack, wrong)]
    assembler = PieceAssembler(timeout=10)
    for p in relabelled[:-1]:
        assembler.add(p, 0.0)
    with pytest.raises(StreamError, match="hold key frame 7"):
        assembler.add(relabelled[-1], 0.0)
    junk = KeyframePiece(1, 0, 1, b"\x00\x01\x09junk")                   # not a KEYFRAME payload
    with pytest.raises(StreamError):
        assembler.add(junk, 0.0)


# -- the receiver half ---------------------------------------------------------------------

def test_the_receiver_takes_a_key_frame_in_pieces(caplog):
    basis = FaceBasis.load()
    half = ReceiverHalf(basis)
    worker = FakeWorker()
    half.attach(worker)
    half.session_opened(FakeSession())
    header = SessionHeader(1, 256, 256, 25, 1, 0, basis.version, basis.num_params, 50,
                           (0.5, 0.002, 0.004, 0.03, 0.03, 0.06, 0.01), 0.002)
    half.on_stream(pack_stream_record(header))
    messages = split_keyframe(KEY, 1000)
    caplog.set_level(logging.INFO, logger="receiver.half")
    half.on_stream(messages[0])
    half.on_stream(messages[0])                                          # a duplicate of the first: restarts
    half.on_stream(messages[1])
    half.on_stream(messages[1])                                          # a duplicate: refused, one line
    assert half.chain.key_id is None                                     # nothing yet
    half.on_stream(messages[2])
    assert half.chain.key_id == 5 and half.stats.keyframes_received == 1
    assert half.stats.keyframe_record_bytes == len(pack_stream_record(KEY))
    assert half.stats.bad_messages == 1
    assert sum("came twice" in r.getMessage() for r in caplog.records) == 1
    assert discards(caplog) == [(logging.INFO, "key frame 5 discarded after 1 of 3 pieces: key frame 5 started")]
    caplog.clear()
    half.on_stream(messages[0])
    half.on_stream(pack_stream_record(Keyframe(6, 1, b"whole", b"")))    # a whole KEYFRAME still reads
    assert half.chain.pending == [6] and not half.pieces.partial         # and the partial key 5 is gone
    # the sender gave key 5 up for a newer one: normal operation, an INFO line
    assert discards(caplog) == [(logging.INFO, "key frame 5 discarded after 1 of 3 pieces: a whole key frame 6 came")]
    caplog.clear()
    half.on_stream(messages[0])
    half.pieces.timeout = 0.0                                            # the next piece comes too late
    half.on_stream(messages[1])
    assert discards(caplog) == [(logging.WARNING, "key frame 5 discarded after 1 of 3 pieces: no piece for 0 s")]


def discards(caplog) -> list[tuple[int, str]]:
    """(level, message) of each line that says a partial key frame was discarded."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if "discarded after" in r.getMessage()]


# -- the sender's pacing ---------------------------------------------------------------------

class FakeLink:
    """A link of `rate` bytes/s behind a FIFO queue (times in ms, no propagation delay), with
    a parameter packet every 40 ms; an RTT sample for each packet once it is through."""

    def __init__(self, rate: float) -> None:
        self.rate = rate / 1000.0                     # bytes per ms
        self.ms = 1_000_000
        self.busy_until = float(self.ms)
        self.probe = RttProbe()
        self.sent: list[tuple[float, int]] = []       # (ms, bytes) of each piece
        self.through: list[float] = []                # ms each piece is through
        self.samples: list[tuple[float, float]] = []  # (lands at ms, rtt ms): fed to the probe when due
        self.param_delay: list[float] = []

    def clock(self) -> float:
        return self.ms / 1000.0

    def _enqueue(self, nbytes: int) -> float:
        self.busy_until = max(self.ms, self.busy_until) + nbytes / self.rate
        self.samples.append((self.busy_until, self.busy_until - self.ms))
        return self.busy_until

    def send(self, data: bytes) -> bool:
        self.sent.append((self.ms, len(data)))
        self.through.append(self._enqueue(len(data) + 100))
        return True

    def unacked(self) -> bool:
        return any(done > self.ms for done in self.through)

    async def sleep(self, seconds: float) -> None:
        """Time passes, 1 ms at a time: a parameter packet every 40 ms, RTT samples as they land."""
        for _ in range(max(1, round(seconds * 1000))):
            self.ms += 1
            if self.ms % 40 == 0:
                self.param_delay.append(self._enqueue(120) - self.ms)
            for at, rtt in [x for x in self.samples if x[0] <= self.ms]:
                self.probe.add(at / 1000.0, rtt / 1000.0)
            self.samples = [x for x in self.samples if x[0] > self.ms]
        await asyncio.sleep(0)


async def _pace(link: FakeLink, transfers: list[int], live: LiveConfig) -> PiecePacer:
    pacer = PiecePacer(Link(link.send, link.probe, link.unacked), live, clock=link.clock, sleep=link.sleep)
    done: list[int] = []
    for n in transfers:
        pacer.pace(Transfer([b"p" * 1000] * n, lambda: done.append(1)))
    while len(done) < len(transfers) and link.ms < 2_000_000:
        await link.sleep(0.001)
    return pacer


def test_a_slow_link_gets_one_piece_a_round_and_parameters_pass():
    """At 8 kB/s with parameter packets every 40 ms: one piece a round, each after the queue
    drained, so a parameter packet never waits behind more than about one piece."""
    link = FakeLink(8000.0)
    asyncio.run(link.sleep(0.5))                       # the least RTT, from parameter packets
    pacer = asyncio.run(_pace(link, [9], LiveConfig()))
    assert len(link.sent) == 9 and pacer.stats.window == 1 and pacer.stats.fallback_rounds == 0
    assert max(link.param_delay) < 300                 # one piece (1100 B: 138 ms) and what came before it
    gaps = [b[0] - a[0] for a, b in zip(link.sent, link.sent[1:])]
    assert min(gaps) >= 1100 / 8                       # never a piece before the last one is through


def test_a_fast_link_opens_the_window():
    link = FakeLink(10_000_000.0)
    asyncio.run(link.sleep(0.1))
    pacer = asyncio.run(_pace(link, [15], LiveConfig()))
    assert len(link.sent) == 15 and pacer.stats.window >= 8 and pacer.stats.rounds <= 5


def test_without_round_trip_times_pieces_go_at_the_fallback_pace():
    """No RTT samples (an aiortc without the hook): one piece per `pace_round_wait_max_s`."""
    sent: list[float] = []
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    async def main() -> PiecePacer:
        pacer = PiecePacer(Link(lambda d: sent.append(now[0]) or True), LiveConfig(pace_round_wait_max_s=0.5),
                           clock=lambda: now[0], sleep=sleep)
        pacer.burst([b"small"])
        pacer.pace(Transfer([b"p"] * 3))
        while len(sent) < 4 and now[0] < 10:
            await asyncio.sleep(0)
        return pacer

    pacer = asyncio.run(main())
    assert [round(t, 1) for t in sent] == [0.0, 0.5, 1.0, 1.5]
    assert pacer.stats.fallback_rounds == 3 and pacer.stats.window == 1


def test_cancel_drops_what_is_queued():
    async def main() -> list[bytes]:
        sent: list[bytes] = []
        pacer = PiecePacer(Link(lambda d: sent.append(d) or True), LiveConfig(pace_round_wait_max_s=0.05))
        pacer.burst([b"a"])
        pacer.pace(Transfer([b"b", b"c"]))
        pacer.cancel()
        await asyncio.sleep(0.2)
        return sent

    assert asyncio.run(main()) == [b"a"]


def test_the_base_rtt_is_the_least_of_the_last_10_s():
    """A route that became longer (the base RTT up from 20 to 80 ms for good) is the new base
    once 10 s have passed: rounds can be drained again (the least RTT of the whole call would
    see 60 ms of queue in every sample from then on)."""
    probe = RttProbe()
    for i in range(100):                               # 4 s at 20 ms, a sample every 40 ms
        probe.add(1000.0 + 0.04 * i, 0.020)
    start = 1000.0 + 0.04 * 100
    for i in range(300):                               # then 12 s at 80 ms
        probe.add(start + 0.04 * i, 0.080)
        if 0.04 * i < 9.9:                             # the 20 ms samples are still in the window
            assert probe.min_ms == pytest.approx(20)
    assert probe.min_ms == pytest.approx(80) and probe.queue_ms(probe.samples[-1]) == pytest.approx(0)
    pacer = PiecePacer(Link(lambda d: True, probe), LiveConfig(), clock=lambda: start + 12.0)
    assert pacer._drained(probe, acked_at=start + 11.0)
    probe.add(start + 12.0, 0.050)                     # a lower one is the base at once
    assert probe.min_ms == pytest.approx(50)


def test_the_rtt_hook_and_the_unacked_check():
    class Chunk:
        def __init__(self, stream_id: int) -> None:
            self.stream_id, self._acked, self._abandoned = stream_id, False, False

    class Sctp:
        def __init__(self) -> None:
            self.rtos: list[float] = []
            self._outbound_queue: list = []
            self._sent_queue: list = []

        def _update_rto(self, rtt: float) -> None:
            self.rtos.append(rtt)

    class Channel:
        id, bufferedAmount = 0, 0

    sctp = Sctp()
    probe = watch(sctp)
    assert probe is not None and watch(sctp) is probe                   # hooked once
    sctp._update_rto(0.05)
    sctp._update_rto(0.02)
    assert sctp.rtos == [0.05, 0.02] and probe.min_ms == pytest.approx(20) and probe.count == 2
    assert probe.queue_ms(probe.samples[0]) == pytest.approx(30)
    assert stream_unacked(sctp, Channel()) is False
    sctp._sent_queue.append(Chunk(1))                                   # another channel's chunk
    assert stream_unacked(sctp, Channel()) is False
    sctp._sent_queue.append(Chunk(0))
    assert stream_unacked(sctp, Channel()) is True
    assert stream_unacked(object(), Channel()) is None and watch(object()) is None
