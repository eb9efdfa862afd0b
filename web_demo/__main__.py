"""`python -m web_demo`: the browser demo on loopback (docs/web_demo.md).

    python -m web_demo [--host 127.0.0.1] [--port 8080] [--signaling ws://HOST:PORT]
                       [--stills DIR] [--device cpu|cuda] [--log-level INFO]

Open the printed address in Chromium or Firefox.  Without --signaling the demo runs its
own signaling server in process on a free loopback port.  Ctrl-C or SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import live.threads  # noqa: F401  (first: one OpenMP thread, before torch loads)
from live.cli import install_stop_signals, setup_logging
from live.config import DEFAULT
from models.synthesizers import add_synthesis_options, synthesis_from_args

PROG = "python -m web_demo"
log = logging.getLogger("web_demo")


def build_parser() -> argparse.ArgumentParser:
    from web_demo.server import DEFAULT_STILLS

    p = argparse.ArgumentParser(prog=PROG, description="The browser demo of the face call: call, edit, stats.")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s; the camera "
                   "needs a secure context: 127.0.0.1/localhost, or HTTPS in front of it)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0: a free one; default: %(default)s)")
    p.add_argument("--signaling", metavar="ws://HOST:PORT",
                   help="signaling server of the calls (default: one started in process)")
    p.add_argument("--stills", type=Path, default=DEFAULT_STILLS,
                   help="folder of portraits offered in portrait mode (default: %(default)s)")
    add_synthesis_options(p)
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging level (default: %(default)s)")
    return p


async def amain(args: argparse.Namespace) -> int:
    import torch

    from web_demo.server import Demo

    try:
        synthesis = synthesis_from_args(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    torch.set_num_threads(DEFAULT.render_threads)     # the portraits' synthesis; each call's thread sets it too
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        demo = Demo(args.host, args.port, args.signaling, args.stills, synthesis)
        async with demo:
            print(f"web demo at {demo.url} (signaling {demo.signaling_url})", flush=True)
            await stop.wait()
    except OSError as exc:
        print(f"{PROG}: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
