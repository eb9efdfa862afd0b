"""Clocks of a live call: capture stamps on the wire, latency, and frame-number unwrapping.

A parameter packet carries its capture time as milliseconds of the sender's wall clock
modulo 2**32 and its frame number modulo 2**16 (docs/bitstream.md).  Both ends of a call
on one machine share the wall clock, so latency is simply "now minus the stamp", taken
with wrap-around.  Stage timings inside a process use the same wall clock (`time.time()`,
microsecond resolution) so that records of two processes can be joined.
"""

from __future__ import annotations

import time

STAMP_MODULUS = 1 << 32
FRAME_MODULUS = 1 << 16


def wall_ms() -> float:
    """Milliseconds of the wall clock (float, sub-millisecond resolution)."""
    return time.time() * 1000.0


def capture_stamp(t_ms: float) -> int:
    """The u32 stamp a packet carries for a capture at wall time `t_ms`."""
    return int(round(t_ms)) % STAMP_MODULUS


def age_ms(stamp: int, now_ms: float) -> float:
    """Milliseconds from a u32 capture stamp to wall time `now_ms`, across wrap-around
    (negative when the stamp lies in the future, e.g. clocks of two machines disagree)."""
    whole = int(now_ms // 1)
    delta = (whole - stamp) % STAMP_MODULUS
    if delta >= STAMP_MODULUS // 2:
        delta -= STAMP_MODULUS
    return delta + (now_ms - whole)


def unwrap(value: int, reference: int, modulus: int = FRAME_MODULUS) -> int:
    """The integer congruent to `value` (mod `modulus`) nearest to `reference`."""
    half = modulus // 2
    return reference + ((value - reference + half) % modulus) - half
