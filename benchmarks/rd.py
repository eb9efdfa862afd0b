"""Rate-distortion benchmark: our codec against freeze, VVC and HEVC on the test clips.

    python -m benchmarks.rd [CLIPS...] --out DIR [--frames 250] [--vvc-qps QP ...]
                            [--hevc-qps QP ...] [--synths warp learned] [--quick] [--device cpu|cuda]
    python -m benchmarks.rd --out DIR --rebuild     # report and plot again from DIR/results.json

CLIPS default to every ``*.mp4`` in ``<repo>/../shared/data/clips``.  For each clip, on
its first ``--frames`` frames (the whole clip when it is shorter):

1. our codec at its default settings (``codec_core/defaults.yaml``) encodes the clip to
   ``DIR/work/<clip>.fcv`` and saves the exact 256x256 crops it coded, losslessly, to
   ``DIR/work/<clip>_crop.mp4``; the stream is decoded back once per ``--synths``
   synthesizer (default: all, v1 ``warp`` and v2 ``learned``).  All are timed.  "Ours" is
   the first synthesizer (results.json ``clip["ours"]``); the others are measured the same
   way, on the same stream and crops, under ``clip["synths"][name]``.
2. the reference for every method is that lossless crop sequence;
3. the baselines code the same crops at the same frame rate, the clip's own (the rate of
   every method, ours included, is bits over the clip's duration at that rate): freeze
   (our decoded key frame repeated), VVC (VVenC, low delay) at each ``--vvc-qps`` and HEVC
   (x265, low delay) at each ``--hevc-qps``;
4. PSNR, SSIM and LPIPS-alex (means over frames) for every method; face fidelity (see
   below) for each synthesizer, freeze and the VVC point nearest our rate (in log rate);
5. the rate VVC (and HEVC) needs to reach each synthesizer's LPIPS, interpolated along its
   rate-LPIPS curve in log rate, over our rate.

Face fidelity: MediaPipe's face mesh (still mode: every frame found afresh, so there is no
tracking memory that favours either side) on the decoded frames and on the reference
crops.  Head-pose error per frame is the geodesic angle, in degrees, between the two head
rotations (``models.face_model.canonicalise`` against the mean face: the angle of
R_ref^-1 R_dec), so it does not depend on the Euler convention; the per-clip number is the
median over frames (the mean, and the median of max |d yaw|, |d pitch|, |d roll|, are
stored as well).  Landmark error per frame is the mean 2D distance over the 478 landmarks
divided by the reference's outer inter-ocular distance (points 33 and 263); per clip the
mean and the median over frames.  A frame where detection fails on either side is a
failure and is left out of both numbers; failures are counted.

Writes ``DIR/report.md``, ``DIR/results.json`` (every number, per-frame values too,
rewritten after each clip) and ``DIR/rd.png``.  A clip that fails is reported with its
error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from benchmarks import host

log = logging.getLogger("benchmarks.rd")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIPS_DIR = REPO_ROOT.parent / "shared" / "data" / "clips"

DEFAULT_FRAMES = 250
QUICK_FRAMES = 50
QUICK_VVC_QPS = (38, 47, 54)
QUICK_HEVC_QPS = (40, 46, 51)

# Acceptance lines of the issue.
TARGET_PARAM_KBPS = 1.5
TARGET_KEYFRAME_BYTES = 4000          # "4 KB", as codec_core/defaults.yaml keyframe_max_bytes
TARGET_BELOW_FREEZE = 18 / 20         # fraction of clips where our LPIPS is below freeze's
TARGET_VVC_RATIO = 2.0
TARGET_POSE_DEG = 3.0
TARGET_FPS = 25.0

EYE_OUTER = (33, 263)

SYNTH_LABELS = {"warp": "v1", "learned": "v2"}

# Flags of the rate needed by a conventional codec to reach our LPIPS.
FLAG_INTERPOLATED = "interpolated"
FLAG_AT_LOWEST = "at_lowest_rate"     # our LPIPS is worse than the codec's lowest-rate point
FLAG_BEYOND_HIGHEST = "beyond_highest_rate"   # ours is better than its best point: lower bound


# ----------------------------------------------------------------------------- helpers

def _clean(obj):
    """JSON-safe copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _nanmean(x) -> float:
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _nanmedian(x) -> float:
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _fmt(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "-"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{nd}f}"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _FrameClock:
    """Wraps a frame generator and notes the time at which each frame is handed out
    (and when it runs dry), so the per-frame loop of the encoder can be timed apart from
    its one-time set-up (MediaPipe start, key frame coding) and its wrap-up."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.stamps: list[float] = []

    def __call__(self, *args, **kwargs):
        for frame in self.fn(*args, **kwargs):
            self.stamps.append(time.perf_counter())
            yield frame
        self.stamps.append(time.perf_counter())


# ----------------------------------------------------------------------------- metrics

def sequence_metrics(reference: np.ndarray, frames: np.ndarray, lpips) -> dict:
    """Mean PSNR, SSIM and LPIPS of `frames` against `reference` (both (N, H, W, 3) uint8)
    and the per-frame LPIPS."""
    from benchmarks.metrics import psnr, ssim

    per_lpips = lpips.batch(reference, frames)
    per_psnr = np.array([psnr(a, b) for a, b in zip(reference, frames)])
    per_ssim = np.array([ssim(a, b) for a, b in zip(reference, frames)])
    return {"psnr": float(per_psnr.mean()), "ssim": float(per_ssim.mean()), "lpips": float(per_lpips.mean()),
            "lpips_frames": per_lpips, "psnr_frames": per_psnr}


def detect_all(tracker, frames) -> list[np.ndarray | None]:
    return [tracker.detect(np.ascontiguousarray(f)) for f in frames]


def head_poses(landmarks: list[np.ndarray | None], basis, size: int) -> list[np.ndarray | None]:
    from models.face_model import canonicalise

    return [None if lm is None else np.asarray(canonicalise(lm, basis, size)[1][:3], dtype=np.float64)
            for lm in landmarks]


def geodesic_deg(ypr_a: np.ndarray, ypr_b: np.ndarray) -> float:
    """Angle in degrees of the rotation between two (yaw, pitch, roll) head poses."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("YXZ", np.stack([ypr_a, ypr_b]), degrees=True)
    return float(np.degrees((rot[0].inv() * rot[1]).magnitude()))


def face_errors(ref_lms, ref_poses, dec_lms, basis, size: int) -> dict:
    """Head-pose and normalised landmark errors of decoded landmarks against the reference's."""
    n = len(ref_lms)
    dec_poses = head_poses(dec_lms, basis, size)
    pose = np.full(n, np.nan)
    euler = np.full(n, np.nan)
    lmk = np.full(n, np.nan)
    for i, (r, d, pr, pd) in enumerate(zip(ref_lms, dec_lms, ref_poses, dec_poses)):
        if r is None or d is None:
            continue
        pose[i] = geodesic_deg(pr, pd)
        diff = (pd - pr + 180.0) % 360.0 - 180.0
        euler[i] = float(np.abs(diff).max())
        iod = float(np.linalg.norm(r[EYE_OUTER[0], :2] - r[EYE_OUTER[1], :2]))
        lmk[i] = float(np.linalg.norm(d[:, :2] - r[:, :2], axis=1).mean()) / max(iod, 1e-6)
    ref_fail = sum(lm is None for lm in ref_lms)
    dec_fail = sum(lm is None for lm in dec_lms)
    failures = sum(r is None or d is None for r, d in zip(ref_lms, dec_lms))
    return {
        "pose_err_median_deg": _nanmedian(pose),
        "pose_err_mean_deg": _nanmean(pose),
        "pose_euler_maxabs_median_deg": _nanmedian(euler),
        "landmark_err_mean": _nanmean(lmk),
        "landmark_err_median": _nanmedian(lmk),
        "failures": int(failures),
        "reference_failures": int(ref_fail),
        "decoded_failures": int(dec_fail),
        "frames": int(n),
        "pose_err_frames": pose,
        "landmark_err_frames": lmk,
    }


def rate_to_match(points: list[dict], target_lpips: float) -> tuple[float, str]:
    """Rate (kbps) at which a codec's rate-LPIPS curve reaches `target_lpips`.

    Points are sorted by rate; walking up from the lowest rate, the first segment whose
    LPIPS crosses the target is interpolated linearly in log rate.  When the target is no
    better than the lowest-rate point, that rate is returned (FLAG_AT_LOWEST); when no
    point reaches it, the highest rate is returned as a lower bound (FLAG_BEYOND_HIGHEST).
    """
    pts = sorted((p["kbps"], p["lpips"]) for p in points
                 if p.get("kbps") and p.get("lpips") is not None and math.isfinite(p["lpips"]))
    if not pts:
        raise ValueError("no rate-distortion points")
    rates = [r for r, _ in pts]
    vals = [v for _, v in pts]
    if target_lpips >= vals[0]:
        return rates[0], FLAG_AT_LOWEST
    for i in range(len(pts) - 1):
        a, b = vals[i], vals[i + 1]
        if a > target_lpips >= b:
            t = (a - target_lpips) / (a - b)
            la, lb = math.log(rates[i]), math.log(rates[i + 1])
            return math.exp(la + t * (lb - la)), FLAG_INTERPOLATED
    return rates[-1], FLAG_BEYOND_HIGHEST


def _match(points: list[dict], lpips: float, kbps: float) -> dict | None:
    if not points:
        return None
    rate, flag = rate_to_match(points, lpips)
    return {"kbps": rate, "flag": flag, "ratio": rate / kbps}


def derive_matches(clip: dict) -> None:
    """The rates VVC and HEVC need for each synthesizer's LPIPS (and for freeze's), from a clip's points."""
    for codec in ("vvc", "hevc"):
        points = clip.get(codec) or []
        clip[f"{codec}_match"] = _match(points, clip["ours"]["lpips"], clip["ours"]["total_kbps"])
        clip[f"{codec}_match_freeze"] = _match(points, clip["freeze"]["lpips"], clip["freeze"]["kbps"])
        for entry in clip.get("synths", {}).values():
            entry[f"{codec}_match"] = _match(points, entry["lpips"], clip["ours"]["total_kbps"])


def synth_entries(clip: dict) -> dict[str, dict]:
    """Each synthesizer's numbers in a clip by name, the first (``clip["ours"]``, whose VVC and
    HEVC matches sit on the clip) first; results without a name are from the default then, v1."""
    first = {**clip["ours"], "vvc_match": clip.get("vvc_match"), "hevc_match": clip.get("hevc_match")}
    return {clip["ours"].get("synth", "warp"): first, **clip.get("synths", {})}


def _label(synth: str) -> str:
    return f"{synth} ({SYNTH_LABELS[synth]})" if synth in SYNTH_LABELS else synth


# ----------------------------------------------------------------------------- one clip

class Context:
    """What every clip shares: configuration, face basis, LPIPS network, face tracker."""

    def __init__(self, args) -> None:
        from benchmarks.metrics import LPIPS
        from codec_core.config import load_config
        from models.face_model import FaceBasis
        from models.face_tracker import FaceTracker

        self.args = args
        self.config = load_config()
        self.basis = FaceBasis.load()
        self.lpips = LPIPS(device=args.device)
        self.tracker = FaceTracker(still=True)
        self.work = Path(args.out) / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self.tracker.close()


def _encode_timed(ctx: Context, clip: Path, stream: Path, crop: Path):
    import codec.encoder as enc_mod

    clock = _FrameClock(enc_mod.read_frames) if hasattr(enc_mod, "read_frames") else None
    with ExitStack() as stack:
        if clock is not None:
            stack.enter_context(mock.patch.object(enc_mod, "read_frames", clock))
        t0 = time.perf_counter()
        res = enc_mod.encode_video(clip, stream, ctx.config, ctx.basis, max_frames=ctx.args.frames, save_crop=crop)
        total = time.perf_counter() - t0
    timing = {"encode_s": total, "encode_fps": res.frames / total if total > 0 else float("nan"),
              "encode_loop_s": float("nan"), "encode_loop_fps": float("nan"), "encode_setup_s": float("nan")}
    if clock is not None and len(clock.stamps) >= 3:
        n = len(clock.stamps) - 1            # frames handed out
        loop = clock.stamps[-1] - clock.stamps[1]   # frames 1 .. n-1 (frame 0 carries the key frame)
        if loop > 0:
            timing.update(encode_loop_s=loop, encode_loop_fps=(n - 1) / loop, encode_setup_s=total - loop)
    return res, timing


def _decode_timed(ctx: Context, stream: Path, synth: str):
    from codec.decoder import decode_frames, read_stream
    from models.synthesizers import Synthesis

    t0 = time.perf_counter()
    parsed = read_stream(stream)
    frames: list[np.ndarray] = []
    t_first = None
    for frame in decode_frames(parsed, Synthesis(synth, device=ctx.args.device)):
        frames.append(frame)
        if t_first is None:
            t_first = time.perf_counter()
    t_end = time.perf_counter()
    n = len(frames)
    total = t_end - t0
    timing = {"decode_s": total, "decode_fps": n / total if total > 0 else float("nan"),
              "decode_first_frame_s": (t_first - t0) if t_first else float("nan"),
              "decode_loop_fps": float("nan")}
    if n >= 2 and t_end > t_first:
        timing["decode_loop_fps"] = (n - 1) / (t_end - t_first)
    return parsed, (np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)), timing


def measure_synth(ctx: Context, ref: np.ndarray, frames: np.ndarray, timing: dict, ref_lms, ref_poses) -> dict:
    """One synthesizer's numbers: quality against the reference crops, decode timing, face fidelity."""
    frames = frames[:len(ref)]
    return {**sequence_metrics(ref, frames, ctx.lpips), **timing,
            "face": face_errors(ref_lms, ref_poses, detect_all(ctx.tracker, frames), ctx.basis, ctx.config.size)}


def run_clip(ctx: Context, clip: Path) -> dict:
    from benchmarks.baselines import encode_hevc, encode_vvc, freeze
    from codec.decoder import FaceDecoder, stream_info
    from codec_core.video import read_frames

    args = ctx.args
    name = clip.stem
    stream = ctx.work / f"{name}.fcv"
    crop_path = ctx.work / f"{name}_crop.mp4"
    out: dict = {"clip": clip.name, "path": str(clip), "status": "ok", "problems": []}

    # 1. our codec: encode once, decode once per synthesizer, timed
    log.info("%s: encoding", name)
    res, enc_timing = _encode_timed(ctx, clip, stream, crop_path)
    decodes = {}   # synthesizer: (frames, timing)
    for synth in args.synths:
        log.info("%s: decoding (%s)", name, synth)
        parsed, *decodes[synth] = _decode_timed(ctx, stream, synth)
    first, *others = args.synths
    info = stream_info(parsed)
    crops = np.stack(list(read_frames(crop_path)))
    fps = float(parsed.header.fps)
    counts = {"encoded": res.frames, "stream": info["frames"], "reference_crops": len(crops),
              **{"decoded" if s == first else f"decoded_{s}": len(d[0]) for s, d in decodes.items()}}
    out["frame_counts"] = counts
    if len(set(counts.values())) != 1:
        msg = f"frame counts differ: {counts}; metrics use the first {min(counts.values())} frames"
        log.error("%s: %s", name, msg)
        out["problems"].append(msg)
        out["status"] = "frame_count_mismatch"
    n = min(len(crops), *(len(d[0]) for d in decodes.values()))
    if n == 0:
        raise RuntimeError(f"no frames to compare ({counts})")
    ref = crops[:n]
    out["frames"] = n
    out["fps"] = fps
    out["duration_s"] = n / fps

    log.info("%s: %d frames at %.3f fps; metrics and face fidelity for %s", name, n, fps, ", ".join(args.synths))
    size = ctx.config.size
    ref_lms = detect_all(ctx.tracker, ref)
    ref_poses = head_poses(ref_lms, ctx.basis, size)
    measured = {s: measure_synth(ctx, ref, frames, timing, ref_lms, ref_poses)
                for s, (frames, timing) in decodes.items()}
    out["ours"] = {
        "synth": first, **measured[first],
        "total_kbps": info["total_kbps"], "param_kbps": info["param_kbps"],
        "keyframe_bytes": info["keyframe_bytes"], "geometry_bytes": info["geometry_bytes"],
        "param_bytes": info["param_bytes"], "file_bytes": info["file_bytes"],
        "keyframe_qp": res.keyframe_qp, "lost_frames": res.lost_frames,
        "num_params": info["num_params"], "stream_info": info, **enc_timing,
    }
    out["synths"] = {s: measured[s] for s in others}
    if res.lost_frames:
        out["problems"].append(f"encoder lost the face in {res.lost_frames} frames")

    # 2. freeze: our decoded key frame repeated (its rate: the key frame picture alone)
    fdec = FaceDecoder(parsed.header)
    fdec.set_keyframe(parsed.keyframe, parsed.eyes)
    key_pic = fdec.keyframe
    frozen = freeze(key_pic, n)
    out["freeze"] = {**sequence_metrics(ref, frozen, ctx.lpips),
                     "kbps": 8.0 * info["keyframe_bytes"] / (n / fps) / 1000.0}

    # 3. conventional codecs on the same crops at the same frame rate
    ours_kbps = out["ours"]["total_kbps"]
    nearest = None   # (distance in log rate, point, frames)
    for codec, qps, fn in (("vvc", args.vvc_qps, encode_vvc), ("hevc", args.hevc_qps, encode_hevc)):
        points = []
        for qp in tqdm(qps, desc=f"{name} {codec}", unit="qp", leave=False):
            try:
                seq = fn(ref, fps, qp)
            except Exception as exc:  # noqa: BLE001 - one QP failing must not lose the clip
                log.error("%s: %s qp %d failed: %s", name, codec, qp, exc)
                out["problems"].append(f"{codec} qp {qp} failed: {str(exc).splitlines()[0]}")
                continue
            pm = sequence_metrics(ref, seq.frames, ctx.lpips)
            point = {"qp": qp, "kbps": seq.kbps, "bytes": seq.num_bytes, "psnr": pm["psnr"], "ssim": pm["ssim"],
                     "lpips": pm["lpips"]}
            points.append(point)
            log.debug("%s: %s qp %d: %.2f kbps, LPIPS %.4f", name, codec, qp, seq.kbps, pm["lpips"])
            if codec == "vvc":
                dist = abs(math.log(seq.kbps / ours_kbps))
                if nearest is None or dist < nearest[0]:
                    nearest = (dist, {**point, "lpips_frames": pm["lpips_frames"]}, seq.frames)
        out[codec] = points
        if not points:
            out["problems"].append(f"no {codec} points")
    derive_matches(out)

    # 4. face fidelity of freeze and the nearest VVC point (each synthesizer's is measured above)
    log.info("%s: face fidelity", name)
    key_lm = ctx.tracker.detect(np.ascontiguousarray(key_pic))
    out["freeze"]["face"] = face_errors(ref_lms, ref_poses, [key_lm] * n, ctx.basis, size)
    if nearest is not None:
        _, point, frames = nearest
        point["face"] = face_errors(ref_lms, ref_poses, detect_all(ctx.tracker, frames), ctx.basis, size)
        out["vvc_nearest"] = point
    else:
        out["vvc_nearest"] = None
    return out


# ----------------------------------------------------------------------------- summary

def _ok(clips: list[dict]) -> list[dict]:
    return [c for c in clips if "ours" in c and "error" not in c]


def summarise(clips: list[dict]) -> dict:
    good = _ok(clips)
    n_all, n = len(clips), len(good)
    ok_ids = {id(c) for c in good}
    s: dict = {"clips": n_all, "clips_ok": n, "clips_failed": [c["clip"] for c in clips if id(c) not in ok_ids]}
    if not good:
        return s
    ours = [c["ours"] for c in good]
    param = [o["param_kbps"] for o in ours]
    key = [o["keyframe_bytes"] for o in ours]
    keyg = [o["keyframe_bytes"] + o["geometry_bytes"] for o in ours]
    below = [c["clip"] for c in good if c["ours"]["lpips"] < c["freeze"]["lpips"]]
    s.update({
        "param_kbps_mean": float(np.mean(param)), "param_kbps_max": float(np.max(param)),
        "param_kbps_clips_over": sum(p > TARGET_PARAM_KBPS for p in param),
        "total_kbps_median": float(np.median([o["total_kbps"] for o in ours])),
        "keyframe_bytes_max": int(np.max(key)), "keyframe_bytes_median": float(np.median(key)),
        "keyframe_plus_geometry_bytes_max": int(np.max(keyg)),
        "lpips_ours_median": float(np.median([o["lpips"] for o in ours])),
        "lpips_freeze_median": float(np.median([c["freeze"]["lpips"] for c in good])),
        "psnr_ours_median": float(np.median([o["psnr"] for o in ours])),
        "psnr_freeze_median": float(np.median([c["freeze"]["psnr"] for c in good])),
        "ssim_ours_median": float(np.median([o["ssim"] for o in ours])),
        "ssim_freeze_median": float(np.median([c["freeze"]["ssim"] for c in good])),
        "below_freeze": len(below), "below_freeze_needed": math.ceil(TARGET_BELOW_FREEZE * n_all - 1e-9),
        "above_freeze_clips": [c["clip"] for c in good if c["clip"] not in below],
    })
    for codec in ("vvc", "hevc"):
        m = [c[f"{codec}_match"] for c in good if c.get(f"{codec}_match")]
        if m:
            s[f"{codec}_ratio_median"] = float(np.median([x["ratio"] for x in m]))
            s[f"{codec}_ratio_flags"] = {f: sum(x["flag"] == f for x in m)
                                         for f in (FLAG_INTERPOLATED, FLAG_AT_LOWEST, FLAG_BEYOND_HIGHEST)}
        mf = [c[f"{codec}_match_freeze"] for c in good if c.get(f"{codec}_match_freeze")]
        if mf:
            s[f"{codec}_ratio_freeze_median"] = float(np.median([x["ratio"] for x in mf]))
    for method in ("ours", "freeze", "vvc_nearest"):
        faces = [c[method]["face"] for c in good if c.get(method) and "face" in c[method]]
        if faces:
            s[f"{method}_pose_err_median_deg"] = _nanmedian([f["pose_err_median_deg"] for f in faces])
            s[f"{method}_landmark_err_median"] = _nanmedian([f["landmark_err_mean"] for f in faces])
            s[f"{method}_face_failures"] = int(sum(f["failures"] for f in faces))
            s[f"{method}_face_frames"] = int(sum(f["frames"] for f in faces))
    s["landmark_better_than_freeze"] = sum(
        1 for c in good if c["ours"]["face"]["landmark_err_mean"] < c["freeze"]["face"]["landmark_err_mean"])
    for key_ in ("encode_fps", "encode_loop_fps", "decode_fps", "decode_loop_fps"):
        vals = [o[key_] for o in ours]
        s[f"{key_}_median"] = _nanmedian(vals)
        s[f"{key_}_min"] = float(np.nanmin(vals)) if np.isfinite(vals).any() else float("nan")
    s["synths"] = summarise_synths(good)
    return s


def summarise_synths(good: list[dict]) -> dict:
    """Per synthesizer, side by side: LPIPS median, clips below freeze and below the first
    synthesizer, the VVC/HEVC ratio medians, pose error and decoder speed."""
    entries = [synth_entries(c) for c in good]
    names = list(dict.fromkeys(name for e in entries for name in e))
    out = {}
    for name in names:
        pairs = [(c, e) for c, e in zip(good, entries) if name in e]
        mine = [e[name] for _, e in pairs]
        row = {"label": SYNTH_LABELS.get(name, name), "clips": len(mine),
               "lpips_median": float(np.median([m["lpips"] for m in mine])),
               "psnr_median": float(np.median([m["psnr"] for m in mine])),
               "below_freeze": sum(e[name]["lpips"] < c["freeze"]["lpips"] for c, e in pairs),
               "below_first": sum(e[name]["lpips"] < e[names[0]]["lpips"] for _, e in pairs if names[0] in e),
               "pose_err_median_deg": _nanmedian([m["face"]["pose_err_median_deg"] for m in mine]),
               "decode_fps_median": _nanmedian([m["decode_fps"] for m in mine])}
        for codec in ("vvc", "hevc"):
            ratios = [m[f"{codec}_match"]["ratio"] for m in mine if m.get(f"{codec}_match")]
            row[f"{codec}_ratio_median"] = float(np.median(ratios)) if ratios else None
        out[name] = row
    return out


def acceptance(s: dict) -> list[tuple[str, str, str, bool | None]]:
    """(criterion, measured, target, met) rows."""
    if not s.get("clips_ok"):
        return []
    rows = []
    n_all = s["clips"]
    rows.append(("Parameter rate, mean over clips", f"{s['param_kbps_mean']:.3f} kbps (max {s['param_kbps_max']:.3f}, "
                 f"{s['param_kbps_clips_over']} clips over)", f"<= {TARGET_PARAM_KBPS} kbps",
                 s["param_kbps_mean"] <= TARGET_PARAM_KBPS))
    rows.append(("Key frame (VVC picture + reference geometry), largest",
                 f"{s['keyframe_plus_geometry_bytes_max']} B (picture alone at most {s['keyframe_bytes_max']} B)",
                 f"<= {TARGET_KEYFRAME_BYTES} B", s["keyframe_plus_geometry_bytes_max"] <= TARGET_KEYFRAME_BYTES))
    rows.append(("LPIPS below freeze", f"{s['below_freeze']}/{n_all} clips",
                 f">= {s['below_freeze_needed']}/{n_all} (18/20)", s["below_freeze"] >= s["below_freeze_needed"]))
    if "vvc_ratio_median" in s:
        fl = s["vvc_ratio_flags"]
        rows.append(("VVC rate for our LPIPS / our rate, median", f"{s['vvc_ratio_median']:.2f} "
                     f"({fl[FLAG_INTERPOLATED]} interpolated, {fl[FLAG_AT_LOWEST]} at VVC's lowest rate, "
                     f"{fl[FLAG_BEYOND_HIGHEST]} lower bounds)", f">= {TARGET_VVC_RATIO}",
                     s["vvc_ratio_median"] >= TARGET_VVC_RATIO))
    if "vvc_ratio_freeze_median" in s:
        rows.append(("The same VVC ratio for freeze (information: what a key frame alone earns)",
                     f"{s['vvc_ratio_freeze_median']:.2f}", "-", None))
    if "hevc_ratio_median" in s:
        fl = s["hevc_ratio_flags"]
        rows.append(("HEVC rate for our LPIPS / our rate, median (information)", f"{s['hevc_ratio_median']:.2f} "
                     f"({fl[FLAG_INTERPOLATED]} interpolated, {fl[FLAG_AT_LOWEST]} at lowest, "
                     f"{fl[FLAG_BEYOND_HIGHEST]} lower bounds)", "-", None))
    if "ours_pose_err_median_deg" in s:
        rows.append(("Head-pose error (geodesic), median over clips of per-clip median",
                     f"{s['ours_pose_err_median_deg']:.2f} deg (freeze {s['freeze_pose_err_median_deg']:.2f}, "
                     f"VVC nearest {s.get('vvc_nearest_pose_err_median_deg', float('nan')):.2f})",
                     f"< {TARGET_POSE_DEG} deg", s["ours_pose_err_median_deg"] < TARGET_POSE_DEG))
        rows.append(("Normalised landmark error, median over clips of per-clip mean",
                     f"{s['ours_landmark_err_median']:.4f} vs freeze {s['freeze_landmark_err_median']:.4f} "
                     f"(VVC nearest {s.get('vvc_nearest_landmark_err_median', float('nan')):.4f}); ours lower on "
                     f"{s['landmark_better_than_freeze']}/{s['clips_ok']} clips", "below freeze",
                     s["ours_landmark_err_median"] < s["freeze_landmark_err_median"]))
    rows.append(("Encoder speed, whole call incl. start-up (median / slowest clip)",
                 f"{s['encode_fps_median']:.1f} / {s['encode_fps_min']:.1f} fps "
                 f"(per-frame loop {s['encode_loop_fps_median']:.1f} / {s['encode_loop_fps_min']:.1f})",
                 f"> {TARGET_FPS} fps", s["encode_fps_median"] > TARGET_FPS))
    rows.append(("Decoder speed, whole call incl. start-up (median / slowest clip)",
                 f"{s['decode_fps_median']:.1f} / {s['decode_fps_min']:.1f} fps "
                 f"(per-frame loop {s['decode_loop_fps_median']:.1f} / {s['decode_loop_fps_min']:.1f})",
                 f"> {TARGET_FPS} fps", s["decode_fps_median"] > TARGET_FPS))
    synths = s.get("synths") or {}
    first = next(iter(synths), None)
    for name, m in synths.items() if len(synths) > 1 else ():
        rows.append((f"Synthesizer {_label(name)}: LPIPS median; below freeze; below {_label(first)}; "
                     "VVC ratio median", f"{m['lpips_median']:.4f}; {m['below_freeze']}/{n_all}; "
                     f"{_below_first(name, first, m)}; "
                     f"{_fmt(m['vvc_ratio_median'], 2)}", "-", None))
    return rows


def _below_first(name: str, first: str, m: dict) -> str:
    return "-" if name == first else f"{m['below_first']}/{m['clips']}"


def _status(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT met")


def summary_table(s: dict) -> str:
    rows = acceptance(s)
    lines = ["| criterion | measured | target | status |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {_status(d)} |" for a, b, c, d in rows]
    return "\n".join(lines)


def write_report(path: Path, settings: dict, clips: list[dict], s: dict) -> None:
    good = _ok(clips)
    L: list[str] = ["# Rate-distortion benchmark", ""]
    L.append(f"Run {settings['started']} - {settings['finished']} on {settings['host']} "
             f"({settings['cpus']} CPUs, torch threads {settings['torch_threads']}, device {settings['device']}), "
             f"commit {settings['commit']}.")
    if settings.get("rebuilt"):
        L.append(f"Report and plot rebuilt from results.json on {settings['rebuilt']} (`--rebuild`, no coding).")
    L.append("")
    L.append("## Settings")
    L.append("")
    L.append(f"- Command: `{settings['command']}`")
    L.append(f"- Clips: {len(clips)}; frames per clip: the first {settings['frames']} (or the whole clip).")
    L.append("- Reference: the 256x256 crops our encoder coded, saved losslessly (libx264rgb qp 0). Every method "
             "is measured against them, and the baselines code those same crops.")
    L.append("- Frame rate: each clip's own (22.13, 25 or 30 fps) for every method, so a rate is bits over the "
             "clip's duration; 30 fps clips cost VVC/HEVC about 20 % more than they would at the CTC's 25 fps, "
             "and cost our parameters the same per-second premium.")
    L.append(f"- Ours: default settings `{json.dumps(settings['codec_config'])}`; total rate = whole stream file "
             "(header, VVC key frame, reference geometry, all parameters) over the duration. Decoded by "
             f"{', '.join(map(_label, settings.get('synths') or ['warp']))}; 'ours' is the first.")
    L.append("- Freeze: our decoded key frame repeated; its rate is the key frame picture alone.")
    L.append(f"- VVC: VVenC low delay (preset faster, QPA off) at QPs {list(settings['vvc_qps'])}; HEVC: x265 low "
             f"delay (medium, zerolatency) at QPs {list(settings['hevc_qps'])}; rates include their intra frame.")
    L.append("- Metrics: PSNR (RGB), SSIM (BT.601 luma), LPIPS-alex; means over frames.")
    L.append("- VVC (HEVC) / ours ratio: the VVC rate at our LPIPS, interpolated linearly in log rate along VVC's "
             "rate-LPIPS points (sorted by rate; first crossing walking up from the lowest rate), over our total "
             "rate (VVC/freeze: the same for freeze's LPIPS over freeze's rate, for orientation). `low` = our "
             "LPIPS is no better than VVC's lowest-rate point, so VVC's lowest rate is counted (the true "
             "equal-quality rate is lower: an upper bound); `>=` = ours beats VVC's best point, VVC's "
             "highest rate is counted (a lower bound).")
    L.append("- Face fidelity: MediaPipe face mesh in still mode on decoded frames and reference crops. Head-pose "
             "error = geodesic angle between the two head rotations (pose of the landmarks against the mean face, "
             "`canonicalise`), median over frames per clip. Landmark error = mean 2D distance over the 478 points "
             "/ reference outer inter-ocular distance (33-263), mean over frames per clip. Frames where either "
             "detection fails are failures, left out and counted. 'VVC near' is the VVC point nearest our rate "
             "(log scale).")
    L.append("- Speed: wall clock on this machine's CPUs while other work may share them. Encoder 'call' = the "
             "whole `encode_video` call (MediaPipe start, key frame VVC coding and segmentation, per-frame "
             "tracking and analysis, writing the lossless crop file, entropy coding); 'loop' = frames 1..N-1 "
             "only (still includes reading the source and writing the crop). Decoder 'call' = `read_stream` + "
             "all of `decode_frames` (key frame decode and synthesizer set-up included); 'loop' = frames 2..N "
             "after the first frame is out.")
    L.append("")
    L.append("## Acceptance (medians over clips unless said)")
    L.append("")
    L.append(summary_table(s) if good else "No clip finished.")
    L.append("")
    if s.get("clips_failed"):
        L.append(f"Failed clips: {', '.join(s['clips_failed'])} (see below); acceptance counts use the "
                 f"{s['clips_ok']} finished clips, and the 'below freeze' line counts failures as not below.")
        L.append("")
    if good:
        L.append(f"Other medians: total rate {s['total_kbps_median']:.2f} kbps; "
                 f"LPIPS ours {s['lpips_ours_median']:.4f} / freeze {s['lpips_freeze_median']:.4f}; "
                 f"PSNR ours {s['psnr_ours_median']:.2f} / freeze "
                 f"{s['psnr_freeze_median']:.2f} dB; SSIM ours {s['ssim_ours_median']:.4f} / freeze "
                 f"{s['ssim_freeze_median']:.4f}. Face detection failures (frames): ours "
                 f"{s.get('ours_face_failures')}/{s.get('ours_face_frames')}, freeze "
                 f"{s.get('freeze_face_failures')}/{s.get('freeze_face_frames')}, VVC near "
                 f"{s.get('vvc_nearest_face_failures')}/{s.get('vvc_nearest_face_frames')}.")
        L.append("")
        if s.get("above_freeze_clips"):
            L.append(f"Clips where ours is not below freeze in LPIPS: {', '.join(s['above_freeze_clips'])}.")
            L.append("")

        def ratio(m):
            if not m:
                return "-"
            mark = {FLAG_AT_LOWEST: " low", FLAG_BEYOND_HIGHEST: " >="}.get(m["flag"], "")
            return f"{m['ratio']:.2f}{mark}"

        synths = s.get("synths") or {}
        if len(synths) > 1:
            first = next(iter(synths))
            L.append("## Synthesizers side by side")
            L.append("")
            L.append(f"The same stream decoded by each synthesizer; 'ours' in the other tables is {_label(first)}.")
            L.append("")
            L.append(f"| synthesizer | LPIPS median | below freeze | below {_label(first)} | VVC/ours median "
                     "| HEVC/ours median | PSNR median | pose err deg median | decode fps median |")
            L.append("|---|---|---|---|---|---|---|---|---|")
            for name, m in synths.items():
                L.append(f"| {_label(name)} | {m['lpips_median']:.4f} | {m['below_freeze']}/{s['clips']} "
                         f"| {_below_first(name, first, m)} "
                         f"| {_fmt(m['vvc_ratio_median'], 2)} | {_fmt(m['hevc_ratio_median'], 2)} "
                         f"| {m['psnr_median']:.2f} | {_fmt(m['pose_err_median_deg'], 2)} "
                         f"| {_fmt(m['decode_fps_median'], 1)} |")
            L.append("")
            L.append("| clip | LPIPS freeze | " + " | ".join(f"LPIPS {_label(n)}" for n in synths) + " | "
                     + " | ".join(f"VVC/ours {_label(n)}" for n in synths) + " |")
            L.append("|---|---|" + "---|" * (2 * len(synths)))
            for c in good:
                e = synth_entries(c)
                L.append(f"| {c['clip']} | {c['freeze']['lpips']:.4f} | "
                         + " | ".join(_fmt(e[n]['lpips'], 4) if n in e else "-" for n in synths) + " | "
                         + " | ".join(ratio(e[n].get("vvc_match")) if n in e else "-" for n in synths) + " |")
            L.append("")

        L.append("## Per clip: rate and quality")
        L.append("")
        L.append("| clip | frames | fps | ours kbps | param kbps | key B (+geom) | key QP | LPIPS ours | LPIPS freeze "
                 "| LPIPS VVC near (QP, kbps) | PSNR ours / freeze / VVC near | SSIM ours / freeze / VVC near "
                 "| VVC/ours | HEVC/ours | VVC/freeze |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in good:
            o, f, v = c["ours"], c["freeze"], c.get("vvc_nearest")
            vtxt = f"{v['lpips']:.4f} ({v['qp']}, {v['kbps']:.1f})" if v else "-"
            L.append(
                f"| {c['clip']} | {c['frames']} | {c['fps']:.2f} | {o['total_kbps']:.2f} | {o['param_kbps']:.3f} "
                f"| {o['keyframe_bytes']} (+{o['geometry_bytes']}) | {o['keyframe_qp']} | {o['lpips']:.4f} "
                f"| {f['lpips']:.4f} | {vtxt} | {o['psnr']:.2f} / {f['psnr']:.2f} / {_fmt(v and v['psnr'], 2)} "
                f"| {o['ssim']:.4f} / {f['ssim']:.4f} / {_fmt(v and v['ssim'], 4)} "
                f"| {ratio(c.get('vvc_match'))} | {ratio(c.get('hevc_match'))} | {ratio(c.get('vvc_match_freeze'))} |")
        L.append("")
        L.append("## Per clip: face fidelity")
        L.append("")
        L.append("| clip | pose err deg ours / freeze / VVC near (median) | max-abs Euler ours (median) "
                 "| landmark err ours / freeze / VVC near (mean) | failures ours / freeze / VVC near "
                 "(ref fails) |")
        L.append("|---|---|---|---|---|")
        for c in good:
            o, f = c["ours"]["face"], c["freeze"]["face"]
            v = c["vvc_nearest"]["face"] if c.get("vvc_nearest") else None
            L.append(
                f"| {c['clip']} | {_fmt(o['pose_err_median_deg'], 2)} / {_fmt(f['pose_err_median_deg'], 2)} / "
                f"{_fmt(v and v['pose_err_median_deg'], 2)} | {_fmt(o['pose_euler_maxabs_median_deg'], 2)} "
                f"| {_fmt(o['landmark_err_mean'], 4)} / {_fmt(f['landmark_err_mean'], 4)} / "
                f"{_fmt(v and v['landmark_err_mean'], 4)} | {o['failures']} / {f['failures']} / "
                f"{_fmt(v and v['failures'])} ({o['reference_failures']}) |")
        L.append("")
        L.append("## Per clip: speed")
        L.append("")
        L.append("| clip | encode call s | encode fps call / loop | encode set-up s | decode call s "
                 "| decode fps call / loop | decode first frame s | face lost (encoder) |")
        L.append("|---|---|---|---|---|---|---|---|")
        for c in good:
            o = c["ours"]
            L.append(f"| {c['clip']} | {o['encode_s']:.2f} | "
                     f"{_fmt(o['encode_fps'], 1)} / {_fmt(o['encode_loop_fps'], 1)} "
                     f"| {_fmt(o['encode_setup_s'], 2)} | {o['decode_s']:.2f} | {_fmt(o['decode_fps'], 1)} / "
                     f"{_fmt(o['decode_loop_fps'], 1)} | {_fmt(o['decode_first_frame_s'], 3)} | {o['lost_frames']} |")
        L.append("")
        L.append("## Per clip: VVC and HEVC points (QP: kbps / LPIPS / PSNR)")
        L.append("")
        for c in good:
            for codec in ("vvc", "hevc"):
                pts = " ; ".join(f"{p['qp']}: {p['kbps']:.1f} / {p['lpips']:.4f} / {p['psnr']:.2f}"
                                 for p in c.get(codec, []))
                L.append(f"- {c['clip']} {codec.upper()}: {pts or '-'}")
        L.append("")
    problems = [(c["clip"], p) for c in clips for p in c.get("problems", [])]
    ok_ids = {id(c) for c in good}
    failed = [c for c in clips if id(c) not in ok_ids]
    if problems or failed:
        L.append("## Problems")
        L.append("")
        for c in failed:
            L.append(f"- {c['clip']}: FAILED: {c.get('error', 'unknown error')}")
        for clip, p in problems:
            L.append(f"- {clip}: {p}")
        L.append("")
    L.append("Plot: `rd.png` (LPIPS against total kbps, log rate). Raw numbers: `results.json`.")
    path.write_text("\n".join(L) + "\n")


def plot_rd(path: Path, clips: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    good = _ok(clips)
    n = max(1, len(good))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(good):]:
        ax.set_visible(False)
    if not good:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no clip finished", ha="center", va="center")
    for ax, c in zip(axes.flat, good):
        for codec, style in (("vvc", "o-"), ("hevc", "s--")):
            pts = sorted(c.get(codec, []), key=lambda p: p["kbps"])
            if pts:
                ax.plot([p["kbps"] for p in pts], [p["lpips"] for p in pts], style, ms=3, lw=1, label=codec.upper())
        ax.plot([c["freeze"]["kbps"]], [c["freeze"]["lpips"]], "x", color="grey", ms=7, mew=2, label="freeze")
        for (name, e), style in zip(synth_entries(c).items(), (("*", "red", 11), ("D", "blue", 6), ("P", "green", 7))):
            ax.plot([c["ours"]["total_kbps"]], [e["lpips"]], style[0], color=style[1], ms=style[2],
                    label=f"ours {_label(name)}")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(c["clip"].removesuffix(".mp4"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    if good:
        axes[0, 0].legend(fontsize=6)
    fig.supxlabel("total rate (kbps, log)", fontsize=9)
    fig.supylabel("LPIPS-alex (lower is better)", fontsize=9)
    fig.tight_layout(rect=(0.025, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def default_clips() -> list[Path]:
    return sorted(DEFAULT_CLIPS_DIR.glob("*.mp4"))


def build_parser() -> argparse.ArgumentParser:
    from models.synthesizers import SYNTHS
    synths = [name for name in SYNTHS if name != "auto"]      # the benchmark names what it measures

    ap = argparse.ArgumentParser(prog="python -m benchmarks.rd", description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", nargs="*", type=Path, help=f"clips (default: every *.mp4 in {DEFAULT_CLIPS_DIR})")
    ap.add_argument("--out", type=Path, required=True, help="output folder (report.md, results.json, rd.png, work/)")
    ap.add_argument("--frames", type=int, default=None, help=f"first N frames of each clip (default {DEFAULT_FRAMES}, "
                    f"{QUICK_FRAMES} with --quick)")
    ap.add_argument("--vvc-qps", type=int, nargs="+", default=None,
                    help="VVenC QPs (default benchmarks.baselines.VVC_QPS)")
    ap.add_argument("--hevc-qps", type=int, nargs="+", default=None,
                    help="x265 QPs (default benchmarks.baselines.HEVC_QPS)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_FRAMES} frames, VVC QPs {QUICK_VVC_QPS}, HEVC QPs "
                    f"{QUICK_HEVC_QPS} (unless given)")
    ap.add_argument("--synths", nargs="+", choices=synths, default=synths,
                    help="synthesizers that decode our stream, each measured; the first is 'ours' in the "
                         f"per-clip tables and the acceptance lines (default: {' '.join(synths)})")
    ap.add_argument("--device", default="cpu", help="torch device for our decoder and LPIPS (default cpu)")
    ap.add_argument("--rebuild", action="store_true", help="no coding: redo the summary, report.md and rd.png "
                    "from the results.json already in --out")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return ap


def main(argv: list[str] | None = None) -> int:
    from benchmarks.baselines import HEVC_QPS, VVC_QPS

    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:
        log.setLevel(logging.DEBUG)
    if args.rebuild:
        return rebuild(Path(args.out))
    if args.frames is None:
        args.frames = QUICK_FRAMES if args.quick else DEFAULT_FRAMES
    if args.vvc_qps is None:
        args.vvc_qps = list(QUICK_VVC_QPS if args.quick else VVC_QPS)
    if args.hevc_qps is None:
        args.hevc_qps = list(QUICK_HEVC_QPS if args.quick else HEVC_QPS)
    clips = list(args.clips) or default_clips()
    if not clips:
        log.error("no clips given and none found in %s", DEFAULT_CLIPS_DIR)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    import torch

    from codec_core.config import load_config

    settings = {
        "command": " ".join(["python -m benchmarks.rd", *(argv if argv is not None else sys.argv[1:])]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "cpu": host.cpu_model(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": args.device, "commit": _git_commit(), "frames": args.frames,
        "vvc_qps": list(args.vvc_qps), "hevc_qps": list(args.hevc_qps), "synths": list(args.synths),
        "clips": [str(c) for c in clips], "codec_config": load_config().to_dict(),
        "fps_note": "every method uses the clip's own frame rate",
        "pose_error": "geodesic angle (deg) between reference and decoded head rotations; per-clip median over frames",
        "landmark_error": "mean 2D landmark distance / reference outer inter-ocular distance (33-263); per-clip mean",
        "timing_note": "encode/decode 'fps' = whole call incl. start-up; '*_loop_fps' = per-frame loop only",
    }
    results: list[dict] = []

    ctx = Context(args)
    try:
        with logging_redirect_tqdm():
            for clip in tqdm(clips, desc="clips", unit="clip"):
                t0 = time.perf_counter()
                try:
                    if not Path(clip).is_file():
                        raise FileNotFoundError(f"no such clip: {clip}")
                    results.append(run_clip(ctx, Path(clip)))
                except Exception as exc:  # noqa: BLE001 - report it and go on with the next clip
                    log.error("%s failed: %s", Path(clip).name, exc)
                    log.debug("%s", traceback.format_exc())
                    results.append({"clip": Path(clip).name, "path": str(clip), "status": "failed",
                                    "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                                    "problems": []})
                results[-1]["bench_seconds"] = time.perf_counter() - t0
                _write_json(out_dir, settings, results, None)
    finally:
        ctx.close()
    settings["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return finish(out_dir, settings, results)


def _write_json(out_dir: Path, settings: dict, results: list[dict], summary: dict | None) -> None:
    data = {"settings": settings, "summary": summary, "clips": results}
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(_clean(data), indent=1))
    tmp.replace(out_dir / "results.json")


def finish(out_dir: Path, settings: dict, results: list[dict]) -> int:
    """Summary, results.json, report.md and rd.png from the per-clip results; prints the summary."""
    summary = summarise(results)
    summary["acceptance"] = [{"criterion": a, "measured": b, "target": c, "met": d}
                             for a, b, c, d in acceptance(summary)]
    _write_json(out_dir, settings, results, summary)
    write_report(out_dir / "report.md", settings, results, summary)
    try:
        plot_rd(out_dir / "rd.png", results)
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        log.error("plot failed: %s", exc)
    print(f"Rate-distortion benchmark: {summary['clips_ok']}/{summary['clips']} clips finished; report "
          f"{out_dir / 'report.md'}")
    if summary.get("clips_ok"):
        print(summary_table(summary))
    else:
        print("no clip finished")
    return 0 if summary.get("clips_ok") else 1


def rebuild(out_dir: Path) -> int:
    """Redo the derived numbers, report.md and rd.png from an existing results.json (no coding)."""
    path = out_dir / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.error("cannot read %s: %s", path, exc)
        return 2
    results = data.get("clips") or []
    for clip in _ok(results):
        derive_matches(clip)
    settings = data.get("settings") or {}
    settings.setdefault("finished", "unknown")
    settings["rebuilt"] = datetime.now(UTC).isoformat(timespec="seconds")
    return finish(out_dir, settings, results)


if __name__ == "__main__":
    sys.exit(main())
