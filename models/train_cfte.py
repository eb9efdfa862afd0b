"""Fit the cfte format's projection: `python -m models.train_cfte` (a few minutes on 2 cores).

Tracks the training clips of ../shared/data/train as the encoder does (models.tracking,
the crop fixed around the first face), takes every `--stride`-th frame with a face, puts
the 68 cfte landmarks (models.feature_formats.CFTE_POINTS) in [-1, 1] crop coordinates,
adds `--jitter` copies of each under a small random 2D similarity (so that the projection
also spans head motion that the training clips lack), and keeps the top 16 principal
components: f = P^T (x - mean).  Writes models/assets/cfte_v1.npz (a few kB, its version
string inside) and logs how much of the variance the 16 components keep.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.feature_formats import CFTE_ASSET, CFTE_DIM, CFTE_POINTS, CFTE_VERSION, CfteProjection, normalised
from models.tracking import track_video

log = logging.getLogger(__name__)
TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
SIZE = 256


def collect(clips: list[Path], max_frames: int, stride: int) -> np.ndarray:
    """(N, 68, 2) normalised cfte points of every `stride`-th tracked frame of `clips`."""
    points = []
    for path in tqdm(clips, desc="tracking", unit="clip"):
        tracked = track_video(path, max_frames, SIZE)
        lms = [t.landmarks for t in tracked[::stride] if t.landmarks is not None]
        points += [normalised(lm[list(CFTE_POINTS), :2], SIZE) for lm in lms]
    return np.stack(points)


def jittered(points: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """`points` and `copies` versions of each under a random similarity about the crop centre:
    rotation +-10 degrees, scale +-10 %, shift +-0.06 (uniform)."""
    out = [points]
    for _ in range(copies):
        n = len(points)
        a = np.deg2rad(rng.uniform(-10, 10, n))
        s = np.exp(rng.uniform(np.log(0.9), np.log(1.1), n))
        rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
        shift = rng.uniform(-0.06, 0.06, (n, 1, 2))
        out.append(s[:, None, None] * np.einsum("nij,nkj->nki", rot, points) + shift)
    return np.concatenate(out)


def fit(points: np.ndarray, dim: int = CFTE_DIM) -> tuple[CfteProjection, float]:
    """PCA of (N, 68, 2) points: the projection and the share of variance it keeps."""
    x = points.reshape(len(points), -1)
    mean = x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    kept = float((sv[:dim] ** 2).sum() / (sv ** 2).sum())
    return CfteProjection(CFTE_VERSION, mean, vt[:dim].T), kept


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=TRAIN_DIR, help="training clips (default: %(default)s)")
    p.add_argument("--out", type=Path, default=CFTE_ASSET, help="asset to write (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=600, help="frames tracked per clip (default: %(default)s)")
    p.add_argument("--stride", type=int, default=2, help="keep every n-th tracked frame (default: %(default)s)")
    p.add_argument("--jitter", type=int, default=2, help="random similarity copies per frame (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = sorted(args.data.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no training clips (*.mp4) in {args.data}")
    points = collect(clips, args.max_frames, args.stride)
    data = jittered(points, args.jitter, np.random.default_rng(args.seed))
    projection, kept = fit(data)
    rebuilt = projection.rebuild(projection.project(points))
    err = np.linalg.norm(rebuilt - points, axis=-1).mean() * SIZE / 2
    projection.save(args.out)
    log.info("%d frames (%d with jitter) from %d clips; %d components keep %.2f%% of the variance; "
             "mean point error %.2f px at %d; wrote %s", len(points), len(data), len(clips), CFTE_DIM,
             100 * kept, err, SIZE, args.out)


if __name__ == "__main__":
    main()
