"""Load and abuse of the signaling server: many rooms held while hostile clients try to take it down.

    python -m benchmarks.signaling_load [--rooms 500] [--abusers 10] [--out reports/signaling_load]

Starts `python -m signaling` as its own process (so that its resident memory can be read
from /proc), then, on loopback:

1. `--rooms` rooms of two well-behaved peers each join and exchange an offer, an answer
   and candidates both ways, relayed exactly;
2. while every room is held, `--abusers` clients of each hostile kind go at it at once
   (:data:`ABUSE`): garbage, oversized frames (a big one, and a header claiming 2^40 bytes),
   a flood of messages, a connection storm, half-open TCP connections (silent, and a
   handshake never finished), a peer that stops reading and answering pings, a third
   peer in a full room; meanwhile every room exchanges again;
3. after the abuse, every room exchanges once more and `--rooms` / 10 new rooms join.

It reports what each abusive client met (the expected outcome is the server's documented
answer: docs/signaling.md), the well-behaved exchanges that failed (none is the
acceptance), their latency, the server's resident memory while holding the rooms (the
acceptance: under 200 MB) and its peak, and whether it was still up and shut down with
status 0.  Markdown and JSON go to `--out`.  The server runs with keepalive pings every
2 s (`--ping-interval 2 --ping-timeout 2`), so that a peer that stops answering is
dropped within the run; everything else is its default.

`tests/test_signaling.py` runs the same scenario small (:func:`run_scenario`, 20 rooms,
one abuser of each kind) against an in-process server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from signaling.rooms import new_room

ROOT = Path(__file__).resolve().parents[1]
RECV_TIMEOUT = 30.0
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "a=x:" + "y" * 2000 + "\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {"type": "candidate", "candidate": {"candidate": "candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host",
                                                "sdpMid": "0", "sdpMLineIndex": 0}}
END = {"type": "candidate", "candidate": None}
FLOOD_MIN = 300
GARBAGE: list[str | bytes] = ["not json", "[1, 2]", '{"type": "dance"}', '{"type": "join", "room": "a/b"}',
                              b"\x00\x01binary", "[" * 50_000, '{"type": "offer", "sdp": 5}',
                              '{"x": ' + "[" * 20_000 + "]" * 20_000 + ', "type": "bye"}']


@dataclass
class Report:
    rooms: int
    abusers_per_kind: int
    setup_s: float = 0.0
    exchanges_ok: int = 0
    exchanges_failed: list[str] = field(default_factory=list)
    exchange_ms: list[float] = field(default_factory=list)
    late_rooms_ok: int = 0
    late_rooms_failed: list[str] = field(default_factory=list)
    abuse: dict[str, list[str]] = field(default_factory=dict)
    unexpected: dict[str, list[str]] = field(default_factory=dict)
    rss_mb_holding: float | None = None
    rss_mb_peak: float | None = None
    server_up: bool | None = None
    server_exit: int | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = sorted(self.exchange_ms)
        out = asdict(self)
        out["exchange_ms"] = ({"n": len(ms), "median": round(statistics.median(ms), 1),
                               "p95": round(ms[int(0.95 * (len(ms) - 1))], 1), "max": round(ms[-1], 1)}
                              if ms else None)
        return out

    @property
    def ok(self) -> bool:
        return (not self.exchanges_failed and not self.late_rooms_failed and not self.unexpected
                and self.server_up is not False and self.server_exit in (None, 0))


# -- well-behaved peers ---------------------------------------------------------------------------

async def recv_json(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def join(url: str, room: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(url, open_timeout=RECV_TIMEOUT, ping_interval=None, close_timeout=2)
    await ws.send(json.dumps({"type": "join", "room": room}))
    return ws, await recv_json(ws)


@dataclass
class Pair:
    room: str
    a: ClientConnection
    b: ClientConnection


async def open_pair(url: str, room: str) -> Pair:
    a, joined = await join(url, room)
    assert joined.get("peers") == 1, joined
    b, joined = await join(url, room)
    assert joined.get("initiator") is True, joined
    assert await recv_json(a) == {"type": "peer-joined"}
    return Pair(room, a, b)


async def exchange(pair: Pair) -> float:
    """Offer, answer, candidates both ways, each relayed exactly; returns seconds."""
    t0 = time.perf_counter()
    steps = [(pair.b, pair.a, OFFER), (pair.a, pair.b, ANSWER)]
    steps += [(s, r, m) for s, r in ((pair.a, pair.b), (pair.b, pair.a)) for m in (CANDIDATE, END)]
    for sender, receiver, message in steps:
        await sender.send(json.dumps(message))
        got = await recv_json(receiver)
        if got != message:
            raise AssertionError(f"relayed {str(got)[:80]} for {message['type']}")
    return time.perf_counter() - t0


async def _gather_limited(jobs: list[Callable[[], Awaitable[Any]]], limit: int = 50) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)


async def exchange_all(pairs: list[Pair], report: Report) -> None:
    results = await _gather_limited([lambda p=p: exchange(p) for p in pairs])
    for pair, result in zip(pairs, results):
        if isinstance(result, BaseException):
            report.exchanges_failed.append(f"{pair.room}: {type(result).__name__}: {result}"[:200])
        else:
            report.exchanges_ok += 1
            report.exchange_ms.append(result * 1000)


# -- abusive clients: each returns what it met ------------------------------------------------------

async def _closed_code(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> str:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else 'without a close frame'}"
    except TimeoutError:
        return "still open"


async def garbage(url: str, **_: Any) -> str:
    """Bad messages until the server has had enough: each answered, then 1008."""
    ws = await connect(url, ping_interval=None, close_timeout=1)
    answered = 0
    try:
        for i in range(1000):
            await ws.send(GARBAGE[i % len(GARBAGE)])
            if (await recv_json(ws)).get("code") == "bad-message":
                answered += 1
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else '?'} after {answered} bad-message answers"
    finally:
        await ws.close()
    return "never closed"


async def oversized(url: str, **_: Any) -> str:
    """A 1 MiB frame: the server closes with 1009 before reading it all."""
    ws = await connect(url, ping_interval=None, close_timeout=1, max_size=None)
    try:
        await ws.send("x" * (1 << 20))
    except ConnectionClosed:
        pass
    return await _closed_code(ws)


async def huge_header(url: str, **_: Any) -> str:
    """A frame header that claims 2^40 bytes, then nothing."""
    ws = await connect(url, ping_interval=None, close_timeout=1)
    ws.transport.write(b"\x81\xff" + (1 << 40).to_bytes(8, "big") + b"\x00\x00\x00\x00")
    return await _closed_code(ws)


async def flood(url: str, seconds: float = 3.0, **_: Any) -> str:
    """Join a room alone and send candidates as fast as the socket takes them, never reading:
    for `seconds`, and at least three times the server's burst (100) however slow that is."""
    ws, joined = await join(url, new_room())
    sent = 0
    end = time.monotonic() + seconds
    text = json.dumps(CANDIDATE)
    try:
        while time.monotonic() < end or sent < FLOOD_MIN:
            await asyncio.wait_for(ws.send(text), RECV_TIMEOUT)
            sent += 1
    except (TimeoutError, ConnectionClosed):
        pass
    limited = 0
    try:
        while True:
            if (await recv_json(ws, 1.0)).get("code") == "rate-limited":
                limited += 1
    except (TimeoutError, ConnectionClosed):
        pass
    await ws.close()
    return f"sent {sent}, rate-limited {'some' if limited else 'none'}"


async def storm(url: str, count: int = 50, **_: Any) -> str:
    """Connections opened and dropped at once, over and over."""
    opened = 0
    for _ in range(count):
        ws = await connect(url, ping_interval=None, close_timeout=1)
        opened += 1
        ws.transport.abort()
    return f"opened and aborted {opened}"


async def silent_tcp(url: str, open_timeout: float = 10.0, **_: Any) -> str:
    """A TCP connection that never says a word: dropped after the handshake timeout."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    t0 = time.monotonic()
    data = await asyncio.wait_for(reader.read(), open_timeout + 20)
    writer.close()
    return "dropped" if data == b"" and time.monotonic() - t0 < open_timeout + 5 else f"got {data[:40]!r}"


async def half_handshake(url: str, open_timeout: float = 10.0, **_: Any) -> str:
    """An opening handshake that never ends: dropped after the handshake timeout."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    t0 = time.monotonic()
    data = await asyncio.wait_for(reader.read(), open_timeout + 20)
    writer.close()
    return "dropped" if time.monotonic() - t0 < open_timeout + 5 and b"101" not in data[:20] else f"got {data[:40]!r}"


async def stops_reading(url: str, **_: Any) -> str:
    """A peer that stops reading (and so answering pings) in a room: dropped, its partner told."""
    room = new_room()
    partner, _ = await join(url, room)
    mute, _ = await join(url, room)
    assert await recv_json(partner) == {"type": "peer-joined"}
    mute.transport.pause_reading()
    try:
        got = await recv_json(partner, 60)
    finally:
        mute.transport.abort()
        await partner.close()
    return "partner got peer-left" if got == {"type": "peer-left"} else f"partner got {got}"


async def third_peer(url: str, pair: Pair | None = None, **_: Any) -> str:
    """A third peer in a full room: room-full, closed with 1008."""
    assert pair is not None
    ws, reply = await join(url, pair.room)
    closed = await _closed_code(ws)
    return f"{reply.get('code')}, {closed}"


#: The hostile kinds and the outcome the server's documentation promises for each.
ABUSE: dict[str, tuple[Callable[..., Awaitable[str]], Callable[[str], bool]]] = {
    "garbage": (garbage, lambda r: r.startswith("closed 1008 after 20 bad-message")),
    "oversized frame": (oversized, lambda r: r == "closed 1009"),
    "frame header claiming 2^40 bytes": (huge_header, lambda r: r == "closed 1009"),
    "flood": (flood, lambda r: r.endswith("rate-limited some")),
    "connection storm": (storm, lambda r: r.startswith("opened and aborted")),
    "silent TCP connection": (silent_tcp, lambda r: r == "dropped"),
    "unfinished handshake": (half_handshake, lambda r: r == "dropped"),
    "stops reading and answering pings": (stops_reading, lambda r: r == "partner got peer-left"),
    "third peer in a full room": (third_peer, lambda r: r == "room-full, closed 1008"),
}


async def abuse(url: str, pairs: list[Pair], per_kind: int, report: Report, open_timeout: float,
                flood_s: float) -> None:
    """Every hostile kind at once (`per_kind` of each), while every room exchanges again."""
    jobs: list[tuple[str, Awaitable[str]]] = []
    for kind, (attack, _) in ABUSE.items():
        for i in range(per_kind):
            jobs.append((kind, attack(url, pair=pairs[i % len(pairs)], open_timeout=open_timeout, seconds=flood_s)))
    results = await asyncio.gather(exchange_all(pairs, report), *(job for _, job in jobs), return_exceptions=True)
    if isinstance(results[0], BaseException):
        report.exchanges_failed.append(f"exchange round: {results[0]!r}")
    for (kind, _), result in zip(jobs, results[1:]):
        text = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else str(result)
        report.abuse.setdefault(kind, []).append(text)
        if isinstance(result, BaseException) or not ABUSE[kind][1](text):
            report.unexpected.setdefault(kind, []).append(text)


async def run_scenario(url: str, rooms: int, per_kind: int, open_timeout: float = 10.0, flood_s: float = 3.0,
                       sample: Callable[[], None] | None = None) -> Report:
    """The whole scenario against a running server at `url` (module docstring)."""
    report = Report(rooms, per_kind)
    t0 = time.perf_counter()
    results = await _gather_limited([lambda: open_pair(url, new_room()) for _ in range(rooms)])
    pairs = [r for r in results if isinstance(r, Pair)]
    report.exchanges_failed += [f"join: {r!r}"[:200] for r in results if not isinstance(r, Pair)]
    report.setup_s = time.perf_counter() - t0
    await exchange_all(pairs, report)
    if sample is not None:
        sample()
    if pairs:
        await abuse(url, pairs, per_kind, report, open_timeout, flood_s)
    await exchange_all(pairs, report)                       # the rooms survived the abuse
    if sample is not None:
        sample()
    late = await _gather_limited([lambda: open_pair(url, new_room()) for _ in range(max(1, rooms // 10))])
    for result in late:
        if isinstance(result, Pair):
            try:
                await exchange(result)
                report.late_rooms_ok += 1
            except Exception as exc:                        # noqa: BLE001 - reported
                report.late_rooms_failed.append(repr(exc)[:200])
            await asyncio.gather(result.a.close(), result.b.close())
        else:
            report.late_rooms_failed.append(repr(result)[:200])
    await asyncio.gather(*(ws.close() for p in pairs for ws in (p.a, p.b)), return_exceptions=True)
    report.seconds = time.perf_counter() - t0
    return report


# -- the server as a process, its memory ------------------------------------------------------------

def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of a process (MB) from /proc; VmHWM is its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def start_server(log: Path) -> tuple[asyncio.subprocess.Process, str]:
    """`python -m signaling` on a free port, its log (INFO: a line per connection) in `log`."""
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "signaling", "--port", "0", "--ping-interval", "2", "--ping-timeout", "2",
            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stderr=sink, preexec_fn=_raise_file_limit)
    marker = "signaling server listening on "
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        if marker in text:
            return proc, text.split(marker, 1)[1].split()[0]
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the signaling server did not start (see {log})")


async def main_async(args: argparse.Namespace) -> Report:
    _raise_file_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "server.log"
    proc, url = await start_server(log)
    samples: list[float] = []
    try:
        report = await run_scenario(url, args.rooms, args.abusers,
                                    sample=lambda: samples.append(rss_mb(proc.pid)))
        report.rss_mb_holding = round(samples[0], 1)
        report.rss_mb_peak = round(rss_mb(proc.pid, "VmHWM"), 1)
        report.server_up = proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    report.server_exit = proc.returncode
    if "Traceback" in log.read_text():
        report.unexpected.setdefault("server log", []).append(f"a traceback in {log}")
    return report


def markdown(report: Report) -> str:
    s = report.summary()
    ms = s["exchange_ms"] or {}
    lines = [
        "# Signaling server under load and abuse", "",
        f"`python -m benchmarks.signaling_load --rooms {report.rooms} --abusers {report.abusers_per_kind}`: "
        f"{report.rooms} rooms of two peers on loopback, {report.abusers_per_kind} abusive clients of each kind "
        "at once while every room exchanges an offer, an answer and candidates.", "",
        "| | |", "|---|---|",
        f"| rooms set up (2 peers each) | {report.rooms} in {report.setup_s:.1f} s |",
        f"| server resident memory holding them | {report.rss_mb_holding} MB (acceptance: under 200 MB) |",
        f"| server peak resident memory (whole run) | {report.rss_mb_peak} MB |",
        f"| well-behaved exchanges relayed exactly | {report.exchanges_ok} of "
        f"{report.exchanges_ok + len(report.exchanges_failed)} |",
        f"| exchange time (5 relayed messages) median / p95 / max | {ms.get('median')} / {ms.get('p95')} / "
        f"{ms.get('max')} ms |",
        f"| new rooms after the abuse | {report.late_rooms_ok} ok, {len(report.late_rooms_failed)} failed |",
        f"| server up after the abuse; exit status on SIGTERM | {report.server_up}; {report.server_exit} |",
        "", "| abusive client | what it met | as documented |", "|---|---|---|",
    ]
    for kind, outcomes in report.abuse.items():
        distinct = sorted(set(outcomes))
        lines.append(f"| {kind} (x{len(outcomes)}) | {'; '.join(distinct)[:300]} | "
                     f"{'no' if kind in report.unexpected else 'yes'} |")
    lines += ["", f"Result: **{'pass' if report.ok else 'FAIL'}** ({report.seconds:.0f} s).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.signaling_load", description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=500, help="rooms of two peers (default: %(default)s)")
    parser.add_argument("--abusers", type=int, default=10, help="abusive clients of each kind (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "signaling_load",
                        help="report folder (default: %(default)s)")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report.summary(), indent=1) + "\n")
    text = markdown(report)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
