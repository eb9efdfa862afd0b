"""Learn the face model asset (mean shape, rigid points, expression and eye bases).

    python -m models.train_basis [--data ../shared/data/clips] [--holdout-frames 250]
                                 [--components 20] [--out models/assets/face_basis_v1.npz]

Every clip is tracked in its steady 256x256 crop.  Training uses only frames at index
`--holdout-frames` and later, so the first 250 frames that the rate-distortion
benchmark evaluates are never seen in training.  Steps:
  1. generalised Procrustes on a seed set of stable points -> mean shape, made frontal
     (eye line horizontal, chin-forehead line vertical) and scaled to RMS radius 1;
  2. rigid points: the points that move least within each clip after alignment;
  3. eye bases: per-point linear regression of within-clip displacement on the measured
     eye openness (each eye's region only) and gaze (iris points only);
  4. expression basis: PCA of what remains, the first K components.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from codec_core.video import read_frames
from models.face_model import (
    DEFAULT_BASIS,
    LEFT_EYE_CORNERS,
    LEFT_IRIS,
    RIGHT_EYE_CORNERS,
    RIGHT_IRIS,
    SEED_RIGID,
    FaceBasis,
    eye_measures,
    fit_similarity,
)
from models.tracking import CropTracker

log = logging.getLogger(__name__)
VERSION = "v1"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "clips"
CACHE = REPO / "out" / "landmarks"


def clip_landmarks(path: Path, size: int = 256) -> np.ndarray:
    """Crop-space landmarks of every frame of a clip (F, 478, 3); NaN where lost. Cached."""
    cache = CACHE / f"{path.stem}_{size}.npy"
    if cache.exists():
        return np.load(cache)
    tracker = CropTracker(size)
    out = []
    for frame in read_frames(path):
        lm = tracker.track(frame).landmarks
        out.append(np.full((478, 3), np.nan) if lm is None else lm)
    tracker.close()
    arr = np.stack(out)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def _normalise(shape: np.ndarray) -> np.ndarray:
    """Centre, make frontal and scale to RMS radius 1."""
    c = shape - shape.mean(axis=0)
    x = c[list(LEFT_EYE_CORNERS)].mean(axis=0) - c[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    x /= np.linalg.norm(x)
    y = c[152] - c[10]  # forehead -> chin (image y points down)
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    R = np.stack([x, y, np.cross(x, y)])
    c = c @ R.T
    return c / np.sqrt((c ** 2).sum(axis=1).mean())


def _align(shapes: np.ndarray, target: np.ndarray, idx) -> np.ndarray:
    """Each shape mapped into target's frame by the similarity fitted on points idx."""
    out = np.empty_like(shapes)
    for i, s in enumerate(shapes):
        out[i] = fit_similarity(target[idx], s[idx]).invert_points(s)
    return out


def _eye_masks(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean point masks of the left and right eye regions of the mean shape."""
    masks = []
    for corners in (LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS):
        centre = mean[list(corners)].mean(axis=0)
        width = np.linalg.norm(mean[corners[0]] - mean[corners[1]])
        masks.append(np.linalg.norm(mean[:, :2] - centre[:2], axis=1) < 0.75 * width)
    return masks[0], masks[1]


def learn_basis(clips: list[np.ndarray], components: int, num_rigid: int = 120) -> FaceBasis:
    """Fit the face model to per-clip landmark arrays (F, 478, 3) without NaNs."""
    allf = np.concatenate(clips)
    seed = list(SEED_RIGID)
    mean = _normalise(allf[0])
    for _ in range(3):
        mean = _normalise(_align(allf, mean, seed).mean(axis=0))

    # rigid points: least within-clip motion in the mean's frame
    var = np.zeros(478)
    for c in clips:
        a = _align(c, mean, seed)
        var += ((a - a.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0)
    rigid = np.sort(np.argsort(var)[:num_rigid])
    for _ in range(2):
        mean = _normalise(_align(allf, mean, rigid).mean(axis=0))

    # within-clip displacements and eye measures
    deltas, eyes = [], []
    for c in clips:
        ref = _align(c[:1], mean, rigid)[0]
        canon = _align(c, ref, rigid)
        e = np.array([eye_measures(x) for x in canon])
        deltas.append((canon - canon.mean(axis=0)).reshape(len(c), -1))
        eyes.append(e - e.mean(axis=0))
    D, E = np.concatenate(deltas), np.concatenate(eyes)

    left, right = _eye_masks(mean)
    iris = np.zeros(478, bool)
    iris[list(LEFT_IRIS + RIGHT_IRIS)] = True
    eye_basis = np.zeros((4, 478, 3))
    Dp = D.reshape(len(D), 478, 3)
    for p in range(478):
        active = []
        if left[p]:
            active.append(0)
        if right[p]:
            active.append(1)
        if iris[p]:
            active += [2, 3]
        if active:
            coef, *_ = np.linalg.lstsq(E[:, active], Dp[:, p, :], rcond=None)
            eye_basis[active, p, :] = coef
    eye_basis = eye_basis.reshape(4, -1)

    residual = D - E @ eye_basis
    _, sv, vt = np.linalg.svd(residual, full_matrices=False)
    basis = vt[:components]
    std = sv[:components] / np.sqrt(len(D))
    explained = (sv[:components] ** 2).sum() / (sv ** 2).sum()
    log.info("expression basis: %d components explain %.1f%% of the residual variance", components, 100 * explained)
    return FaceBasis(version=VERSION, mean=mean, rigid=rigid, expression=basis, expression_std=std, eyes=eye_basis)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--holdout-frames", type=int, default=250)
    ap.add_argument("--components", type=int, default=20)
    ap.add_argument("--out", type=Path, default=DEFAULT_BASIS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = sorted(args.data.glob("*.mp4"))
    if not paths:
        raise SystemExit(f"error: no clips in {args.data}")
    clips = []
    for path in tqdm(paths, desc="tracking clips"):
        lm = clip_landmarks(path)[args.holdout_frames:]
        lm = lm[~np.isnan(lm).any(axis=(1, 2))]
        if len(lm) >= 10:
            clips.append(lm)
            log.info("%s: %d training frames", path.name, len(lm))
    if not clips:
        raise SystemExit("error: no training frames (clips shorter than --holdout-frames?)")
    basis = learn_basis(clips, args.components)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    basis.save(args.out)
    log.info("wrote %s (%s, %d frames from %d clips, %d bytes)", args.out, basis.version,
             sum(map(len, clips)), len(clips), args.out.stat().st_size)


if __name__ == "__main__":
    main()
