"""Which web pages may open a websocket to our servers: the ``Origin`` allow-list.

A browser puts the page's origin (``scheme://host[:port]``) in the ``Origin`` header of
every websocket it opens; a program (the command-line peers, websockets' own client)
sends none.  Without a check, any web page the user visits could open a websocket to a
server on the user's loopback and join a call, so both websocket servers (the signaling
server and the web demo's ``/ws``) refuse a browser origin that is not on their list,
with HTTP 403 and one log line, and accept a connection without an ``Origin``.

The list holds exact origins (websockets' ``origins=`` does the same check, but logs a
refusal only at debug level and wants the list before the port is bound).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

__all__ = ["OriginPolicy", "normalise_origin", "page_origins"]

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Names a page on this machine's loopback may have.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def normalise_origin(text: str) -> str:
    """``scheme://host[:port]`` as a browser writes it (lower case, no default port, no
    path); raises ValueError for anything that is no http(s) origin."""
    parts = urlsplit(text.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin (expected http://HOST[:PORT] or https://HOST[:PORT])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text!r} is not an origin: give only scheme://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}")


def page_origins(scheme: str, hosts: Iterable[str], port: int) -> list[str]:
    """The origins of pages served at ``scheme://HOST:port/`` for each of ``hosts``."""
    out = []
    for host in hosts:
        name = f"[{host}]" if ":" in host and not host.startswith("[") else host
        out.append(normalise_origin(f"{scheme}://{name}:{port}"))
    return list(dict.fromkeys(out))


class OriginPolicy:
    """Accepts a websocket without ``Origin`` or with one on the list; see the module docstring.

    ``process_request`` is websockets' hook: None lets the handshake go on, a 403
    response refuses it.  The list may grow after the server is bound (its own page's
    origins are known only then): :meth:`allow`.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed: set[str] = set()
        self.allow(allowed)

    def allow(self, origins: Iterable[str]) -> None:
        """Add origins to the list (normalised; raises ValueError for a malformed one)."""
        self._allowed.update(normalise_origin(origin) for origin in origins)

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self._allowed)

    def accepts(self, origin: str | None) -> bool:
        """Whether a websocket from a page of ``origin`` (None: no browser) may open."""
        if origin is None:
            return True
        try:
            return normalise_origin(origin) in self._allowed
        except ValueError:
            return False                     # "null" (a sandboxed frame, a file), garbage

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request`` hook: refuse an origin that is not on the list."""
        origins = request.headers.get_all("Origin")     # two Origin headers: refused, not a traceback
        origin = origins[0] if len(origins) == 1 else (None if not origins else ", ".join(origins))
        if len(origins) <= 1 and self.accepts(origin):
            return None
        log.warning("refused a websocket from %s: origin %.100r is not allowed (--allow-origin adds one)",
                    _address(connection), origin)
        return connection.respond(HTTPStatus.FORBIDDEN, "This page's origin may not open a websocket here.\n")


def _address(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


def origin_option(text: str) -> str:
    """``--allow-origin``'s argparse type: the origin normalised, or the reason it is not one."""
    import argparse

    try:
        return normalise_origin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
