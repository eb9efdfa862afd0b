"""Train the learned translators between feature formats (models.translator_nets).

    python -m models.train_translators [--config models/translators.yaml] [--fresh] [--install]

Data (prepared once, cached in `out`/data.npz, rebuilt when its settings change): every
training clip of ../shared/data/train is tracked as the encoder tracks (models.tracking,
the crop fixed around the first face, 256 px), first `max_frames` frames.  `keys` key
frames per clip at spread-out moments (the frames with a face at quantiles 0.1, 0.5, 0.9
of the clip for 3), each with its `Reference.from_landmarks` as the encoder builds it (no
segmentation: features do not need it); then every `stride`-th frame with a face gives its
values in all four formats (models.feature_formats.analyse against that key frame) and the
key frame's own values (key_features).  One row = (frame, key frame), values of all formats.
Real rows alone do not generalise to new people (about 2000 frames of 30 clips, most of them
frontal MEAD crops of three people), so each key frame of a training clip also gets
`synthetic` rows drawn by its own face model (FaceModel.landmarks) for motions taken from the
other clips' real frames, scaled and with extra head pose (`synthetic_rows`).

Training: each step draws a batch of rows, adds uniform quantisation noise of the default
steps (codec_core/defaults.yaml; `noise` x step) to the encoders' inputs (the decoder sees
dequantised values), encodes every format, decodes every format from every format's latent
(all 16 ordered pairs at once, the 4 auto-encodings included) and minimises the mean
squared error in each destination's normalised units, plus `align` x the spread of the four
latents of the same row around their mean (pulls the formats' latents together).  Adam.
Clips named in `validation` (by identity) are held out; the weights of the best validation
step (mean error over the 12 cross pairs) go to `weights` (default `out`/translators_v2.pt)
with the version string; `--install` copies them, once training is over, to
models/assets/translators_v2.pt, the shipped weights that receivers load (never before: a run
stopped half way leaves the shipped weights as they were).
Progress bar, JSON-lines log (`out`/log.jsonl) and a resumable checkpoint (`out`/checkpoint.pt).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from codec_core.config import load_config
from codec_core.format import FEATURE_FORMATS, STREAM_VERSION
from models.translator_nets import TRANSLATORS_ASSET, VERSION, TranslatorNets

log = logging.getLogger(__name__)
TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
SIZE = 256
CHECKPOINT = "checkpoint.pt"
FORMATS = tuple(FEATURE_FORMATS)
# spread of the pose jitter of synthetic rows: yaw, pitch, roll (degrees), tx, ty, log_scale
POSE_JITTER = np.array([8.0, 6.0, 6.0, 0.04, 0.04, 0.03])


@dataclass
class TranslatorTrainConfig:
    data: Path = TRAIN_DIR
    clips: list[str] | None = None           # clip stems to use (None: every *.mp4 in `data`)
    validation: list[str] = field(default_factory=lambda: ["lp__d14", "lp__s29"])
    out: Path = Path("out/translators")
    weights: Path | None = None              # the best step's weights (None: `out`/translators_v2.pt)
    max_frames: int = 300
    stride: int = 2
    keys: int = 3
    synthetic: int = 300                     # face-model rows per key frame (0: real rows only)
    latent: int = 48
    hidden: int = 128
    steps: int = 4000
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    align: float = 0.1
    noise: float = 1.0
    threads: int = 2
    log_every: int = 100
    checkpoint_every: int = 500
    validate_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        if self.weights is None:
            self.weights = self.out / TRANSLATORS_ASSET.name

    @classmethod
    def load(cls, path: Path | None) -> TranslatorTrainConfig:
        data = yaml.safe_load(Path(path).read_text()) if path else {}
        data = data or {}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown translator training settings: {sorted(unknown)}")
        paths = {k: Path(v) for k, v in data.items() if k in ("data", "out", "weights") and v is not None}
        return cls(**{**data, **paths})

    def data_settings(self) -> dict:
        """What the prepared data depends on (a cache made with other settings is rebuilt)."""
        # the stream version changes whenever what a format's values mean does (fomm's key points)
        return {"version": VERSION, "stream_version": STREAM_VERSION, "data": str(self.data),
                "clips": self.clip_paths_names(),
                "max_frames": self.max_frames,
                "stride": self.stride, "keys": self.keys,
                "synthetic": self.synthetic, "seed": self.seed, "validation": sorted(self.validation)}

    def clip_paths(self) -> list[Path]:
        if self.clips is not None:
            paths = [self.data / f"{c}.mp4" for c in self.clips]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                raise FileNotFoundError(f"training clip {missing[0]} not found")
            return paths
        paths = sorted(self.data.glob("*.mp4"))
        if not paths:
            raise FileNotFoundError(f"no training clips (*.mp4) in {self.data}")
        return paths

    def clip_paths_names(self) -> list[str]:
        return [p.stem for p in self.clip_paths()]


# -- data ----------------------------------------------------------------------------------

def key_positions(count: int, keys: int) -> list[int]:
    """`keys` spread-out indices into `count` frames: quantiles 0.1 ... 0.9 (0.5 for one)."""
    qs = [0.5] if keys == 1 else np.linspace(0.1, 0.9, keys)
    return sorted({int(round(q * (count - 1))) for q in qs})


@lru_cache(maxsize=1)
def _reference_tools():
    """The face basis and the steps an ifvc encoder builds its key frames' references with
    (codec.encoder.FaceEncoder's header_steps[-1] and reference_steps)."""
    from codec_core.format import IFVC, reference_steps, step_vector
    from models.face_model import FaceBasis

    basis, steps = FaceBasis.load(), load_config().steps_of("ifvc")
    return basis, steps[-1], step_vector(reference_steps(IFVC, steps), basis.num_params)


def rows_of(landmarks: np.ndarray, key_landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Every format's values of (B, 478, 3) landmarks against the key frame with `key_landmarks`,
    and the key frame's own values: {fmt: (B, n), fmt_key: (B, n)}."""
    from models.feature_formats import FormatGeometry, key_features
    from models.reference import Reference

    basis, geometry_step, reference_steps = _reference_tools()
    ref = Reference.from_landmarks(basis, key_landmarks, SIZE, geometry_step, reference_steps)
    geometry, model = FormatGeometry.of(ref), ref.face_model()
    rows = {}
    for fmt in FORMATS:
        rows[fmt] = (np.stack([model.analyse(lm) for lm in landmarks]) if fmt == "ifvc"
                     else geometry.values(fmt, landmarks))
        rows[f"{fmt}_key"] = np.repeat(key_features(fmt, ref)[None], len(landmarks), 0)
    return rows


def clip_rows(path: Path, config: TranslatorTrainConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One clip's real rows ({fmt: (R, n) values, fmt_key: (R, n) key values}) and its key
    frames' landmarks (K, 478, 3)."""
    from models.tracking import track_video

    tracked = track_video(path, config.max_frames, SIZE)
    landmarks = np.stack([t.landmarks for t in tracked if t.landmarks is not None])
    sampled = landmarks[::config.stride]
    keys = landmarks[key_positions(len(landmarks), config.keys)]
    parts = [rows_of(sampled, key) for key in keys]
    return {name: np.concatenate([p[name] for p in parts]).astype(np.float32) for name in parts[0]}, keys


def synthetic_rows(keys: np.ndarray, pool: np.ndarray, count: int, config: TranslatorTrainConfig,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`count` rows per key frame of `keys` whose landmarks the key frame's face model draws
    (FaceModel.landmarks) for motions taken from other clips: p = p_key + a * d + pose jitter,
    d a random real ifvc motion (values - key values) of `pool`, a ~ U(0.5, 1.5) on the
    expression, eyes and gaze, the pose jittered by POSE_JITTER; eye openness kept >= 0."""
    from codec_core.format import EXPRESSION, EYES
    from models.reference import Reference

    basis, geometry_step, reference_steps = _reference_tools()
    parts = []
    for key in keys:
        ref = Reference.from_landmarks(basis, key, SIZE, geometry_step, reference_steps)
        model, p_key = ref.face_model(), ref.reference_params()
        d = pool[rng.integers(len(pool), size=count)].astype(np.float64)
        a = rng.uniform(0.5, 1.5, (count, 1))
        d[:, EXPRESSION] *= a
        d[:, EYES] *= a
        d[:, :6] += rng.normal(size=(count, 6)) * POSE_JITTER
        params = p_key + d
        params[:, 6:8] = np.maximum(params[:, 6:8], 0.0)
        landmarks = np.stack([model.landmarks(p) for p in params])
        parts.append(rows_of(landmarks, key))
    return {name: np.concatenate([p[name] for p in parts]).astype(np.float32) for name in parts[0]}


def prepare(config: TranslatorTrainConfig, progress: bool = True) -> dict[str, np.ndarray]:
    """The training rows of every clip (cached in `out`/data.npz): `clip` names each row's clip,
    `synthetic` marks the rows drawn by the face model (only from clips outside `validation`)."""
    cache = config.out / "data.npz"
    settings = json.dumps(config.data_settings(), sort_keys=True)
    if cache.exists():
        with np.load(cache) as z:
            if str(z["settings"]) == settings:
                return {k: z[k] for k in z.files if k != "settings"}
        log.info("%s was prepared with other settings: preparing again", cache)
    parts: dict[str, list[np.ndarray]] = {}

    def add(rows: dict[str, np.ndarray], clip: str, synthetic: bool) -> None:
        for name, values in rows.items():
            parts.setdefault(name, []).append(values)
        parts.setdefault("clip", []).append(np.array([clip] * len(rows["ifvc"])))
        parts.setdefault("synthetic", []).append(np.full(len(rows["ifvc"]), synthetic))

    keys = {}
    for path in tqdm(config.clip_paths(), desc="tracking", unit="clip", disable=not progress):
        rows, keys[path.stem] = clip_rows(path, config)
        add(rows, path.stem, False)
    if config.synthetic:
        real = {name: np.concatenate(p) for name, p in parts.items()}
        train = ~np.isin(real["clip"], config.validation)
        pool = (real["ifvc"] - real["ifvc_key"])[train]
        rng = np.random.default_rng(config.seed)
        for clip, clip_keys in tqdm(keys.items(), desc="synthetic", unit="clip", disable=not progress):
            if clip not in config.validation:
                add(synthetic_rows(clip_keys, pool, config.synthetic, config, rng), clip, True)
    data = {name: np.concatenate(p) for name, p in parts.items()}
    config.out.mkdir(parents=True, exist_ok=True)
    tmp = config.out / "data.tmp.npz"
    np.savez(tmp, settings=np.array(settings), **data)
    tmp.replace(cache)
    log.info("prepared %d rows (%d synthetic) from %d clips into %s", len(data["clip"]), int(data["synthetic"].sum()),
             len(keys), cache)
    return data


def default_steps() -> dict[str, np.ndarray]:
    """Each format's quantisation step per value under the default configuration."""
    cfg = load_config()
    return {f: FEATURE_FORMATS[f].step_vector(cfg.steps_of(f)).astype(np.float32) for f in FORMATS}


# -- training ------------------------------------------------------------------------------

class Trainer:
    def __init__(self, config: TranslatorTrainConfig, data: dict[str, np.ndarray]) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        held = np.isin(data["clip"], config.validation)
        if held.all():                           # everything held out: validate on the training rows
            held = np.zeros(len(held), bool)
        if not held.any():
            val_rows = np.flatnonzero(~data["synthetic"])
        else:
            val_rows = np.flatnonzero(held & ~data["synthetic"])
        numeric = [k for k in data if k not in ("clip", "synthetic")]
        self.train = {k: torch.from_numpy(data[k][~held]) for k in numeric}
        self.val = {k: torch.from_numpy(data[k][val_rows]) for k in numeric}
        self.steps = {f: torch.from_numpy(s) for f, s in default_steps().items()}
        self.nets = TranslatorNets({f: FEATURE_FORMATS[f].count for f in FORMATS}, config.latent, config.hidden)
        for f in FORMATS:
            self.nets.set_normalisation(f, self.train[f] - self.train[f"{f}_key"], self.train[f"{f}_key"])
        self.optimizer = torch.optim.AdamW(self.nets.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.step, self.seconds, self.best = 0, 0.0, float("inf")
        self.generator = torch.Generator().manual_seed(config.seed)

    def losses(self, batch: dict[str, torch.Tensor], noise: bool) -> dict[str, torch.Tensor]:
        """Mean squared error of every ordered pair (normalised destination units) and the alignment term."""
        nets, latents = self.nets, {}
        for f in FORMATS:
            values = batch[f]
            if noise and self.config.noise:
                u = torch.rand(values.shape, generator=self.generator) - 0.5
                values = values + u * self.steps[f] * self.config.noise
            latents[f] = nets.encode(f, values, batch[f"{f}_key"])
        errors = {}
        for d in FORMATS:
            target = nets.target(d, batch[d], batch[f"{d}_key"])
            for s in FORMATS:
                out = nets.decode_normalised(d, latents[s], batch[f"{d}_key"])
                errors[(s, d)] = ((out - target) ** 2).mean()
        z = torch.stack(list(latents.values()))
        align = ((z - z.mean(0, keepdim=True)) ** 2).mean()
        fit = torch.stack(list(errors.values())).mean()
        cross = torch.stack([e for (s, d), e in errors.items() if s != d]).mean()
        return {"total": fit + self.config.align * align, "fit": fit, "cross": cross, "align": align,
                **{f"{s}->{d}": e for (s, d), e in errors.items() if s != d}}

    def batch(self) -> dict[str, torch.Tensor]:
        rows = torch.randint(len(self.train["ifvc"]), (self.config.batch,), generator=self.generator)
        return {k: v[rows] for k, v in self.train.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.nets.eval()
        parts = self.losses(self.val, noise=False)
        self.nets.train()
        return {k: round(v.item(), 5) for k, v in parts.items()}

    def save_checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"version": VERSION, "step": self.step, "seconds": self.seconds, "best": self.best,
                    "nets": self.nets.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "generator": self.generator.get_state()}, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != VERSION:
            raise ValueError(f"{path} is a checkpoint of {saved.get('version')!r}, not {VERSION!r}")
        self.nets.load_state_dict(saved["nets"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"])
        self.step, self.seconds, self.best = int(saved["step"]), float(saved["seconds"]), float(saved["best"])


def train(config: TranslatorTrainConfig, fresh: bool = False, progress: bool = True) -> dict:
    """Prepare (once) and train (or resume); returns the summary saved with the weights."""
    torch.set_num_threads(config.threads)
    data = prepare(config, progress)
    trainer = Trainer(config, data)
    checkpoint = config.out / CHECKPOINT
    if checkpoint.exists() and not fresh:
        trainer.load_checkpoint(checkpoint)
        log.info("resuming from %s at step %d", checkpoint, trainer.step)
    config.out.mkdir(parents=True, exist_ok=True)
    log_file = (config.out / "log.jsonl").open("w" if trainer.step == 0 else "a")
    started = time.monotonic()
    settings = json.loads(json.dumps(asdict(config), default=str))

    def validate() -> None:
        summary = {"step": trainer.step, **trainer.validate()}
        log_file.write(json.dumps({"validation": summary}) + "\n")
        log_file.flush()
        if summary["cross"] < trainer.best or not config.weights.exists():
            trainer.best = summary["cross"]
            trainer.nets.save(config.weights, {"validation": summary, "rows": len(trainer.train["ifvc"]),
                                               "config": settings})

    bar = tqdm(total=config.steps, initial=trainer.step, disable=not progress, desc="training", unit="step")
    try:
        while trainer.step < config.steps:
            parts = trainer.losses(trainer.batch(), noise=True)
            trainer.optimizer.zero_grad()
            parts["total"].backward()
            trainer.optimizer.step()
            trainer.step += 1
            bar.update(1)
            if trainer.step % config.log_every == 0 or trainer.step == config.steps:
                record = {"step": trainer.step, **{k: round(parts[k].item(), 5) for k in ("total", "fit", "cross",
                                                                                           "align")}}
                bar.set_postfix(cross=record["cross"])
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if trainer.step % config.validate_every == 0:
                validate()
            if trainer.step % config.checkpoint_every == 0:
                trainer.seconds += time.monotonic() - started
                started = time.monotonic()
                trainer.save_checkpoint(checkpoint)
        if trainer.step % config.validate_every or not config.weights.exists():
            validate()                          # the last step competes too
    finally:
        bar.close()
        trainer.seconds += time.monotonic() - started
        trainer.save_checkpoint(checkpoint)
        log_file.close()
    summary = torch.load(config.weights, map_location="cpu", weights_only=True)["trained"]
    summary.update(steps_run=trainer.step, minutes=round(trainer.seconds / 60, 2))
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train_translators", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="training settings (YAML; see models/translators.yaml)")
    ap.add_argument("--fresh", action="store_true", help="start over instead of resuming from the checkpoint")
    ap.add_argument("--install", action="store_true",
                    help=f"once trained, copy the weights to {TRANSLATORS_ASSET}, the ones receivers load")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = TranslatorTrainConfig.load(args.config)
        summary = train(config, args.fresh)
        if args.install:
            shutil.copyfile(config.weights, TRANSLATORS_ASSET)
            log.info("installed %s as %s", config.weights, TRANSLATORS_ASSET)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"python -m models.train_translators: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
