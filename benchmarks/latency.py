"""Latency benchmark of a live call on this machine: ours against a plain VP8 + Opus WebRTC call.

    python -m benchmarks.latency --source FILE [--seconds 10] --out DIR [--save-video] [--skip-vp8]

In one run, one after the other, over real aiortc on this machine (each end its own
process, a signaling server in a third):

1. ours: `python -m receiver` and `python -m sender --source FILE --frames N` (N = seconds
   x the file's frame rate; the file loops when it is shorter), with the file's voice
   (Opus, 12 kbit/s, on the same peer connection);
2. ours again with only the small key frame (`--config` with `call_keyframe_qp: null`: no
   sharp key frame, as calls were before it), the voice on: the first picture's delay
   with and without the sharp key frame; then `--first-picture-pairs` (2) more such pairs
   of 1 s calls, the order swapped from pair to pair (one pair alone is noisy);
3. ours again with `--audio-source none`: the face's latency without the voice beside it;
4. the baseline: `python -m benchmarks.vp8_call` receive and send, a VP8 video call of the
   same 256x256 crop at the same frame rate with the file's sound (aiortc's Opus), capture
   stamps on a data channel.

The key frames of calls 1 and 2 (docs/call.md, "Key frames: a small one, then a sharp
one"): each one the receiver got, decoded, against the captured crop the sender coded it
from (PSNR, LPIPS-alex at the call's 256x256; `benchmarks.call_keyframes`), and the first
picture's delay after the first key frame went out; checked against issue 10's lines (the
sharp key frame's LPIPS at most 0.005; the first picture, median over the pairs, at most
100 ms later than with the small key frame alone).

Face and voice are reported apart (latency; payload and on-the-wire bitrate), and the
whole call's bitrate beside the plain call's.

Latency is measured the same way for both: from the sender's capture of a frame (the
moment it is taken from the paced file) to the moment the receiver has the picture as RGB
(ours: synthesized; VP8: decoded), both on this machine's wall clock.  Reported: latency
median and p95, frames delivered, bitrate (payload and on the wire), CPU per process
(from /proc/PID/stat: user + system time, children included, over the streaming window),
and for ours a per-stage breakdown from the per-frame traces of both ends (capture,
analysis, coding, network, decoding, queue, synthesis).

Writes DIR/report.md, DIR/results.json, DIR/latency.png, and the raw traces and stats of
every process in DIR/raw/ (with the key frame records and crops of calls 1 and 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks import host
from benchmarks.call_keyframes import (
    KeyframeCheckError,
    KeyframeQuality,
    first_of,
    first_picture,
    first_picture_pairs,
    keyframe_quality,
    sender_qps,
)
from live.audio import RTP_OVERHEAD_BYTES
from live.config import LiveConfig
from live.stats import summary
from models.synthesizers import DEFAULT_SYNTH, SYNTHS

log = logging.getLogger("benchmarks.latency")
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {"median_ms": 80.0, "p95_ms": 150.0, "rendered": 0.95}
STAGES = ("capture", "analysis", "coding", "network", "decoding", "queue", "synthesis")
#: issue 10: the sharp key frame's LPIPS against its crop, and the first picture's delay over
#: a call with the small key frame alone
KEYFRAME_TARGETS = {"sharp_lpips": 0.005, "first_picture_extra_ms": 100.0}
NO_SHARP_CONFIG = "call_keyframe_qp: null\n"
PAIR_SECONDS = 1.0      # the short calls of --first-picture-pairs


# -- processes and CPU -------------------------------------------------------------------

def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its waited-for children, in seconds."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


class CpuSampler:
    """Samples the CPU time of some processes a few times a second (wall time, cpu s)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._pids: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        self._pids[name] = pid
        self.samples[name] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for name, pid in list(self._pids.items()):
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self.samples[name].append((now, cpu))
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def usage(self, name: str, t0: float, t1: float) -> dict:
        """CPU % of one core over the wall-time window [t0, t1] (seconds), and CPU seconds
        of the whole process lifetime as last seen."""
        s = self.samples.get(name) or []
        if len(s) < 2 or t1 <= t0:
            return {"cpu_percent": None, "cpu_seconds_total": s[-1][1] if s else None}
        t = np.array([x[0] for x in s])
        c = np.array([x[1] for x in s])
        used = float(np.interp(t1, t, c) - np.interp(t0, t, c))
        return {"cpu_percent": round(100 * used / (t1 - t0), 1), "cpu_seconds_total": round(float(c[-1]), 2)}


class Run:
    """Processes of one call; all killed at the end."""

    def __init__(self, raw: Path, sampler: CpuSampler, prefix: str) -> None:
        self.raw, self.sampler, self.prefix = raw, sampler, prefix
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DISPLAY", None)
        log_file = open(self.raw / f"{self.prefix}_{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log_file.close()
        self.procs[name] = proc
        self.sampler.watch(f"{self.prefix}_{name}", proc.pid)
        return proc

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.prefix} {name} did not finish within {timeout:.0f} s "
                               f"(see {self.raw / f'{self.prefix}_{name}.log'})") from None

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_signaling(raw: Path) -> tuple[subprocess.Popen, str]:
    log_path = raw / "signaling.log"
    with open(log_path, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "signaling", "--port", "0"], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"signaling server listening on (ws://\S+)", log_path.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the signaling server did not start")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the two calls -----------------------------------------------------------------------

def keyframe_dirs(raw: Path, prefix: str) -> tuple[Path, Path]:
    """Where a call keeps its key frames: the receiver's records, the sender's crops."""
    return raw / f"{prefix}_keyframes", raw / f"{prefix}_keyframe_crops"


def run_ours(url: str, source: Path, frames: int, loop: bool, raw: Path, sampler: CpuSampler,
             save_video: bool, timeout: float, synth: str = DEFAULT_SYNTH, voice: bool = True, prefix: str = "ours",
             sender_options: Sequence[str] = ()) -> dict:
    """Our call; with the file's voice (12 kbit/s Opus on the same connection) or without
    (`--audio-source none`); `sender_options`: more options of the sender (`--config`)."""
    run = Run(raw, sampler, prefix)
    room = f"{prefix}-{os.getpid()}"
    records, crops = keyframe_dirs(raw, prefix)
    for folder in (records, crops):
        shutil.rmtree(folder, ignore_errors=True)      # no key frames of an earlier run
    try:
        recv_args = ["receiver", "--signaling", url, "--room", room, "--stats", str(raw / f"{prefix}_receiver.json"),
                     "--trace", str(raw / f"{prefix}_receiver_trace.jsonl"), "--synth", synth,
                     "--audio-output", "none", "--dump-keyframes", str(records)]
        if save_video:
            recv_args += ["--output", str(raw.parent / f"{prefix}.mp4")]
        run.start("receiver", *recv_args)
        send_args = ["sender", "--signaling", url, "--room", room, "--source", str(source), "--frames", str(frames),
                     "--sender-stats", str(raw / f"{prefix}_sender.json"), "--trace-sender",
                     str(raw / f"{prefix}_sender_trace.jsonl"), "--dump-keyframe-crops", str(crops),
                     *sender_options] + (["--loop"] if loop else [])
        if not voice:
            send_args += ["--audio-source", "none"]
        run.start("sender", *send_args)
        for name in ("sender", "receiver"):
            rc = run.wait(name, timeout)
            if rc != 0:
                raise RuntimeError(f"{prefix}: {name} exited with {rc} (see {raw / f'{prefix}_{name}.log'})")
    finally:
        run.kill_all()
    sent = {r["frame"]: r for r in read_jsonl(raw / f"{prefix}_sender_trace.jsonl")}
    got = {r["frame"]: r for r in read_jsonl(raw / f"{prefix}_receiver_trace.jsonl")}
    rstats = json.loads((raw / f"{prefix}_receiver.json").read_text())
    sstats = json.loads((raw / f"{prefix}_sender.json").read_text())
    t0 = min(r["capture"] for r in sent.values()) / 1000
    t1 = max(r["ready"] for r in got.values()) / 1000
    fps = rstats["fps"]
    seconds = frames / fps
    stages = {k: [] for k in STAGES}
    for f, r in got.items():
        s = sent.get(f)
        if s is None:
            continue
        stages["capture"].append(s["analysis_start"] - s["capture"])
        stages["analysis"].append(s["analysed"] - s["analysis_start"])
        stages["coding"].append(s["sent"] - s["analysed"])
        stages["network"].append(r["arrival"] - s["sent"])
        stages["decoding"].append(r["decoded"] - r["arrival"])
        stages["queue"].append(r["render_start"] - r["decoded"])
        stages["synthesis"].append(r["ready"] - r["render_start"])
    latency = [r["latency"] for r in got.values()]
    app_bytes = rstats["param_bytes"] + rstats["keyframe_bytes_total"] + rstats.get("eye_reference_bytes", 0)
    sound_sent, sound_got = sstats.get("audio") or {}, rstats.get("audio") or {}
    wire = sstats.get("wire_bytes_sent")
    sound_wire = sound_sent.get("wire_bytes") or 0
    rate = (lambda n: round(n * 8 / 1000 / seconds, 2) if n is not None else None)  # noqa: E731
    audio = {"frames_received": sound_got.get("frames"), "latency_ms": sound_got.get("latency_ms"),
             "payload_kbps": sound_sent.get("payload_kbps"), "wire_kbps": sound_sent.get("wire_kbps"),
             "clock_kbps": sound_sent.get("clock_kbps"), "packets": sound_sent.get("packets")}
    out = {
        "voice": voice,
        "audio": audio,
        "face_wire_kbps": rate(wire - sound_wire) if wire else None,
        "total_payload_kbps": rate(app_bytes + (sound_sent.get("payload_bytes") or 0)),
        "total_wire_kbps": rate(wire),
        "frames_sent": len(sent),
        "frames_rendered": rstats["frames_rendered"],
        "synthesis_frames": rstats.get("synthesis_frames"),
        "delivered": round(rstats["frames_rendered"] / frames, 4),
        "frames_lost": rstats["frames_lost"],
        "frames_dropped_stale": rstats["frames_dropped_stale"],
        "latency_ms": summary(latency),
        "latency_per_frame": [[f, got[f]["latency"]] for f in sorted(got)],
        "stages_ms": {k: summary(v) for k, v in stages.items()},
        "param_kbps": rstats["param_kbps"],
        "keyframe_bytes": rstats["keyframe_bytes"],
        "keyframe_record_bytes": rstats["keyframe_record_bytes"],
        "keyframe_bytes_total": rstats["keyframe_bytes_total"],
        "keyframe_bytes_small": rstats.get("keyframe_bytes_small"),
        "keyframe_bytes_sharp": rstats.get("keyframe_bytes_sharp"),
        "eye_reference_bytes": rstats.get("eye_reference_bytes"),
        "first_picture_ms": asdict(first_picture(sstats, sent, got)),
        "sharp_after_first_ms": rstats.get("sharp_after_first_ms"),
        "sharp_switches": sstats.get("sharp_switches"),
        "payload_kbps": round(app_bytes * 8 / 1000 / seconds, 2),
        "wire_kbps": (round(sstats["wire_bytes_sent"] * 8 / 1000 / seconds, 2)
                      if sstats.get("wire_bytes_sent") else None),
        "cpu": {"sender": sampler.usage(f"{prefix}_sender", t0, t1),
                "receiver": sampler.usage(f"{prefix}_receiver", t0, t1),
                "signaling": sampler.usage("signaling", t0, t1)},
        "window_s": round(t1 - t0, 2),
    }
    return out


def run_vp8(url: str, source: Path, frames: int, loop: bool, raw: Path, sampler: CpuSampler, timeout: float) -> dict:
    run = Run(raw, sampler, "vp8")
    room = f"vp8-{os.getpid()}"
    try:
        run.start("receiver", "benchmarks.vp8_call", "receive", "--signaling", url, "--room", room,
                  "--stats", str(raw / "vp8_receiver.json"), "--trace", str(raw / "vp8_receiver_trace.jsonl"))
        run.start("sender", "benchmarks.vp8_call", "send", "--signaling", url, "--room", room, "--source", str(source),
                  "--frames", str(frames), "--stats", str(raw / "vp8_sender.json"),
                  "--trace", str(raw / "vp8_sender_trace.jsonl"), *(["--loop"] if loop else []))
        for name in ("sender", "receiver"):
            rc = run.wait(name, timeout)
            if rc != 0:
                raise RuntimeError(f"vp8: {name} exited with {rc} (see {raw / f'vp8_{name}.log'})")
    finally:
        run.kill_all()
    sent = {r["frame"]: r for r in read_jsonl(raw / "vp8_sender_trace.jsonl")}
    got = {r["frame"]: r for r in read_jsonl(raw / "vp8_receiver_trace.jsonl")}
    rstats = json.loads((raw / "vp8_receiver.json").read_text())
    sstats = json.loads((raw / "vp8_sender.json").read_text())
    seconds = frames / sstats["fps"]
    rate = (lambda n: round(n * 8 / 1000 / seconds, 2) if n is not None else None)  # noqa: E731
    sound_payload = sstats.get("audio_rtp_bytes_sent")
    sound_wire = (sound_payload + RTP_OVERHEAD_BYTES * (sstats.get("audio_rtp_packets_sent") or 0)
                  if sound_payload is not None else None)
    wire = sstats.get("wire_bytes_sent")
    t0 = min(r["capture"] for r in sent.values()) / 1000
    t1 = max(r["ready"] for r in got.values()) / 1000 if got else t0
    return {
        "frames_sent": sstats["frames_sent"],
        "frames_rendered": rstats["frames_matched"],
        "delivered": round(rstats["frames_matched"] / frames, 4),
        "latency_ms": summary(r["latency"] for r in got.values()),
        "latency_per_frame": [[f, got[f]["latency"]] for f in sorted(got)],
        "payload_kbps": round(sstats["rtp_bytes_sent"] * 8 / 1000 / seconds, 2),
        "wire_kbps": (round(sstats["wire_bytes_sent"] * 8 / 1000 / seconds, 2)
                      if sstats.get("wire_bytes_sent") else None),
        "audio": {"payload_kbps": rate(sound_payload), "wire_kbps": rate(sound_wire),
                  "frames_received": rstats.get("audio_frames_received")},
        "face_wire_kbps": rate(wire - (sound_wire or 0)) if wire else None,
        "total_payload_kbps": rate(sstats["rtp_bytes_sent"] + (sound_payload or 0)),
        "total_wire_kbps": rate(wire),
        "cpu": {"sender": sampler.usage("vp8_sender", t0, t1), "receiver": sampler.usage("vp8_receiver", t0, t1),
                "signaling": sampler.usage("signaling", t0, t1)},
        "window_s": round(t1 - t0, 2),
    }


# -- the key frames of calls 1 and 2 ------------------------------------------------------

def measure_keyframes(raw: Path, pairs: list[tuple[dict, dict]]) -> dict:
    """Every key frame the receivers of `ours` and `no_sharp` got, against the sender's crop
    (PSNR, LPIPS-alex), the first small and sharp ones apart; and the first picture's delay
    after the first key frame went out, with the sharp key frame and without, over `pairs`
    of calls (with, without; the first pair: `ours`, `no_sharp`)."""
    from benchmarks.metrics import LPIPS

    out: dict = {"errors": []}
    lpips = None
    try:
        lpips = LPIPS()
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        out["errors"].append(f"no LPIPS-alex weights: {exc}")
    for prefix in ("ours", "no_sharp"):
        records, crops = keyframe_dirs(raw, prefix)
        sender_log = raw / f"{prefix}_sender.log"
        qps = sender_qps(sender_log.read_text()) if sender_log.exists() else {}
        quality: list[KeyframeQuality] = []
        try:
            quality = keyframe_quality(records, crops, lpips, qps)
        except KeyframeCheckError as exc:
            out["errors"].append(f"{prefix}: {exc}")
        out[prefix] = [asdict(q) for q in quality]
        for kind in ("small", "sharp"):
            first = first_of(quality, kind)
            out[f"{prefix}_{kind}"] = asdict(first) if first is not None else None
    out["first_picture_ms"] = first_picture_pairs([(a["first_picture_ms"]["after_keyframe_ms"],
                                                     b["first_picture_ms"]["after_keyframe_ms"]) for a, b in pairs])
    return out


def first_picture_calls(url: str, source: Path, frames: int, loop: bool, raw: Path, sampler: CpuSampler,
                        timeout: float, synth: str, no_sharp: Path, count: int) -> list[tuple[dict, dict]]:
    """`count` more pairs of short calls (`frames` frames, the voice on), with the sharp key
    frame and without, the order swapped from pair to pair: (with, without) each."""
    pairs = []
    for i in range(count):
        got = {}
        for kind in (("small", "sharp") if i % 2 == 0 else ("sharp", "small")):
            options = ("--config", str(no_sharp)) if kind == "small" else ()
            got[kind] = run_ours(url, source, frames, loop, raw, sampler, False, timeout, synth,
                                 prefix=f"pair{i + 2}_{kind}", sender_options=options)
        log.info("pair %d: first picture %s ms with the sharp key frame, %s ms without", i + 2,
                 got["sharp"]["first_picture_ms"]["after_keyframe_ms"],
                 got["small"]["first_picture_ms"]["after_keyframe_ms"])
        pairs.append((got["sharp"], got["small"]))
    return pairs


# -- report ------------------------------------------------------------------------------

def _f(x, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def acceptance(ours: dict) -> list[tuple[str, str, str, bool]]:
    lat = ours["latency_ms"]
    return [
        ("latency median", f"<= {TARGETS['median_ms']:.0f} ms", f"{_f(lat['median'])} ms",
         lat["median"] is not None and lat["median"] <= TARGETS["median_ms"]),
        ("latency p95", f"<= {TARGETS['p95_ms']:.0f} ms", f"{_f(lat['p95'])} ms",
         lat["p95"] is not None and lat["p95"] <= TARGETS["p95_ms"]),
        ("frames rendered", f">= {100 * TARGETS['rendered']:.0f} %", f"{100 * ours['delivered']:.1f} %",
         ours["delivered"] >= TARGETS["rendered"]),
    ]


def keyframe_acceptance(keys: dict | None) -> list[tuple[str, str, str, bool]]:
    """Issue 10's two lines, from `measure_keyframes`."""
    if keys is None:
        return []
    sharp, small = keys.get("ours_sharp"), keys.get("ours_small")
    lp = sharp["lpips"] if sharp else None
    if sharp is None:
        measured = "no sharp key frame received"
    else:
        measured = f"{_f(lp, 4)} (the small one: {_f(small['lpips'] if small else None, 4)})"
    fp = keys["first_picture_ms"]
    extra = fp["extra"]
    return [
        ("sharp key frame LPIPS-alex against its crop (256)", f"<= {KEYFRAME_TARGETS['sharp_lpips']}", measured,
         lp is not None and lp <= KEYFRAME_TARGETS["sharp_lpips"]),
        ("first picture after the first key frame went out", "<= small key frame only + "
         f"{KEYFRAME_TARGETS['first_picture_extra_ms']:.0f} ms",
         f"{_f(fp['with_sharp'], 0)} ms vs {_f(fp['small_only'], 0)} ms: {_f(extra, 0)} ms "
         f"(median of {len(fp['pairs'])} pair(s); largest {_f(fp['extra_max'], 0)} ms)",
         extra is not None and extra <= KEYFRAME_TARGETS["first_picture_extra_ms"]),
    ]


def keyframe_section(keys: dict, ours: dict, small_only: dict) -> list[str]:
    """The report's lines on the key frames of calls 1 and 2."""
    def kf(name: str, field: str, nd: int = 1) -> str:
        x = (keys.get(name) or {}).get(field)
        return "n/a" if x is None else (str(x) if isinstance(x, int) else _f(x, nd))

    def fp(res: dict, field: str) -> str:
        return _f(res["first_picture_ms"][field], 0)

    cols = ("ours_small", "ours_sharp", "no_sharp_small")
    lines = [
        "## Key frames: the small one, then the sharp one (issue 10)", "",
        "Each key frame as the receiver got it (`--dump-keyframes`), decoded, against the crop the sender "
        "coded it from (`--dump-keyframe-crops`, lossless), at the call's size.  Call 1 is ours above; "
        "call 2 the same call with the small key frame only (`call_keyframe_qp: null`, as calls were "
        "before the sharp one), with the voice, run right after it.", "",
        "| | small key frame | sharp key frame | small key frame only (call 2) |",
        "|---|---|---|---|",
        "| key id | " + " | ".join(kf(c, "key_id") for c in cols) + " |",
        "| QP (sender's log) | " + " | ".join(kf(c, "qp") for c in cols) + " |",
        "| bytes (KEYFRAME message) | " + " | ".join(kf(c, "message_bytes") for c in cols) + " |",
        "| size (pixels) | " + " | ".join(kf(c, "size") for c in cols) + " |",
        "| PSNR against its crop (dB) | " + " | ".join(kf(c, "psnr_db", 2) for c in cols) + " |",
        "| LPIPS-alex against its crop | " + " | ".join(kf(c, "lpips", 4) for c in cols) + " |",
        "",
        "| first picture, calls 1 and 2 (ms) | with the sharp key frame | small key frame only |",
        "|---|---|---|",
        f"| after the first key frame went out | {fp(ours, 'after_keyframe_ms')} | "
        f"{fp(small_only, 'after_keyframe_ms')} |",
        f"| after the sender's session opened | {fp(ours, 'after_session_ms')} | "
        f"{fp(small_only, 'after_session_ms')} |",
        f"| after the capture of the first frame sent | {fp(ours, 'after_capture_ms')} | "
        f"{fp(small_only, 'after_capture_ms')} |",
        f"| that capture, after the first key frame went out | {fp(ours, 'capture_after_keyframe_ms')} | "
        f"{fp(small_only, 'capture_after_keyframe_ms')} |",
        f"| face latency median / p95 (ms) | {_f(ours['latency_ms']['median'])} / {_f(ours['latency_ms']['p95'])} | "
        f"{_f(small_only['latency_ms']['median'])} / {_f(small_only['latency_ms']['p95'])} |",
        f"| frames delivered | {ours['frames_rendered']} | {small_only['frames_rendered']} |",
        "",
        "The first key frame goes out when the session is open and the small key frame is coded (the "
        "later of the two); the sharp one is coded right after the small one (VVenC, on the sender's key "
        "frame thread) and follows it, paced.  A file sender captures its first frame when the receiver says "
        "`ready` for the small key frame, so the first picture's delay is that wait plus the first "
        "frame's latency.  "
        f"The first picture from the sharp key frame came {_f(ours.get('sharp_after_first_ms'), 0)} ms "
        "after the first picture.",
        "",
        f"The first picture after the first key frame went out, per pair of calls (pair 1: calls 1 and 2; "
        f"the others: {PAIR_SECONDS:.0f} s calls with the voice, `--first-picture-pairs`, the order swapped "
        "from pair to pair; one pair alone moves by hundreds of ms on a busy machine):",
        "",
        "| pair | with the sharp key frame (ms) | small key frame only (ms) | difference (ms) |",
        "|---|---|---|---|",
    ]
    fp_all = keys["first_picture_ms"]
    lines += [f"| {i} | {_f(r['with_sharp'], 0)} | {_f(r['small_only'], 0)} | {_f(r['extra'], 0)} |"
              for i, r in enumerate(fp_all["pairs"], 1)]
    lines += [f"| median | {_f(fp_all['with_sharp'], 0)} | {_f(fp_all['small_only'], 0)} | "
              f"{_f(fp_all['extra'], 0)} |", ""]
    lines += [f"**Key frame check:** {e}" for e in keys.get("errors") or []]
    return lines


def plot(path: Path, ours: dict, vp8: dict | None, silent: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, res, colour in (("ours, with the voice", ours, "tab:blue"),
                              ("ours, no voice", silent, "tab:green"),
                              ("VP8 + Opus call", vp8, "tab:orange")):
        if not res or not res["latency_per_frame"]:
            continue
        f, lat = np.array(res["latency_per_frame"]).T
        ax1.plot(f, lat, ".", ms=3, color=colour, label=name)
        s = np.sort(lat)
        ax2.plot(s, np.arange(1, len(s) + 1) / len(s), color=colour, label=name)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.axhline(TARGETS["median_ms"], color="grey", ls="--", lw=0.8)
    ax1.set(xlabel="frame", ylabel="latency (ms), capture to picture ready", title="Per-frame latency")
    ax2.axvline(TARGETS["median_ms"], color="grey", ls="--", lw=0.8)
    ax2.axvline(TARGETS["p95_ms"], color="grey", ls=":", lw=0.8)
    ax2.set(xlabel="latency (ms)", ylabel="fraction of frames", title="Latency distribution")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(path: Path, settings: dict, ours: dict, vp8: dict | None, vp8_error: str | None,
                 silent: dict | None = None, small_only: dict | None = None, keys: dict | None = None) -> None:
    v = vp8 or {}
    q = silent or {}
    cols = (ours, q, v)

    def cell(res: dict, *keys, nd: int = 1) -> str:
        x = res
        for k in keys:
            x = (x or {}).get(k) if isinstance(x, dict) else None
        return _f(x, nd) if not isinstance(x, dict) else "n/a"

    def row(label: str, *keys, nd: int = 1) -> str:
        return f"| {label} | " + " | ".join(cell(r, *keys, nd=nd) for r in cols) + " |"

    def delivered(res: dict) -> str:
        if not res:
            return "n/a"
        return f"{res['frames_rendered']} / {settings['frames']} ({100 * res['delivered']:.1f} %)"

    def cpu(res, who):
        return _f(((res.get("cpu") or {}).get(who) or {}).get("cpu_percent"))

    lines = [
        "# Live call latency and bitrate: ours (with and without the voice) against a VP8 + Opus WebRTC call",
        "",
        f"Run {settings['date']} on {settings['machine']}; source `{settings['source']}` "
        f"({settings['fps']:.2f} fps), {settings['frames']} frames ({settings['seconds']} s), 256x256 crop, "
        "each end a separate process on this machine, aiortc over the machine's network interface, "
        "one call after the other: ours with the file's voice, ours with the small key frame only (below), "
        "ours with `--audio-source none`, then VP8 + Opus.",
        f"Load average before the run: {settings['load_before']}.",
        "",
        "Face latency: from the sender's capture of a frame to the moment the receiver has the picture "
        "(ours: synthesized, before any lip-sync hold; VP8: decoded to RGB), on this machine's wall clock.  "
        "Voice latency: from the capture of a voice packet's first sample to the receiver having it decoded "
        f"({LiveConfig().voice_frame_ms} ms packets, network, the voice jitter buffer's 80 ms: `live/jitter.py`).",
        "",
        "| | ours (face + voice) | ours, no voice | VP8 + Opus call |",
        "|---|---|---|---|",
        row("face latency median (ms)", "latency_ms", "median"),
        row("face latency p95 (ms)", "latency_ms", "p95"),
        row("face latency max (ms)", "latency_ms", "max"),
        f"| frames delivered (rendered / sent) | {delivered(ours)} | {delivered(q)} | {delivered(v)} |",
        row("voice latency median (ms)", "audio", "latency_ms", "median"),
        row("voice latency p95 (ms)", "audio", "latency_ms", "p95"),
        row("face payload (kbps)", "payload_kbps", nd=2),
        row("voice payload (kbps, Opus)", "audio", "payload_kbps", nd=2),
        row("whole call payload (kbps)", "total_payload_kbps", nd=2),
        row("face on the wire (kbps)", "face_wire_kbps", nd=2),
        row("voice on the wire (kbps)", "audio", "wire_kbps", nd=2),
        row("whole call on the wire (kbps)", "total_wire_kbps", nd=2),
        f"| CPU sender (% of one core) | {cpu(ours, 'sender')} | {cpu(q, 'sender')} | {cpu(v, 'sender')} |",
        f"| CPU receiver (% of one core) | {cpu(ours, 'receiver')} | {cpu(q, 'receiver')} | {cpu(v, 'receiver')} |",
        "",
        "Face payload: our parameter packets (8-byte header included), every key frame sent "
        f"(small and sharp: {ours.get('keyframe_bytes_total', 'n/a')} bytes in all) and the eye references "
        f"(the caller's shut eyes, once seen: {ours.get('eye_reference_bytes', 'n/a')} bytes), over the call; "
        f"parameters alone {_f(ours['param_kbps'], 2)} kbps.  VP8's: its RTP payload bytes.  Voice payload: Opus bytes "
        "(ours: PyAV's libopus, mono, 12 kbit/s asked; the plain call: aiortc's own encoder, fixed at 96 "
        "kbit/s stereo), plus for ours the audio clock messages "
        f"({cell(ours, 'audio', 'clock_kbps', nd=2)} kbps, on the control channel).  On the wire: the "
        "sender's DTLS bytes (SCTP, SRTP and RTCP framing included, UDP/IP headers not); both media share "
        "one bundled transport, so the voice's share is computed (its RTP payload + 36 bytes a packet: RTP "
        "header, header extensions, SRTP tag) and the face's is the rest.  The VP8 rate is aiortc's own "
        "choice (it starts at 500 kbps and follows the receiver's REMB between 250 kbps and 1.5 Mbps); "
        "nothing was forced.  CPU: user + system time (children included: VVenC for our key frame) over "
        "the streaming window, from /proc/PID/stat.",
        "",
    ]
    if vp8_error:
        lines += [f"**The VP8 call failed:** {vp8_error}", ""]
    lines += ["## Acceptance (ours, 25 fps, 256x256, this machine)", "", "| check | target | measured | |",
              "|---|---|---|---|"]
    lines += [f"| {n} | {t} | {m} | {'met' if ok else 'NOT MET'} |"
              for n, t, m, ok in acceptance(ours) + keyframe_acceptance(keys)]
    if keys is not None and small_only is not None:
        lines += [""] + keyframe_section(keys, ours, small_only)
    lines += ["", "## Where our latency goes (per frame, ms)", "", "| stage | median | p95 | what |",
              "|---|---|---|---|"]
    what = {
        "capture": "paced frame taken from the source until analysis starts",
        "analysis": "face tracking (MediaPipe), face parameters and global motion, sender worker thread",
        "coding": "quantised levels to a parameter packet, sent on the data channel",
        "network": "data channel, sender process to receiver process",
        "decoding": "packet parsing, prediction-chain check, arithmetic decoding",
        "queue": "waiting for the synthesis thread",
        "synthesis": "the receiver's synthesizer (v1: mesh warp; v2: warp and generator; torch, CPU, 1 thread)",
    }
    for k in STAGES:
        s = ours["stages_ms"][k]
        lines.append(f"| {k} | {_f(s['median'], 2)} | {_f(s['p95'], 2)} | {what[k]} |")
    drawn = ", ".join(f"{k}: {n}" for k, n in (ours.get("synthesis_frames") or {}).items())
    lines += ["", f"Frames dropped by our receiver because a newer one arrived before synthesis was free: "
              f"{ours['frames_dropped_stale']}; lost: {ours['frames_lost']}.  Frames drawn by each synthesizer "
              f"setting (`--synth {settings.get('synth')}`; with auto, receiver.pace steps down while one cannot keep "
              f"up): {drawn or 'n/a'}.", "",
              "![latency](latency.png)", ""]
    path.write_text("\n".join(lines))


# -- main --------------------------------------------------------------------------------

def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path, help="video file with a face")
    parser.add_argument("--seconds", type=float, default=10.0, help="call length (default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="report folder")
    parser.add_argument("--save-video", action="store_true", help="also write our received video (costs CPU)")
    parser.add_argument("--skip-vp8", action="store_true", help="only ours")
    parser.add_argument("--synth", default=DEFAULT_SYNTH, choices=SYNTHS,
                        help="the receiver's synthesizer (default: %(default)s: the best that keeps up, "
                             "receiver.pace)")
    parser.add_argument("--first-picture-pairs", type=_count, default=2, metavar="N",
                        help=f"N more pairs of {PAIR_SECONDS:.0f} s calls with and without the sharp key frame: the "
                             "first picture's delay is the median over all pairs (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from codec_core.video import VideoError, probe_fps, read_frames

    if not args.source.is_file():
        print(f"python -m benchmarks.latency: error: no video file at {args.source}", file=sys.stderr)
        return 1
    try:
        fps = float(probe_fps(args.source))
        length = sum(1 for _ in read_frames(args.source))
    except VideoError as exc:
        print(f"python -m benchmarks.latency: error: {exc}", file=sys.stderr)
        return 1
    frames = max(1, round(args.seconds * fps))
    loop = frames > length
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    settings = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{platform.node()} ({host.describe()})",
                "source": str(args.source), "synth": args.synth, "fps": fps, "frames": frames,
                "seconds": args.seconds, "loop": loop,
                "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    timeout = 120 + 3 * args.seconds
    sampler = CpuSampler()
    signaling, url = start_signaling(raw)
    sampler.watch("signaling", signaling.pid)
    vp8, vp8_error = None, None
    try:
        log.info("ours: %d frames of %s", frames, args.source)
        ours = run_ours(url, args.source, frames, loop, raw, sampler, args.save_video, timeout, args.synth)
        log.info("ours: latency median %s ms, p95 %s ms", ours["latency_ms"]["median"], ours["latency_ms"]["p95"])
        no_sharp_config = raw / "no_sharp.yaml"
        no_sharp_config.write_text(NO_SHARP_CONFIG)
        log.info("ours with the small key frame only: %d frames", frames)
        small_only = run_ours(url, args.source, frames, loop, raw, sampler, False, timeout, args.synth,
                              prefix="no_sharp", sender_options=("--config", str(no_sharp_config)))
        log.info("ours with the small key frame only: first picture %s ms after the key frame went out "
                 "(with the sharp one: %s ms)", small_only["first_picture_ms"]["after_keyframe_ms"],
                 ours["first_picture_ms"]["after_keyframe_ms"])
        pair_frames = max(1, round(fps * PAIR_SECONDS))
        pairs = [(ours, small_only)] + first_picture_calls(
            url, args.source, pair_frames, pair_frames > length, raw, sampler, timeout, args.synth, no_sharp_config,
            args.first_picture_pairs)
        log.info("ours without the voice: %d frames", frames)
        silent = run_ours(url, args.source, frames, loop, raw, sampler, False, timeout, args.synth, voice=False,
                          prefix="silent")
        log.info("ours without the voice: latency median %s ms, p95 %s ms", silent["latency_ms"]["median"],
                 silent["latency_ms"]["p95"])
        if not args.skip_vp8:
            log.info("VP8 call: %d frames", frames)
            try:
                vp8 = run_vp8(url, args.source, frames, loop, raw, sampler, timeout)
                log.info("VP8: latency median %s ms, p95 %s ms", vp8["latency_ms"]["median"], vp8["latency_ms"]["p95"])
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                vp8_error = str(exc)
                log.error("VP8 call failed: %s", exc)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        print(f"python -m benchmarks.latency: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signaling.terminate()
        try:
            signaling.wait(10)
        except subprocess.TimeoutExpired:
            signaling.kill()
        sampler.close()
    keys = measure_keyframes(raw, pairs)
    checks = acceptance(ours) + keyframe_acceptance(keys)
    results = {"settings": settings, "targets": {**TARGETS, **KEYFRAME_TARGETS}, "ours": ours,
               "ours_small_keyframe_only": small_only, "ours_no_voice": silent, "vp8": vp8, "vp8_error": vp8_error,
               "keyframes": keys,
               "acceptance": [{"check": n, "target": t, "measured": m, "met": ok} for n, t, m, ok in checks]}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plot(args.out / "latency.png", ours, vp8, silent)
    write_report(args.out / "report.md", settings, ours, vp8, vp8_error, silent, small_only, keys)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
