"""Picture quality of the synthesizers on the same streams: v1 (warp), v2 (learned), freeze.

v1 is scored twice: as it was when synthesizer v2 was asked for (`warp`: the key frame's
background held still, the stream's global picture motion ignored) and as it is now
(`warp_gm`: following the global motion, as v2 does), so that the report separates what
the global motion brings from what the generator brings.

    python -m benchmarks.synth_quality [CLIPS...] --out DIR [--frames 250] [--regions]

(`--regions`: v2 with its regional refiner; give it a copy of another run's work folder to
score the same streams without encoding them again.)

Each clip (default: all of ../shared/data/clips) is encoded once with the codec's default
settings (its lossless crops are the reference) and decoded with each synthesizer.  Per
clip: LPIPS-alex, PSNR, the mean absolute difference between consecutive output frames
(flicker), and LPIPS-alex in two regions where a warp fails:

- eyes: on frames where an eye is shut or closing (its decoded openness below 60 % of the
  key frame's), a box around that eye's lids (the lid landmarks' bounding box, grown by
  half its width, at least 32 px square at 256);
- mouth: on frames where the lips are apart (inner lip gap, landmarks 13-14, above 2 % of
  the crop), a box around the outer lip line grown by a quarter of its width.

The streams carry an eye reference (each eye as it looked most shut, docs/bitstream.md
EYE_REFERENCE; its bytes are in the table): v2 lays it where an eye shuts, v1 paints its
own lids and ignores it.
Boxes come from the decoded geometry (the same for every method), resized to 64x64 for
LPIPS.  Head pose as the RD report measures it (`benchmarks.rd.face_errors`: MediaPipe on
the output and on the source, the geodesic angle between the two head rotations, median
over frames) for v1 with the global motion (the RD report's v1) and v2.  The identity
split (models/assets/synth_split.yaml) says which clips are validation.  Writes
DIR/report.md, DIR/results.json and a picture grid per clip (source | v1 | v1 with global
motion | v2 on the frames with the largest eye and mouth change).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.metrics import LPIPS, psnr
from benchmarks.rd import detect_all, face_errors, head_poses
from codec.decoder import FaceDecoder, decode_segment, read_stream
from codec.encoder import encode_video
from codec_core.config import load_config
from codec_core.format import I_EYE_L, I_EYE_R
from codec_core.video import read_frames
from models.face_model import LEFT_EYE_LOWER, LEFT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER, FaceBasis
from models.face_tracker import FaceTracker
from models.motion import OUTER_LIPS
from models.synthesizers import Synthesis
from models.train_data import load_split

log = logging.getLogger("benchmarks.synth_quality")
CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
METHODS = ("warp", "warp_gm", "learned")          # v1 without, v1 with the global motion; v2
POSED = ("warp_gm", "learned")                    # head pose measured on these
POSE_MARGIN = 0.2       # degrees: v2's head-pose error may exceed v1's by this much on a clip
SHUT = 0.6              # an eye below this share of its key-frame openness is shut or closing
LIPS_APART = 0.02       # inner lip gap over the crop side
REGION = 64


def _box(points: np.ndarray, grow: float, minimum: int, size: int) -> tuple[int, int, int, int]:
    lo, hi = points.min(0), points.max(0)
    centre, half = (lo + hi) / 2, max((hi - lo).max() * (0.5 + grow), minimum / 2)
    x0, y0 = np.clip(np.floor(centre - half), 0, size - 1).astype(int)
    x1, y1 = np.clip(np.ceil(centre + half), 1, size).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def region_boxes(params: np.ndarray, key_params: np.ndarray, landmarks: np.ndarray,
                 size: int) -> dict[str, list[tuple[int, int, int, int, int]]]:
    """(frame, x0, y0, x1, y1) of every eye and mouth region to score."""
    eyes = ((I_EYE_R, RIGHT_EYE_UPPER + RIGHT_EYE_LOWER), (I_EYE_L, LEFT_EYE_UPPER + LEFT_EYE_LOWER))
    out: dict[str, list] = {"eyes": [], "mouth": []}
    for f, (p, lm) in enumerate(zip(params, landmarks)):
        for index, lids in eyes:
            if p[index] < SHUT * key_params[index]:
                out["eyes"].append((f, *_box(lm[list(lids), :2], 0.5, 32 * size // 256, size)))
        if lm[14, 1] - lm[13, 1] > LIPS_APART * size:
            out["mouth"].append((f, *_box(lm[list(OUTER_LIPS), :2], 0.25, 32 * size // 256, size)))
    return out


def region_lpips(lpips: LPIPS, reference: np.ndarray, frames: np.ndarray, boxes: list) -> float:
    if not boxes:
        return float("nan")

    def cut(pictures: np.ndarray) -> np.ndarray:
        return np.stack([cv2.resize(pictures[f, y0:y1, x0:x1], (REGION, REGION), interpolation=cv2.INTER_AREA)
                         for f, x0, y0, x1, y1 in boxes])

    return float(lpips.batch(cut(reference), cut(frames)).mean())


def run_clip(clip: Path, work: Path, frames: int, lpips: LPIPS, tracker: FaceTracker, regions: bool = False) -> dict:
    config, basis = load_config(), FaceBasis.load()
    stream, crop = work / f"{clip.stem}.fcv", work / f"{clip.stem}_crop.mp4"
    if not stream.exists() or not crop.exists():
        encode_video(clip, stream, config, basis, max_frames=frames, save_crop=crop)
    parsed = read_stream(stream)
    reference = np.stack(list(read_frames(crop)))
    levels = [lv for seg in parsed.segments for lv in decode_segment(seg, parsed.header.values_per_frame)]
    result: dict = {"clip": clip.stem, "frames": len(levels), "stream_bytes": parsed.total_bytes,
                    "eye_reference_bytes": len(parsed.eyes.picture) if parsed.eyes else 0}
    outputs, decoders = {}, {}
    for method in METHODS:
        synthesis = Synthesis(method.removesuffix("_gm"), regions=regions and method == "learned")
        decoder = decoders[method] = FaceDecoder(parsed.header, basis, synthesis)
        decoder.set_keyframe(parsed.keyframe, parsed.eyes)
        still = method == "warp"           # v1 as it was: the global motion ignored
        outputs[method] = np.stack([decoder.render(decoder.params(lv), None if still else decoder.motion(lv))
                                    for lv in levels])
    assert decoder.reference is not None and decoder.keyframe is not None
    outputs["freeze"] = np.repeat(decoder.keyframe[None], len(levels), 0)
    model = decoder.reference.face_model()
    params = np.stack([decoder.params(lv) for lv in levels])
    landmarks = np.stack([model.landmarks(p) for p in params])
    boxes = region_boxes(params, decoder.reference.reference_params(), landmarks, parsed.header.width)
    for method, out in outputs.items():
        per = lpips.batch(reference, out)
        result[method] = {
            "lpips": float(per.mean()), "psnr": float(np.mean([psnr(a, b) for a, b in zip(reference, out)])),
            "flicker": float(np.abs(np.diff(out.astype(np.int16), axis=0)).mean()) if len(out) > 1 else 0.0,
            "eyes_lpips": region_lpips(lpips, reference, out, boxes["eyes"]),
            "mouth_lpips": region_lpips(lpips, reference, out, boxes["mouth"]),
        }
    reference_marks = detect_all(tracker, reference)
    reference_poses = head_poses(reference_marks, basis, parsed.header.width)
    for method in POSED:
        marks = detect_all(tracker, outputs[method])
        result[method]["pose_deg"] = face_errors(reference_marks, reference_poses, marks, basis,
                                                 parsed.header.width)["pose_err_median_deg"]
    result["region_counts"] = {k: len(v) for k, v in boxes.items()}
    key_params = decoder.reference.reference_params()
    result["key_psnr_learned"] = psnr(decoder.keyframe, decoders["learned"].render(key_params))
    write_grid(work / f"{clip.stem}_grid.png", reference, outputs, params, boxes)
    return result


def write_grid(path: Path, reference: np.ndarray, outputs: dict, params: np.ndarray, boxes: dict) -> None:
    """Rows: the frame with the most shut eye, the widest mouth, the largest yaw each way
    (source | v1 | v1 with the global motion | v2)."""
    picks = {int(np.argmin(params[:, I_EYE_L] + params[:, I_EYE_R])), int(np.argmax(params[:, 0])),
             int(np.argmin(params[:, 0]))}
    if boxes["mouth"]:
        picks.add(boxes["mouth"][len(boxes["mouth"]) // 2][0])
    rows = [np.concatenate([reference[f]] + [outputs[m][f] for m in METHODS], 1) for f in sorted(picks)]
    cv2.imwrite(str(path), np.concatenate(rows, 0)[..., ::-1])


def summarise(results: list[dict], validation: set[str]) -> str:
    lines = ["| clip | side | LPIPS freeze | LPIPS v1 | LPIPS v1+gm | LPIPS v2 | v2/v1 | v2/(v1+gm) | eyes v1 "
             "| eyes v2 | mouth v1 | mouth v2 | flicker v1 | flicker v2 | key PSNR v2 | pose v1+gm | pose v2 "
             "| eye ref bytes |",
             "|" + "---|" * 18]
    for r in results:
        side = "val" if r["clip"] in validation else "train"
        v1, gm, v2, fr = r["warp"], r["warp_gm"], r["learned"], r["freeze"]
        lines.append(f"| {r['clip']} | {side} | {fr['lpips']:.4f} | {v1['lpips']:.4f} | {gm['lpips']:.4f} | "
                     f"{v2['lpips']:.4f} | {v2['lpips'] / v1['lpips']:.3f} | {v2['lpips'] / gm['lpips']:.3f} | "
                     f"{v1['eyes_lpips']:.4f} | {v2['eyes_lpips']:.4f} | {v1['mouth_lpips']:.4f} | "
                     f"{v2['mouth_lpips']:.4f} | {v1['flicker']:.2f} | {v2['flicker']:.2f} | "
                     f"{r['key_psnr_learned']:.1f} | {gm['pose_deg']:.2f} | {v2['pose_deg']:.2f} | "
                     f"{r.get('eye_reference_bytes', 0)} |")
    for side, keep in (("validation", True), ("training", False)):
        rs = [r for r in results if (r["clip"] in validation) == keep]
        if not rs:
            continue

        def mean(method: str, key: str, rs: list[dict] = rs) -> float:
            return float(np.nanmean([r[method][key] for r in rs]))

        def below(method: str, than: str, rs: list[dict] = rs) -> str:
            return f"{sum(r[method]['lpips'] < r[than]['lpips'] for r in rs)}/{len(rs)}"

        v1, gm, v2 = mean("warp", "lpips"), mean("warp_gm", "lpips"), mean("learned", "lpips")
        lines += ["", f"**{side}** ({len(rs)} clips): mean LPIPS v1 {v1:.4f}, v1+gm {gm:.4f}, v2 {v2:.4f} "
                  f"({1 - v2 / v1:+.1%} below v1, {1 - v2 / gm:+.1%} below v1+gm), "
                  f"freeze {mean('freeze', 'lpips'):.4f}; "
                  f"eyes v1 {mean('warp', 'eyes_lpips'):.4f} v1+gm {mean('warp_gm', 'eyes_lpips'):.4f} v2 "
                  f"{mean('learned', 'eyes_lpips'):.4f}; mouth v1 {mean('warp', 'mouth_lpips'):.4f} v1+gm "
                  f"{mean('warp_gm', 'mouth_lpips'):.4f} v2 {mean('learned', 'mouth_lpips'):.4f}; v2 below v1 on "
                  f"{below('learned', 'warp')}, below v1+gm on {below('learned', 'warp_gm')}, below freeze on "
                  f"{below('learned', 'freeze')}; flicker v1 {mean('warp', 'flicker'):.2f} v1+gm "
                  f"{mean('warp_gm', 'flicker'):.2f} v2 {mean('learned', 'flicker'):.2f}"]
    worse = [f"{r['clip']} {r['learned']['pose_deg'] - r['warp_gm']['pose_deg']:+.2f}" for r in results
             if r["learned"]["pose_deg"] - r["warp_gm"]["pose_deg"] > POSE_MARGIN]
    lines += ["", f"**head pose** (degrees, median over frames): v2 more than {POSE_MARGIN} worse than v1+gm on "
              f"{len(worse)} of {len(results)} clips" + (f": {', '.join(worse)}" if worse else "")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synth_quality", description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path, help="clips (default: every *.mp4 in ../shared/data/clips)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--frames", type=int, default=250, help="first N frames of each clip (default %(default)s)")
    ap.add_argument("--regions", action="store_true",
                    help="v2 with its regional refiner of the eyes and the mouth (the streams are the same)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    clips = args.clips or sorted(CLIPS.glob("*.mp4"))
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    validation = {Path(c).stem for c in load_split()["validation"]}
    lpips, results = LPIPS(), []
    with FaceTracker(still=True) as tracker:
        for clip in tqdm(clips, desc="clips", unit="clip"):
            try:
                results.append(run_clip(clip, work, args.frames, lpips, tracker, args.regions))
            except Exception as exc:  # one clip's failure is reported, the run goes on
                log.error("%s: %s: %s", clip.name, type(exc).__name__, exc)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    report = summarise(results, validation)
    setting = " --regions" if args.regions else ""
    (args.out / "report.md").write_text(f"# Synthesizer quality: v1 (warp) against v2 (learned{setting})\n\n{report}\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
