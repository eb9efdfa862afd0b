"""Calls over emulated bad networks (network namespaces; `benchmarks/netem`): the peers in
their own namespaces, the middle one their only route, impairments in the middle.  Short
versions of `benchmarks.network`'s scenarios; they check what happens, not how fast (the
numbers are the benchmark's).  Skipped, with the reason, where namespaces cannot be made
(not root, no `ip`/`nft`/`tc`: scripts/setup installs iproute2 and nftables)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import clip

from benchmarks.netem.topology import PEER_B, Topology, unavailable
from benchmarks.network import Scenario, measure, run_call

_WHY = unavailable()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"network emulation unavailable: {_WHY}")

CLIP = "rt__3.mp4"

# a UDP echo in B and a probe in A: (sent, [(number, arrival order)])
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""
PROBE = """
import json, socket, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.6)
for i in range(n):
    s.sendto(str(i).encode(), (sys.argv[2], 9999))
    time.sleep(0.01)
got = []
try:
    while True:
        got.append(int(s.recvfrom(64)[0]))
except OSError:
    pass
print(json.dumps(got))
"""


def probe(net: Topology, n: int) -> list[int]:
    out = subprocess.run(net.command(net.ns_a, [sys.executable, "-c", PROBE, str(n), PEER_B]), capture_output=True,
                         text=True, timeout=60)
    return json.loads(out.stdout)


@pytest.fixture
def net():
    with Topology() as topology:
        echo = subprocess.Popen(topology.command(topology.ns_b, [sys.executable, "-c", ECHO]),
                                stdout=subprocess.PIPE, text=True)
        try:
            assert echo.stdout.readline().strip() == "ready"
            yield topology
        finally:
            echo.kill()
            echo.wait(10)


def test_the_middle_is_the_only_route(net):
    """The peers have nothing but lo and their veth end, no IPv6, and nothing gets through
    while the middle drops what it forwards (so ICE cannot go around it)."""
    for ns, addr in ((net.ns_a, "10.77.1.2"), (net.ns_b, PEER_B)):
        assert sorted(net.links(ns)) == ["lo", "v"]
        assert sorted(net.addresses(ns)) == sorted(["127.0.0.1", addr])
    assert sorted(probe(net, 5)) == list(range(5))
    net.set_outage(True)
    assert probe(net, 5) == []
    assert net.dropped() >= 5
    net.set_outage(False)
    assert sorted(probe(net, 5)) == list(range(5))


def test_loss_and_the_router(net):
    """nftables drops at random in both directions; the TUN router delays every packet
    and reorders some (the kernel alone never would)."""
    net.set_loss(30)
    got = probe(net, 100)
    assert 20 <= len(got) <= 80, len(got)        # about 49 of 100 survive both ways
    net.set_loss(0)
    router = subprocess.Popen(net.router_command("--delay-ms", "30", "--reorder-pct", "30", "--reorder-ms", "40"),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert router.stdout.readline().strip() == "ready"
        net.route_through_router()
        got = probe(net, 60)
        assert sorted(got) == list(range(60))                 # none lost
        assert got != sorted(got)                             # some overtaken: they went through the router
    finally:
        router.terminate()
        router.wait(10)


def test_call_through_loss_and_an_outage(tmp_path):
    """10% random loss both ways, and a 2-second outage in the middle (everything the middle
    forwards dropped): the call goes on to the end in the same session, pictures come back
    after the outage, and none is built from a broken prediction chain (every decoded
    frame has exactly the sender's levels).  One call, so that the processes start once."""
    scenario = Scenario("loss10-outage2", "10% loss, 2-second outage", 10, loss_pct=10, outage_s=2,
                        outage_after_s=2)
    run = run_call(scenario, clip(CLIP), tmp_path)
    m = measure(run)
    assert run.exit_codes == {"sender": 0, "receiver": 0}, m
    assert run.outage_ms is not None and run.nft_dropped > 0
    assert m["frames_rendered"] > 0 and m["frames_decoded"] > 0
    assert m["broken_chain_frames"] == 0
    assert m["frames_lost"] >= 1 and m["loss_reports_sent"] >= 1, m     # loss hit the parameters
    assert m["longest_freeze_s"] >= 1.5, m                               # the outage was real
    assert m["pictures_after_outage"] >= 10, m                           # and pictures came back
    assert m["last_frame_rendered"] >= m["last_frame_sent"] - 25, m      # going on until the end
    assert m["sessions"] == 1, m
    assert m["audio"]["packets"] > 0
