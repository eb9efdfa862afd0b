"""What the geometry translators know about real faces: a small versioned asset, and the script
that measures it.

    python -m models.translator_prior [--data ../shared/data/train] [--out PATH] [--install [--force]]

A format that sees the face only through a few 2D numbers (fomm's 10 key points and Jacobians,
cfte's 16 projections) cannot tell a head turn from an expression on its own: the fit of ifvc's
parameters to such values (models.translators) needs to know how far real faces depart from the
face model, and how real faces move.  Both are measured here on the training clips:

  noise_FMT    (n, n) the mean of e e^T over the training rows, e = analyse(FMT, L) -
               analyse(FMT, model.landmarks(model.analyse(L))): what of a real frame's FMT values
               the face model (pose, eyes, 20 expression coefficients) cannot explain, for fomm
               and cfte;
  motion_rms   (30,) the RMS of model.analyse(L) - the key frame's own parameters, per parameter:
               how far real faces move from a key frame (pose in degrees and crop fractions,
               eyes, gaze, expression).

Rows: every clip of `--data` (../shared/data/train: never the benchmark clips) tracked as the
encoder does (models.tracking, first 300 frames), 3 key frames per clip at the quantiles 0.1,
0.5, 0.9 of its frames with a face, each with its `Reference.from_landmarks` built with ifvc's
default steps, and every 2nd frame against each key frame.  About 6000 rows, 30 s on 2 cores.
Writes out/translator_prior/translator_prior_v2.npz (`--out`; float32, about 20 kB, keys
`version`, `cfte_version`, `rows`, `noise_fomm`, `noise_cfte`, `motion_rms`); `--install` copies it
to models/assets/, the asset the translators read, and refuses to replace an asset of the same
version unless `--force` (translation would change without a version saying so).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from codec_core.format import FEATURE_FORMATS, IFVC
from models.asset_install import refuse_same_version
from models.feature_formats import CFTE_VERSION, FormatGeometry
from models.reference import Reference

log = logging.getLogger(__name__)
ASSET = Path(__file__).resolve().parent / "assets" / "translator_prior_v2.npz"
VERSION = "translator_prior_v2"
NOISE_FORMATS = ("fomm", "cfte")      # the formats whose fit uses the measured noise
TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
OUT = Path("out") / "translator_prior" / ASSET.name
SIZE = 256


class PriorError(ValueError):
    """The prior asset is missing, of another version, or of other formats' sizes (one line)."""


@dataclass(frozen=True)
class TranslatorPrior:
    version: str
    noise: dict[str, np.ndarray]     # format -> (n, n) second moment of the model-mismatch residual
    motion_rms: np.ndarray           # (30,) RMS of parameters - key frame's parameters
    rows: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, version=np.array(self.version), cfte_version=np.array(CFTE_VERSION),
                 rows=np.array(self.rows), motion_rms=self.motion_rms.astype(np.float32),
                 **{f"noise_{f}": m.astype(np.float32) for f, m in self.noise.items()})


def load_prior(path: Path = ASSET) -> TranslatorPrior:
    """The prior asset; PriorError (one line) when it cannot be used."""
    return _load_prior(str(path))


@lru_cache(maxsize=4)
def _load_prior(path: str) -> TranslatorPrior:
    if not Path(path).exists():
        raise PriorError(f"translator prior {path} not found; build it with `python -m models.translator_prior`")
    with np.load(path) as z:
        version = str(z["version"])
        if version != VERSION:
            raise PriorError(f"translator prior {path} is version {version!r}; this code reads {VERSION!r}")
        if str(z["cfte_version"]) != CFTE_VERSION:
            raise PriorError(f"translator prior {path} was measured with cfte projection "
                             f"{str(z['cfte_version'])!r}, not {CFTE_VERSION!r}")
        noise = {f: z[f"noise_{f}"].astype(np.float64) for f in NOISE_FORMATS}
        motion_rms = z["motion_rms"].astype(np.float64)
        rows = int(z["rows"])
    for f, m in noise.items():
        n = FEATURE_FORMATS[f].count
        if m.shape != (n, n):
            raise PriorError(f"translator prior {path}: {f} noise is {m.shape}, not ({n}, {n})")
    if motion_rms.shape != (IFVC.count,) or not np.all(motion_rms > 0):
        raise PriorError(f"translator prior {path}: motion_rms must be {IFVC.count} positive numbers")
    return TranslatorPrior(version, noise, motion_rms, rows)


# -- measuring ---------------------------------------------------------------------------------

def key_positions(count: int, keys: int = 3) -> list[int]:
    """`keys` spread-out indices into `count` frames: the quantiles 0.1 ... 0.9."""
    return sorted({int(round(q * (count - 1))) for q in np.linspace(0.1, 0.9, keys)})


def reference_of(landmarks: np.ndarray) -> Reference:
    """The key frame reference an ifvc encoder with the default steps builds (no segmentation)."""
    from codec_core.config import load_config
    from codec_core.format import reference_steps, step_vector
    from models.face_model import FaceBasis

    basis, steps = FaceBasis.load(), load_config().steps_of("ifvc")
    return Reference.from_landmarks(basis, landmarks, SIZE, steps[-1],
                                    step_vector(reference_steps(IFVC, steps), basis.num_params))


def rows_of(landmarks: np.ndarray, reference: Reference) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """For (B, 478, 3) landmarks against `reference`: each NOISE_FORMATS format's model-mismatch
    residual (B, n), and the parameters' motion from the key frame's (B, 30)."""
    model, geometry = reference.face_model(), FormatGeometry.of(reference)
    params = np.stack([model.analyse(lm) for lm in landmarks])
    rebuilt = np.stack([model.landmarks(p) for p in params])
    residual = {f: geometry.values(f, landmarks) - geometry.values(f, rebuilt) for f in NOISE_FORMATS}
    return residual, params - reference.reference_params()


def measure(clips: list[np.ndarray], stride: int = 2, keys: int = 3) -> TranslatorPrior:
    """The prior of `clips`, each the (T, 478, 3) landmarks of one clip's frames with a face."""
    residuals: dict[str, list[np.ndarray]] = {f: [] for f in NOISE_FORMATS}
    motions = []
    for landmarks in clips:
        for k in key_positions(len(landmarks), keys):
            residual, motion = rows_of(landmarks[::stride], reference_of(landmarks[k]))
            for f in NOISE_FORMATS:
                residuals[f].append(residual[f])
            motions.append(motion)
    noise = {}
    for f in NOISE_FORMATS:
        e = np.concatenate(residuals[f])
        noise[f] = e.T @ e / len(e)
    motion = np.concatenate(motions)
    return TranslatorPrior(VERSION, noise, np.sqrt((motion ** 2).mean(axis=0)), len(motion))


def track(paths: list[Path], max_frames: int) -> list[np.ndarray]:
    """Each clip's landmarks of its frames with a face, tracked as the encoder does."""
    from tqdm import tqdm

    from models.tracking import track_video

    out = []
    for path in tqdm(paths, desc="tracking", unit="clip"):
        lms = [t.landmarks for t in track_video(path, max_frames, SIZE) if t.landmarks is not None]
        if lms:
            out.append(np.stack(lms))
    return out


def check_install(asset: Path, force: bool) -> None:
    """SystemExit (one line) when `--install` would replace an asset of this VERSION without `--force`."""
    refuse_same_version(asset, VERSION, force, "models.translator_prior",
                        "translation would change under the same version; bump VERSION")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.translator_prior", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=TRAIN_DIR, help="training clips (default: %(default)s)")
    p.add_argument("--out", type=Path, default=OUT, help="asset to write (default: %(default)s)")
    p.add_argument("--install", action="store_true", help=f"also copy it to {ASSET}, the asset the translators read")
    p.add_argument("--force", action="store_true", help="with --install: replace an asset of the same version")
    p.add_argument("--max-frames", type=int, default=300, help="frames tracked per clip (default: %(default)s)")
    p.add_argument("--stride", type=int, default=2, help="every n-th frame is a row (default: %(default)s)")
    p.add_argument("--keys", type=int, default=3, help="key frames per clip (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.install:
        check_install(ASSET, args.force)
    paths = sorted(args.data.glob("*.mp4"))
    if not paths:
        raise SystemExit(f"python -m models.translator_prior: error: no training clips (*.mp4) in {args.data}")
    prior = measure(track(paths, args.max_frames), args.stride, args.keys)
    prior.save(args.out)
    log.info("%d rows from %d clips; RMS mismatch: fomm key points %.4f, Jacobians %.4f, cfte %.4f; wrote %s",
             prior.rows, len(paths), np.sqrt(np.diag(prior.noise["fomm"])[:20].mean()),
             np.sqrt(np.diag(prior.noise["fomm"])[20:].mean()), np.sqrt(np.diag(prior.noise["cfte"]).mean()),
             args.out)
    if args.install:
        shutil.copyfile(args.out, ASSET)
        log.info("installed as %s", ASSET)


if __name__ == "__main__":
    main()
