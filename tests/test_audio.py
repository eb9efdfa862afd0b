"""The voice's parts one by one: the Opus encoder at our bitrate, the audio track, the file
feed's pacing and alignment, the clock mapping, the hold, the control messages, and the
voice laid into a file.  Real libopus and real files; no peer connection (tests/test_voice.py
runs whole calls)."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np
import pytest
from avsync import audio_track, voice_match
from conftest import clip

from live.audio import CHUNK_MS, CHUNK_SAMPLES, SAMPLE_RATE, OpusEncoder, OpusTrack, TrackCounts
from live.clock import wall_ms
from live.lipsync import MAX_HOLD_MS, ClockMap, hold
from live.wire import AudioClock, Muted, WireError, encode_control, parse_control
from receiver.audio import VoiceSegment
from receiver.voicefile import mux_voice, place_voice
from sender.audio import FileAudio, aligned, decode_audio, is_device, open_audio

SPEECH = "rt__3.mp4"


def _speech() -> np.ndarray:
    decoded = decode_audio(clip(SPEECH))
    assert decoded is not None
    return decoded[0]


def test_opus_at_our_bitrate_keeps_the_voice():
    pcm = _speech()[: 4 * SAMPLE_RATE]
    encoder = OpusEncoder(12000)
    decoder = av.CodecContext.create("libopus", "r")
    packets, out = [], []
    for i in range(0, pcm.size - CHUNK_SAMPLES + 1, CHUNK_SAMPLES):
        data = encoder.encode(pcm[i:i + CHUNK_SAMPLES])
        assert data is not None
        packets.append(len(data))
        for frame in decoder.decode(av.Packet(data)):
            out.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1))
    kbps = sum(packets) * 8 / 1000 / (len(packets) * CHUNK_MS / 1000)
    assert 6.0 < kbps < 16.0, kbps                 # aiortc's own encoder would spend 96
    decoded = np.concatenate(out)[: pcm.size]
    d = encoder.delay                              # libopus's look-ahead: the output is that much later
    x, y = pcm[: decoded.size - d].astype(float), decoded[d:].astype(float)
    corr = float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))
    assert corr > 0.7, corr


class _Feed:
    """Chunks of a ramp with known capture times (wall ms = 1000 + 20 k)."""

    name = "ramp"
    muted = False

    def __init__(self, n: int) -> None:
        self.k, self.n = 0, n

    async def chunk(self):
        from live.audio import Chunk

        if self.k >= self.n:
            return None
        self.k += 1
        samples = np.full(CHUNK_SAMPLES, 1000 * self.k, np.int16)
        return Chunk(samples, 1000.0 + CHUNK_MS * (self.k - 1))

    def start(self, wall):
        pass

    def close(self):
        pass


def test_track_yields_numbered_opus_packets_and_clock_mappings():
    from aiortc.mediastreams import MediaStreamError

    clocks: list[AudioClock] = []
    counts = TrackCounts()
    track = OpusTrack(_Feed(60), 12000, clocks.append, counts, frame_ms=20)     # 20 ms packets: one chunk each

    async def run():
        packets = []
        while True:
            try:
                packets.append(await track.recv())
            except MediaStreamError:
                return packets

    packets = asyncio.run(run())
    assert [p.pts for p in packets] == [k * CHUNK_SAMPLES for k in range(60)]
    assert all(p.time_base == Fraction(1, SAMPLE_RATE) for p in packets)
    assert counts.packets == 60 and counts.payload_bytes == sum(p.size for p in packets)
    # one mapping with the first packet and one a second later; the decoder's delay is taken off
    assert [c.pts for c in clocks] == [0, 50 * CHUNK_SAMPLES]
    delay_ms = 1000.0 * OpusEncoder().delay / SAMPLE_RATE
    assert clocks[1].wall_ms == pytest.approx(1000.0 + 50 * CHUNK_MS - delay_ms)
    assert track.readyState == "ended"


def test_file_audio_is_aligned_to_the_video_and_looped():
    pcm = np.arange(1, 1001, dtype=np.int16)
    assert aligned(pcm, 0.01, None)[:480].tolist() == [0] * 480          # starts 10 ms after the video
    assert aligned(pcm, -0.001, None)[0] == 49                            # starts 1 ms before it
    assert aligned(pcm, 0.0, 0.05).size == int(0.05 * SAMPLE_RATE)        # padded to one pass of the video

    feed = FileAudio(clip(SPEECH), np.arange(3 * CHUNK_SAMPLES, dtype=np.int16), loop=True, max_seconds=0.1)

    async def run():
        t0 = wall_ms()
        feed.start(t0)
        out = []
        while (c := await feed.chunk()) is not None:
            out.append((c.wall_ms - t0, int(c.samples[0]), wall_ms() - t0))
        return out

    chunks = asyncio.run(run())
    assert [round(t) for t, _, _ in chunks] == [0, 20, 40, 60, 80]        # 0.1 s, then the end
    assert [s for _, s, _ in chunks] == [0, 960, 1920, 0, 960]            # looped every 3 chunks
    assert all(emitted >= t + CHUNK_MS - 1 for t, _, emitted in chunks)   # never before it is whole


def test_open_audio_says_why_there_is_no_voice(caplog, tmp_path):
    import logging

    from live.cli import SetupError

    caplog.set_level(logging.INFO)
    assert open_audio("none", str(clip(SPEECH))) is None
    assert open_audio("auto", str(clip("lp__d0.mp4"))) is None
    assert open_audio("hw:7,0", str(clip(SPEECH))) is None
    said = [r.getMessage() for r in caplog.records if "without a voice" in r.getMessage()]
    assert len(said) == 3 and "none" in said[0] and "no audio track" in said[1] and "microphone" in said[2]
    with pytest.raises(SetupError, match="no such audio file"):
        open_audio(str(tmp_path / "nope.wav"), str(clip(SPEECH)))
    assert is_device("default") and is_device("hw:1,0") and is_device("plughw:CARD=USB,DEV=0")
    assert not is_device("voice.wav") and not is_device("/tmp/x.mp4")
    feed = open_audio("auto", str(clip(SPEECH)))
    assert isinstance(feed, FileAudio) and feed.pcm.size == pytest.approx(5.0 * SAMPLE_RATE, rel=0.02)


def test_clock_map_unwraps_and_uses_the_nearest_mapping():
    m = ClockMap()
    assert m.wall_of(0) is None and not m
    m.add(0, 1000.0)
    assert m.wall_of(48000) == pytest.approx(2000.0)
    m.add(96000, 3005.0)                   # the capture clock drifted 5 ms
    assert m.wall_of(96000 + 480) == pytest.approx(3015.0)
    assert m.wall_of(48000) == pytest.approx(2000.0)
    w = ClockMap()
    w.add(10, 0.0, near=(1 << 32) + 5)     # pts mod 2**32 after a wrap
    assert w.wall_of((1 << 32) + 10 + 48) == pytest.approx(1.0)


def test_hold_waits_for_the_later_side_up_to_the_cap():
    assert hold(None, 30.0).audio_ms == 0 and hold(30.0, None).video_ms == 0
    assert hold(110.0, 20.0).video_ms == pytest.approx(90.0) and hold(110.0, 20.0).audio_ms == 0
    assert hold(20.0, 60.0).audio_ms == pytest.approx(40.0)
    assert hold(400.0, 20.0).video_ms == MAX_HOLD_MS == 150.0


def test_voice_control_messages():
    for message in (AudioClock(0, 1.5), AudioClock(0xFFFFFFFF, 1.8e12), Muted(True)):
        assert parse_control(encode_control(message)) == message
    for text in ('{"type":"audio-clock","pts":-1,"wall_ms":0}', '{"type":"audio-clock","pts":1}',
                 '{"type":"muted","muted":"yes"}', '{"type":"audio-clock","pts":4294967296,"wall_ms":1}'):
        with pytest.raises(WireError):
            parse_control(text)


def test_voice_is_laid_under_the_pictures_at_its_capture_time(tmp_path):
    from codec_core.video import VideoWriter

    fps, n = 25.0, 25
    seg = VoiceSegment(object())
    zero = 1_000_000.0
    seg.frames = [(f, zero + f * 40.0 + (7.0 if f == 3 else 0.0)) for f in range(n)]   # one late capture
    seg.clock.add(0, zero + 100.0)         # pts 0 captured 100 ms after the first frame
    tone = (np.sin(np.arange(CHUNK_SAMPLES) / 5.0) * 8000).astype(np.int16)
    seg.chunks = [(k * CHUNK_SAMPLES, tone) for k in range(10)]
    pcm = place_voice(seg, fps, n / fps)
    assert pcm is not None and pcm.size == SAMPLE_RATE
    first = int(np.flatnonzero(pcm)[0])
    assert abs(first - int(0.1 * SAMPLE_RATE)) <= 1
    assert place_voice(VoiceSegment(object()), fps, 1.0) is None

    video = tmp_path / "v.mp4"
    with VideoWriter(video, fps) as w:
        for _ in range(n):
            w.write(np.full((64, 64, 3), 128, np.uint8))
    mux_voice(video, pcm)
    back = audio_track(video)
    start = int(np.flatnonzero(np.abs(back) > 0.05)[0])
    assert abs(start / 16000 - 0.1) < 0.01           # still 100 ms in, after AAC and resampling
    with av.open(str(video)) as c:
        assert c.streams.video[0].frames == n


def test_voice_match_finds_a_shift(tmp_path):
    """The measuring tool of the acceptance test sees a known 60 ms delay."""
    from codec_core.video import VideoWriter

    source = clip(SPEECH)
    pcm = _speech()[: 3 * SAMPLE_RATE]
    shifted = np.concatenate([np.zeros(int(0.06 * SAMPLE_RATE), np.int16), pcm])[: pcm.size]
    video = tmp_path / "late.mp4"
    with VideoWriter(video, 25.0) as w:
        for _ in range(75):
            w.write(np.zeros((64, 64, 3), np.uint8))
    mux_voice(video, shifted)
    match = voice_match(video, source)
    assert match.peak > 0.8 and match.lag_ms == pytest.approx(60.0, abs=2.0)


def test_track_sends_a_mapping_at_once_when_the_capture_clock_jumps():
    from live.audio import Chunk

    class Pausing(_Feed):
        async def chunk(self):
            c = await super().chunk()
            if c is not None and self.k > 10:
                c = Chunk(c.samples, c.wall_ms + 3000.0)       # the source paused 3 s after chunk 10
            return c

    clocks: list[AudioClock] = []
    track = OpusTrack(Pausing(20), 12000, clocks.append, frame_ms=20)

    async def run():
        for _ in range(20):
            await track.recv()

    asyncio.run(run())
    assert [c.pts for c in clocks] == [0, 10 * CHUNK_SAMPLES]
    m = ClockMap()
    for c in clocks:
        m.add(c.pts, c.wall_ms)
    delay_ms = 1000.0 * OpusEncoder().delay / SAMPLE_RATE
    assert m.wall_of(15 * CHUNK_SAMPLES) == pytest.approx(1000.0 + 15 * CHUNK_MS + 3000.0 - delay_ms)


def test_the_window_holds_pictures_only_as_long_as_the_voice_lags():
    from receiver.playback import Latencies

    lat = Latencies()
    assert lat.video_hold_ms() == 0 and lat.audio_hold_ms() == 0       # nothing known yet
    lat.audio.extend([110.0] * 10)
    lat.video.extend([20.0] * 10)
    assert lat.video_hold_ms() == pytest.approx(90.0) and lat.audio_hold_ms() == 0
    lat.video.extend([400.0] * 30)                                     # synthesis fell far behind
    assert lat.audio_hold_ms() == MAX_HOLD_MS and lat.video_hold_ms() == 0


def test_a_mute_silences_playback_at_once_and_drops_what_waits():
    """The other side's `muted` message stops playback before the voice still on its way
    (which was spoken before the click) is played, and flushes the player; unmuted, the
    voice plays again.  The voice is still counted (and would still go into --output)."""
    from receiver.audio import VoiceReceiver

    class _Track:
        def __init__(self) -> None:
            self.frames: asyncio.Queue = asyncio.Queue()

        async def recv(self):
            return await self.frames.get()

    def frame(pts: int) -> av.AudioFrame:
        f = av.AudioFrame.from_ndarray(np.full((1, CHUNK_SAMPLES), 1000, np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = SAMPLE_RATE, pts, Fraction(1, SAMPLE_RATE)
        return f

    async def run() -> tuple[list[float], int, int]:
        played: list[float] = []
        flushes = []
        voice = VoiceReceiver(play=lambda captured, pcm: played.append(captured))
        voice.flush = lambda: flushes.append(1)
        class _Session:
            async def audio_stats(self):
                return None, None

        session, track = _Session(), _Track()
        voice.session_opened(session)                       # type: ignore[arg-type]
        voice.on_control(AudioClock(0, wall_ms()))
        voice.on_audio(session, track)                      # type: ignore[arg-type]

        async def send(first: int, count: int) -> None:
            for k in range(first, first + count):
                track.frames.put_nowait(frame(k * CHUNK_SAMPLES))
            for _ in range(500):                            # at most 5 s
                if track.frames.empty():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)

        await send(0, 5)
        before = len(played)
        voice.on_control(Muted(True))
        await send(5, 5)                                    # on the way when the mute came
        while_muted = len(played) - before
        voice.on_control(Muted(False))
        await send(10, 5)
        voice.stop()
        return played, while_muted, len(flushes)

    played, while_muted, flushes = asyncio.run(run())
    assert while_muted == 0
    assert flushes == 1
    assert len(played) == 10                                # 5 before, 5 after the unmute


def test_a_mute_ends_with_its_session():
    """A mutes, the link drops, A unmutes before it comes back: B must not stay silent for the
    whole next session.  B's receiver forgets the mute when the session closes (one that came
    early, before the next session is open here, still counts), and A's sender says its state,
    muted or not, at the start of every session."""
    from types import SimpleNamespace

    from test_receiver_input import FakeSession, FakeWorker

    from codec_core.format import IFVC
    from models.face_model import FaceBasis
    from receiver.half import ReceiverHalf
    from sender.half import SenderHalf, SenderOptions

    receiver = ReceiverHalf(FaceBasis.load())
    receiver.attach(FakeWorker())
    first = FakeSession()
    receiver.session_opened(first)
    receiver.on_control(Muted(True))
    assert receiver.voice.stats.peer_muted
    receiver.session_closed(first, "the link dropped")
    assert not receiver.voice.stats.peer_muted
    receiver.on_control(Muted(True))                        # early: before the session is open here
    receiver.session_opened(FakeSession())
    assert receiver.voice.stats.peer_muted

    analyser = SimpleNamespace(format=IFVC, num_values=IFVC.count, config=SimpleNamespace(intra_interval=50))
    source = SimpleNamespace(name="fake", live=False)
    sender = SenderHalf(source, analyser, SenderOptions(), audio=_Feed(0))   # type: ignore[arg-type]

    class Session(FakeSession):
        def send_stream(self, data: bytes) -> bool:
            return True

    one, two = Session(), Session()
    sender.session_opened(one)
    assert one.sent == [Muted(False)]                       # not muted: said too
    sender.set_muted(True)
    sender.session_closed(one, "the link dropped")
    sender.session_opened(two)
    assert one.sent == [Muted(False), Muted(True)] and two.sent == [Muted(True)]


def test_a_track_of_an_earlier_session_stops_being_read_when_the_next_one_comes():
    """A session that never connected leaves its track's recv waiting for good (aiortc does
    not end it): the next session's track ends that reader, so none pile up retry by retry."""
    from receiver.audio import VoiceReceiver

    class _Silent:
        async def recv(self):
            await asyncio.Event().wait()

    async def run() -> tuple[int, int]:
        voice = VoiceReceiver()
        for session in (object(), object(), object()):
            voice.on_audio(session, _Silent())              # type: ignore[arg-type]
            await asyncio.sleep(0.01)
        waiting = len(voice._tasks)
        voice.stop()
        await asyncio.sleep(0.01)
        return waiting, len(voice._tasks)

    assert asyncio.run(run()) == (1, 0)
