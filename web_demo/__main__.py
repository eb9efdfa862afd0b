"""`python -m web_demo`: the browser demo on loopback (docs/web_demo.md).

    python -m web_demo [--host 127.0.0.1] [--port 8080] [--signaling ws://HOST:PORT] [--cafile CA.pem]
                       [--stills DIR] [--device cpu|cuda] [--max-calls 4] [--max-portraits 8]
                       [--allow-origin https://HOST[:PORT] ...] [--cert CERT.pem --key KEY.pem]
                       [--log-level INFO]

Open the printed address in Chromium or Firefox.  Without --signaling the demo runs its
own signaling server in process on a free loopback port.  With --cert and --key it serves
HTTPS (and its page `wss://`).  Only its own pages (and --allow-origin ones) may use its
websocket.  Ctrl-C or SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import live.threads  # noqa: F401  (first: one OpenMP thread, before torch loads)
from live import eventloop
from live.cli import add_tls_client_options, install_stop_signals, setup_logging
from live.config import DEFAULT
from models.synthesizers import add_synthesis_options, synthesis_from_args
from signaling.origins import origin_option
from signaling.tls import server_context_of

PROG = "python -m web_demo"
log = logging.getLogger("web_demo")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from web_demo.server import DEFAULT_MAX_CALLS, DEFAULT_MAX_PORTRAITS, DEFAULT_STILLS

    p = argparse.ArgumentParser(prog=PROG, description="The browser demo of the face call: call, edit, stats.")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s; the camera "
                   "needs a secure context: 127.0.0.1/localhost, or HTTPS in front of it)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0: a free one; default: %(default)s)")
    p.add_argument("--signaling", metavar="ws://HOST:PORT",
                   help="signaling server of the calls (default: one started in process)")
    add_tls_client_options(p)
    p.add_argument("--stills", type=Path, default=DEFAULT_STILLS,
                   help="folder of portraits offered in portrait mode (default: %(default)s)")
    add_synthesis_options(p)
    p.add_argument("--max-calls", type=_positive_int, default=DEFAULT_MAX_CALLS,
                   help="tabs in a call at once; the next is told the server is busy (default: %(default)s)")
    p.add_argument("--max-portraits", type=_positive_int, default=DEFAULT_MAX_PORTRAITS,
                   help="tabs with a portrait open at once; the next is told the server is busy "
                        "(default: %(default)s)")
    p.add_argument("--allow-origin", action="append", default=[], type=origin_option, metavar="https://HOST[:PORT]",
                   help="another web page origin that may use the demo's websocket (repeatable; default: only "
                        "the demo's own pages)")
    p.add_argument("--cert", metavar="CERT.pem", help="TLS certificate chain (PEM): serve HTTPS (with --key)")
    p.add_argument("--key", metavar="KEY.pem", help="the certificate's private key (PEM)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging level (default: %(default)s)")
    return p


async def amain(args: argparse.Namespace) -> int:
    import torch

    from web_demo.server import Demo

    try:
        synthesis = synthesis_from_args(args)
        tls = server_context_of(args.cert, args.key)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    torch.set_num_threads(DEFAULT.render_threads)     # the portraits' synthesis; each call's thread sets it too
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        demo = Demo(args.host, args.port, args.signaling, args.stills, synthesis, allow_origins=args.allow_origin,
                    ssl_context=tls, max_calls=args.max_calls, max_portraits=args.max_portraits)
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
        return eventloop.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
