"""Two peers in their own network namespaces, routed through a third: the only way between
them, so that ICE cannot go around it.

    peer A (ns A)            middle (ns M)                 peer B (ns B)
    v 10.77.1.2 ---------- ma 10.77.1.1 | mb 10.77.2.1 ---------- v 10.77.2.2

A and B have nothing but `lo` and their veth end, IPv6 off, a default route through M;
M forwards between `ma` and `mb`.  Services that both peers must reach (the signaling
server) run in M on 0.0.0.0: their traffic ends in M and never crosses the forward path,
which is the only thing the impairments touch.

Impairments, all in M and all in both directions:

- `set_loss(pct)`: nftables `numgen random mod 100 < pct drop` on what M forwards;
- `set_outage(True)`: everything M forwards is dropped (the link is gone) until `False`;
- `set_rate(kbit)`: a tbf qdisc on M's egress towards each peer (`None`: no cap);
- `use_router(proc)`: what M forwards goes through the userspace TUN router
  (`benchmarks.netem.router`, started with `router_command`) by policy routing:
  packets in from `ma` or `mb` take table 100 (default dev `mt`, the router's TUN), the
  router writes them back into `mt` after its delay, and the main table sends them on.

`Topology` is a context manager: the namespaces are made on entry and deleted (with
every process still in them killed by the caller) on exit.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PEER_A = "10.77.1.2"
PEER_B = "10.77.2.2"
GATEWAY_A = "10.77.1.1"
GATEWAY_B = "10.77.2.1"
DEV_A = "ma"          # M's end of the veth pair towards A
DEV_B = "mb"
TUN = "mt"
ROUTER_TABLE = "100"
TABLE = "fcnet"
_counter = itertools.count(1)


class NetemError(RuntimeError):
    """A namespace command failed; str() holds the command and its error output."""


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (scripts/setup installs iproute2 and nftables)"
    name = f"fcprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", name])
    except NetemError as exc:
        return f"'ip netns add' does not work here: {exc}"
    try:
        _run(["ip", "netns", "exec", name, "nft", "list", "tables"])
        _run(["ip", "-n", name, "tuntap", "add", "dev", "probe", "mode", "tun"])
    except NetemError as exc:
        return f"nftables or TUN devices do not work in a namespace here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _run(cmd: Sequence[str], stdin: str | None = None) -> str:
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetemError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


@dataclass
class Impairment:
    """What the middle namespace does to forwarded packets now."""

    loss_pct: int = 0
    outage: bool = False
    rate_kbit: int | None = None


class Topology:
    def __init__(self, tag: str | None = None) -> None:
        tag = tag or f"{os.getpid() % 100000}x{next(_counter)}"
        self.ns_a, self.ns_m, self.ns_b = (f"fc{tag}{s}" for s in "amb")
        self.now = Impairment()
        self._made: list[str] = []
        self._dropped_before = 0       # drops counted by rules since replaced

    # -- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> Topology:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        for ns in (self.ns_a, self.ns_m, self.ns_b):
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            _run(["ip", "-n", ns, "link", "set", "dev", "lo", "up"])
        m = self.ns_m
        _run(["ip", "-n", m, "link", "add", "name", DEV_A, "type", "veth", "peer", "name", "v", "netns", self.ns_a])
        _run(["ip", "-n", m, "link", "add", "name", DEV_B, "type", "veth", "peer", "name", "v", "netns", self.ns_b])
        for ns, dev, addr in ((m, DEV_A, GATEWAY_A), (m, DEV_B, GATEWAY_B), (self.ns_a, "v", PEER_A),
                              (self.ns_b, "v", PEER_B)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", "dev", dev, "up"])
        _run(["ip", "-n", self.ns_a, "route", "add", "default", "via", GATEWAY_A])
        _run(["ip", "-n", self.ns_b, "route", "add", "default", "via", GATEWAY_B])
        # forwarding; no reverse-path filter (packets come back out of the router's TUN)
        self.sysctl(m, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        self._apply()

    def close(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made = []

    # -- running things ------------------------------------------------------------------

    @staticmethod
    def sysctl(ns: str, *settings: str) -> None:
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside namespace `ns` (`ip netns exec` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", ns, *argv]

    def python(self, ns: str, module: str, *args: str) -> list[str]:
        return self.command(ns, [sys.executable, "-m", module, *args])

    def links(self, ns: str) -> list[str]:
        """The interface names of a namespace."""
        out = _run(["ip", "-n", ns, "-o", "link", "show"])
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def addresses(self, ns: str) -> list[str]:
        """The addresses (IPv4 and IPv6) of a namespace, loopback included."""
        out = _run(["ip", "-n", ns, "-o", "addr", "show"])
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

    # -- impairments ---------------------------------------------------------------------

    def set_loss(self, pct: int) -> None:
        if not 0 <= pct <= 100:
            raise ValueError("loss is a percentage, 0 to 100")
        self.now.loss_pct = pct
        self._apply()

    def set_outage(self, on: bool) -> None:
        self.now.outage = on
        self._apply()

    def set_rate(self, kbit: int | None) -> None:
        """Cap what M sends towards each peer at `kbit` kbit/s (tbf, a 200 ms queue)."""
        self.now.rate_kbit = kbit
        for dev in (DEV_A, DEV_B):
            if kbit is None:
                subprocess.run(["ip", "netns", "exec", self.ns_m, "tc", "qdisc", "del", "dev", dev, "root"],
                               capture_output=True)
            else:
                _run(["ip", "netns", "exec", self.ns_m, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                      "rate", f"{kbit}kbit", "burst", "2000", "latency", "200ms"])

    def _apply(self) -> None:
        rules = []
        if self.now.outage:
            rules.append(f'iifname {{ "{DEV_A}", "{DEV_B}" }} counter drop')
        elif self.now.loss_pct:
            pct = self.now.loss_pct
            rules += [f'iifname "{dev}" numgen random mod 100 < {pct} counter drop' for dev in (DEV_A, DEV_B)]
        body = "\n".join(f"    {r}" for r in rules)
        script = (f"table ip {TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n"
                  f"{body}\n  }}\n}}\n")
        flush = ""
        if self._has_table():
            self._dropped_before += self._counted()
            flush = f"flush table ip {TABLE}\n"
        _run(["ip", "netns", "exec", self.ns_m, "nft", "-f", "-"], stdin=flush + script)

    def _has_table(self) -> bool:
        out = _run(["ip", "netns", "exec", self.ns_m, "nft", "list", "tables"])
        return f"table ip {TABLE}" in out

    def dropped(self) -> int:
        """Packets the nftables rules dropped so far (all rules, the replaced ones too)."""
        return self._dropped_before + self._counted()

    def _counted(self) -> int:
        out = _run(["ip", "netns", "exec", self.ns_m, "nft", "list", "table", "ip", TABLE])
        return sum(int(w) for line in out.splitlines() if "counter packets" in line
                   for w in [line.split("counter packets")[1].split()[0]])

    # -- the userspace router ------------------------------------------------------------

    def router_command(self, *args: str) -> list[str]:
        """The router's command line, run in M (it opens the TUN and prints "ready")."""
        return self.python(self.ns_m, "benchmarks.netem.router", "--tun", TUN, *args)

    def route_through_router(self) -> None:
        """Send what M forwards through the router's TUN (call once the router is ready)."""
        m = self.ns_m
        _run(["ip", "-n", m, "link", "set", "dev", TUN, "up"])
        self.sysctl(m, f"net.ipv4.conf.{TUN}.rp_filter=0")
        _run(["ip", "-n", m, "route", "add", "default", "dev", TUN, "table", ROUTER_TABLE])
        for dev in (DEV_A, DEV_B):
            _run(["ip", "-n", m, "rule", "add", "iif", dev, "lookup", ROUTER_TABLE])


__all__ = ["GATEWAY_A", "GATEWAY_B", "PEER_A", "PEER_B", "Impairment", "NetemError", "Topology", "unavailable"]
