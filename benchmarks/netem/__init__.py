"""Network emulation over real links for calls: three network namespaces (two peers and the
router between them), impairments in the middle one, and small helpers that run inside
the namespaces.

- `topology`: the namespaces, veth pairs and routes; loss and outages with nftables, a rate
  cap with tbf, delay / jitter / reordering through the userspace router;
- `router`: `python -m benchmarks.netem.router`, the TUN router of the middle namespace
  (delay, jitter, reordering, for kernels without the netem qdisc);
- `sniff`: `python -m benchmarks.netem.sniff`, a packet log of one interface (when each
  RTP, DTLS and STUN datagram arrived), for the audio gaps.

Needs root, `ip` (iproute2), `nft` (nftables) and `tc`; `topology.unavailable()` says why
not when one of them is missing.  Used by `benchmarks.network` and `tests/test_network.py`.
"""
