"""Fit the cfte format's projection: `python -m models.train_cfte` (a few minutes on 2 cores).

Tracks the training clips of ../shared/data/train as the encoder does (models.tracking,
the crop fixed around the first face), takes every `--stride`-th frame with a face, puts
the 68 cfte landmarks (models.feature_formats.CFTE_POINTS) in [-1, 1] crop coordinates,
adds `--jitter` copies of each under a small random 2D similarity (so that the projection
also spans head motion that the training clips lack), and keeps the top 16 principal
components: f = P^T (x - mean).  Writes out/cfte/cfte_v1.npz (`--out`; a few kB, its version
string inside) and logs how much of the variance the 16 components keep.

`--install` also copies it to models/assets/cfte_v1.npz, the asset the codec reads.  It refuses
to replace an asset of the same version (unless `--force`): cfte streams coded with the old
projection would decode wrongly with a new one, so a new projection needs a new CFTE_VERSION
(models/feature_formats.py).  The check comes before the minutes of tracking.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.asset_install import refuse_same_version
from models.feature_formats import CFTE_ASSET, CFTE_DIM, CFTE_POINTS, CFTE_VERSION, CfteProjection, normalised
from models.tracking import track_video

log = logging.getLogger(__name__)
TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
OUT = Path("out") / "cfte" / CFTE_ASSET.name
SIZE = 256


def check_install(asset: Path, force: bool) -> None:
    """SystemExit (one line) when `--install` would replace `asset` holding this code's
    CFTE_VERSION, without `--force`."""
    refuse_same_version(asset, CFTE_VERSION, force, "models.train_cfte",
                        "cfte streams coded with it would decode wrongly with a new projection; bump CFTE_VERSION "
                        "(models/feature_formats.py) when the projection changes")


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.train_cfte", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=TRAIN_DIR, help="training clips (default: %(default)s)")
    p.add_argument("--out", type=Path, default=OUT, help="projection to write (default: %(default)s)")
    p.add_argument("--install", action="store_true", help=f"also copy it to {CFTE_ASSET}, the asset the codec reads")
    p.add_argument("--force", action="store_true", help="with --install: replace an asset of the same version")
    p.add_argument("--max-frames", type=int, default=600, help="frames tracked per clip (default: %(default)s)")
    p.add_argument("--stride", type=int, default=2, help="keep every n-th tracked frame (default: %(default)s)")
    p.add_argument("--jitter", type=int, default=2, help="random similarity copies per frame (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.install:
        check_install(CFTE_ASSET, args.force)
    clips = sorted(args.data.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no training clips (*.mp4) in {args.data}")
    points = collect(clips, args.max_frames, args.stride)
    data = jittered(points, args.jitter, np.random.default_rng(args.seed))
    projection, kept = fit(data)
    rebuilt = projection.rebuild(projection.project(points))
    err = np.linalg.norm(rebuilt - points, axis=-1).mean() * SIZE / 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    projection.save(args.out)
    log.info("%d frames (%d with jitter) from %d clips; %d components keep %.2f%% of the variance; "
             "mean point error %.2f px at %d; wrote %s", len(points), len(data), len(clips), CFTE_DIM,
             100 * kept, err, SIZE, args.out)
    if args.install:
        shutil.copyfile(args.out, CFTE_ASSET)
        log.info("installed as %s", CFTE_ASSET)


if __name__ == "__main__":
    main()
