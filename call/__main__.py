"""`python -m call`: one end of a two-way face call (a sender half and a receiver half on one
peer connection).  Two of these in the same room are a two-party call in which each side
sees the other.

    python -m call --signaling ws://HOST:PORT --room NAME --source webcam[:INDEX]|FILE [--loop]
                   [--frames N] [--output OUT.mp4] [--window] [--stats STATS.json]
                   [--sender-stats FILE.json] [--device cpu|cuda] [--wait-peer SECONDS]
                   [--ice-server URL ... --ice-username U --ice-credential C] [--log-level INFO]

Either side may start first, leave, and come back.  It ends (status 0, output closed,
final stats written) on Ctrl-C / SIGTERM or when the window is closed; when its own
source has ended (file without --loop) and the other side's stream has ended or the other
side has left; or when the other side left and has not come back within --wait-peer
seconds.  Status 1 with a one-line message for the errors of `python -m sender` and
`python -m receiver`.
"""

from __future__ import annotations

import os

# torch's OpenMP worker threads spin between frames and take a third of a core each on a
# 2-core machine; the live ends run torch single-threaded (synthesis: --threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import logging
import sys

from live.cli import add_connection_options, fail, ice_servers, install_stop_signals, run
from live.config import DEFAULT
from live.peer import PeerLink
from live.stats import StatsFile
from codec_core.config import ConfigError
from codec_core.video import VideoError
from receiver.cli import SetupError, add_receiver_options, build_receiver, check_receiver_args, stop_worker
from receiver.half import ReceiverHalf
from sender.cli import add_sender_options, build_sender
from sender.half import NoFaceFound
from sender.source import SourceError
from signaling.client import SignalingError

PROG = "python -m call"
log = logging.getLogger("call")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="One end of a two-way face call: sends your face "
                                     "and shows the other side's.")
    add_connection_options(parser)
    add_sender_options(parser)
    add_receiver_options(parser)
    return parser


async def watch_call(sending: asyncio.Task, receiver: ReceiverHalf, link: PeerLink, stop: asyncio.Event,
                     wait_peer: float, stats: StatsFile) -> str:
    """Wait until this end's part in the call is over; returns why (re-raises sender errors)."""
    in_session = False
    while True:
        if stop.is_set():
            return "interrupted"
        if receiver.quit_requested:
            return "window closed"
        if sending.done():
            sending.result()         # raises the sender's error, if any
            if receiver.finished():
                return "both streams ended"
            if receiver.session is None:
                return "own stream ended and the other side has left"
        if receiver.session is None and in_session:
            stats.write(final=False)
        in_session = receiver.session is not None
        if receiver.session is None and link.sessions_opened > 0:
            if link.peer_absent_for() > wait_peer:
                return f"the other side did not come back within {wait_peer:g} s"
            if link.signaling_lost.is_set():
                return "the other side left and the signaling server is gone"
        await asyncio.sleep(0.05)


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        ice = ice_servers(args)
        check_receiver_args(args)
        source, analyser, sender = build_sender(args, DEFAULT)
    except (SetupError, SourceError, ConfigError, VideoError, ValueError) as exc:
        return fail(PROG, str(exc))
    receiver, worker = build_receiver(args, DEFAULT)
    link = PeerLink(args.signaling, args.room, [sender, receiver], ice, DEFAULT)
    stats = StatsFile(args.stats, receiver.stats.snapshot, DEFAULT.stats_interval_s)
    sender_stats = StatsFile(args.sender_stats, sender.stats.snapshot, DEFAULT.stats_interval_s)
    sending: asyncio.Task | None = None
    sender_stop = asyncio.Event()
    status = 0
    try:
        await link.open()
        stats.start()
        sender_stats.start()
        sending = asyncio.create_task(sender.run(sender_stop), name="sender")
        reason = await watch_call(sending, receiver, link, stop, args.wait_peer, stats)
        log.info("call over: %s", reason)
    except SignalingError as exc:
        status = fail(PROG, str(exc))
    except (SourceError, NoFaceFound) as exc:
        status = fail(PROG, str(exc))
    finally:
        sender_stop.set()
        if sending is not None:
            try:
                await asyncio.wait_for(sending, 5.0)
            except (Exception, asyncio.CancelledError):
                pass
        await link.close()
        await stop_worker(worker)
        receiver.close()
        receiver.stats.state = "ended"
        await stats.close()
        await sender_stats.close()
        analyser.close()
        source.close()
    s = receiver.stats.snapshot()
    log.info("received %d frames, rendered %d, lost %d; latency median %s ms, p95 %s ms; sent %d frames",
             s["frames_received"], s["frames_rendered"], s["frames_lost"], s["latency_ms"]["median"],
             s["latency_ms"]["p95"], sender.stats.frames_sent)
    return status


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, amain, argv)


if __name__ == "__main__":
    sys.exit(main())
