"""Synthesis on CUDA where only torch, numpy, SciPy and OpenCV are installed (the lent GPU machine).

    python -m benchmarks.synth_cuda prepare [--out out/gpu]     # here: decode rt__3's streams
    python3 -m benchmarks.synth_cuda time [--inputs out/gpu] [--compile]   # there: time them

`prepare` decodes the streams of `python -m benchmarks.synth` (rt__3, 256 and 512, made with
the codec when missing) into one .npz per size: the key frame, its face model's reference,
its eye reference (the patches, their openness, which eyes have one), every frame's
parameters and global motion, so that the GPU machine (no PyAV, no MediaPipe) needs no
decoder.  `time` builds v2 (learned) and v1 (warp) on CUDA and v2 on the
CPU (1 thread), renders every frame at batch size 1 and prints one JSON line per setting:
median and p95 ms of `render` (the picture copied back to the host included) and, for v2,
of the graph alone; the largest difference between v2 on CUDA and on the CPU.  `--compile`
also times v2 as `--compile` runs it (models.learned `compiled_frame_function`:
torch.compile with CUDA graphs, the key frame an input): the compile, paid once per process
and size on a made-up key frame as a receiver pays it before its call, the real key frame's
first frame after it, and a second key frame's (without an eye reference), which reuse it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

SIZES = (256, 512)


def prepare(out: Path) -> None:
    from benchmarks.synth import stream_for
    from codec.decoder import FaceDecoder, decode_segment, read_stream
    from codec.eye_reference import decode_eye_reference
    from models.eye_reference import no_eye_patches
    from models.face_model import FaceBasis
    from models.synthesizers import Synthesis

    out.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        parsed = read_stream(stream_for(size, out, 100))
        decoder = FaceDecoder(parsed.header, FaceBasis.load(), Synthesis("warp"))
        decoder.set_keyframe(parsed.keyframe, parsed.eyes)
        assert decoder.reference is not None and decoder.keyframe is not None
        levels = [lv for seg in parsed.segments for lv in decode_segment(seg, parsed.header.values_per_frame)]
        model = decoder.reference.face_model()
        eyes = (no_eye_patches(size) if parsed.eyes is None
                else decode_eye_reference(parsed.eyes.belonging_to(parsed.keyframe.key_id), size))
        np.savez(out / f"inputs_{size}.npz", keyframe=decoder.keyframe, reference=model.reference,
                 reference_eyes=np.asarray(model.reference_eyes), ref_params=decoder.reference.reference_params(),
                 ring_weights=decoder.reference.ring_weights, params=np.stack([decoder.params(q) for q in levels]),
                 motions=np.stack([decoder.motion(q) for q in levels]),
                 **{f"eye_{name}": value.numpy() for name, value in eyes._asdict().items()})


def _eye_patches(z):
    """The eye reference `prepare` saved, or None where the stream had none."""
    from models.eye_reference import EyePatches

    eyes = EyePatches(*(torch.from_numpy(z[f"eye_{name}"]) for name in EyePatches._fields))
    return eyes if bool(eyes.present.any()) else None


def _timed(render, frames: list, sync: bool) -> list[float]:
    times = []
    for args in frames:
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        render(*args)
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def _row(**fields) -> dict:
    for key in [k for k in fields if k.endswith("_times")]:
        t = np.asarray(fields.pop(key)) * 1000
        fields[key.replace("_times", "_median_ms")] = round(float(np.median(t)), 3)
        fields[key.replace("_times", "_p95_ms")] = round(float(np.percentile(t, 95)), 3)
    print(json.dumps(fields), flush=True)
    return fields


def _compiled_fields(z, model, frames: list, eager: np.ndarray) -> dict:
    """v2 as `--compile` runs it in a receiver: the compile, paid before the call on a made-up
    key frame (`Synthesis.warm_up`), then the real key frame's first frame (no second compile
    when the warm-up's guards hold), frame times, the largest difference from the eager
    pictures, and a second key frame (the first one mirrored), whose first frame shows
    whether the compile is reused."""
    from models.learned import LearnedSynthesizer
    from models.synthesizers import Synthesis

    t0 = time.perf_counter()
    Synthesis("learned", "torch", "cuda", compiled=True).warm_up(len(z["keyframe"]))
    fields: dict = {"warm_up_compile_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    fast = LearnedSynthesizer(z["keyframe"], model, z["ref_params"], z["ring_weights"], device="cuda", compiled=True,
                              eyes=_eye_patches(z))
    _timed(fast.render, frames[:1], True)
    fields["keyframe_first_frame_s"] = round(time.perf_counter() - t0, 2)
    fields["compiled_render_times"] = _timed(fast.render, frames, True)
    fields["compiled_max_diff"] = int(np.abs(np.stack([fast.render(p, m) for p, m in frames]).astype(int)
                                             - eager).max())
    t0 = time.perf_counter()
    second = LearnedSynthesizer(np.ascontiguousarray(z["keyframe"][:, ::-1]), model, z["ref_params"],
                                z["ring_weights"], device="cuda", compiled=True)
    _timed(second.render, frames[:1], True)
    fields["second_keyframe_first_frame_s"] = round(time.perf_counter() - t0, 2)
    fields["second_keyframe_render_times"] = _timed(second.render, frames, True)
    return fields


def time_synthesis(inputs: Path, compile_graph: bool, sizes: tuple[int, ...] = SIZES,
                   with_cpu: bool = True) -> list[dict]:
    from models.face_model import FaceBasis, FaceModel
    from models.learned import LearnedSynthesizer
    from models.synthesizer import Synthesizer

    torch.set_num_threads(1)
    rows = [_row(torch=torch.__version__, gpu=torch.cuda.get_device_name(0))]
    basis = FaceBasis.load()
    for size in sizes:
        z = np.load(inputs / f"inputs_{size}.npz")
        model = FaceModel(basis, z["reference"], size, z["reference_eyes"])
        frames = list(zip(z["params"], z["motions"]))
        pictures = {}
        eyes = _eye_patches(z)
        rows.append(_row(size=size, eye_reference=eyes is not None))
        settings = [(LearnedSynthesizer, "cuda"), (Synthesizer, "cuda")] + [(LearnedSynthesizer, "cpu")] * with_cpu
        for cls, device in settings:
            extra = {"eyes": eyes} if cls is LearnedSynthesizer else {}
            synth = cls(z["keyframe"], model, z["ref_params"], z["ring_weights"], device=device, **extra)
            _timed(synth.render, frames[:10], device == "cuda")                 # warm-up
            pictures[(cls, device)] = np.stack([synth.render(p, m) for p, m in frames])
            fields = {"size": size, "synth": "learned" if cls is LearnedSynthesizer else "warp", "device": device,
                      "render_times": _timed(synth.render, frames, device == "cuda")}
            if cls is LearnedSynthesizer:
                tensors = [(torch.as_tensor(p, dtype=torch.float32, device=device)[None],
                            torch.as_tensor(m, dtype=torch.float32, device=device)[None]) for p, m in frames]
                with torch.inference_mode():
                    fields["graph_times"] = _timed(synth.graph, tensors, device == "cuda")
                if compile_graph and device == "cuda":
                    fields.update(_compiled_fields(z, model, frames, pictures[(cls, device)]))
            rows.append(_row(**fields))
        if with_cpu:
            diff = np.abs(pictures[(LearnedSynthesizer, "cuda")].astype(int) - pictures[(LearnedSynthesizer, "cpu")])
            rows.append(_row(size=size, parity_learned_cuda_vs_cpu_max=int(diff.max())))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synth_cuda", description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("prepare", "time"))
    ap.add_argument("--out", "--inputs", dest="folder", type=Path, default=Path("out/gpu"))
    ap.add_argument("--compile", action="store_true", help="also time v2 as --compile runs it (torch.compile)")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES)
    ap.add_argument("--skip-cpu", action="store_true", help="no CPU rows (nor the CUDA-CPU parity)")
    args = ap.parse_args(argv)
    if args.step == "prepare":
        prepare(args.folder)
        return 0
    if not torch.cuda.is_available():
        print("python -m benchmarks.synth_cuda: error: no CUDA device here", file=sys.stderr)
        return 1
    rows = time_synthesis(args.folder, args.compile, tuple(args.sizes), not args.skip_cpu)
    (args.folder / "cuda_results.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
