"""The event loop every live end runs on: uvloop's where it is installed (Linux, macOS).

Why not asyncio's own: its selector loop reads one datagram per socket per loop iteration.
aiortc and aioice hand each UDP socket to the loop as a datagram endpoint, so when the
loop is busy (a web demo serving two browsers on a slow two-core machine: iterations of
50 ms and more), every peer connection is held to about 1/iteration datagrams a second,
whatever comes in.  A call's audio alone is 25 packets a second, so the packets queue in
the kernel and the delay grows for as long as the call lasts: measured on such a machine
(tests/test_web_demo.py::test_call_in_the_browser), the parameter packets reached the other
end 0.7 s after capture at the start and 5.9 s after 25 s, and the voice 1.2 s.  libuv (under
uvloop) reads up to 32 datagrams each time a socket is ready; the same run gave 0.5-0.6 s,
bounded (docs/call.md, "The event loop").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop's event loop (asyncio's own where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        log.debug("event loop: asyncio's own (uvloop is not installed)")
        return asyncio.run(main)
    log.debug("event loop: uvloop %s", uvloop.__version__)
    return uvloop.run(main)
