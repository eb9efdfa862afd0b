"""Shutting a live end down: SIGTERM in the middle of a call ends the process quickly with
status 0 and leaves an output file that plays, holding the frames written so far (the
shutdown order of live/runner.py finalises the file before the peer connection is
closed).  Real processes over loopback, as in test_call.py; the exit times are printed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import av
from conftest import clip
from liveproc import Processes, read_json, wait_for

from live.config import DEFAULT, SHUTDOWN_TIMEOUTS, LiveConfig
from live.runner import LiveRunner, ReceivingHalf, SendingHalf

EXIT_WITHIN_S = 10.0
RENDERED_BEFORE_STOP = 20


def test_shutdown_timeouts_add_up_to_three_seconds_at_most():
    names = {f.name for f in fields(LiveConfig)}
    assert set(SHUTDOWN_TIMEOUTS) <= names
    assert all(getattr(DEFAULT, name) > 0 for name in SHUTDOWN_TIMEOUTS)
    assert DEFAULT.shutdown_budget_s == sum(getattr(DEFAULT, name) for name in SHUTDOWN_TIMEOUTS)
    assert DEFAULT.shutdown_budget_s <= 3.0


class Stats:
    def snapshot(self) -> dict:
        return {}


class FakeSender(SendingHalf):
    def __init__(self, order: list[str]) -> None:
        self.order, self.stats = order, Stats()

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.order.append("capture loop stopped")

    def close(self) -> None:
        self.order.append("source closed")

    def summary(self) -> str:
        return "sent"


class FakeReceiver(ReceivingHalf):
    def __init__(self, order: list[str]) -> None:
        self.order, self.stats = order, Stats()

    def in_session(self) -> bool:
        return False

    def finished(self) -> bool:
        return False

    async def finalise(self, timeout: float) -> None:
        self.order.append("output finalised")

    def summary(self) -> str:
        return "received"


def test_runner_shuts_down_capture_then_outputs_then_the_link(tmp_path):
    async def main() -> list[str]:
        order: list[str] = []
        runner = LiveRunner("ws://127.0.0.1:9", "room", sending=FakeSender(order), receiving=FakeReceiver(order),
                            stats=str(tmp_path / "stats.json"))

        async def open_link() -> None:
            pass

        async def close_link() -> None:
            order.append("link closed" if read_json(tmp_path / "stats.json")["final"] else "stats not final")

        runner.link.open, runner.link.close = open_link, close_link
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        assert await runner.run(stop) == "interrupted"
        await runner.shutdown()                     # a second shutdown does nothing
        return order

    assert asyncio.run(main()) == ["capture loop stopped", "source closed", "output finalised", "link closed"]


def decoded_frames(path: Path) -> int:
    """How many pictures PyAV decodes from `path` (raises when the file does not open)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def rendered(stats: Path) -> int:
    return (read_json(stats) or {}).get("frames_rendered", 0)


def terminate(p: Processes, name: str) -> float:
    """SIGTERM to `name`; seconds until it exited (status 0 asserted)."""
    start = time.monotonic()
    p.stop(name, signal.SIGTERM)
    try:
        rc = p.procs[name].wait(EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} still running {EXIT_WITHIN_S:.0f} s after SIGTERM:\n{p.tail(name)}") from None
    elapsed = time.monotonic() - start
    assert rc == 0, f"{name} exited with {rc} after SIGTERM:\n{p.tail(name)}"
    return elapsed


def stop_mid_call(p: Processes, name: str, stats: Path, output: Path) -> int:
    """Wait until `name` has rendered some frames, SIGTERM it (exit time printed); the
    frames it had rendered before the signal."""
    wait_for(lambda: rendered(stats) >= RENDERED_BEFORE_STOP, 120, f"{name} to render frames")
    before = rendered(stats)
    elapsed = terminate(p, name)
    final = read_json(stats)
    assert final["final"] is True and final["state"] == "ended", final
    print(f"\n{name}: SIGTERM to exit {elapsed:.2f} s ({before} frames rendered before, {output.name} written)")
    return before


def frames_sent(p: Processes, name: str, stats: Path) -> int:
    """SIGTERM to the other end too; the frames it sent in all (its final stats)."""
    terminate(p, name)
    final = read_json(stats)
    assert final["final"] is True, final
    return final["frames_sent"]


def assert_plays(output: Path, at_least: int, sent: int) -> None:
    count = decoded_frames(output)
    assert max(at_least, 5) <= count <= sent, (count, at_least, sent)


def test_sigterm_receiver_mid_call(tmp_path):
    output, stats, sender_stats = tmp_path / "out.mp4", tmp_path / "stats.json", tmp_path / "sender.json"
    with Processes(tmp_path) as p:
        url = p.signaling()
        p.start("receiver", "receiver", "--signaling", url, "--room", "sigterm", "--output", str(output),
                "--stats", str(stats))
        p.start("sender", "sender", "--signaling", url, "--room", "sigterm", "--source", str(clip("rt__3.mp4")),
                "--loop", "--sender-stats", str(sender_stats))
        before = stop_mid_call(p, "receiver", stats, output)
        sent = frames_sent(p, "sender", sender_stats)
    assert_plays(output, before, sent)


def test_sigterm_two_way_call_mid_call(tmp_path):
    output, stats, bob_stats = tmp_path / "alice.mp4", tmp_path / "alice.json", tmp_path / "bob-sent.json"
    with Processes(tmp_path) as p:
        url = p.signaling()
        p.start("alice", "call", "--signaling", url, "--room", "sigterm-call", "--source", str(clip("rt__3.mp4")),
                "--loop", "--output", str(output), "--stats", str(stats))
        p.start("bob", "call", "--signaling", url, "--room", "sigterm-call", "--source", str(clip("lp__d0.mp4")),
                "--loop", "--sender-stats", str(bob_stats))
        before = stop_mid_call(p, "alice", stats, output)
        sent = frames_sent(p, "bob", bob_stats)
    assert_plays(output, before, sent)
