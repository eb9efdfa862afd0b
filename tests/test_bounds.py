"""Bounds on everything that comes from outside (issue 13): each refusal is a clear one-line
error or a logged drop, before anything is allocated for it; decoder state changes all or
nothing; key frame requests are answered within a rate; a late packet is not a lost one.

Imports of what a test exercises are inside the test, so that each test stands or falls on
its own (the issue shows every one failing on the code before it)."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from codec_core.bitstream import EyeReference, Keyframe, ParamPacket, ParamSegment, SessionHeader, StreamError

FIXTURES = Path(__file__).parent / "fixtures"
STILLS = Path(__file__).resolve().parents[2] / "shared" / "data" / "stills"
STEPS = (0.25, 0.001, 0.002, 0.03, 0.03, 0.09, 0.01)
GLOBAL_STEP = 0.002
VALUES = 34                   # levels per frame of an ifvc stream: 30 values, then 4 of global motion


def header(width: int = 256, height: int = 256, fps: int = 25, intra: int = 50) -> SessionHeader:
    return SessionHeader(1, width, height, fps, 1, 0, "v1", 30, intra, STEPS, GLOBAL_STEP)


# -- the stream syntax ---------------------------------------------------------------------

@pytest.mark.parametrize("width, height", [(4096, 4096), (256, 512), (512, 256), (16, 16), (1024, 1024), (255, 255)])
def test_session_header_pictures_are_square_256_or_512(width, height):
    with pytest.raises(StreamError, match="square"):
        SessionHeader.unpack(header(width, height).pack())


def test_session_header_sizes_frame_rates_and_intra_intervals_within_bounds():
    for side in (256, 512):
        assert SessionHeader.unpack(header(side, side).pack()).width == side
    for fps in (0, 121, 65535):
        with pytest.raises(StreamError, match="frame rate"):
            SessionHeader.unpack(header(fps=fps).pack())
    for intra in (0, 1001, 65535):
        with pytest.raises(StreamError):
            SessionHeader.unpack(header(intra=intra).pack())
    assert SessionHeader.unpack(header(intra=1000).pack()).intra_interval == 1000


def test_a_15_byte_segment_cannot_ask_for_65535_frames():
    data = ParamSegment(0, 65535, b"\x00" * 9).pack()
    assert len(data) == 15
    t = time.perf_counter()
    with pytest.raises(StreamError, match="65535 frames"):
        ParamSegment.unpack(data)
    assert time.perf_counter() - t < 0.1          # refused from its 6-byte head, nothing decoded
    assert ParamSegment.unpack(ParamSegment(0, 1000, b"\x00").pack()).frame_count == 1000


def test_key_frame_picture_and_geometry_bytes_are_bounded():
    big = bytes(2 << 20)                         # a 2 MiB "picture", fully present
    with pytest.raises(StreamError, match="too large"):
        Keyframe.unpack(Keyframe(0, 1, big, b"geometry").pack())
    with pytest.raises(StreamError, match="too large"):
        Keyframe.unpack(Keyframe(0, 1, b"picture", bytes(1 << 20)).pack())
    # a record that only claims 4 GiB is refused as too large, not looked for
    with pytest.raises(StreamError, match="too large"):
        Keyframe.unpack(struct.pack(">HBI", 0, 1, 0xFFFFFFFF) + b"x")
    real = (FIXTURES / "keyframe.bin").read_bytes()
    assert Keyframe.unpack(real).pack() == real


def test_the_vvc_decoder_refuses_a_picture_larger_than_any_stream_has():
    """A key frame whose parameter sets declare 1024x1024 is refused before it is decoded
    (the decoder is opened with the largest picture a stream may have)."""
    from codec_core.keyframe import KeyframeError, decode_keyframe, encode_keyframe

    data = encode_keyframe(np.full((1024, 1024, 3), 100, np.uint8), 40, "faster")
    with pytest.raises(KeyframeError, match="more than 262144 pixels"):
        decode_keyframe(data)
    picture = decode_keyframe(Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes()).picture)
    assert picture.shape == (256, 256, 3)


def test_stopping_a_senders_vvenc_kills_the_process_running_and_refuses_the_next():
    """A sender that closes kills its VVenC (a 1024 picture at the slow preset: seconds), not
    waits for it; a key frame or eye reference started after that is refused in words."""
    import threading

    from codec_core.keyframe import KeyframeError, VVenCRuns, encode_keyframe

    runs, outcome = VVenCRuns(), []
    picture = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), np.uint8)

    def code() -> None:
        try:
            outcome.append(encode_keyframe(picture, 22, "slow", runs))
        except KeyframeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=code)
    thread.start()
    while not runs._running and thread.is_alive():
        thread.join(0.01)
    running = list(runs._running)
    runs.stop()
    thread.join(60)
    assert len(running) == 1 and running[0].returncode == -9      # SIGKILL: it was running
    assert isinstance(outcome[0], KeyframeError) and "stopped" in str(outcome[0])
    with pytest.raises(KeyframeError, match="VVenC was stopped"):
        encode_keyframe(picture[:64, :64], 40, "faster", runs)


# -- uploads of the web demo ---------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def jpeg_header_only(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def test_an_upload_declaring_too_many_pixels_is_refused_before_it_is_decoded(monkeypatch):
    import web_demo.portrait as portrait

    def no_decoding(*args, **kwargs):
        raise AssertionError("the picture was decoded before its size was checked")

    with monkeypatch.context() as m:
        m.setattr(portrait.cv2, "imdecode", no_decoding)
        for data in (png_header_only(1 << 15, 1 << 15), jpeg_header_only(65535, 65535),
                     png_header_only(4097, 16)):
            with pytest.raises(portrait.PortraitError, match="too large"):
                portrait.decode_image(data)
        for data in (b"", b"GIF89a" + bytes(20), b"BM" + bytes(60), b"\xff\xd8\xff\xd9"):
            with pytest.raises(portrait.PortraitError, match="not a picture"):
                portrait.decode_image(data)
    for path in sorted(STILLS.glob("*")):        # real stills: the declared size is the decoded one
        data = path.read_bytes()
        width, height = portrait.image_size(data)
        assert portrait.decode_image(data).shape == (height, width, 3), path.name


# -- bounded queues and lists --------------------------------------------------------------

def test_header_and_key_frame_jobs_wait_in_a_bounded_queue():
    from receiver.render import HeaderJob, JobQueue, KeyframeJob, RenderJob

    q = JobQueue(max_setup=3)
    record = Keyframe(0, 1, b"p", b"g")
    assert [q.put_setup(KeyframeJob(record)) for _ in range(5)] == [True, True, True, False, False]
    assert q.put_setup(HeaderJob(header())) is False
    job = RenderJob(1, 0, np.zeros(30, np.int64), 0, 0.0, 0.0)
    assert q.put(job) is None                    # frames still go in (and replace each other)
    assert isinstance(q.get(0), KeyframeJob)
    assert q.put_setup(HeaderJob(header())) is True     # room for one again
    assert len(q) == 4


def test_eye_references_give_their_place_in_the_setup_queue_back():
    """Every blink, retake and key frame request sends eye references: each one taken off
    the queue frees its place, so that key frames still find room after many of them."""
    from receiver.render import EyesJob, JobQueue, KeyframeJob

    q = JobQueue(max_setup=3)
    eyes = EyeReference(1, 1, 3, (0.1, 0.2), b"vvc")
    for _ in range(10):
        assert q.put_setup(EyesJob(eyes)) is True
        assert isinstance(q.get(0), EyesJob)
    assert [q.put_setup(EyesJob(eyes)) for _ in range(4)] == [True, True, True, False]
    assert q.put_setup(KeyframeJob(Keyframe(0, 1, b"p", b"g"))) is False     # they share the bound


def test_a_flood_of_key_frames_is_dropped_and_counted_and_the_newest_decodes():
    """A peer sending 300 key frames at once: a few wait, the rest are dropped (logged and
    counted), the key frame thread never holds more than a few, and the next key frame is
    decoded and animated as ever."""
    from codec_core.param_coding import PacketParamEncoder
    from live.wire import Ready
    from models.face_model import FaceBasis
    from receiver.render import MAX_DECODES

    real = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    basis = FaceBasis.load()
    shown = Shown()

    async def main() -> None:
        half, worker, session = open_receiver(basis, shown)
        half.on_stream(b"\x01" + (FIXTURES / "session_header.bin").read_bytes())
        for key in range(300):
            half.on_stream(b"\x02" + Keyframe(key, 1, real.picture, real.geometry).pack())
            assert worker._prep._work_queue.qsize() <= MAX_DECODES
        assert half.stats.keyframes_dropped > 0
        assert len(worker.queue) <= half.live.max_queued_setup_jobs
        await until(lambda: len(worker.queue) == 0, "the queued key frames to be taken")
        await asyncio.sleep(1.0)                  # their decodings (or refusals) come back
        # the receiver still works: the next key frame is decoded, and a frame naming it renders
        half.on_stream(b"\x02" + Keyframe(1000, 1, real.picture, b"another crop").pack())
        await until(lambda: Ready(1000 & 0xFF) in session.sent, "the key frame after the flood to be ready")
        coder = PacketParamEncoder(VALUES)
        levels = np.zeros(VALUES, np.int64)
        for frame in range(3):
            payload = coder.encode_packet(levels, frame == 0)
            half.on_params(ParamPacket(frame, 0, 1000 & 0xFF, frame == 0, payload).pack())
        await until(lambda: len(shown.frames) > 0, "a frame after the flood")
        await asyncio.get_running_loop().run_in_executor(None, worker.stop, 5.0)
        assert shown.frames, "no frame rendered after the flood"

    asyncio.run(main())


def test_latency_and_stage_samples_do_not_grow_with_the_call():
    import tracemalloc

    from receiver.chain import ChainCounts
    from receiver.render import Rendered, RenderJob
    from receiver.stats import ReceiverStats

    stats = ReceiverStats(ChainCounts())
    job = RenderJob(0, 0, np.zeros(30, np.int64), 0, 1.0, 2.0)

    def frames(n: int, start: int) -> None:
        for i in range(start, start + n):
            stats.rendered(Rendered(job, 3.0, 3.0 + i % 100))

    frames(10000, 0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    frames(30000, 10000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 100_000, f"40000 frames of stats grew memory by {grown} bytes after the first 10000"
    snap = stats.snapshot()
    assert snap["frames_rendered"] == 40000 and snap["stages_ms"]["synthesis"]["count"] == 40000
    assert snap["stages_ms"]["synthesis"]["max"] == 99.0
    assert snap["stages_ms"]["synthesis"]["mean"] == pytest.approx(49.5, abs=0.01)
    assert len(stats.latency) == 40000 and len(stats.latency[-50:]) == 50    # reads like the whole list


# -- decoder state: all or nothing ---------------------------------------------------------

class ControlLog:
    """The receiver half's control channel, as a list of what it sent."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_control(self, message) -> bool:
        self.sent.append(message)
        return True


try:
    from receiver.sinks import Sink as _SinkBase
except ImportError:                       # the code before the layering had no Sink base here
    _SinkBase = object                    # type: ignore[assignment,misc]


class Shown(_SinkBase):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        self.frames: list[int] = []

    def show(self, frame: int, picture) -> bool:
        self.frames.append(frame)
        return True


async def until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)



def open_receiver(basis, shown):
    """A receiver half with its synthesis thread showing into `shown`, its session open
    (call on the event loop): (half, worker, the session's control log)."""
    from receiver.half import ReceiverHalf
    from receiver.render import RenderWorker

    half = ReceiverHalf(basis)
    worker = RenderWorker(asyncio.get_running_loop(), half.events(), [shown], basis)
    half.attach(worker)
    session = ControlLog()
    half.session_opened(session)
    return half, worker, session

def test_a_key_frame_that_fails_leaves_the_one_in_use_and_asks_for_a_new_one():
    """The receiver half with its real synthesis thread, fed real packets: (1) the first
    key frame is garbage: a request goes out at once, and the real one then animates;
    (2) a new key frame (new id, new crop) that fails: frames of the one in use still
    render, and a request goes out without waiting for packets that name the new one;
    (3) the key frame in use sent again, corrupted: the copy before it stays in use."""
    from codec_core.param_coding import PacketParamEncoder
    from live.wire import KeyframeRequest, Ready
    from models.face_model import FaceBasis

    real = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    corrupt = lambda key: Keyframe(key, 1, b"\x00\x00\x01" + bytes(range(200)), real.geometry)  # noqa: E731
    basis = FaceBasis.load()
    shown = Shown()

    async def main() -> None:
        half, worker, session = open_receiver(basis, shown)
        coder = PacketParamEncoder(VALUES)
        levels = real_levels(VALUES)
        frame = 0

        async def frames(key: int, n: int) -> list[int]:
            nonlocal frame
            sent = []
            for i in range(n):
                half.on_params(ParamPacket(frame, 0, key, i == 0, coder.encode_packet(levels[frame % len(levels)],
                                                                                       i == 0)).pack())
                sent.append(frame)
                frame += 1
            await until(lambda: shown.frames and shown.frames[-1] >= sent[-1], f"frames {sent}", 30)
            return sent

        requests = lambda: sum(isinstance(m, KeyframeRequest) for m in session.sent)  # noqa: E731
        half.on_stream(b"\x01" + (FIXTURES / "session_header.bin").read_bytes())
        # (1) the first key frame does not decode: asked for at once
        half.on_stream(b"\x02" + corrupt(0).pack())
        await until(lambda: half.stats.keyframes_failed == 1, "the first key frame's failure")
        assert requests() == 1
        half.on_stream(b"\x02" + real.pack())
        await until(lambda: Ready(0) in session.sent, "ready for the real key frame")
        assert await frames(0, 5)
        # (2) a new key frame that fails: the one in use goes on, and a new one is asked for
        half._last_request = float("-inf")        # (the request interval is not what this checks)
        half.on_stream(b"\x02" + Keyframe(1, 1, corrupt(1).picture, b"other crop").pack())
        await until(lambda: half.stats.keyframes_failed == 2, "the new key frame's failure")
        assert requests() == 2, "a failed new key frame must be asked for again"
        assert half.chain.key_id == 0 and not half.chain.known(1)
        assert await frames(0, 5)
        # (3) the key frame in use, sent again, corrupted: the copy before it stays in use
        half.on_stream(b"\x02" + corrupt(0).pack())
        await until(lambda: half.stats.keyframes_failed == 3, "the corrupted copy's failure")
        assert half.chain.key_id == 0
        rendered = len(shown.frames)
        await frames(0, 5)
        assert len(shown.frames) > rendered
        await asyncio.get_running_loop().run_in_executor(None, worker.stop, 5.0)

    asyncio.run(main())


def real_levels(values_per_frame: int) -> list[np.ndarray]:
    """The levels of the fixture stream (a real face, 12 frames)."""
    from codec.decoder import decode_segment, read_stream

    parsed = read_stream(FIXTURES / "short.fcv")
    return [lv for seg in parsed.segments for lv in decode_segment(seg, values_per_frame)]


# -- the reorder window ---------------------------------------------------------------------

def test_a_reordered_packet_is_not_lost_and_heals_the_chain():
    from receiver.chain import PredictionChain, Verdict

    chain = PredictionChain(report_interval=0.1)
    chain.new_key(0)
    assert chain.accept(0, 0, True, 0.0).verdict is Verdict.DECODE
    assert chain.accept(1, 0, False, 0.0).verdict is Verdict.DECODE
    d = chain.accept(3, 0, False, 0.0)              # 2 is late
    assert d.verdict is Verdict.BROKEN and d.report == 2
    d = chain.accept(2, 0, False, 0.0)
    assert d.verdict is Verdict.DECODE and d.release == (2, 3)
    assert chain.accept(4, 0, False, 0.0).verdict is Verdict.DECODE
    assert chain.counts.lost == 0 and chain.counts.reordered == 1 and chain.counts.broken == 0
    assert chain.counts.decoded == 5 and chain.counts.received == 5
    # too late (past the window): lost, and then stale
    chain.accept(6, 0, False, 0.0)
    for f in range(7, 7 + chain.window + 1):
        chain.accept(f, 0, False, 0.0)
    assert chain.accept(5, 0, False, 0.0).verdict is Verdict.STALE
    assert chain.counts.lost == 1


def test_the_receiver_decodes_reordered_packets_as_if_they_came_in_order():
    """Real packets of a real face, frames 0..11 delivered as 0 1 3 2 4 6 5 7 8 11 9 10:
    every frame renders, with exactly the levels sent, and nothing counts as lost."""
    from codec_core.param_coding import PacketParamEncoder
    from models.face_model import FaceBasis
    from receiver.half import ReceiverHalf

    class Worker:
        def __init__(self) -> None:
            self.rendered: dict[int, list[int]] = {}

        def set_header(self, header) -> bool:
            return True

        def set_keyframe(self, record) -> bool:
            return True

        def render(self, job):
            self.rendered[job.frame] = job.levels.tolist()

        def session_break(self) -> None:
            pass

    basis = FaceBasis.load()
    levels = real_levels(VALUES)
    coder = PacketParamEncoder(VALUES)
    packets = [ParamPacket(f, 0, 0, f == 0, coder.encode_packet(levels[f], f == 0)).pack() for f in range(12)]
    half, worker = ReceiverHalf(basis), Worker()
    half.attach(worker)
    half.session_opened(ControlLog())
    half.on_stream(b"\x01" + (FIXTURES / "session_header.bin").read_bytes())
    half.on_stream(b"\x02" + (FIXTURES / "keyframe.bin").read_bytes())
    for f in (0, 1, 3, 2, 4, 6, 5, 7, 8, 11, 9, 10):
        half.on_params(packets[f])
    assert sorted(worker.rendered) == list(range(12))
    assert all(worker.rendered[f] == levels[f].tolist() for f in range(12))
    snap = half.stats.snapshot()
    assert snap["frames_lost"] == 0 and snap["frames_reordered"] == 4 and snap["frames_received"] == 12


# -- key frame requests: a rate, and not into a full channel ---------------------------------

def test_the_answer_limiter():
    from sender.keyframes import AnswerLimiter

    limiter = AnswerLimiter(rate=10_000, max_buffered=16_384)
    assert limiter.wait(0.0, 0) == 0
    limiter.answered(0.0, 25_000)                  # a small and a sharp key frame: 2.5 s of budget
    assert limiter.wait(1.0, 0) == pytest.approx(1.5)
    assert limiter.wait(2.5, 0) == 0
    assert limiter.wait(2.5, 20_000) > 0           # the stream channel still holds a key frame


def test_key_frame_requests_over_a_real_connection_are_answered_at_a_bounded_rate():
    """A receiver that sends 40 key frame requests in a second over a real aiortc connection
    gets the key frames again at most at the configured rate (here one 24 kB answer per
    1.5 s), and the requests that had to wait are answered, not forgotten."""
    from concurrent.futures import Future

    from codec.encoder import CodedKeyframe
    from codec_core.config import load_config
    from codec_core.format import IFVC
    from live.config import LiveConfig
    from live.peer import Half, PeerLink
    from live.wire import KeyframePiece, KeyframeRequest, unpack_stream_record
    from models.face_model import FaceBasis
    from sender.half import SenderHalf, SenderOptions
    from signaling import ServerConfig, SignalingServer

    rng = np.random.default_rng(1)
    coded = lambda key, n: CodedKeyframe(Keyframe(key, 1, rng.bytes(n), b"geometry"),  # noqa: E731
                                         np.zeros((2, 2, 3), np.uint8), None, 30, np.zeros((2, 2, 3), np.uint8),
                                         np.zeros((478, 2)))
    small, sharp = coded(0, 4000), coded(1, 20000)
    live = LiveConfig(session_open_timeout_s=10.0, keyframe_answer_rate_bytes_s=16_000)

    class Fake:
        recropping = False

        def __init__(self) -> None:
            self.basis, self.config, self.name, self.live = FaceBasis.load(), load_config(), "fake", True
            self.format, self.num_values = IFVC, VALUES

        def code_sharp(self, _small) -> Future:
            future: Future = Future()
            future.set_result(sharp)
            return future

        def stop_coding(self) -> None:
            pass

        def close(self) -> None:
            pass

    class Receiver(Half):
        def __init__(self) -> None:
            self.session = None
            self.keyframes: list[float] = []

        def session_opened(self, session) -> None:
            self.session = session

        def on_stream(self, data: bytes) -> None:
            record = unpack_stream_record(data)
            if isinstance(record, KeyframePiece) and record.index == record.count - 1 or isinstance(record, Keyframe):
                self.keyframes.append(time.monotonic())     # a key frame complete (pieces: its last)

    async def main() -> tuple[SenderHalf, Receiver, float]:
        async with SignalingServer("127.0.0.1", 0, ServerConfig(ping_interval=1, ping_timeout=1)) as server:
            url = f"ws://127.0.0.1:{server.port}"
            fake = Fake()
            sender = SenderHalf(fake, fake, SenderOptions(), live)
            sender._header = header()
            sender._use_keyframe(small, header=False)
            receiver = Receiver()
            a, b = PeerLink(url, "bounds", [sender], (), live), PeerLink(url, "bounds", [receiver], (), live)
            await a.open()
            await b.open()
            try:
                await until(lambda: len(receiver.keyframes) >= 2, "the key frames of the new session", 30)
                start = time.monotonic()
                for _ in range(40):
                    receiver.session.send_control(KeyframeRequest())
                    await asyncio.sleep(0.025)
                await until(lambda: sender.stats.keyframe_answers >= 2, "the deferred answer", 30)
                await until(lambda: len(receiver.keyframes) >= 6, "the deferred answer's key frames", 30)
                elapsed = time.monotonic() - start
                await asyncio.sleep(0.3)
            finally:
                await a.close()
                await b.close()
            return sender, receiver, elapsed

    sender, receiver, elapsed = asyncio.run(main())
    answer = 24_000                                # fewer bytes than an answer: a looser bound
    assert sender.stats.keyframe_requests == 40
    assert 2 <= sender.stats.keyframe_answers <= 1 + (elapsed + 0.3) * 16_000 / answer
    assert len(receiver.keyframes) == 2 + 2 * sender.stats.keyframe_answers


# -- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("line, words", [
    ("intra_interval: 2.5", "Expected `int`, got `float` - at `$.intra_interval`"),
    ("size: '256'", "Expected `int`, got `str` - at `$.size`"),
    ("keyframe_qp: 99", "keyframe_qp must be in 0..63, not 99"),
    ("eye_reference_qp: -1", "eye_reference_qp must be in 0..63 or null, not -1"),
    ("steps: {ifvc: {angle: fast}}", "Expected `float`, got `str` - at `$.format_steps.ifvc.angle`"),
])
def test_settings_of_another_type_or_out_of_range_are_refused_in_one_line(tmp_path, line, words):
    """Before any work: a setting that would only fail at the end of an encode (a session
    header cannot pack intra_interval 2.5) or in VVenC's many lines (QP 99)."""
    from codec_core.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="keyframe_qp must be in 0..63"):
        load_config().with_overrides(keyframe_qp=64)
