"""Command line entry point: ``python -m signaling``.

    python -m signaling [--host 127.0.0.1] [--port 8765] [--max-message-bytes N]
                        [--rate-limit 50] [--rate-burst 100] [--max-bad-messages 20]
                        [--ping-interval 20] [--ping-timeout 20] [--max-connections 4096]
                        [--max-connections-per-address 256]
                        [--allow-origin https://HOST[:PORT] ...] [--cert CERT.pem --key KEY.pem]
                        [--log-level INFO]

Binds to loopback unless told otherwise. ``--port 0`` picks a free port; the
bound address is logged as ``signaling server listening on ws://HOST:PORT``
(``wss://`` with ``--cert`` and ``--key``). Browser pages may connect only from
the origins given with ``--allow-origin`` (none by default: the command-line
peers and the web demo's server send no ``Origin`` and are always accepted).
Ctrl-C (SIGINT) or SIGTERM closes every connection and exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Sequence

from .origins import origin_option
from .server import ServerConfig, SignalingServer
from .tls import server_context_of

log = logging.getLogger("signaling")

_DEFAULTS = ServerConfig()


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m signaling",
        description="WebRTC signaling server: pairs two peers per room and relays offers, answers and candidates.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=_port, default=8765, help="TCP port, 0 for any free one (default: %(default)s)")
    parser.add_argument(
        "--max-message-bytes", type=_positive_int, default=_DEFAULTS.max_message_bytes,
        help="largest accepted message; bigger ones close the connection with 1009 (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit", type=_non_negative_float, default=_DEFAULTS.rate_limit,
        help="messages per second per connection, 0 for unlimited (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-burst", type=_positive_int, default=_DEFAULTS.rate_burst,
        help="messages a connection may send in a burst (default: %(default)s)",
    )
    parser.add_argument(
        "--max-bad-messages", type=_positive_int, default=_DEFAULTS.max_bad_messages,
        help="malformed messages tolerated before the connection is closed (default: %(default)s)",
    )
    parser.add_argument(
        "--ping-interval", type=_non_negative_float, default=_DEFAULTS.ping_interval,
        help="seconds between keepalive pings, 0 to disable (default: %(default)s)",
    )
    parser.add_argument(
        "--ping-timeout", type=_non_negative_float, default=_DEFAULTS.ping_timeout,
        help="seconds to wait for a pong before dropping the peer, 0 to disable (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections", type=_positive_int, default=_DEFAULTS.max_connections,
        help="websocket connections served at once; more get HTTP 503 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-address", type=_positive_int, default=_DEFAULTS.max_connections_per_address,
        help="websocket connections served at once from one IP address; more get HTTP 503 (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-origin", action="append", default=[], type=origin_option, metavar="https://HOST[:PORT]",
        help="a web page origin that may connect (repeatable; default: none, only programs, which send no Origin)",
    )
    parser.add_argument("--cert", metavar="CERT.pem", help="TLS certificate chain (PEM): serve wss:// (with --key)")
    parser.add_argument("--key", metavar="KEY.pem", help="the certificate's private key (PEM)")
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="(default: %(default)s)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Turn parsed options into a ServerConfig (0 means 'off' for rate and pings)."""
    return ServerConfig(
        max_message_bytes=args.max_message_bytes,
        rate_limit=args.rate_limit or None,
        rate_burst=args.rate_burst,
        max_bad_messages=args.max_bad_messages,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        allowed_origins=tuple(args.allow_origin),
    )


def tls_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--cert`` / ``--key`` (None without them); raises TLSConfigError."""
    return server_context_of(args.cert, args.key)


async def run(host: str, port: int, config: ServerConfig, ssl_context: ssl.SSLContext | None = None) -> int:
    """Serve until SIGINT or SIGTERM; return the process exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # e.g. Windows: Ctrl-C arrives as KeyboardInterrupt
            pass
    server = SignalingServer(host, port, config, ssl_context)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        ssl_context = tls_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(run(args.host, args.port, config, ssl_context))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
