"""A live call over emulated bad networks: loss, a rate cap, delay and jitter, reordering,
an outage.  Needs root (network namespaces, `benchmarks.netem`).

    python -m benchmarks.network [--scenarios loss5,loss10,...] [--source CLIP] [--out reports/network]

Each scenario is one real call between real processes: `python -m sender` (the clip, looped,
with its voice) in namespace A, `python -m receiver` in namespace B, the signaling server in
the middle namespace M, which is the peers' only route to each other (`netem.topology`).
Impairments act in M on everything it forwards, in both directions: loss and the outage
with nftables, the cap with tbf, delay / jitter / reordering with the TUN router
(`netem.router`).  A packet log of B's interface (`netem.sniff`) times the voice's RTP
packets.

Measured per scenario (the picture times are the receiver's `--trace`, wall clock):

| number | meaning |
|---|---|
| frames sent / rendered | parameter packets the sender sent, pictures the receiver synthesized |
| longest freeze, p95 freeze | the longest and the 95th percentile of the intervals between consecutive pictures |
| recovery | the outage: from the link's return to the next picture |
| audio gaps | the longest interval between voice (RTP) packets arriving at B; gaps over 100 ms; packets missing |
| face latency | the sender's capture to the picture synthesized: median and p95 |
| broken chain | frames decoded with levels not the sender's (`--dump-levels` against `--dump-sent`): must be 0 |
| in transit | the cap: first picture to first sharp picture; face latency p95 and voice packets meanwhile |

Writes OUT/report.md (a table and the acceptance checks), OUT/results.json, OUT/network.png
(the intervals between pictures over each call) and every process's logs and dumps in
OUT/raw/SCENARIO/.  The machine's load average is recorded beside each scenario: on a
busy machine, synthesis and analysis time show up as latency and freezes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.netem.topology import GATEWAY_A, GATEWAY_B, Topology, unavailable
from benchmarks.processes import REPO, Processes
from signaling.rooms import new_room

log = logging.getLogger("benchmarks.network")
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "clips" / "rt__3.mp4"
AUDIO_GAP_MS = 100.0          # voice gaps counted from this long
WAIT_PEER_S = 3.0             # the receiver's --wait-peer: the sender's bye can overtake its "end" (delayed)
_LISTENING = re.compile(r"signaling server listening on wss?://\S+:(\d+)")


@dataclass(frozen=True)
class Scenario:
    """One network condition; all impairments act in both directions."""

    name: str
    title: str
    seconds: float                    # the call's length (frames sent = seconds x the clip's fps)
    loss_pct: int = 0
    rate_kbit: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_pct: float = 0.0
    reorder_ms: float = 40.0
    outage_s: float = 0.0             # the link gone this long ...
    outage_after_s: float = 0.0       # ... this long after the first picture

    @property
    def routed(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.reorder_pct)


SCENARIOS = {s.name: s for s in (
    Scenario("loss5", "5% random loss", 30, loss_pct=5),
    Scenario("loss10", "10% random loss", 30, loss_pct=10),
    Scenario("loss20", "20% random loss, 60 s", 60, loss_pct=20),
    Scenario("cap64", "64 kbit/s cap (the sharp key frame in transit)", 20, rate_kbit=64),
    Scenario("cap128", "128 kbit/s cap (the sharp key frame in transit)", 20, rate_kbit=128),
    Scenario("delay100", "100 ms delay, 30 ms jitter", 30, delay_ms=100, jitter_ms=30),
    Scenario("reorder", "reordering: 10% of packets 40 ms late (20 ms delay)", 30, delay_ms=20, reorder_pct=10,
             reorder_ms=40),
    Scenario("outage2", "2-second outage", 25, outage_s=2, outage_after_s=8),
)}


@dataclass
class CallRun:
    """What one call left behind: its files and the wall-clock moments of the outage."""

    scenario: Scenario
    raw: Path
    fps: float
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    outage_ms: tuple[float, float] | None = None      # wall ms: link gone, link back
    nft_dropped: int = 0
    load: tuple[float, float] = (0.0, 0.0)            # 1-minute load average at the start and the end

    def path(self, name: str) -> Path:
        return self.raw / name


# -- running a call ----------------------------------------------------------------------

def clip_fps(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 25.0


def _first_picture(stats: Path) -> bool:
    """Whether the receiver has shown a picture (its --stats file, rewritten every second;
    the trace is written in large blocks)."""
    return bool(read_json(stats).get("frames_rendered"))


def run_call(scenario: Scenario, clip: Path, raw: Path, start_timeout: float = 90.0) -> CallRun:
    """One call through `scenario` (needs root); its files land in `raw`."""
    raw.mkdir(parents=True, exist_ok=True)
    for old in raw.iterdir():
        old.unlink()
    fps = clip_fps(clip)
    run = CallRun(scenario, raw, fps, load=(os.getloadavg()[0], 0.0))
    frames = int(round(scenario.seconds * fps))
    room = new_room()
    with Topology() as net, Processes(raw) as procs:
        procs.launch("signaling", net.python(net.ns_m, "signaling", "--host", "0.0.0.0", "--port", "0"))
        port = procs.wait_log("signaling", _LISTENING, 30).group(1)
        procs.launch("sniff", net.python(net.ns_b, "benchmarks.netem.sniff", "--iface", "v",
                                        "--out", str(run.path("sniff.jsonl"))))
        procs.wait_log("sniff", "ready", 30)
        if scenario.routed:
            procs.launch("router", net.router_command(
                "--delay-ms", str(scenario.delay_ms), "--jitter-ms", str(scenario.jitter_ms),
                "--reorder-pct", str(scenario.reorder_pct), "--reorder-ms", str(scenario.reorder_ms)))
            procs.wait_log("router", "ready", 30)
            net.route_through_router()
        if scenario.loss_pct:
            net.set_loss(scenario.loss_pct)
        if scenario.rate_kbit:
            net.set_rate(scenario.rate_kbit)
        procs.launch("receiver", net.python(
            net.ns_b, "receiver", "--signaling", f"ws://{GATEWAY_B}:{port}", "--room", room,
            "--stats", str(run.path("receiver.json")), "--dump-levels", str(run.path("received.jsonl")),
            "--trace", str(run.path("trace.jsonl")), "--audio-output", "none", "--wait-peer", str(WAIT_PEER_S)))
        procs.launch("sender", net.python(
            net.ns_a, "sender", "--signaling", f"ws://{GATEWAY_A}:{port}", "--room", room,
            "--source", str(clip), "--loop", "--frames", str(frames),
            "--sender-stats", str(run.path("sender.json")), "--dump-sent", str(run.path("sent.jsonl"))))
        deadline = time.monotonic() + start_timeout
        while not _first_picture(run.path("receiver.json")):
            if time.monotonic() > deadline or procs.procs["sender"].poll() is not None:
                break
            time.sleep(0.05)
        if scenario.outage_s:
            time.sleep(scenario.outage_after_s)
            gone = time.time() * 1000.0
            net.set_outage(True)
            time.sleep(scenario.outage_s)
            net.set_outage(False)
            run.outage_ms = (gone, time.time() * 1000.0)
        for name in ("sender", "receiver"):
            try:
                run.exit_codes[name] = procs.procs[name].wait(scenario.seconds + start_timeout)
            except subprocess.TimeoutExpired:
                run.exit_codes[name] = None
                procs.stop(name)
        run.nft_dropped = net.dropped()
        procs.stop("sniff")
    run.load = (run.load[0], os.getloadavg()[0])
    return run


# -- numbers -----------------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def picture_intervals(ready_ms: Sequence[float]) -> list[float]:
    """Seconds between consecutive pictures (sorted by time)."""
    t = np.sort(np.asarray(ready_ms, dtype=float))
    return (np.diff(t) / 1000.0).tolist()


def broken_chain(sent: list[dict], received: list[dict]) -> list[int]:
    """Frames the receiver decoded that the sender did not send as they were decoded: a
    dropped packet, an unknown frame, or other levels (a frame from a broken chain)."""
    by_frame = {r["frame"]: r for r in sent}
    bad = []
    for r in received:
        s = by_frame.get(r["frame"])
        if s is None or s.get("dropped") or s["levels"] != r["levels"]:
            bad.append(r["frame"])
    return bad


def rtp_numbers(packets: list[dict], start_ms: float | None = None, end_ms: float | None = None) -> dict:
    """The voice's packets at the receiver's interface between two wall-clock moments."""
    rtp = [p for p in packets if p["kind"] == "rtp" and (start_ms is None or p["t"] >= start_ms)
           and (end_ms is None or p["t"] <= end_ms)]
    if len(rtp) < 2:
        return {"packets": len(rtp), "longest_gap_ms": None, "gaps_over_100ms": None, "missing": None}
    times = np.array([p["t"] for p in rtp])
    gaps = np.diff(np.sort(times))
    seqs = np.unwrap(np.array([p["seq"] for p in rtp], dtype=float), period=65536)
    span = int(seqs.max() - seqs.min()) + 1
    return {"packets": len(rtp), "longest_gap_ms": round(float(gaps.max()), 1),
            "gaps_over_100ms": int((gaps > AUDIO_GAP_MS).sum()), "missing": max(0, span - len(set(seqs.tolist())))}


def _voice_seconds(sender_stats: dict) -> float | None:
    audio = sender_stats.get("audio") or {}
    if "packets" not in audio:
        return None
    return round(audio["packets"] * audio.get("frame_ms", 20) / 1000.0, 2)


def measure(run: CallRun) -> dict:
    """The numbers of the module docstring for one call."""
    sc = run.scenario
    trace = sorted(read_jsonl(run.path("trace.jsonl")), key=lambda r: r["ready"])
    sent = read_jsonl(run.path("sent.jsonl"))
    received = read_jsonl(run.path("received.jsonl"))
    rstats = read_json(run.path("receiver.json"))
    sstats = read_json(run.path("sender.json"))
    packets = read_jsonl(run.path("sniff.jsonl"))
    ready = [r["ready"] for r in trace]
    latency = [r["latency"] for r in trace]
    intervals = picture_intervals(ready)
    sent_frames = [r["frame"] for r in sent if not r.get("dropped")]
    out: dict = {
        "scenario": sc.name, "title": sc.title, "seconds": sc.seconds,
        "exit_codes": run.exit_codes, "nft_dropped": run.nft_dropped,
        "load_avg": [round(x, 2) for x in run.load],
        "frames_sent": len(sent_frames),
        "frames_rendered": len(trace),
        "last_frame_sent": max(sent_frames, default=None),
        "last_frame_rendered": max((r["frame"] for r in trace), default=None),
        "longest_freeze_s": round(max(intervals), 3) if intervals else None,
        "p95_freeze_s": round(float(np.percentile(intervals, 95)), 3) if intervals else None,
        "face_latency_ms": {"median": pct(latency, 50), "p95": pct(latency, 95)},
        "broken_chain_frames": len(broken_chain(sent, received)),
        "frames_decoded": len(received),
        "frames_lost": rstats.get("frames_lost"),
        "loss_reports_sent": rstats.get("loss_reports_sent"),
        "keyframe_requests_sent": rstats.get("keyframe_requests_sent"),
        "keyframes_sent": sstats.get("keyframes_sent"),
        "sessions": rstats.get("sessions"),
        "audio": rtp_numbers(packets, ready[0] if ready else None, ready[-1] if ready else None),
        "audio_receiver": {k: (rstats.get("audio") or {}).get(k) for k in ("frames", "packets", "packets_lost")},
        "voice_s": {"sent": _voice_seconds(sstats), "decoded": (rstats.get("audio") or {}).get("seconds")},
    }
    if run.outage_ms is not None:
        gone, back = run.outage_ms
        after = [t for t in ready if t > back]
        out["outage_ms"] = [round(gone, 1), round(back, 1)]
        out["recovery_s"] = round((after[0] - back) / 1000.0, 3) if after else None
        out["pictures_after_outage"] = len(after)
    if sc.rate_kbit and ready:
        sharp_after = rstats.get("sharp_after_first_ms")
        end = ready[0] + sharp_after if sharp_after is not None else ready[-1]
        window = [r for r in trace if r["ready"] <= end]
        out["keyframe_transit"] = {
            "sharp_arrived": sharp_after is not None,
            "seconds": round((end - ready[0]) / 1000.0, 2),
            "pictures": len(window),
            "face_latency_p95_ms": pct([r["latency"] for r in window], 95),
            "audio": rtp_numbers(packets, ready[0], end),
            "keyframe_bytes_sharp": rstats.get("keyframe_bytes_sharp"),
        }
    out["checks"] = checks(out)
    return out


def checks(m: dict) -> dict:
    """The issue's acceptance, where it applies to this scenario (True: met)."""
    c: dict = {"no_broken_chain": m["broken_chain_frames"] == 0}
    sent, shown = m["last_frame_sent"], m["last_frame_rendered"]
    # pictures until the end (the last within 2 s of frames of the last sent), never 5 s without one
    c["call_goes_on"] = (sent is not None and shown is not None and shown >= sent - 50
                         and m["longest_freeze_s"] is not None and m["longest_freeze_s"] < 5.0)
    if m["scenario"] == "loss20":
        c["p95_freeze_le_0.5s"] = m["p95_freeze_s"] is not None and m["p95_freeze_s"] <= 0.5
        c["longest_freeze_le_1.5s"] = m["longest_freeze_s"] is not None and m["longest_freeze_s"] <= 1.5
    if "recovery_s" in m:
        c["pictures_within_1.5s_of_return"] = m["recovery_s"] is not None and m["recovery_s"] <= 1.5
    if "keyframe_transit" in m:
        kt = m["keyframe_transit"]
        c["face_latency_p95_lt_300ms_in_transit"] = (kt["face_latency_p95_ms"] is not None
                                                     and kt["face_latency_p95_ms"] < 300)
        c["params_and_voice_flow_in_transit"] = kt["pictures"] > 0 and kt["audio"]["packets"] > 0
    return c


# -- report ------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def report_md(results: list[dict], meta: dict) -> str:
    lines = [
        "# Network benchmark: a live call over emulated bad networks",
        "",
        f"{meta['date']}, `{meta['command']}`, clip `{meta['clip']}`, {meta['cpus']} CPUs "
        f"(load average at the start {meta['load_start']:.2f}). Impairments in both directions; "
        "freezes are the intervals between consecutive pictures; audio gaps are between voice "
        "packets arriving at the receiver (module docstring of `benchmarks/network.py`).",
        "",
        "| scenario | frames sent / rendered | longest freeze s | p95 freeze s | recovery s | audio: longest gap ms, "
        "gaps > 100 ms, missing | voice decoded / sent s | face latency median / p95 ms | broken chain | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        a = m["audio"]
        lines.append(
            f"| {m['title']} | {m['frames_sent']} / {m['frames_rendered']} | {_fmt(m['longest_freeze_s'])} | "
            f"{_fmt(m['p95_freeze_s'])} | {_fmt(m.get('recovery_s'))} | {_fmt(a['longest_gap_ms'])}, "
            f"{_fmt(a['gaps_over_100ms'])}, {_fmt(a['missing'])} | {_fmt(m['voice_s']['decoded'])} / "
            f"{_fmt(m['voice_s']['sent'])} | {_fmt(m['face_latency_ms']['median'])} / "
            f"{_fmt(m['face_latency_ms']['p95'])} | {m['broken_chain_frames']} | "
            f"{m['load_avg'][0]:.1f}-{m['load_avg'][1]:.1f} |")
    lines += ["", "## Acceptance", ""]
    for m in results:
        for name, ok in m["checks"].items():
            lines.append(f"- {m['title']}: {name}: {'**met**' if ok else '**not met**'}")
    for m in results:
        if "keyframe_transit" in m:
            kt = m["keyframe_transit"]
            lines += ["", f"Key frame in transit at the cap ({m['title']}): {kt['seconds']} s from the first "
                      f"picture to the first sharp one (sharp key frame {_fmt(kt['keyframe_bytes_sharp'])} bytes, "
                      f"arrived: {kt['sharp_arrived']}); meanwhile {kt['pictures']} pictures, face latency p95 "
                      f"{_fmt(kt['face_latency_p95_ms'])} ms, {kt['audio']['packets']} voice packets, longest voice "
                      f"gap {_fmt(kt['audio']['longest_gap_ms'])} ms."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], runs: dict[str, CallRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 1.8 * len(results)), squeeze=False)
    for ax, m in zip(axes[:, 0], results):
        trace = sorted(read_jsonl(runs[m["scenario"]].path("trace.jsonl")), key=lambda r: r["ready"])
        if len(trace) > 1:
            t = np.array([r["ready"] for r in trace])
            ax.vlines((t[1:] - t[0]) / 1000.0, 0, np.diff(t) / 1000.0, lw=0.8)   # each picture: how long it waited
        if "outage_ms" in m and trace:
            t0 = trace[0]["ready"]
            ax.axvspan((m["outage_ms"][0] - t0) / 1000, (m["outage_ms"][1] - t0) / 1000, color="red", alpha=0.2)
        ax.set_ylabel("s")
        ax.set_title(f"{m['title']}: interval before each picture", fontsize=9)
    axes[-1, 0].set_xlabel("seconds since the first picture")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--source", type=Path, default=DEFAULT_CLIP, help="the clip (looped, with its voice)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "network")
    parser.add_argument("--seconds-scale", type=float, default=1.0, help="scale every call's length (quick runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    why = unavailable()
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 1
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    if not args.source.exists():
        print(f"error: no clip at {args.source}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m benchmarks.network " + " ".join(argv if argv is not None else sys.argv[1:]),
            "clip": args.source.name, "cpus": os.cpu_count(), "load_start": os.getloadavg()[0]}
    results, runs = [], {}
    for name in names:
        base = SCENARIOS[name]
        sc = Scenario(**{**asdict(base), "seconds": base.seconds * args.seconds_scale})
        log.info("%s: %s (%.0f s)", name, sc.title, sc.seconds)
        run = run_call(sc, args.source, args.out / "raw" / name)
        runs[name] = run
        m = measure(run)
        results.append(m)
        log.info("  %s", json.dumps({k: m[k] for k in ("frames_rendered", "longest_freeze_s", "p95_freeze_s",
                                                        "broken_chain_frames", "checks")}))
        (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / "report.md").write_text(report_md(results, meta))
    plot(results, runs, args.out / "network.png")
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
