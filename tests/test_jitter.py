"""The voice's jitter buffer (live/jitter.py) against aiortc's, fed real RTP packets."""

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from live.jitter import PREFETCH_MS, VoiceJitterBuffer

PREFETCH = int(PREFETCH_MS // 20)     # packets of 20 ms


def _packet(seq: int, ticks: int = 960) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq % 65536, timestamp=(seq * ticks) % 2**32)
    packet._data = seq.to_bytes(4, "big")     # what aiortc's depayloader leaves for the buffer
    return packet


def _play(buffer: JitterBuffer, arrivals: list[int], ticks: int = 960) -> tuple[list[int], int]:
    """Frames out (their sequence numbers) and the largest backlog: packets that had
    arrived but not left after some arrival (`ticks`: 48 kHz ticks a packet, 960 = 20 ms)."""
    out: list[int] = []
    backlog = 0
    for n, seq in enumerate(arrivals, 1):
        _, frame = buffer.add(_packet(seq, ticks))
        if frame is not None:
            out.append(int.from_bytes(frame.data, "big"))
        backlog = max(backlog, n - len(out))
    return out, backlog


def test_one_frame_in_ten_lost():
    """Every tenth packet lost (from 65530 on, across the wrap of the sequence number):
    every packet that came leaves, in order, and the backlog stays the ordinary prefetch;
    aiortc's buffer keeps 15 packets (300 ms) from the first loss on."""
    sent = list(range(65530, 65530 + 400))
    arrivals = [s for i, s in enumerate(sent) if i % 10 != 5]
    ours, ours_backlog = _play(VoiceJitterBuffer(), arrivals)
    assert ours == arrivals[:len(ours)] and len(ours) == len(arrivals) - PREFETCH
    assert ours_backlog <= PREFETCH + 1
    _, stock_backlog = _play(JitterBuffer(capacity=16, prefetch=4), arrivals)
    assert stock_backlog >= 15


def test_a_burst_and_a_late_packet():
    """Three packets lost in a row: skipped together once enough later ones are in; one
    that comes after its slot was given up on is dropped, never played out of order."""
    arrivals = [*range(0, 20), *range(23, 40), 21, *range(40, 60)]
    buffer = VoiceJitterBuffer()
    out, backlog = _play(buffer, arrivals)
    assert out == sorted(out) and 21 not in out
    assert set(out) == set(range(0, 20)) | set(range(23, 60 - PREFETCH))
    assert buffer.skipped == 3 and backlog <= PREFETCH + 2


def test_no_loss_is_aiortcs_behaviour():
    arrivals = list(range(100))
    assert _play(VoiceJitterBuffer(), arrivals) == _play(JitterBuffer(capacity=16, prefetch=4), arrivals)


def test_the_wait_is_counted_in_milliseconds():
    """40 ms packets (our calls' voice) wait 80 ms too: two later packets, not four (aiortc's
    four would be 160 ms); a lost one is given up on as with 20 ms packets."""
    arrivals = list(range(100))
    out, backlog = _play(VoiceJitterBuffer(), arrivals, ticks=1920)
    assert out == arrivals[:-2] and backlog == 2
    buffer = VoiceJitterBuffer()
    lossy = [s for s in range(200) if s % 10 != 5]
    out, backlog = _play(buffer, lossy, ticks=1920)
    assert out == lossy[:len(out)] and len(out) == len(lossy) - 2 and backlog == 2
    assert buffer.skipped == 20


def test_timestamps_that_do_not_advance_still_leave():
    """A sender whose timestamps stand still: packets leave once half the capacity is in."""
    arrivals = list(range(40))
    out, backlog = _play(VoiceJitterBuffer(), arrivals, ticks=0)
    assert out == arrivals[:len(out)] and len(out) == 40 - 8 and backlog == 8
