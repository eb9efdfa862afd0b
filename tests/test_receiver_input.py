"""The receiver half against bad input: garbage from a buggy or hostile peer is dropped
and counted, never raised; valid packets still decode afterwards."""

from __future__ import annotations

import random

import numpy as np

from codec_core.bitstream import Keyframe, ParamPacket, SessionHeader
from codec_core.param_coding import PacketParamEncoder
from live.wire import pack_stream_record
from models.face_model import FaceBasis
from receiver.half import ReceiverHalf


class FakeWorker:
    def __init__(self) -> None:
        self.jobs: list = []

    def set_header(self, header) -> None:
        self.jobs.append(("header", header))

    def set_keyframe(self, record) -> None:
        self.jobs.append(("keyframe", record.key_id))

    def set_eyes(self, record) -> None:
        self.jobs.append(("eyes", record.key_id))

    def render(self, job):
        self.jobs.append(("render", job.frame))
        return None

    def session_break(self) -> None:
        self.jobs.append(("break",))


class FakeSession:
    def __init__(self) -> None:
        self.sent: list = []

    def send_control(self, message) -> bool:
        self.sent.append(message)
        return True


def test_garbage_is_dropped_and_good_packets_still_decode():
    basis = FaceBasis.load()
    half = ReceiverHalf(basis)
    worker = FakeWorker()
    half.attach(worker)
    half.session_opened(FakeSession())
    rng = random.Random(1)
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))) for _ in range(400)]
    for data in junk:                                   # before any header
        half.on_stream(data)
        half.on_params(data)
    header = SessionHeader(1, 256, 256, 25, 1, 0, basis.version, basis.num_params, 50,
                           (0.5, 0.002, 0.004, 0.03, 0.03, 0.06, 0.01), 0.002)
    half.on_stream(pack_stream_record(SessionHeader.unpack(header.pack())))
    half.on_stream(pack_stream_record(Keyframe(0, 1, b"not really vvc", b"")))
    for data in junk:                                   # with a header and key frame 0
        half.on_stream(data if not data or data[0] not in (1, 2) else b"\x07" + data)
        half.on_params(data)
    half.on_stream(b"\x01" + b"\xff" * 60)              # a broken header
    half.on_stream(pack_stream_record(SessionHeader(1, 256, 256, 25, 1, 0, "v0", 3, 50, header.steps, 0.002)))
    assert half.stats.bad_messages > 0
    # junk that parses may have moved the frame numbers anywhere; a new session with a
    # real stream decodes every packet, in order
    half.session_closed(half.session, "test")
    half.session_opened(FakeSession())
    half.on_stream(pack_stream_record(SessionHeader.unpack(header.pack())))
    half.on_stream(pack_stream_record(Keyframe(0, 1, b"not really vvc", b"")))
    coder = PacketParamEncoder(header.values_per_frame)
    levels = np.arange(header.values_per_frame, dtype=np.int64)
    before = len([j for j in worker.jobs if j[0] == "render"])
    base = 1000
    for f in range(base, base + 5):
        intra = f == base
        half.on_params(ParamPacket(f, 0, 0, intra, coder.encode_packet(levels + f - base, intra)).pack())
    rendered = [j[1] for j in worker.jobs if j[0] == "render"][before:]
    assert rendered == list(range(base, base + 5))
