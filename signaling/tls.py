"""TLS for the websocket servers and their Python clients (``wss://``, ``https://``).

A server given a certificate chain and its key (``--cert``, ``--key``: PEM files) serves
TLS only (:func:`server_context`).  A Python client of a ``wss://`` URL verifies the
server against the system's CA store plus the files :func:`trust` was given (``--cafile``
on the command lines: a self-signed certificate, or a private CA), in
:func:`client_context`.  Errors are one-line ``TLSConfigError`` texts.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TLSConfigError", "client_context", "server_context", "trust", "trusted"]

_TRUSTED: list[str] = []


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; str() says which and why."""


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later) from a PEM certificate chain and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (cert, key):       # ssl names neither file when one is missing
        if not Path(path).is_file():
            raise TLSConfigError(f"cannot read {path}: no such file")
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot use certificate {cert} with key {key}: {_reason(exc)}") from None
    return context


def server_context_of(cert: str | Path | None, key: str | Path | None) -> ssl.SSLContext | None:
    """The context of a server's ``--cert`` / ``--key`` (None without either); raises
    TLSConfigError when only one is given or they cannot be used."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TLSConfigError("--cert and --key go together")
    return server_context(cert, key)


def trust(cafile: str | Path) -> None:
    """Also trust the CA certificates (PEM) in ``cafile`` for every later ``wss://`` client
    of this process; raises TLSConfigError when the file holds none."""
    try:
        ssl.create_default_context(cafile=str(cafile))
    except FileNotFoundError:
        raise TLSConfigError(f"cannot read {cafile}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot use {cafile} as CA certificates: {_reason(exc)}") from None
    if str(cafile) not in _TRUSTED:
        _TRUSTED.append(str(cafile))


def trusted() -> tuple[str, ...]:
    """The CA files :func:`trust` was given."""
    return tuple(_TRUSTED)


def client_context(cafiles: tuple[str, ...] | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs plus ``cafiles`` (default: :func:`trusted`)."""
    context = ssl.create_default_context()
    for cafile in trusted() if cafiles is None else cafiles:
        context.load_verify_locations(cafile=cafile)
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)
