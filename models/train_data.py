"""Training data of synthesizer v2, prepared once into a cache: one .npz per clip.

Self-reenactment, as the codec sees it: each clip is cropped as the encoder crops it
(models.tracking), a few of its frames are coded as key frames (VVC intra, decoded back,
with their reference geometry), and every frame's parameters are quantised against each
key frame with the codec's steps and hysteresis.  The key frames' QPs run from sharp
(QP 22, a call's key frame) to the offline benchmark's small ones (QP 37), so that the
network learns to work from both.  What the
network needs per (key frame, frame) pair is stored at the working size (128):

    crops      (N, 128, 128, 3) uint8   every frame's crop: the targets
    valid      (N,) bool                the face was found (only these are targets)
    keys       (K,) int                 which frames are key frames
    key_images (K, 128, 128, 3) uint8   the decoded VVC key frames
    sources    (K, V, 2) float32        the key frames' control points (models.motion), normalised
    targets    (K, N, V, 3) float16     every frame's control points against each key frame:
                                        normalised x, y and depth (models.learned.frame_points)
    landmarks  (K, N, 478, 2) float16   every frame's decoded landmarks, normalised
    motions    (K, N, 4) float32        every frame's decoded global motion against each key
                                        frame (models.global_motion, quantised as the encoder does)

and at the codec's size (256), for the regional refiner (models/regions.py), which draws
the eyes and the mouth at the picture's own resolution:

    crops_full      (N, 256, 256, 3) uint8   every frame's crop
    key_images_full (K, 256, 256, 3) uint8   the decoded VVC key frames

    python -m models.train_data [--out out/train_cache] [--split models/assets/synth_split.yaml]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

from codec_core.config import CodecConfig, load_config
from codec_core.format import step_vector
from codec_core.keyframe import decode_keyframe, encode_keyframe
from codec_core.param_coding import dequantise, quantise
from models.face_model import FaceBasis
from models.generator import WORK
from models.global_motion import GlobalMotion
from models.learned import frame_points
from models.motion import KeyConstants, KeyGeometry, normalised
from models.reference import Reference
from models.segmentation import person_probability
from models.tracking import NoFaceError, track_video

log = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLIT = Path(__file__).resolve().parent / "assets" / "synth_split.yaml"
CACHE = Path("out/train_cache")
MAX_FRAMES = 300
KEYS_PER_CLIP = 4
KEY_QPS = (22, 27, 32, 37)      # the key frames of a clip take these in turn


def load_split(path: Path = SPLIT) -> dict[str, dict[str, str]]:
    """{"training": {clip: identity}, "validation": {...}}; clips relative to ../shared/data."""
    split = yaml.safe_load(Path(path).read_text())
    overlap = set(split["training"].values()) & set(split["validation"].values())
    if overlap:
        raise ValueError(f"{path}: identities on both sides of the split: {sorted(overlap)}")
    return {"training": split["training"], "validation": split["validation"]}


def cache_name(clip: str) -> str:
    return clip.replace("/", "__").rsplit(".", 1)[0] + ".npz"


def _small(picture: np.ndarray) -> np.ndarray:
    return cv2.resize(picture, (WORK, WORK), interpolation=cv2.INTER_AREA)


def code_key(crop: np.ndarray, landmarks: np.ndarray, qp: int, basis: FaceBasis,
             config: CodecConfig) -> tuple[np.ndarray, Reference]:
    """A key frame as the receiver gets it: the decoded VVC picture and its reference."""
    picture = decode_keyframe(encode_keyframe(crop, qp, config.keyframe_preset))
    steps = step_vector(config.steps.values(), basis.num_params)
    return picture, Reference.from_landmarks(basis, landmarks, config.size, config.steps.geometry, steps,
                                             person=person_probability(picture))


def coded_params(reference: Reference, marks: list[np.ndarray | None], config: CodecConfig) -> np.ndarray:
    """Every frame's decoded parameters against one key frame, quantised as the encoder does
    (hysteresis from the key frame's own levels; a frame without a face holds the last)."""
    model, steps = reference.face_model(), reference.param_steps
    levels, out = reference.reference_levels(), []
    for m in marks:
        if m is not None:
            levels = quantise(model.analyse(m), steps, levels, config.hysteresis)
        out.append(dequantise(levels, steps))
    return np.stack(out)


def coded_motions(key_crop: np.ndarray, key_marks: np.ndarray, crops: list[np.ndarray],
                  marks: list[np.ndarray | None], config: CodecConfig) -> np.ndarray:
    """Every frame's decoded global motion (N, 4) float32 against one key frame, quantised
    with the stream's global step (a frame without a face: measured all the same, its
    picture is there)."""
    estimator = GlobalMotion(key_crop, key_marks)
    step = np.full(4, config.global_step)
    return np.stack([dequantise(quantise(estimator.estimate(c, m), step), step)
                     for c, m in zip(crops, marks)]).astype(np.float32)


def prepare_clip(path: Path, basis: FaceBasis, max_frames: int = MAX_FRAMES,
                 keys_per_clip: int = KEYS_PER_CLIP) -> dict[str, np.ndarray]:
    """The cache arrays of one clip (see the module docstring)."""
    config = load_config()
    tracked = track_video(path, max_frames, config.size)
    crops, marks = [t.crop for t in tracked], [t.landmarks for t in tracked]
    valid = np.array([m is not None for m in marks])
    if valid.sum() < keys_per_clip:
        raise NoFaceError(f"{path}: a face in only {valid.sum()} frames")
    candidates = np.flatnonzero(valid)
    keys = candidates[np.linspace(0, len(candidates) - 1, keys_per_clip).round().astype(int)]
    key_images, sources, targets, landmarks, motions = [], [], [], [], []
    for k, qp in zip(keys, KEY_QPS * keys_per_clip):
        picture, ref = code_key(crops[k], marks[k], qp, basis, config)
        params = coded_params(ref, marks, config)
        motion = coded_motions(crops[k], marks[k], crops, marks, config)
        geometry = KeyGeometry(KeyConstants.from_model(ref.face_model(), ref.reference_params(), ref.ring_weights))
        with torch.no_grad():
            src, _ = geometry.points(torch.as_tensor(ref.reference_params(), dtype=torch.float32)[None])
            tgt, lm = geometry.points(torch.as_tensor(params, dtype=torch.float32), torch.from_numpy(motion))
        motions.append(motion)
        key_images.append(picture)
        sources.append(normalised(src[0, :, :2], config.size).numpy())
        targets.append(frame_points(tgt, config.size).numpy().astype(np.float16))
        landmarks.append(normalised(lm[..., :2], config.size).numpy().astype(np.float16))
    return {"crops": np.stack([_small(c) for c in crops]), "valid": valid, "keys": keys,
            "key_images": np.stack([_small(p) for p in key_images]), "crops_full": np.stack(crops),
            "key_images_full": np.stack(key_images), "sources": np.stack(sources), "targets": np.stack(targets),
            "landmarks": np.stack(landmarks), "motions": np.stack(motions)}


def prepare(out: Path = CACHE, split_path: Path = SPLIT, data: Path = DATA, max_frames: int = MAX_FRAMES,
            clips: list[str] | None = None) -> list[Path]:
    """Prepare every clip of the split (or just `clips`) that is not in the cache yet."""
    split = load_split(split_path)
    names = clips or [c for side in split.values() for c in side]
    out.mkdir(parents=True, exist_ok=True)
    basis = FaceBasis.load()
    done = []
    for clip in tqdm(names, desc="preparing clips", unit="clip"):
        target = out / cache_name(clip)
        if not target.exists():
            arrays = prepare_clip(data / clip, basis, max_frames)
            partial = target.with_suffix(".part.npz")
            np.savez(partial, **arrays)
            partial.rename(target)
        done.append(target)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train_data", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CACHE, help="cache folder (default: %(default)s)")
    ap.add_argument("--split", type=Path, default=SPLIT, help="split file (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: %(default)s)")
    ap.add_argument("--max-frames", type=int, default=MAX_FRAMES, help="frames per clip (default: %(default)s)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare(args.out, args.split, args.data, args.max_frames)
    except (OSError, ValueError, NoFaceError) as exc:
        print(f"python -m models.train_data: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
