"""Feature formats in a live call (issue 11): the sender's `--format`, the receiver's
`--decoder-format` and `--translator`.  Real processes over loopback (signaling, a fomm
sender from a clip, a receiver that translates it to ifvc and one that plays it natively),
and the receiver half's acceptance of session headers of every format, unit by unit."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from conftest import clip
from liveproc import Processes, landmark_error, read_json, read_jsonl, sender_crops, video_frames
from test_receiver_input import FakeSession

from codec_core.bitstream import ParamPacket, SessionHeader
from codec_core.config import load_config
from codec_core.format import FEATURE_FORMATS, FORMAT_BY_ID
from codec_core.param_coding import PacketParamEncoder
from live.wire import pack_stream_record
from models.face_model import FaceBasis
from receiver.half import ReceiverHalf
from receiver.render import DecoderChoice
from receiver.sinks import Sink

CLIP = "rt__3.mp4"


# -- real processes ------------------------------------------------------------------------

def test_a_fomm_sender_is_played_translated_to_ifvc_and_natively(tmp_path):
    """One fomm sender per room (the same clip): the receiver of room `translated` plays it
    with ifvc's synthesizer through the geometry translator, the one of room `native` with
    fomm's own.  Both get every frame's levels as sent and render pictures that show the
    sender's face; their stats name the stream's format and their own."""
    source = clip(CLIP)
    n = 25
    rooms = {"translated": "ifvc", "native": "fomm"}
    with Processes(tmp_path) as p:
        url = p.signaling()
        for room, decoder_format in rooms.items():
            p.start(f"receiver-{room}", "receiver", "--signaling", url, "--room", room,
                    "--decoder-format", decoder_format, "--output", str(tmp_path / f"{room}.mp4"),
                    "--stats", str(tmp_path / f"{room}.json"), "--dump-levels", str(tmp_path / f"{room}-got.jsonl"),
                    "--audio-output", "none")
            p.start(f"sender-{room}", "sender", "--signaling", url, "--room", room, "--source", str(source),
                    "--format", "fomm", "--frames", str(n), "--audio-source", "none",
                    "--dump-sent", str(tmp_path / f"{room}-sent.jsonl"),
                    "--sender-stats", str(tmp_path / f"{room}-sender.json"))
        for room in rooms:
            p.expect_ok(f"sender-{room}")
            p.expect_ok(f"receiver-{room}")
        logs = {room: p.log(f"receiver-{room}") for room in rooms}
    _, landmarks = sender_crops(source, n)
    for room, decoder_format in rooms.items():
        stats = read_json(tmp_path / f"{room}.json")
        assert stats["final"] is True and stats["frames_received"] == n and stats["frames_lost"] == 0, stats
        assert stats["stream_format"] == "fomm" and stats["decoder_format"] == decoder_format
        assert stats["translator"] == ("geometry" if decoder_format != "fomm" else None)
        assert stats["unplayable"] is None and stats["keyframes_failed"] == 0
        assert read_json(tmp_path / f"{room}-sender.json")["format"] == "fomm"
        sent, got = read_jsonl(tmp_path / f"{room}-sent.jsonl"), read_jsonl(tmp_path / f"{room}-got.jsonl")
        assert sorted(got) == list(range(n))
        assert all(len(got[f]["levels"]) == FEATURE_FORMATS["fomm"].count + 4 for f in got)   # and the global motion
        assert all(got[f]["levels"] == sent[f]["levels"] for f in got)
        frames = video_frames(tmp_path / f"{room}.mp4")
        assert len(frames) == n and frames[0].shape == (256, 256, 3)
        err = landmark_error(frames, landmarks)
        assert err < 0.03, f"{room}: landmarks {err:.3f} crop widths away from the sender's"
        played = "fomm stream" + (f" played as {decoder_format} (geometry translator)" if room == "translated" else "")
        assert played + ";" in logs[room], logs[room][-2000:]
    translated, native = video_frames(tmp_path / "translated.mp4"), video_frames(tmp_path / "native.mp4")
    assert any(not np.array_equal(a, b) for a, b in zip(translated, native))   # two synthesizers, really


def test_a_two_way_call_of_two_formats(tmp_path):
    """`python -m call`: alice sends cfte and plays what she gets (fv2v) as fomm; bob sends
    fv2v and plays what he gets in its own format (cfte, the default).  Alice translates,
    bob does not."""
    a, b = clip(CLIP), clip("lp__d0.mp4")
    n = 15
    ends = {"alice": (a, ["--format", "cfte", "--decoder-format", "fomm"]), "bob": (b, ["--format", "fv2v"])}
    with Processes(tmp_path) as p:
        url = p.signaling()
        for name, (source, options) in ends.items():
            p.start(name, "call", "--signaling", url, "--room", "formats", "--source", str(source), "--frames", str(n),
                    "--audio-source", "none", "--audio-output", "none", "--output", str(tmp_path / f"{name}.mp4"),
                    "--stats", str(tmp_path / f"{name}.json"), *options)
        p.expect_ok("alice")
        p.expect_ok("bob")
    played = {"alice": ("fv2v", "fomm", "geometry"), "bob": ("cfte", "cfte", None)}
    for name, formats in played.items():
        stats = read_json(tmp_path / f"{name}.json")
        assert stats["final"] is True and stats["frames_received"] == n and stats["keyframes_failed"] == 0, stats
        assert (stats["stream_format"], stats["decoder_format"], stats["translator"]) == formats
        assert len(video_frames(tmp_path / f"{name}.mp4")) == n


@pytest.mark.parametrize("command, args, message", [
    ("sender", ["--format", "mesh478"], "--format: unknown feature format 'mesh478'"),
    ("receiver", ["--decoder-format", "fomx"], "--decoder-format: unknown feature format 'fomx'"),
    ("receiver", ["--translator", "magic"], "--translator: unknown translator 'magic'"),
    ("receiver", ["--decoder-format", "cfte", "--synth", "learned"], "--synth learned runs on ifvc parameters only"),
    ("call", ["--format", "fv2v", "--decoder-format", "nope"], "--decoder-format: unknown feature format 'nope'"),
])
def test_unknown_format_and_translator_names_end_with_one_line(command, args, message, capsys):
    """Refused before anything is opened or reached: one line on stderr, status 1 (as every
    other bad set-up of the live commands)."""
    import importlib

    main = importlib.import_module(f"{command}.__main__").main
    source = [] if command == "receiver" else ["--source", str(clip(CLIP))]
    assert main(["--signaling", "ws://127.0.0.1:9", "--room", "x", *source, *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"python -m {command}: error: ") and message in err, err
    assert "\n" not in err


# -- the receiver half: session headers of every format --------------------------------------

class FakeWorker:
    def __init__(self) -> None:
        self.headers: list[SessionHeader] = []
        self.rendered: list = []

    def set_header(self, header) -> bool:
        self.headers.append(header)
        return True

    def set_keyframe(self, record) -> bool:
        return True

    def render(self, job):
        self.rendered.append(job)
        return None

    def session_break(self) -> None:
        pass


def header_of(name: str, basis: FaceBasis) -> SessionHeader:
    fmt = FEATURE_FORMATS[name]
    header = SessionHeader(fmt.id, 256, 256, 25, 1, 0, basis.version, fmt.count, 50, load_config().steps_of(name),
                           load_config().global_step)
    return SessionHeader.unpack(header.pack())        # its steps as float32, as the receiver gets them


def open_half(choice: DecoderChoice) -> tuple[ReceiverHalf, FakeWorker]:
    half = ReceiverHalf(FaceBasis.load(), choice=choice)
    worker = FakeWorker()
    half.attach(worker)
    half.session_opened(FakeSession())
    return half, worker


@pytest.mark.parametrize("name", list(FEATURE_FORMATS))
def test_the_receiver_takes_a_header_of_every_format_and_decodes_its_packets(name):
    """A header of each format is taken (to ifvc: translated) and sizes the packet decoder:
    packets of that format's count decode to the very levels sent."""
    basis = FaceBasis.load()
    half, worker = open_half(DecoderChoice("ifvc"))
    header = header_of(name, basis)
    half.on_stream(pack_stream_record(header))
    assert worker.headers == [header] and half.stats.bad_messages == 0
    snapshot = half.stats.snapshot()
    assert (snapshot["stream_format"], snapshot["decoder_format"]) == (name, "ifvc")
    assert snapshot["translator"] == (None if name == "ifvc" else "geometry")
    half.chain.new_key(0)
    count = header.values_per_frame                 # the format's values, then the global motion
    coder = PacketParamEncoder(count)
    sent = [np.arange(count, dtype=np.int64) - count // 2 + f for f in range(4)]
    for f, levels in enumerate(sent):
        half.on_params(ParamPacket(f, 0, 0, f == 0, coder.encode_packet(levels, f == 0)).pack())
    assert [j.frame for j in worker.rendered] == [0, 1, 2, 3]
    assert all(np.array_equal(j.levels, levels) for j, levels in zip(worker.rendered, sent))


def test_the_receiver_refuses_an_unknown_format_in_one_line(caplog):
    basis = FaceBasis.load()
    half, worker = open_half(DecoderChoice())
    data = bytearray(pack_stream_record(header_of("fomm", basis)))
    unknown = max(FORMAT_BY_ID) + 1
    data[1] = unknown                          # the header's format byte (after the record type)
    with caplog.at_level(logging.WARNING, logger="receiver.half"):
        half.on_stream(bytes(data))
    assert worker.headers == [] and half.stats.bad_messages == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"unknown feature format {unknown}" in lines[0], lines
    assert "\n" not in lines[0]
    half.on_stream(pack_stream_record(header_of("cfte", basis)))       # a good one is still taken
    assert worker.headers == [header_of("cfte", basis)]


def test_a_stream_the_decoder_choice_cannot_play_is_one_line_and_no_key_frame_requests(caplog):
    """The real synthesis thread with `--synth learned` (ifvc only) meets a fomm stream played
    natively: one error line, and packets for it do not make the receiver ask for key frames.
    The same header sent again is dropped by the half before the synthesis thread; the thread
    saying it again (as it does for each key frame a translator cannot take) is no new line."""
    from models.synthesizers import Synthesis
    from receiver.render import RenderWorker

    basis = FaceBasis.load()

    async def main() -> tuple[ReceiverHalf, FakeSession]:
        half = ReceiverHalf(basis, choice=DecoderChoice())
        worker = RenderWorker(asyncio.get_running_loop(), half.events(), [], basis, Synthesis(synth="learned"),
                              choice=DecoderChoice())
        half.attach(worker)
        session = FakeSession()
        half.session_opened(session)
        try:
            for _ in range(2):                              # sent again: the same header, dropped
                half.on_stream(pack_stream_record(header_of("fomm", basis)))
                for _ in range(100):
                    await asyncio.sleep(0.02)
                    if half.stats.unplayable:
                        break
            assert half.stats.keyframes_failed == 1         # the thread said it once
            half.events().unplayable(half.header, half.stats.unplayable)    # said again: no second line
            coder = PacketParamEncoder(64)              # fomm's 60 values, then the global motion
            for f in range(5):
                half.on_params(ParamPacket(f, 0, 0, f == 0, coder.encode_packet(np.zeros(64, np.int64), f == 0)).pack())
                await asyncio.sleep(0.05)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop, 5.0)
        return half, session

    with caplog.at_level(logging.WARNING, logger="receiver"):
        half, session = asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot play the sender's stream" in errors[0] and "--synth learned" in errors[0]
    assert half.stats.snapshot()["unplayable"] and session.sent == []


def test_word_about_an_earlier_header_does_not_stop_key_frame_requests():
    """The synthesis thread's `unplayable` names its header: one about a header that a newer
    one has replaced meanwhile (it came late) changes nothing, and the receiver still asks for
    the key frame of the new stream; one about the current header stops the requests."""
    from live.wire import KeyframeRequest

    basis = FaceBasis.load()
    half, _ = open_half(DecoderChoice())
    session = half.session
    old, new = header_of("fomm", basis), header_of("cfte", basis)
    half.on_stream(pack_stream_record(old))
    half.on_stream(pack_stream_record(new))
    half.events().unplayable(old, "no translator for the old stream")       # late, about `old`
    assert half.stats.unplayable is None and half.stats.keyframes_failed == 0
    half._ask_for_keyframe("parameters for a key frame this receiver does not have")
    assert [type(m) for m in session.sent] == [KeyframeRequest]
    half.events().unplayable(new, "cannot play cfte")                      # about the current one
    assert half.stats.unplayable == "cannot play cfte"
    half._last_request = float("-inf")
    half._ask_for_keyframe("again")
    assert [type(m) for m in session.sent] == [KeyframeRequest]           # no second request


class Shown(Sink):
    """A sink that keeps the pictures."""

    def __init__(self) -> None:
        self.pictures: list[np.ndarray] = []

    def show(self, frame, picture) -> bool:
        self.pictures.append(picture)
        return True


@pytest.mark.parametrize("decoder_format", ["fomm", "ifvc"])
def test_edits_apply_with_the_ifvc_decoder_format_only(decoder_format, caplog):
    """A fomm stream (the fixture key frame, its own values as the levels): played as fomm, an
    edit is refused in one log line and the picture stays the unedited one; played as ifvc
    (translated), the same edit changes the picture."""
    from pathlib import Path

    from codec.decoder import FaceDecoder
    from codec_core.bitstream import Keyframe
    from models.editing import Edits
    from receiver.render import RenderEvents, RenderJob, RenderWorker

    basis = FaceBasis.load()
    header = header_of("fomm", basis)
    keyframe = Keyframe.unpack((Path(__file__).parent / "fixtures" / "keyframe.bin").read_bytes())
    decoder = FaceDecoder(header, basis)
    levels = np.round(decoder.decode_keyframe(keyframe).key_params / decoder.steps).astype(np.int64)
    levels = np.concatenate([levels, np.zeros(4, np.int64)])     # no global motion

    async def main() -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        ready, rendered = asyncio.Queue(), asyncio.Queue()
        ignore = lambda *args: None  # noqa: E731
        failed = lambda key, why, kept=False: ready.put_nowait(AssertionError(why))  # noqa: E731
        shown = Shown()
        worker = RenderWorker(loop, RenderEvents(lambda r: rendered.put_nowait(r.job.frame), ready.put_nowait,
                                                 failed, ignore, ignore), [shown], basis,
                              choice=DecoderChoice(decoder_format))
        try:
            worker.set_header(header)
            worker.set_keyframe(keyframe)
            assert await asyncio.wait_for(ready.get(), 30) == keyframe.key_id & 0xFF
            for frame in range(3):
                if frame == 1:
                    worker.set_edits(Edits.parse(["yaw=20"]))
                worker.render(RenderJob(frame, keyframe.key_id & 0xFF, levels, 0, 0.0, 0.0))
                assert await asyncio.wait_for(rendered.get(), 30) == frame
        finally:
            await loop.run_in_executor(None, worker.stop, 5.0)
        return shown.pictures

    with caplog.at_level(logging.WARNING, logger="receiver.render"):
        plain, edited, again = asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if "edits refused" in r.getMessage()]
    if decoder_format == "fomm":
        assert len(refusals) == 1 and "decoder format fomm" in refusals[0]
        assert np.array_equal(plain, edited) and np.array_equal(plain, again)
    else:
        assert refusals == []
        assert np.abs(plain.astype(int) - edited).mean() > 1.0
        assert np.abs(edited.astype(int) - again).mean() < 0.1      # the edit stays (no second refusal)
