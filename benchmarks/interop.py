"""Decoder interoperability: every stream format decoded by every decoder format, native and translated.

    python -m benchmarks.interop [--clips NAME ...] [--all] [--frames N] [--formats F ...]
                                 [--methods geometry learned] [--out reports/interop] [--fresh]

For each clip (default: rt__3 and lp__d6 of ../shared/data/clips; `--all` for all 20), its
first `--frames` frames (default 40: about 10 minutes on 2 shared cores), and each stream format,
the clip is encoded with the codec's default
settings (codec.encoder.encode_video, `--format`); the lossless crops it coded are the
reference.  Each stream is decoded by each decoder format: natively when they match, else once
per translator method (models.translators).  Per (stream, decoder, method):

- LPIPS-alex (benchmarks.metrics) of the decoded frames against the crops, mean over frames;
- translation time per frame (ms, FaceDecoder.params: dequantise + translate);
- value error: RMS over frames of (decoded values - the decoder format's own analysis of the
  same frame, models.feature_formats.analyse on the frame's tracked landmarks against the
  stream's key frame), divided by the RMS of (own analysis - the key frame's own values):
  0 is exact, 1 is as far off as holding the key frame's values; native gives the
  quantisation's share;
- head-pose error, decoder formats ifvc and fv2v (whose values hold yaw, pitch, roll): mean
  geodesic angle (degrees) between the decoded and the own-analysis rotations.

and per stream format its parameter and total kbps.  Results per clip are kept in
OUT/work/CLIP.json (a run resumes; `--fresh` starts over).  Writes OUT/report.md (4x4 tables
per method beside native), OUT/results.json, OUT/interop.png (LPIPS matrices) and
OUT/grid_CLIP_METHOD.png (one frame: rows = stream formats, columns = source then decoder formats).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.metrics import LPIPS
from benchmarks.rd import geodesic_deg
from codec.decoder import FaceDecoder, decode_segment, read_stream, stream_info
from codec.translation import TRANSLATOR_METHODS
from codec_core.config import load_config
from codec_core.format import FEATURE_FORMATS
from codec_core.video import read_frames

log = logging.getLogger("benchmarks.interop")
CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
DEFAULT_CLIPS = ("rt__3", "lp__d6")
METHODS = TRANSLATOR_METHODS          # every translator method the decoder has
NATIVE = "native"
POSE_FORMATS = ("ifvc", "fv2v")        # decoder formats whose first three values are yaw, pitch, roll
VERSION = 1                            # of the per-clip results (others are recomputed)


def _combinations(formats: list[str], methods: list[str]) -> list[tuple[str, str, str]]:
    """(stream format, decoder format, method) of every decoding: native on the diagonal."""
    return [(s, d, m) for s in formats for d in formats for m in ([NATIVE] if s == d else methods)]


def _own_values(decoder: FaceDecoder, fmt: str, landmarks: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """The decoder format's own analysis of each frame's landmarks against the stream's key frame."""
    from models.feature_formats import analyse

    assert decoder.reference is not None
    return [None if lm is None else analyse(fmt, lm, decoder.reference) for lm in landmarks]


def value_errors(decoded: np.ndarray, own: list[np.ndarray | None], key: np.ndarray, fmt: str) -> dict:
    """Relative RMS value error, and (ifvc, fv2v) mean geodesic head-pose error in degrees."""
    rows = [i for i, v in enumerate(own) if v is not None and i < len(decoded)]
    if not rows:
        return {"value_error": None, "pose_error_deg": None}
    truth, got = np.stack([own[i] for i in rows]), decoded[rows]
    spread = float(np.sqrt(np.mean((truth - key) ** 2)))
    out: dict = {"value_error": float(np.sqrt(np.mean((got - truth) ** 2)) / max(spread, 1e-12)),
                 "pose_error_deg": None}
    if fmt in POSE_FORMATS:
        out["pose_error_deg"] = float(np.mean([geodesic_deg(t[:3], g[:3]) for t, g in zip(truth, got)]))
    return out


def run_clip(clip: Path, work: Path, frames: int, formats: list[str], methods: list[str], lpips: LPIPS) -> dict:
    """Every decoding of one clip; writes its grid pictures."""
    from codec.encoder import encode_video
    from models.face_model import FaceBasis
    from models.tracking import track_video

    config, basis = load_config(), FaceBasis.load()
    crop_path = work / f"{clip.stem}_crop.mp4"
    streams: dict[str, dict] = {}
    for fmt in formats:
        path = work / f"{clip.stem}_{fmt}.fcv"
        coded = encode_video(clip, path, config, basis, max_frames=frames, save_crop=crop_path, fmt=fmt)
        streams[fmt] = {"path": path, "parsed": read_stream(path), "coded": coded.levels}
    reference = np.stack(list(read_frames(crop_path)))
    landmarks = [t.landmarks for t in track_video(clip, frames, config.size)]
    result: dict = {"clip": clip.stem, "frames": len(reference), "version": VERSION, "streams": {}, "decodings": []}
    pictures: dict[tuple[str, str, str], np.ndarray] = {}
    pick = len(reference) // 2
    for fmt, stream in streams.items():
        parsed = stream["parsed"]
        info = stream_info(parsed)
        result["streams"][fmt] = {k: info[k] for k in ("param_kbps", "total_kbps", "param_bytes", "keyframe_bytes")}
        stream["levels"] = [lv for seg in parsed.segments for lv in decode_segment(seg, parsed.header.values_per_frame)]
        # the round trip: the levels decoded from the file are the encoder's, bit for bit
        result["streams"][fmt]["levels_exact"] = (len(stream["levels"]) == len(stream["coded"]) and all(
            np.array_equal(a, b) for a, b in zip(stream["levels"], stream["coded"], strict=True)))
    for s, d, method in _combinations(formats, methods):
        parsed, levels = streams[s]["parsed"], streams[s]["levels"]
        decoder = FaceDecoder(parsed.header, basis, decoder_format=None if s == d else d,
                              translator=method if method != NATIVE else METHODS[0])
        decoder.set_keyframe(parsed.keyframe, parsed.eyes)
        values, out, seconds = [], [], 0.0
        for lv in levels:
            start = time.perf_counter()
            v = decoder.params(lv)
            seconds += time.perf_counter() - start
            values.append(v)
            out.append(decoder.render(v, decoder.motion(lv)))
        decoded = np.stack(out)
        n = min(len(decoded), len(reference))
        from models.feature_formats import key_features

        assert decoder.reference is not None
        key = decoder.reference.reference_params() if d == "ifvc" else key_features(d, decoder.reference)
        entry = {"stream": s, "decoder": d, "method": method,
                 "lpips": float(lpips.batch(reference[:n], decoded[:n]).mean()),
                 "translate_ms": 1000 * seconds / max(len(levels), 1),
                 **value_errors(np.stack(values), _own_values(decoder, d, landmarks), key, d)}
        result["decodings"].append(entry)
        pictures[(s, d, method)] = decoded[min(pick, n - 1)]
    for method in methods:
        write_grid(work / f"grid_{clip.stem}_{method}.png", reference[min(pick, len(reference) - 1)], pictures,
                   formats, method)
    return result


def write_grid(path: Path, source: np.ndarray, pictures: dict, formats: list[str], method: str) -> None:
    """Rows: stream formats; columns: the source crop, then each decoder format (native on the diagonal)."""
    rows = []
    for s in formats:
        cells = [source] + [pictures[(s, d, NATIVE if s == d else method)] for d in formats]
        rows.append(np.concatenate(cells, 1))
    grid = np.concatenate(rows, 0)[..., ::-1].copy()
    size = source.shape[0]
    for j, name in enumerate(["source"] + [f"dec {d}" for d in formats]):
        cv2.putText(grid, name, (j * size + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    for i, s in enumerate(formats):
        cv2.putText(grid, f"stream {s}", (4, i * size + size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)


# -- summary -----------------------------------------------------------------------------------

def mean_of(results: list[dict], s: str, d: str, method: str, key: str) -> float:
    vals = [e[key] for r in results for e in r["decodings"]
            if e["stream"] == s and e["decoder"] == d and e["method"] == method and e[key] is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _cell(results: list[dict], s: str, d: str, method: str, key: str, fmt: str) -> str:
    m = NATIVE if s == d else method
    v = mean_of(results, s, d, m, key)
    text = "-" if np.isnan(v) else format(v, fmt)
    return f"*{text}*" if s == d else text


def matrix(results: list[dict], formats: list[str], method: str, key: str, fmt: str) -> list[str]:
    lines = ["| stream \\ decoder | " + " | ".join(formats) + " |", "|---" * (len(formats) + 1) + "|"]
    for s in formats:
        lines.append(f"| {s} | " + " | ".join(_cell(results, s, d, method, key, fmt) for d in formats) + " |")
    return lines


def relative_lpips(results: list[dict], formats: list[str], method: str) -> tuple[list[str], dict]:
    """Per pair: mean over clips of LPIPS / the decoder format's native LPIPS - 1, and the worst clip."""
    lines = ["| stream \\ decoder | " + " | ".join(formats) + " |", "|---" * (len(formats) + 1) + "|"]
    worst: dict = {}
    for s in formats:
        cells = []
        for d in formats:
            if s == d:
                cells.append("*native*")
                continue
            rel = []
            for r in results:
                by = {(e["stream"], e["decoder"], e["method"]): e["lpips"] for e in r["decodings"]}
                if (s, d, method) in by and (d, d, NATIVE) in by:
                    rel.append(by[(s, d, method)] / by[(d, d, NATIVE)] - 1)
            if not rel:
                cells.append("-")
                continue
            mean_rel = float(np.mean([by_rel for by_rel in rel]))
            worst[(s, d)] = max(rel)
            cells.append(f"{100 * mean_rel:+.1f}% (worst {100 * max(rel):+.1f}%)")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines, worst


def summarise(results: list[dict], formats: list[str], methods: list[str]) -> str:
    clips = ", ".join(f"{r['clip']} ({r['frames']} frames)" for r in results)
    out = [f"Clips: {clips}. Means over clips; the diagonal (*italic*) is the native decoding.", ""]
    out += ["## Rates (kbps, means over clips) and the round trip", "",
            "| stream format | parameters | total (key frame included) | clips whose decoded levels equal the "
            "encoder's, bit for bit |", "|---|---|---|---|"]
    for f in formats:
        p = np.mean([r["streams"][f]["param_kbps"] for r in results if f in r["streams"]])
        t = np.mean([r["streams"][f]["total_kbps"] for r in results if f in r["streams"]])
        exact = [r["streams"][f].get("levels_exact") for r in results if f in r["streams"]]
        out.append(f"| {f} | {p:.2f} | {t:.1f} | {sum(e is True for e in exact)} / {len(exact)} |")
    for method in methods:
        out += ["", f"## Translator `{method}`", "", "LPIPS-alex against the source crops:", ""]
        out += matrix(results, formats, method, "lpips", ".4f")
        out += ["", "LPIPS relative to the decoder format's native decoding (mean over clips, worst clip):", ""]
        out += relative_lpips(results, formats, method)[0]
        out += ["", "Value error (relative RMS: 0 exact, 1 = holding the key frame's values):", ""]
        out += matrix(results, formats, method, "value_error", ".3f")
        poses = [d for d in POSE_FORMATS if d in formats]
        out += ["", "Head-pose error (degrees, mean geodesic angle against the own analysis):", "",
                "| stream \\ decoder | " + " | ".join(poses) + " |", "|---" * (len(poses) + 1) + "|"]
        for s in formats:
            out.append(f"| {s} | " + " | ".join(_cell(results, s, d, method, "pose_error_deg", ".2f")
                                                 for d in poses) + " |")
        out += ["", "Translation time (ms per frame, dequantisation included):", ""]
        out += matrix(results, formats, method, "translate_ms", ".2f")
    out += ["", "## Means over all translated pairs", "", "| method | LPIPS | relative to native | value error | "
            "pose error (deg) | ms per frame |", "|---|---|---|---|---|---|"]
    for method in methods:
        pairs = [(s, d) for s in formats for d in formats if s != d]
        if not pairs:
            continue
        _, worst = relative_lpips(results, formats, method)
        rel = [float(np.mean([r_by[(s, d, method)] / r_by[(d, d, NATIVE)] - 1 for r_by in
                              ({(e["stream"], e["decoder"], e["method"]): e["lpips"] for e in r["decodings"]}
                               for r in results)])) for s, d in pairs]
        pose = [mean_of(results, s, d, method, "pose_error_deg") for s, d in pairs if d in POSE_FORMATS]
        out.append(f"| {method} | {np.mean([mean_of(results, s, d, method, 'lpips') for s, d in pairs]):.4f} | "
                   f"{100 * np.mean(rel):+.2f}% (worst pair {100 * max(rel):+.1f}%, worst clip "
                   f"{100 * max(worst.values()):+.1f}%) | "
                   f"{np.nanmean([mean_of(results, s, d, method, 'value_error') for s, d in pairs]):.3f} | "
                   f"{np.nanmean(pose) if pose else float('nan'):.2f} | "
                   f"{np.mean([mean_of(results, s, d, method, 'translate_ms') for s, d in pairs]):.2f} |")
    return "\n".join(out)


def plot(results: list[dict], formats: list[str], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.8), squeeze=False)
    grids = [np.array([[mean_of(results, s, d, NATIVE if s == d else m, "lpips") for d in formats] for s in formats])
             for m in methods]
    lo, hi = min(np.nanmin(g) for g in grids), max(np.nanmax(g) for g in grids)
    for ax, m, g in zip(axes[0], methods, grids, strict=True):
        im = ax.imshow(g, vmin=lo, vmax=hi, cmap="viridis")
        ax.set_xticks(range(len(formats)), formats)
        ax.set_yticks(range(len(formats)), formats)
        ax.set_xlabel("decoder format")
        ax.set_ylabel("stream format")
        ax.set_title(f"LPIPS, translator {m}")
        for i in range(len(formats)):
            for j in range(len(formats)):
                ax.text(j, i, f"{g[i, j]:.4f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.interop", description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="*", default=list(DEFAULT_CLIPS), help="clip names in ../shared/data/clips "
                    "(default: %(default)s)")
    ap.add_argument("--all", action="store_true", help="all 20 clips of ../shared/data/clips")
    ap.add_argument("--frames", type=int, default=40, help="first N frames of each clip (default %(default)s)")
    ap.add_argument("--formats", nargs="*", default=list(FEATURE_FORMATS), choices=list(FEATURE_FORMATS))
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--out", type=Path, default=Path("reports/interop"), help="output folder (default %(default)s)")
    ap.add_argument("--fresh", action="store_true", help="recompute clips already in OUT/work")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    clips = sorted(CLIPS.glob("*.mp4")) if args.all else [CLIPS / f"{c}.mp4" for c in args.clips]
    missing = [str(c) for c in clips if not c.exists()]
    if missing:
        print(f"error: clip {missing[0]} not found", file=sys.stderr)
        return 1
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    lpips, results = LPIPS(), []
    settings = {"frames": args.frames, "formats": args.formats, "methods": args.methods, "version": VERSION}
    for clip in tqdm(clips, desc="clips", unit="clip"):
        saved = work / f"{clip.stem}.json"
        if saved.exists() and not args.fresh:
            previous = json.loads(saved.read_text())
            if previous.get("settings") == settings:
                results.append(previous)
                continue
        try:
            result = run_clip(clip, work, args.frames, args.formats, args.methods, lpips)
        except Exception as exc:  # one clip's failure is reported, the run goes on
            log.error("%s: %s: %s", clip.name, type(exc).__name__, exc)
            continue
        result["settings"] = settings
        saved.write_text(json.dumps(result, indent=1))
        results.append(result)
    if not results:
        print("error: no clip could be measured", file=sys.stderr)
        return 1
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    report = summarise(results, args.formats, args.methods)
    plot(results, args.formats, args.methods, args.out / "interop.png")
    for r in results[:1]:
        for m in args.methods:
            grid = work / f"grid_{r['clip']}_{m}.png"
            if grid.exists():
                (args.out / grid.name).write_bytes(grid.read_bytes())
    (args.out / "report.md").write_text("# Decoder interoperability: every stream format by every decoder format\n\n"
                                        + report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
