"""--synth auto: what it resolves to, and the live receiver's steps down (receiver.pace)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import receiver.pace as pace
import receiver.render as render
from codec.decoder import FaceDecoder, check_decoder_choice
from codec_core.bitstream import Keyframe, SessionHeader
from codec_core.format import format_named
from models.synthesizers import Synthesis
from receiver.pace import SynthesisPace
from receiver.render import RenderEvents, RenderJob, RenderWorker

FIXTURES = Path(__file__).parent / "fixtures"
REFINED = "learned --regions (torch, cpu)"
LEARNED = "learned (torch, cpu)"


def test_auto_is_the_learned_synthesizer_for_ifvc_and_v1_for_other_formats():
    auto = Synthesis("auto")
    best = auto.resolved()
    assert (best.synth, best.regions, best.automatic) == ("learned", False, True)
    assert [s.describe() for s in (best, best.lighter())] == [LEARNED, "warp"]
    assert best.lighter().lighter() is None
    refined = Synthesis("auto", regions=True).resolved()            # --regions: the refiner goes first
    assert [s.describe() for s in (refined, refined.lighter(), refined.lighter().lighter())] == [
        REFINED, LEARNED, "warp"]
    assert auto.resolved(ifvc=False).synth == "warp"
    assert best.resolved(ifvc=False).synth == "warp"              # picked, so it may play fomm with v1
    assert Synthesis("learned").resolved(ifvc=False).synth == "learned"    # named: refused, not swapped
    check_decoder_choice(format_named("fomm"), auto, "geometry")
    with pytest.raises(Exception, match="ifvc parameters only"):
        check_decoder_choice(format_named("fomm"), Synthesis("learned"), "geometry")


def test_the_options_leave_the_refiner_out_unless_asked_and_refuse_it_for_v1():
    import argparse

    from models.synthesizers import add_synthesis_options, synthesis_from_args

    parser = argparse.ArgumentParser()
    add_synthesis_options(parser)
    chosen = [synthesis_from_args(parser.parse_args(argv)) for argv in (
        ["--device", "cpu"], ["--device", "cpu", "--regions"], ["--synth", "learned", "--regions"])]
    assert [(c.synth, c.regions) for c in chosen] == [("auto", False), ("auto", True), ("learned", True)]
    assert chosen[2].describe() == REFINED
    with pytest.raises(ValueError, match="--regions is a setting of the learned synthesizer"):
        synthesis_from_args(parser.parse_args(["--synth", "warp", "--regions"]))


def test_a_decoder_with_auto_draws_with_the_learned_synthesizer_and_steps_down_on_the_key_frame_in_use():
    header = SessionHeader.unpack((FIXTURES / "session_header.bin").read_bytes())
    record = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    decoder = FaceDecoder(header, synthesis=Synthesis("auto", regions=True))
    assert decoder.synthesis.describe() == REFINED
    decoder.set_keyframe(record)
    params = decoder.reference.reference_params().copy()
    params[-5:] += 1.0                                              # the face moves: the refiner draws
    before = decoder.render(params)
    decoder.set_synthesis(decoder.synthesis.lighter())
    lighter = FaceDecoder(header, synthesis=Synthesis("learned"))
    lighter.set_keyframe(record)
    assert np.array_equal(decoder.render(params), lighter.render(params))
    assert not np.array_equal(before, lighter.render(params))


def test_a_key_frame_decoding_while_the_receiver_steps_down_is_ready_with_the_lighter_setting(monkeypatch):
    """The step down comes while the key frame thread decodes: that thread builds the key
    frame's synthesizer again before it says ready, so the switch to it builds nothing."""
    header = SessionHeader.unpack((FIXTURES / "session_header.bin").read_bytes())
    record = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    decoder = FaceDecoder(header, synthesis=Synthesis("auto", regions=True))
    decode = decoder.decode_keyframe

    def stepped_down_meanwhile(rec):
        decoded = decode(rec)
        decoder.set_synthesis(decoder.synthesis.lighter())
        return decoded

    monkeypatch.setattr(decoder, "decode_keyframe", stepped_down_meanwhile)
    decoded = render._prepare(decoder, record)
    assert decoded.synthesis == decoder.synthesis and decoded.synthesis.describe() == LEARNED
    assert not decoder.fit_synthesis(decoded)          # nothing left to build at the switch


def test_the_probe_steps_down_to_the_first_setting_within_the_budget():
    times = {REFINED: 90.0, LEARNED: 30.0, "warp": 10.0}
    auto = SynthesisPace(Synthesis("auto", regions=True), fps=25.0)     # 32 ms a frame
    assert auto.probe(lambda s: times[s.describe()]).describe() == LEARNED
    assert [(s.before, s.after, s.when) for s in auto.steps] == [(REFINED, LEARNED, "before the call")]
    slow = SynthesisPace(Synthesis("auto"), fps=50.0)               # 16 ms a frame
    assert slow.probe(lambda s: times[s.describe()]).describe() == "warp"
    assert [(s.before, s.after) for s in slow.steps] == [(LEARNED, "warp")]
    named = SynthesisPace(Synthesis("learned", regions=True))
    assert named.probe(lambda s: pytest.fail("a named synthesizer is not timed")).describe() == REFINED


def test_in_the_call_a_setting_steps_down_after_a_window_over_budget_and_never_back_up():
    p = SynthesisPace(Synthesis("auto", regions=True), fps=25.0)
    for _ in range(pace.WINDOW - 1):
        assert p.rendered(100.0) is None
    assert p.rendered(100.0).describe() == LEARNED                 # the window's median is over 32 ms
    for _ in range(3 * pace.WINDOW):                                 # within the budget: it stays
        assert p.rendered(5.0) is None
    p.set_fps(100.0)                                                 # 8 ms a frame: 5 ms still fits
    assert all(p.rendered(5.0) is None for _ in range(pace.WINDOW))
    for _ in range(pace.WINDOW // 2):
        assert p.rendered(20.0) is None                              # most of the window still 5 ms
    assert p.rendered(20.0).describe() == "warp"                    # most of it over 8 ms now
    assert all(p.rendered(1000.0) is None for _ in range(2 * pace.WINDOW))   # nothing lighter than v1
    named = SynthesisPace(Synthesis("learned"))
    assert all(named.rendered(1000.0) is None for _ in range(2 * pace.WINDOW))


def test_the_synthesis_thread_steps_down_in_the_call_and_keeps_rendering(monkeypatch):
    """The real synthesis thread with --synth auto, given no time at all a frame: every
    WINDOW frames it takes the next lighter setting, rebuilding the key frame's synthesizer,
    and the frames go on being drawn."""
    monkeypatch.setattr(render, "probed_ms", lambda synthesis, size, stopping: 0.0)    # the probe keeps the best
    monkeypatch.setattr(pace, "BUDGET_SHARE", 0.0)
    monkeypatch.setattr(pace, "WINDOW", 3)
    header = SessionHeader.unpack((FIXTURES / "session_header.bin").read_bytes())
    record = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        ready, drawn = loop.create_future(), []
        ignore = lambda *args: None
        failed = lambda key, why, *kept: ready.set_exception(AssertionError(why))
        worker = RenderWorker(loop, RenderEvents(lambda r: drawn.append(r.synthesis), ready.set_result, failed,
                                                 ignore, ignore), [], synthesis=Synthesis("auto", regions=True))
        worker.set_header(header)
        worker.set_keyframe(record)
        await asyncio.wait_for(ready, 60)
        for frame in range(8):
            worker.render(RenderJob(frame, record.key_id, np.zeros(header.values_per_frame, np.int64), 0, 0.0, 0.0))
            while len(drawn) <= frame:
                await asyncio.sleep(0.01)
        await loop.run_in_executor(None, worker.stop, 5.0)
        return drawn

    assert asyncio.run(main()) == [REFINED] * 3 + [LEARNED] * 3 + ["warp"] * 2


def test_only_a_twin_of_a_kept_key_frame_is_decoded_below_the_synthesis_thread(monkeypatch):
    """While key frame 0 animates: its sharp twin (same geometry) is decoded on the lower
    priority thread, a new crop's key frame (other geometry), which the next packets name,
    on the normal one (the synthesis thread waits for it)."""
    import dataclasses
    import threading

    header = SessionHeader.unpack((FIXTURES / "session_header.bin").read_bytes())
    record = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    threads: dict[int, str] = {}
    prepare = render._prepare

    def noting(decoder, rec):
        threads[rec.key_id] = threading.current_thread().name
        return prepare(decoder, rec)

    monkeypatch.setattr(render, "_prepare", noting)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: dict[int, asyncio.Future] = {k: loop.create_future() for k in (0, 1, 2)}
        ignore = lambda *args: None
        worker = RenderWorker(loop, RenderEvents(ignore, lambda key: done[key].set_result(True),
                                                 lambda key, *rest: done[key].set_result(False), ignore, ignore),
                              [], synthesis=Synthesis("warp"))
        worker.set_header(header)
        worker.set_keyframe(dataclasses.replace(record, key_id=0))
        await asyncio.wait_for(done[0], 60)
        worker.set_keyframe(dataclasses.replace(record, key_id=1))                       # the sharp twin
        worker.set_keyframe(dataclasses.replace(record, key_id=2, geometry=record.geometry[:-1]))   # a new crop
        await asyncio.wait_for(asyncio.gather(done[1], done[2]), 60)
        await loop.run_in_executor(None, worker.stop, 5.0)

    asyncio.run(main())
    assert threads[1].startswith("keyframe-bg") and not threads[2].startswith("keyframe-bg"), threads
