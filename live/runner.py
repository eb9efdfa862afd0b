"""The one runner of a live call end: every live end starts, watches and stops through it.

`python -m sender`, `python -m receiver`, `python -m call` and the web demo's tabs build
their halves (a `SendingHalf`, a `ReceivingHalf`, or both) and hand them to a `LiveRunner`;
`run_command` is the whole `main` of a live command around one.

**Start** (`start`): join the room (`PeerLink.open`; `SignalingError` when the server
cannot be reached or the room is full), start the stats files, start the sending half's
capture loop.

**Watch** (`watch`), until the call is over for this end:

- the stop event is set (SIGINT or SIGTERM, a browser tab hanging up): "interrupted";
- the capture loop failed: its `CallError` is raised (one line, status 1);
- a sender on its own: its source ended;
- the window was closed (q, Esc);
- the other side's stream ended (`end`), and this end sends nothing or its source ended too;
- this end's source ended and the other side has left;
- the other side left and did not come back within `wait_peer` seconds;
- the other side left, or never came, and the signaling server is gone.

When the other side leaves, the receiving half's stats file is written at once.

**Shutdown** (`shutdown`), always in this order, each wait bounded by a `LiveConfig`
field (`SHUTDOWN_TIMEOUTS`, at most 3 s together):

1. stop capture: the capture loop stops (`capture_stop_timeout_s`, then it is cancelled)
   and the sending half releases its source (a camera's reader thread:
   `camera_close_timeout_s`) and its analysis threads;
2. finalise the outputs: the receiving half's synthesis thread renders what is queued and
   closes the output files (`render_stop_timeout_s`); the stats files are written a last
   time (`"final": true`);
3. hang up: queued messages go out (`flush_timeout_s`), `bye` to the peer, the peer
   connection closes (`pc_close_timeout_s`), the signaling websocket closes
   (`signaling_close_timeout_s`), the link's own tasks end (`task_wait_timeout_s`).

So a process killed during its shutdown loses at most the hang-up: its output file is
already whole.  A step that fails is logged and the next one still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from live import eventloop
from live.cli import EXIT_OK, CallError, fail, install_stop_signals, setup_logging
from live.config import DEFAULT, LiveConfig
from live.peer import Half, IceServer, PeerLink
from live.stats import StatsFile
from signaling.client import SignalingError

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.05     # how often the end-of-call conditions are looked at


class Snapshot(Protocol):
    """Numbers that go to a stats file."""

    def snapshot(self) -> dict: ...


class SendingHalf(Half, ABC):
    """A sending half as the runner drives it (`sender.half.SenderHalf`)."""

    stats: Snapshot

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Capture and send until the source ends or `stop` is set (CallError when it cannot)."""

    @abstractmethod
    def close(self) -> None:
        """Release the source and the analysis threads."""

    @abstractmethod
    def summary(self) -> str:
        """One line on what was sent."""


class ReceivingHalf(Half, ABC):
    """A receiving half as the runner drives it (`receiver.half.ReceiverHalf`)."""

    stats: Snapshot
    quit_requested: bool = False       # the viewer closed the window

    @abstractmethod
    def in_session(self) -> bool:
        """A session with the other side is open."""

    @abstractmethod
    def finished(self) -> bool:
        """The other side's stream has ended and its last frame is in (or will not come)."""

    @abstractmethod
    async def finalise(self, timeout: float) -> None:
        """Render what is queued and close the output files, waiting `timeout` seconds at most."""

    @abstractmethod
    def summary(self) -> str:
        """One line on what was received."""


class LiveRunner:
    """Starts, watches and stops one live end (see the module docstring for the rules)."""

    def __init__(self, signaling: str, room: str, *, sending: SendingHalf | None = None,
                 receiving: ReceivingHalf | None = None, others: Sequence[Half] = (),
                 ice_servers: Sequence[IceServer] = (), config: LiveConfig = DEFAULT,
                 wait_peer: float | None = None, stats: str | None = None, sender_stats: str | None = None) -> None:
        self.sending = sending
        self.receiving = receiving
        self.config = config
        self.wait_peer = config.peer_wait_s if wait_peer is None else wait_peer
        halves: list[Half] = [half for half in (sending, receiving) if half is not None]
        self.link = PeerLink(signaling, room, [*halves, *others], ice_servers, config)
        interval = config.stats_interval_s
        self._receiver_stats = (StatsFile(stats, receiving.stats.snapshot, interval)
                                if receiving is not None else None)
        self._sender_stats = StatsFile(sender_stats, sending.stats.snapshot, interval) if sending is not None else None
        self._capture_stop = asyncio.Event()
        self._capture: asyncio.Task | None = None
        self._was_in_session = False
        self._shut_down = False

    @property
    def _stats_files(self) -> list[StatsFile]:
        return [f for f in (self._sender_stats, self._receiver_stats) if f is not None]

    # -- start and watch -----------------------------------------------------------------

    async def start(self) -> None:
        """Join the room (raises SignalingError), start the stats files and the capture loop."""
        await self.link.open()
        for stats in self._stats_files:
            stats.start()
        if self.sending is not None:
            self._capture = asyncio.create_task(self.sending.run(self._capture_stop), name="capture")

    async def watch(self, stop: asyncio.Event) -> str:
        """Wait until the call is over for this end; why (raises the capture loop's error)."""
        while not stop.is_set():
            reason = self._over()
            if reason is not None:
                return reason
            try:
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            except TimeoutError:
                pass
        return "interrupted"

    async def run(self, stop: asyncio.Event) -> str:
        """Start, watch until the call is over, and always shut down; why it ended."""
        try:
            await self.start()
            return await self.watch(stop)
        finally:
            await self.shutdown()

    def summaries(self) -> list[str]:
        """One line per half on what went through it."""
        return [half.summary() for half in (self.sending, self.receiving) if half is not None]

    def _own_stream_ended(self) -> bool:
        """No sending half, or its capture loop is over (its error raised here)."""
        if self._capture is None:
            return self.sending is None
        if not self._capture.done():
            return False
        self._capture.result()
        return True

    def _over(self) -> str | None:
        own_ended = self._own_stream_ended()
        receiving = self.receiving
        if receiving is None:
            if own_ended:
                return "the stream ended"
            link = self.link        # a sender alone: nobody can come any more without the server
            if link.signaling_lost.is_set() and (link.session is None or link.session.closed):
                return "the signaling server is gone and nobody is watching"
            return None
        if receiving.quit_requested:
            return "window closed"
        if own_ended and receiving.finished():
            return "both streams ended" if self.sending is not None else "the other side's stream ended"
        in_session = receiving.in_session()
        if self._was_in_session and not in_session:
            self._receiver_stats.write(final=False)      # the other side left: its numbers on disk now
        self._was_in_session = in_session
        if in_session:
            return None
        if own_ended and self.sending is not None:
            return "own stream ended and the other side has left"
        return self._peer_gone()

    def _peer_gone(self) -> str | None:
        link = self.link
        if link.sessions_opened == 0:
            return "the signaling server is gone" if link.signaling_lost.is_set() else None
        if link.peer_absent_for() > self.wait_peer:
            return f"the other side did not come back within {self.wait_peer:g} s"
        if link.signaling_lost.is_set():
            return "the other side left and the signaling server is gone"
        return None

    # -- shutdown ------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """(1) stop capture, (2) finalise the outputs, (3) hang up; once, each step bounded."""
        if self._shut_down:
            return
        self._shut_down = True
        await _step("stop capture", self._stop_capture())
        await _step("finalise the outputs", self._finalise())
        await _step("hang up", self.link.close())

    async def _stop_capture(self) -> None:
        if self.sending is None:
            return
        self._capture_stop.set()
        task = self._capture
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self.config.capture_stop_timeout_s)
            if not done:
                log.warning("the capture loop did not stop within %.1f s; cancelling it",
                            self.config.capture_stop_timeout_s)
                task.cancel()
            elif not task.cancelled() and task.exception() is not None:
                log.debug("the capture loop ended with %r", task.exception())
        self.sending.close()

    async def _finalise(self) -> None:
        if self.receiving is not None:
            await self.receiving.finalise(self.config.render_stop_timeout_s)
        for stats in self._stats_files:
            await stats.close()


async def _step(name: str, work: Awaitable[None]) -> None:
    try:
        await work
    except Exception:
        log.exception("shutdown: %s failed", name)


# -- the command around a runner ------------------------------------------------------------

BuildRunner = Callable[[argparse.Namespace], LiveRunner]


def run_command(prog: str, build_parser: Callable[[], argparse.ArgumentParser], build_runner: BuildRunner,
                argv: list[str] | None = None) -> int:
    """The whole `main` of a live command: parse, set up logging, run the call end; the status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return eventloop.run(_run_end(prog, build_runner, args))
    except KeyboardInterrupt:
        return EXIT_OK


async def _run_end(prog: str, build_runner: BuildRunner, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        runner = build_runner(args)
    except (CallError, ValueError) as exc:
        return fail(prog, str(exc))
    try:
        log.info("call over: %s", await runner.run(stop))
        status = EXIT_OK
    except (SignalingError, CallError) as exc:
        status = fail(prog, str(exc))
    for line in runner.summaries():
        log.info("%s", line)
    return status


__all__ = ["LiveRunner", "ReceivingHalf", "SendingHalf", "run_command"]
