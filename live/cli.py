"""Command-line pieces every live command shares: signaling, room, ICE servers, logging,
signals, and the one-line error exit (`CallError`, `fail`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiortc.rtcicetransport import parse_stun_turn_uri

from codec_core.format import format_named
from live.peer import IceServer
from signaling.protocol import ROOM_PATTERN
from signaling.tls import TLSConfigError, trust

EXIT_OK = 0
EXIT_ERROR = 1


class CallError(Exception):
    """Ends a live end with one line (str() of it) and status 1: a source that cannot be
    opened or stops, a file without a face, a set-up the machine cannot do."""


class SetupError(CallError):
    """The end cannot start as asked (no display for a window, no CUDA, a bad config file)."""


def feature_format(option: str, name: str) -> str:
    """`name` when it names a feature format (codec_core.format: ifvc, fomm, fv2v, cfte), else
    SetupError in one line naming `option` (status 1, as the other bad set-ups)."""
    try:
        return format_named(name).name
    except ValueError as exc:
        raise SetupError(f"{option}: {exc}") from None


def _room(text: str) -> str:
    if not ROOM_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError("room names are 1-64 characters of letters, digits, '_', '.', '-'")
    return text


def _signaling_url(text: str) -> str:
    if not text.startswith(("ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"expected ws://HOST:PORT, got {text!r}")
    return text


class _TrustCafile(argparse.Action):
    """``--cafile FILE``: the ``wss://`` signaling clients of this process also trust FILE's CAs."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        try:
            trust(str(values))
        except TLSConfigError as exc:
            parser.error(f"{option_string} {values}: {exc}")
        setattr(namespace, self.dest, values)


def add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cafile", action=_TrustCafile, metavar="CA.pem",
                        help="also trust the CA certificates in this PEM file for a wss:// signaling server "
                             "(e.g. its self-signed certificate; default: the system's CAs only)")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signaling", required=True, type=_signaling_url, metavar="ws://HOST:PORT",
                        help="signaling server (python -m signaling; wss:// when it serves TLS)")
    parser.add_argument("--room", required=True, type=_room,
                        help="room name shared by the two ends of the call: make one that cannot be guessed "
                             "(python -m signaling.rooms); a short one is warned about")
    add_tls_client_options(parser)
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="STUN or TURN server, e.g. stun:stun.example.org:3478 (repeatable; default: none, "
                             "which is enough on one machine or a LAN)")
    parser.add_argument("--ice-username", help="username for the TURN servers")
    parser.add_argument("--ice-credential", help="credential (password) for the TURN servers")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: %(default)s)")


def ice_servers(args: argparse.Namespace) -> list[IceServer]:
    out = []
    for url in args.ice_server:
        if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            raise ValueError(f"--ice-server {url!r}: expected a stun:, stuns:, turn: or turns: URL")
        try:        # as aiortc will read it when the call starts (there it would stop the call unseen)
            parse_stun_turn_uri(url)
        except ValueError as exc:
            raise ValueError(f"--ice-server {url!r}: {exc}") from None
        turn = url.startswith("turn")
        out.append(IceServer(url, args.ice_username if turn else None, args.ice_credential if turn else None))
    return out


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiortc/aioice are chatty at INFO and below
    for name in ("aiortc", "aioice", "websockets"):
        logging.getLogger(name).setLevel(max(logging.WARNING, getattr(logging, level)))


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the commands then shut down cleanly)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


def fail(prog: str, message: str) -> int:
    """One line on stderr, status 1."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
