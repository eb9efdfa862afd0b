"""Soak: a long two-way call with voice, both ends' memory, CPU and face latency over time.

    python -m benchmarks.soak [--minutes 30] [--interval 5] [--out reports/soak]

A signaling server and two `python -m call` peers (real processes, real aiortc over
loopback), each sending a looped clip with its own voice (rt__3 and rt__4, both with an
audio track) and receiving the other's.  Every `--interval` seconds the resident memory
(the process and its children, e.g. a VVenC key frame coder) and the CPU use of each
process are read from /proc (psutil is not needed).  The face latency (sender's capture
to the synthesized picture, per frame) comes from each end's `--trace`.

Acceptance (issue 13): the resident memory of each call end grows less than 50 MB after
minute `--warmup` (5), and the median face latency of the last `--window` minutes (5) is
within 10% of that of the first.  Writes soak.json, soak.md (a Markdown table) and
soak.png (memory and latency over time) under `--out`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from signaling.rooms import new_room

log = logging.getLogger("benchmarks.soak")

REPO = Path(__file__).resolve().parent.parent
CLIPS = Path(os.environ.get("FACECALL_SHARED", REPO.parent / "shared")) / "data" / "clips"
PEERS = (("alice", "rt__3.mp4"), ("bob", "rt__4.mp4"))
RSS_GROWTH_MB = 50.0          # acceptance: memory growth after the warm-up
LATENCY_DRIFT = 0.10          # acceptance: last window's median latency against the first's
_LISTENING = re.compile(r"signaling server listening on (ws://\S+)")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t_s: float                        # seconds since the call started
    rss_mb: dict[str, float]          # per process (with its children)
    cpu_pct: dict[str, float]         # per process since the last sample (100 = one core)
    load1: float                      # the machine's 1-minute load average (other work on it)


@dataclass
class Soak:
    minutes: float
    interval_s: float
    warmup_min: float
    window_min: float
    samples: list[Sample] = field(default_factory=list)
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=dict)   # (t_s, ms) per frame
    stats: dict[str, dict] = field(default_factory=dict)                          # each end's final stats
    exit_codes: dict[str, int | None] = field(default_factory=dict)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])   # utime stime cutime cstime


class Sampler:
    """Resident memory and CPU of a few processes (each with its children), from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._last = {name: (_cpu_ticks(pid), time.monotonic()) for name, pid in pids.items()}

    def sample(self, t_s: float) -> Sample:
        rss, cpu = {}, {}
        for name, pid in self.pids.items():
            family = [pid, *_children(pid)]
            rss[name] = round(sum(_rss_mb(p) for p in family), 1)
            ticks, now = sum(_cpu_ticks(p) for p in family), time.monotonic()
            last_ticks, last_t = self._last[name]
            cpu[name] = round(100.0 * (ticks - last_ticks) / _TICK / max(1e-6, now - last_t), 1)
            self._last[name] = (ticks, now)
        with open("/proc/loadavg") as f:
            load1 = float(f.read().split()[0])
        return Sample(round(t_s, 1), rss, cpu, load1)


def _start(name: str, args: list[str], logs: Path) -> subprocess.Popen:
    out = open(logs / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _signaling(logs: Path) -> tuple[subprocess.Popen, str]:
    proc = _start("signaling", ["signaling", "--host", "127.0.0.1", "--port", "0"], logs)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = _LISTENING.search((logs / "signaling.log").read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"error: the signaling server did not start (see {logs / 'signaling.log'})")


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def _trace_latency(path: Path, t0_ms: float) -> list[tuple[float, float]]:
    """(seconds since the start, face latency ms) of every rendered frame in a receiver trace."""
    out: list[tuple[float, float]] = []
    if not path.exists():
        return out
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                out.append((round((row["ready"] - t0_ms) / 1000, 3), float(row["latency"])))
            except (ValueError, KeyError):
                continue     # a line cut short by the kill
    return out


def run(minutes: float, interval_s: float, out: Path, warmup_min: float, window_min: float) -> Soak:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    soak = Soak(minutes, interval_s, warmup_min, window_min)
    signaling, url = _signaling(logs)
    procs: dict[str, subprocess.Popen] = {}
    room = new_room()
    try:
        for name, clip in PEERS:
            source = CLIPS / clip
            if not source.exists():
                raise SystemExit(f"error: no test clip at {source} (../shared/data)")
            procs[name] = _start(name, ["call", "--signaling", url, "--room", room, "--source", str(source),
                                        "--loop", "--audio-output", "none", "--stats", str(out / f"{name}.json"),
                                        "--trace", str(out / f"{name}-trace.jsonl"), "--wait-peer", "60"], logs)
        sampler = Sampler({"signaling": signaling.pid, **{n: p.pid for n, p in procs.items()}})
        t0, t0_ms = time.monotonic(), time.time() * 1000
        end = t0 + minutes * 60
        next_log = t0
        while time.monotonic() < end:
            time.sleep(max(0.0, min(interval_s, end - time.monotonic())))
            sample = sampler.sample(time.monotonic() - t0)
            soak.samples.append(sample)
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                log.error("%s ended early (see %s)", ", ".join(dead), logs)
                break
            if time.monotonic() >= next_log:
                log.info("%.1f min: RSS %s MB, CPU %s %%, load %.2f", sample.t_s / 60, sample.rss_mb, sample.cpu_pct,
                         sample.load1)
                next_log += 60
    finally:
        for name, proc in procs.items():
            soak.exit_codes[name] = _stop(proc)
        soak.exit_codes["signaling"] = _stop(signaling)
    for name, _ in PEERS:
        soak.latency[name] = _trace_latency(out / f"{name}-trace.jsonl", t0_ms)
        try:
            soak.stats[name] = json.loads((out / f"{name}.json").read_text())
        except (OSError, ValueError):
            soak.stats[name] = {}
    return soak


def verdict(soak: Soak) -> dict:
    """Per call end: memory growth after the warm-up, and latency of the first and last windows."""
    result = {}
    duration = soak.samples[-1].t_s if soak.samples else 0.0
    warm = min(soak.warmup_min * 60, duration)
    window = soak.window_min * 60
    for name, _ in PEERS:
        rss = [(s.t_s, s.rss_mb[name]) for s in soak.samples]
        after = [m for t, m in rss if t >= warm]
        growth = round(max(after) - after[0], 1) if after else None
        lat = soak.latency.get(name, [])
        first = [ms for t, ms in lat if t <= window]
        last = [ms for t, ms in lat if t >= duration - window]
        f_med = float(np.median(first)) if first else None
        l_med = float(np.median(last)) if last else None
        drift = round(l_med / f_med - 1, 3) if f_med and l_med else None
        cpu = [s.cpu_pct[name] for s in soak.samples[1:]] or [0.0]
        stats = soak.stats.get(name, {})
        result[name] = {
            "rss_start_mb": rss[0][1] if rss else None, "rss_at_warmup_mb": after[0] if after else None,
            "rss_end_mb": rss[-1][1] if rss else None, "rss_growth_after_warmup_mb": growth,
            "cpu_mean_pct": round(float(np.mean(cpu)), 1),
            "latency_first_median_ms": round(f_med, 1) if f_med else None,
            "latency_last_median_ms": round(l_med, 1) if l_med else None,
            "latency_drift": drift, "frames_rendered": len(lat),
            "frames_lost": stats.get("frames_lost"), "voice_frames": (stats.get("audio") or {}).get("frames"),
            "memory_ok": growth is not None and growth < RSS_GROWTH_MB,
            "latency_ok": drift is not None and abs(drift) <= LATENCY_DRIFT,
            "exit_code": soak.exit_codes.get(name),
        }
    sig = [s.rss_mb["signaling"] for s in soak.samples]
    loads = [s.load1 for s in soak.samples] or [0.0]
    result["machine"] = {"cpus": os.cpu_count(), "load1_mean": round(float(np.mean(loads)), 2),
                         "load1_max": round(float(np.max(loads)), 2)}
    result["signaling"] = {"rss_start_mb": sig[0] if sig else None, "rss_end_mb": sig[-1] if sig else None,
                           "exit_code": soak.exit_codes.get("signaling")}
    return result


def _markdown(soak: Soak, result: dict, command: str) -> str:
    lines = [f"# Soak: a {soak.minutes:g}-minute two-way call with voice", "",
             f"`{command}`; samples every {soak.interval_s:g} s; warm-up {soak.warmup_min:g} min, "
             f"latency windows {soak.window_min:g} min.", "",
             "| end | RSS start MB | RSS at warm-up MB | RSS end MB | growth after warm-up MB (< 50) | CPU mean % | "
             "face latency first window median ms | last window median ms | drift (within 10%) | frames rendered | "
             "frames lost | voice frames | exit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, _ in PEERS:
        r = result[name]
        lines.append(f"| {name} | {r['rss_start_mb']} | {r['rss_at_warmup_mb']} | {r['rss_end_mb']} | "
                     f"{r['rss_growth_after_warmup_mb']} {'ok' if r['memory_ok'] else 'FAIL'} | {r['cpu_mean_pct']} | "
                     f"{r['latency_first_median_ms']} | {r['latency_last_median_ms']} | "
                     f"{r['latency_drift']} {'ok' if r['latency_ok'] else 'FAIL'} | {r['frames_rendered']} | "
                     f"{r['frames_lost']} | {r['voice_frames']} | {r['exit_code']} |")
    s = result["signaling"]
    m = result["machine"]
    lines += ["", f"Signaling server: RSS {s['rss_start_mb']} -> {s['rss_end_mb']} MB, exit {s['exit_code']}.",
              f"Machine: {m['cpus']} CPUs, 1-minute load average {m['load1_mean']} on average, "
              f"{m['load1_max']} at most "
              "(the latency follows the load of whatever else runs on the machine).",
              "", "![memory and latency](soak.png)", ""]
    return "\n".join(lines)


def _plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    minutes = [s.t_s / 60 for s in soak.samples]
    for name in soak.samples[0].rss_mb if soak.samples else ():
        top.plot(minutes, [s.rss_mb[name] for s in soak.samples], label=name)
    top.set_ylabel("resident memory (MB)")
    top.legend()
    for name, lat in soak.latency.items():
        if not lat:
            continue
        t = np.array([x[0] for x in lat])
        ms = np.array([x[1] for x in lat])
        edges = np.arange(0, t.max() + 10, 10)           # medians over 10 s
        idx = np.digitize(t, edges)
        centres = [(edges[i - 1] + 5) / 60 for i in np.unique(idx)]
        medians = [float(np.median(ms[idx == i])) for i in np.unique(idx)]
        bottom.plot(centres, medians, label=f"{name} (median per 10 s)")
    bottom.set_ylabel("face latency (ms)")
    bottom.set_xlabel("minutes")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the call (default: 30)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default: 5)")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before memory growth counts (default: 5)")
    parser.add_argument("--window", type=float, default=5.0,
                        help="minutes of the first and last latency windows (default: 5)")
    parser.add_argument("--out", default="reports/soak", help="report folder (default: reports/soak)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be positive")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    soak = run(args.minutes, args.interval, out, args.warmup, args.window)
    result = verdict(soak)
    data = {"command": command, **asdict(soak), "result": result}
    data.pop("latency")
    (out / "soak.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "soak.md").write_text(_markdown(soak, result, command))
    if soak.samples:
        _plot(soak, out / "soak.png")
    print(_markdown(soak, result, command))
    ok = all(result[n]["memory_ok"] and result[n]["latency_ok"] for n, _ in PEERS)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
