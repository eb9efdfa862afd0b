"""A userspace router on a TUN device: every packet the kernel routes into the device
comes back out of it after a delay, so that the kernel forwards it on.  It stands in for
the netem qdisc, which the kernels of these machines lack.

    python -m benchmarks.netem.router --tun t [--delay-ms 100] [--jitter-ms 30]
                                      [--reorder-pct 0] [--reorder-ms 40] [--seed 1]

- delay and jitter: each packet waits `delay` plus a uniform draw in [-jitter, +jitter]
  ms (netem's default distribution), but never leaves before a packet of the same flow
  (source address) that came in before it: jitter alone keeps the order, as most real
  paths do;
- reordering: a packet picked with probability `reorder-pct` % waits `reorder-ms` more and
  is exempt from that rule, so later packets overtake it.

It opens the TUN device (made if missing, without packet information), prints `ready` on
stdout once it reads from it, and runs until killed.  Packets that are not IPv4 pass with
the plain delay.  Run it inside the middle namespace (`topology.Topology.router_command`).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import random
import signal
import struct
import sys
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MTU = 65535


@dataclass(frozen=True)
class Delays:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_pct: float = 0.0
    reorder_ms: float = 40.0


class Scheduler:
    """When each packet leaves (loop time, seconds), by the rules of the module docstring."""

    def __init__(self, delays: Delays, rng: random.Random) -> None:
        self.d = delays
        self.rng = rng
        self._last: dict[bytes, float] = {}    # flow -> departure of its last in-order packet
        self.reordered = 0

    def departure(self, packet: bytes, now: float) -> float:
        d = self.d
        wait = d.delay_ms + (self.rng.uniform(-d.jitter_ms, d.jitter_ms) if d.jitter_ms else 0.0)
        due = now + max(0.0, wait) / 1000.0
        if d.reorder_pct and self.rng.random() * 100.0 < d.reorder_pct:
            self.reordered += 1
            return due + d.reorder_ms / 1000.0
        flow = packet[12:16] if len(packet) >= 20 and packet[0] >> 4 == 4 else b""
        due = max(due, self._last.get(flow, 0.0))
        self._last[flow] = due
        return due


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


async def serve(fd: int, scheduler: Scheduler) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def send(packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:          # the device went down: the packet is lost, as on a wire
            pass

    def readable() -> None:
        while True:
            try:
                packet = os.read(fd, MTU)
            except BlockingIOError:
                return
            except OSError:
                return
            now = loop.time()
            loop.call_at(scheduler.departure(packet, now), send, packet)

    loop.add_reader(fd, readable)
    print("ready", flush=True)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netem.router", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tun", required=True, help="TUN device name (made if missing)")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--reorder-pct", type=float, default=0.0)
    parser.add_argument("--reorder-ms", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.delay_ms, args.jitter_ms, args.reorder_pct, args.reorder_ms) < 0 or args.reorder_pct > 100:
        print("error: delays are non-negative and --reorder-pct is 0 to 100", file=sys.stderr)
        return 2
    try:
        fd = open_tun(args.tun)
    except OSError as exc:
        print(f"error: cannot open TUN device {args.tun!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    delays = Delays(args.delay_ms, args.jitter_ms, args.reorder_pct, args.reorder_ms)
    asyncio.run(serve(fd, Scheduler(delays, random.Random(args.seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
