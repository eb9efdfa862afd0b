"""A packet log of one interface: one line per UDP datagram that arrives, saying when and
what it is (RFC 7983's first-byte rule: STUN, DTLS, RTP or RTCP).

    python -m benchmarks.netem.sniff --iface v --out FILE.jsonl

Each line: {"t": wall ms, "kind": "rtp"|"rtcp"|"dtls"|"stun"|"other", "len": UDP payload
bytes, "seq": RTP sequence number (RTP only)}.  The RTP header travels in clear under SRTP,
so the arrivals of the voice can be read without keys; data channels (DTLS) cannot be told
apart.  Runs until killed (SIGTERM ends it cleanly); run it inside the namespace of the
interface (`ip netns exec NS ...`).  Needs root (a packet socket).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def classify(payload: bytes) -> tuple[str, int | None]:
    """(kind, RTP sequence number) of a UDP payload by its first bytes (RFC 7983)."""
    if not payload:
        return "other", None
    b = payload[0]
    if b <= 3:
        return "stun", None
    if 20 <= b <= 63:
        return "dtls", None
    if 128 <= b <= 191 and len(payload) >= 12:
        if 64 <= (payload[1] & 0x7F) <= 95:       # RTCP packet types 192-223 (RFC 5761)
            return "rtcp", None
        return "rtp", int.from_bytes(payload[2:4], "big")
    return "other", None


def udp_payload(ip: bytes) -> bytes | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
        return None
    start = (ip[0] & 0x0F) * 4 + 8
    return ip[start:] if len(ip) >= start else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netem.sniff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        sock.bind((args.iface, 0))
    except OSError as exc:
        print(f"error: cannot listen on {args.iface!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sock.settimeout(0.2)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    print("ready", flush=True)
    with open(args.out, "w") as out:
        while running[0]:
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            t = time.time() * 1000.0
            if addr[2] == PACKET_OUTGOING:
                continue
            payload = udp_payload(data)
            if payload is None:
                continue
            kind, seq = classify(payload)
            record = {"t": round(t, 2), "kind": kind, "len": len(payload)}
            if seq is not None:
                record["seq"] = seq
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
