"""Unit tests of the live call's pure logic: clocks, wire messages, the prediction chain,
the intra policy, the synthesis job queue, the output file sink and the stats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codec_core.bitstream import Keyframe, SessionHeader, StreamError
from live.clock import age_ms, capture_stamp, unwrap
from live.stats import StatsFile, summary
from live.wire import (
    End,
    KeyframeRequest,
    Loss,
    Ready,
    WireError,
    encode_control,
    pack_stream_record,
    parse_control,
    unpack_stream_record,
)
from models.crop import CropBox
from receiver.chain import PredictionChain, Verdict
from receiver.render import BreakJob, HeaderJob, JobQueue, RenderJob
from receiver.sinks import FileSink, segment_path
from receiver.stats import ReceiverStats
from sender.analysis import boxes_differ
from sender.intra import IntraPolicy

HEADER = SessionHeader(1, 256, 256, 25, 1, 0, "v1", 30, 50, (0.5, 0.002, 0.004, 0.03, 0.03, 0.06, 0.01), 0.002)


# -- clocks ------------------------------------------------------------------------------

def test_age_across_wraparound():
    assert age_ms(capture_stamp(1000.0), 1012.5) == pytest.approx(12.5)
    stamp = capture_stamp(2**32 - 5)               # just before the wrap
    assert stamp == 2**32 - 5
    assert age_ms(stamp, 2**32 + 15) == pytest.approx(20)
    assert age_ms(capture_stamp(2000.0), 1990.0) == pytest.approx(-10)   # clocks disagree


def test_unwrap_frame_numbers():
    assert unwrap(5, 65530) == 65541
    assert unwrap(65530, 65541) == 65530
    assert unwrap(100, 90) == 100
    assert unwrap(0, 0) == 0


# -- wire --------------------------------------------------------------------------------

def test_control_messages_round_trip():
    for message in (KeyframeRequest(), Loss(17), Ready(3), End(65535), End(None)):
        assert parse_control(encode_control(message)) == message


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"type": 3}', '{"type": "hello"}', '{"type": "loss"}', '{"type": "loss", "frame": -1}',
    '{"type": "loss", "frame": 70000}', '{"type": "loss", "frame": true}', '{"type": "loss", "frame": 1, "x": 2}',
    '{"type": "ready", "key_id": 300}', '{"type": "keyframe-request", "please": 1}', "x" * 5000,
])
def test_bad_control_messages(text):
    with pytest.raises(WireError):
        parse_control(text)
    with pytest.raises(WireError):
        parse_control(text.encode())


def test_control_wire_text():
    assert encode_control(KeyframeRequest()) == '{"type":"keyframe-request"}'
    assert encode_control(Loss(7)) == '{"type":"loss","frame":7}'
    assert encode_control(Ready(255)) == '{"type":"ready","key_id":255}'
    assert encode_control(End(None)) == '{"type":"end","frame":null}'
    assert parse_control('{ "frame": 0, "type": "end" }') == End(0)       # any field order, any spacing
    assert Loss(1).type == "loss"


@pytest.mark.parametrize("text, words", [
    ('{"type": "loss", "frame": 65536}', "'frame' must be an integer <= 65535"),
    ('{"type": "loss", "frame": -1}', "'frame' must be an integer >= 0"),
    ('{"type": "loss", "frame": 1.5}', "'frame' must be an integer, got number"),
    ('{"type": "loss", "frame": null}', "'frame' must be an integer, got null"),
    ('{"type": "end", "frame": "7"}', "'frame' must be an integer or null, got string"),
    ('{"type": "end"}', "missing the 'frame' field"),
    ('{"type": "ready", "key_id": 256}', "'key_id' must be an integer <= 255"),
    ('{"type": "ready"}', "missing the 'key_id' field"),
    ('{"type": "keyframe-request", "please": 1}', "unexpected field(s) 'please'"),
    ('{"type": "edit", "values": {}}', "unknown message type 'edit'"),
    ('{"frame": 1}', "no 'type'"),
    ("[]", "must be a JSON object, got array"),
    ("{", "invalid JSON"),
    ("x" * 4097, "4097 characters is too long"),
])
def test_control_limits_are_refused_in_words(text, words):
    with pytest.raises(WireError) as info:
        parse_control(text)
    assert words in str(info.value)


@pytest.mark.parametrize("text, words", [
    ('{"frame": ' + "[" * 2000 + "]" * 2000 + ', "type": "loss"}', "nested too deeply"),   # within 4096 characters
    ('{"type": "loss", "frame": 1, "x": ' + "[" * 2000 + "]" * 2000 + "}", "nested too deeply"),
    ('{"type": "loss", "frame": ' + "[" * 100_000 + "]" * 100_000 + "}", "too long"),
])
def test_deeply_nested_control_messages_are_refused_cleanly(text, words):
    with pytest.raises(WireError, match=words):
        parse_control(text)


def test_stream_records():
    kf = Keyframe(7, 1, b"\x00\x00\x01picture", b"geometry")
    assert unpack_stream_record(pack_stream_record(HEADER)) == SessionHeader.unpack(HEADER.pack())
    assert unpack_stream_record(pack_stream_record(kf)) == kf
    for bad in (b"", b"\x04" + b"x" * 10, b"\x01short", b"\x09" + HEADER.pack()):
        with pytest.raises(StreamError):
            unpack_stream_record(bad)


# -- the prediction chain ----------------------------------------------------------------

def chain_with_key(key: int = 0) -> PredictionChain:
    chain = PredictionChain(report_interval=0.1)
    chain.new_key(key)
    return chain


def test_chain_in_order():
    chain = chain_with_key()
    assert chain.accept(0, 0, True, 0.0).verdict is Verdict.DECODE
    for f in range(1, 5):
        d = chain.accept(f, 0, False, 0.0)
        assert d.verdict is Verdict.DECODE and d.report is None and d.lost == 0
    assert chain.counts.decoded == 5 and chain.counts.lost == 0


def test_chain_breaks_on_a_gap_until_intra():
    chain = chain_with_key()
    chain.accept(0, 0, True, 0.0)
    chain.accept(1, 0, False, 0.0)
    d = chain.accept(3, 0, False, 0.0)           # frame 2 lost
    assert d.verdict is Verdict.BROKEN and d.lost == 1 and d.report == 2
    d = chain.accept(4, 0, False, 0.01)          # still broken; report rate-limited
    assert d.verdict is Verdict.BROKEN and d.report is None
    d = chain.accept(5, 0, False, 0.2)           # repeated after the interval, naming the frame before
    assert d.verdict is Verdict.BROKEN and d.report == 4
    assert chain.accept(6, 0, True, 0.2).verdict is Verdict.DECODE
    assert chain.accept(7, 0, False, 0.2).verdict is Verdict.DECODE
    assert chain.counts.lost == 1 and chain.counts.broken == 3


def test_chain_gap_then_intra_needs_no_report():
    chain = chain_with_key()
    chain.accept(0, 0, True, 0.0)
    d = chain.accept(2, 0, True, 0.0)
    assert d.verdict is Verdict.DECODE and d.lost == 1 and d.report is None


def test_chain_late_duplicate_and_foreign():
    chain = chain_with_key(5)
    chain.accept(10, 5, True, 0.0)
    chain.accept(11, 5, False, 0.0)
    assert chain.accept(11, 5, False, 0.0).verdict is Verdict.STALE
    assert chain.accept(9, 5, False, 0.0).verdict is Verdict.STALE
    assert chain.accept(12, 6, False, 0.0).verdict is Verdict.FOREIGN
    # a new key frame: nothing decodes until its first intra packet
    chain.new_key(6)
    d = chain.accept(13, 6, False, 0.0)
    assert d.verdict is Verdict.BROKEN and d.report == 12
    assert chain.accept(14, 6, True, 0.0).verdict is Verdict.DECODE


def test_chain_first_packet_predicted():
    chain = chain_with_key()
    d = chain.accept(40, 0, False, 0.0)
    assert d.verdict is Verdict.BROKEN and d.report == 39


def test_chain_wraps_frame_numbers():
    chain = chain_with_key()
    chain.accept(65534, 0, True, 0.0)
    assert chain.accept(65535, 0, False, 0.0).verdict is Verdict.DECODE
    d = chain.accept(0, 0, False, 0.0)
    assert d.verdict is Verdict.DECODE and d.frame == 65536


def test_chain_decode_failure_breaks_it():
    chain = chain_with_key()
    d = chain.accept(0, 0, True, 0.0)
    assert chain.decode_failed(d.frame, 0.0) == 0
    assert chain.accept(1, 0, False, 0.0).verdict is Verdict.BROKEN
    assert chain.counts.decoded == 0 and chain.counts.broken == 2


def test_chain_new_session_restarts_numbering():
    chain = chain_with_key()
    chain.accept(500, 0, True, 0.0)
    chain.new_session()
    chain.new_key(0)
    d = chain.accept(3, 0, True, 0.0)
    assert d.verdict is Verdict.DECODE and d.lost == 0


# -- the intra policy --------------------------------------------------------------------

def test_intra_first_and_periodic():
    policy = IntraPolicy(4)
    assert [policy.decide(f) for f in range(10)] == [True, False, False, False, True, False, False, False, True,
                                                     False]


def test_intra_after_loss_only_once():
    policy = IntraPolicy(50)
    for f in range(10):
        policy.decide(f)
    assert policy.on_loss(7) is True
    assert policy.decide(10) is True            # the intra answering the loss
    assert policy.on_loss(8) is False           # a repeated report about the same loss
    assert policy.decide(11) is False
    assert policy.on_loss(10) is True           # the intra itself was lost
    assert policy.decide(12) is True
    assert policy.decide(13) is False
    policy.force()
    assert policy.decide(14) is True
    assert policy.decide(64) is True            # 50 after the last intra


def test_intra_interval_must_be_positive():
    with pytest.raises(ValueError):
        IntraPolicy(0)


# -- synthesis queue ---------------------------------------------------------------------

def job(frame: int) -> RenderJob:
    return RenderJob(frame, 0, np.zeros(3, np.int64), 0, 0.0, 0.0)


def test_the_synthesis_thread_runs_torch_with_the_configured_threads():
    """--threads reaches synthesis: the thread sets the count, and building the synthesizer
    for a key frame leaves it alone."""
    import asyncio
    from pathlib import Path

    import torch

    from receiver.render import RenderEvents, RenderWorker
    from receiver.sinks import Sink

    fixtures = Path(__file__).parent / "fixtures"

    class Probe(Sink):
        def __init__(self) -> None:
            self.threads: list[int] = []

        def idle(self) -> bool:            # called on the synthesis thread while it waits
            self.threads.append(torch.get_num_threads())
            return True

    async def main() -> int:
        loop = asyncio.get_running_loop()
        ready, probe = loop.create_future(), Probe()
        ignore = lambda *args: None
        failed = lambda key, why: ready.set_exception(AssertionError(why))
        worker = RenderWorker(loop, RenderEvents(ignore, ready.set_result, failed, ignore, ignore), [probe],
                              threads=2)
        worker.set_header(SessionHeader.unpack((fixtures / "session_header.bin").read_bytes()))
        worker.set_keyframe(Keyframe.unpack((fixtures / "keyframe.bin").read_bytes()))
        await asyncio.wait_for(ready, 30)       # the synthesizer is built and has rendered once
        probe.threads.clear()
        while not probe.threads:
            await asyncio.sleep(0.01)
        await loop.run_in_executor(None, worker.stop, 5.0)
        return probe.threads[0]

    before = torch.get_num_threads()
    try:
        assert asyncio.run(main()) == 2
    finally:
        torch.set_num_threads(before)


def test_job_queue_keeps_the_newest_frame():
    q = JobQueue()
    assert q.put(job(1)) is None
    assert q.put(job(2)).frame == 1            # 1 was still waiting: replaced
    q.put(HeaderJob(HEADER))
    assert q.put(job(3)) is None               # not replacing across other jobs
    q.put(BreakJob())
    assert [type(q.get(0)).__name__ for _ in range(4)] == ["RenderJob", "HeaderJob", "RenderJob", "BreakJob"]
    assert q.get(0.01) is None


# -- output file -------------------------------------------------------------------------

def frame_count(path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_file_sink_fills_gaps_and_splits_sessions(tmp_path):
    sink = FileSink(tmp_path / "out.mp4", max_gap_s=0.2)   # 5 frames at 25 fps
    sink.set_fps(25)
    pic = np.full((64, 64, 3), 128, np.uint8)
    for f in (0, 1, 4, 5, 100, 101):      # a gap of 2 (filled) and one of 94 (not filled)
        sink.show(f, pic)
    sink.session_break()
    for f in (7, 8):
        sink.show(f, pic)
    sink.close()
    assert sink.segments == [tmp_path / "out.mp4", tmp_path / "out-2.mp4"]
    assert frame_count(tmp_path / "out.mp4") == 8
    assert frame_count(tmp_path / "out-2.mp4") == 2
    assert sink.frames_repeated == 2
    assert segment_path(tmp_path / "a.mp4", 3) == tmp_path / "a-3.mp4"


# -- stats -------------------------------------------------------------------------------

def test_summary():
    s = summary(range(1, 101))
    assert s["median"] == 50.5 and s["p95"] == pytest.approx(95.05) and s["count"] == 100
    assert summary([])["median"] is None


def test_receiver_stats_snapshot():
    chain = chain_with_key()
    stats = ReceiverStats(chain.counts)
    stats.fps = 25.0
    for f in (0, 1, 2, 4):
        chain.accept(f, 0, True, 0.0)
        stats.packet(20)
    snap = stats.snapshot()
    assert snap["frames_received"] == 4 and snap["frames_lost"] == 1 and snap["frames_expected"] == 5
    assert snap["param_kbps"] == pytest.approx(80 * 8 / 1000 / 0.2)
    for key in ("frames_rendered", "latency_ms", "keyframe_bytes"):
        assert key in snap


def test_stats_file_is_rewritten_and_final(tmp_path):
    import asyncio

    path = tmp_path / "s.json"
    counter = {"n": 0}

    def snap():
        counter["n"] += 1
        return {"n": counter["n"]}

    async def run():
        f = StatsFile(path, snap, interval=0.05)
        f.start()
        await asyncio.sleep(0.2)
        assert json.loads(path.read_text())["final"] is False
        await f.close()

    asyncio.run(run())
    data = json.loads(path.read_text())
    assert data["final"] is True and data["n"] >= 3


# -- crops -------------------------------------------------------------------------------

def test_boxes_differ():
    a = CropBox(100, 100, 200)
    assert not boxes_differ(a, CropBox(110, 95, 205), 0.15, 0.2)
    assert boxes_differ(a, CropBox(150, 100, 200), 0.15, 0.2)
    assert boxes_differ(a, CropBox(100, 100, 260), 0.15, 0.2)


def test_chain_counts_frames_lost_at_the_end():
    chain = chain_with_key()
    for f in range(5):
        chain.accept(f, 0, f == 0, 0.0)
    assert chain.stream_ended(7) == 3
    assert chain.counts.lost == 3
    assert chain.stream_ended(7) == 0


def test_ice_server_options():
    import argparse
    import asyncio

    from aiortc import RTCConfiguration, RTCPeerConnection

    from live.cli import add_connection_options, ice_servers
    from live.peer import IceServer

    parser = argparse.ArgumentParser()
    add_connection_options(parser)
    args = parser.parse_args(["--signaling", "ws://h:1", "--room", "r", "--ice-server", "stun:s.example:3478",
                              "--ice-server", "turn:t.example:3478?transport=udp", "--ice-username", "u",
                              "--ice-credential", "c"])
    servers = ice_servers(args)
    assert servers == [IceServer("stun:s.example:3478"), IceServer("turn:t.example:3478?transport=udp", "u", "c")]

    async def make_pc():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[s.to_rtc() for s in servers]))
        await pc.close()

    asyncio.run(make_pc())
    with pytest.raises(ValueError):
        ice_servers(parser.parse_args(["--signaling", "ws://h:1", "--room", "r", "--ice-server", "http://x"]))
    with pytest.raises(ValueError, match="malformed"):      # aiortc would stop the call on it, unseen
        ice_servers(parser.parse_args(["--signaling", "ws://h:1", "--room", "r", "--ice-server", "stun:h:3478?x"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--signaling", "http://h:1", "--room", "r"])


def test_chain_follows_numbering_that_jumped_back():
    chain = PredictionChain(resync_after=3)
    chain.new_key(0)
    chain.accept(30000, 0, True, 0.0)            # e.g. a bogus packet far ahead
    for f in (5, 6, 7):
        assert chain.accept(f, 0, False, 0.0).verdict is Verdict.STALE
    d = chain.accept(8, 0, False, 0.0)           # followed again: broken until an intra packet
    assert d.verdict is Verdict.BROKEN and d.lost == 0
    assert chain.accept(9, 0, True, 0.0).verdict is Verdict.DECODE


def test_the_live_ends_loop_reads_many_datagrams_a_turn():
    """live.eventloop: on a busy loop, a peer connection's UDP socket must not be held to one
    datagram per loop turn (asyncio's own selector loop), or aiortc's packets queue without
    bound.  64 datagrams wait on a socket; a task that keeps the loop busy counts the turns
    until all are read."""
    import asyncio
    import socket
    import time

    from live import eventloop

    async def turns_to_read(n: int) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        got: list[bytes] = []

        class Count(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.append(data)

        transport, _ = await loop.create_datagram_endpoint(Count, local_addr=("127.0.0.1", 0))
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(n):
            out.sendto(bytes([i]), transport.get_extra_info("sockname"))
        turns = 0
        while len(got) < n and turns < 10 * n:
            time.sleep(0.002)             # the loop's other work
            await asyncio.sleep(0)
            turns += 1
        out.close()
        transport.close()
        return turns, type(loop).__module__

    turns, loop_module = eventloop.run(turns_to_read(64))
    assert loop_module.startswith("uvloop")
    assert turns <= 8, f"{turns} loop turns to read 64 datagrams"
