"""Per-frame synthesis latency of every synthesizer, backend and device present, and the
parity between backends, in one run.

    python -m benchmarks.synth --out DIR [--sizes 256 512] [--frames 100] [--threads 1]

The parameters come from stream files (one per size, made from ../shared/data/clips/rt__3.mp4
with the codec when missing, which needs MediaPipe; given ones need only the decoder), so
the timing run needs no face tracker.  For each size and each of warp/torch, learned/torch,
learned/torch with its regional refiner (`--regions`) and learned/onnx (on the CPU, and on
CUDA when present): build the synthesizer for the key frame, render a few frames to warm
up, then time `render` on every frame (median and p95 ms).  Parity: the largest per-pixel
difference between the learned synthesizer on torch and on ONNX Runtime over the same
frames.  Writes DIR/report.md and DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import host
from codec.decoder import FaceDecoder, decode_segment, read_stream
from models.synthesizers import Synthesis

log = logging.getLogger("benchmarks.synth")
CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips" / "rt__3.mp4"
WARMUP = 5


def _start_of(path: Path, count: int) -> bytes:
    with path.open("rb") as f:
        return f.read(count)


def stream_for(size: int, work: Path, frames: int) -> Path:
    """The benchmark's stream at `size`, encoded from CLIP when it is not there yet (or was
    made by another stream version, which the decoder would refuse)."""
    from codec_core.bitstream import write_file_start

    path = work / f"rt__3_{size}.fcv"
    start = write_file_start()
    if path.exists() and _start_of(path, len(start)) != start:
        log.info("%s is of another stream version: encoded again", path)
        path.unlink()
    if not path.exists():
        from codec.encoder import encode_video
        from codec_core.config import load_config
        from models.face_model import FaceBasis

        work.mkdir(parents=True, exist_ok=True)
        encode_video(CLIP, path, load_config().with_overrides(size=size), FaceBasis.load(), max_frames=frames)
    return path


def choices() -> list[Synthesis]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for device in devices:
        out += [Synthesis("warp", "torch", device), Synthesis("learned", "torch", device),
                Synthesis("learned", "torch", device, regions=True)]
        try:
            import onnxruntime

            if device == "cpu" or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                out.append(Synthesis("learned", "onnx", device))
        except ImportError:
            log.warning("onnxruntime is not installed: no onnx backend")
    return out


def time_one(stream: Path, synthesis: Synthesis) -> tuple[dict, np.ndarray]:
    parsed = read_stream(stream)
    decoder = FaceDecoder(parsed.header, synthesis=synthesis)
    t0 = time.perf_counter()
    decoder.set_keyframe(parsed.keyframe, parsed.eyes)
    setup = time.perf_counter() - t0
    levels = [lv for seg in parsed.segments for lv in decode_segment(seg, parsed.header.values_per_frame)]
    params = [(decoder.params(lv), decoder.motion(lv)) for lv in levels]
    for p, m in params[:WARMUP]:
        decoder.render(p, m)
    times, frames = [], []
    for p, m in params:
        t = time.perf_counter()
        frames.append(decoder.render(p, m))
        if synthesis.device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    ms = np.array(times)
    name = f"{synthesis.synth} --regions" if synthesis.regions else synthesis.synth
    return ({"synth": name, "backend": synthesis.backend, "device": synthesis.device,
             "median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
             "key_frame_setup_ms": round(setup * 1000, 1), "frames": len(ms)}, np.stack(frames))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (report.md, results.json, streams)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=(256, 512))
    ap.add_argument("--frames", type=int, default=100, help="frames of the streams it makes (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and ONNX Runtime threads (default %(default)s, as the live receiver)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    rows, parity = [], {}
    for size in args.sizes:
        stream = stream_for(size, args.out, args.frames)
        pictures = {}
        for synthesis in choices():
            row, frames = time_one(stream, synthesis)
            rows.append({"size": size, **row})
            pictures[(row["synth"], synthesis.backend, synthesis.device)] = frames
            print(json.dumps(rows[-1]), flush=True)
        for device in ("cpu", "cuda"):
            a, b = pictures.get(("learned", "torch", device)), pictures.get(("learned", "onnx", device))
            if a is not None and b is not None:
                parity[f"{size} {device}"] = int(np.abs(a.astype(int) - b.astype(int)).max())
    machine = f"{host.describe()}, {args.threads} thread(s), torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    lines = [f"# Synthesis latency per frame ({machine})", "",
             "| size | synthesizer | backend | device | median ms | p95 ms | key frame set-up ms |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['synth']} | {r['backend']} | {r['device']} | {r['median_ms']} | {r['p95_ms']} | "
              f"{r['key_frame_setup_ms']} |" for r in rows]
    lines += ["", "Parity, learned torch against ONNX Runtime (largest per-pixel difference, grey levels): "
              + (", ".join(f"{k}: {v}" for k, v in parity.items()) or "no ONNX Runtime")]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows, "parity": parity}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
