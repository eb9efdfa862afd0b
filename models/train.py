"""Train synthesizer v2's generator by self-reenactment on the prepared cache.

    python -m models.train_data                       # once: the cache (out/train_cache)
    python -m models.train --config models/train.yaml [--fresh]

A pair is a key frame of a training clip and another frame of the same clip: the network
sees the key frame and the target frame's decoded geometry, and must draw the target
frame.  Identities are balanced (each step draws an identity, then a clip, a key frame and
a frame).  Losses: L1 (weighted up around the eyes and lips), 1 - SSIM, LPIPS on
SqueezeNet features (models/perceptual.py; LPIPS-alex is kept for evaluation), and a
temporal loss: half the batch are the next frames of the other half, and the change
between the two pictures drawn must follow the change between the two real frames.  Some
pairs are drawn on purpose: from frames with a closing eye or an opening mouth
(`hard_share`), and optionally from frames where the face moved far (`moved_share`); the
learning rate is constant or a cosine down to `lr_final`.  The run is
resumable: a checkpoint in `out` every `checkpoint_every` steps, picked up again unless
--fresh.  The weights of the best validation step so far (SqueezeNet LPIPS on fixed pairs
of the validation identities) go to `weights` with their version: on this data the
validation loss stops falling after about 2000 steps while the training loss goes on.
Progress bar, a JSON-lines log and sample pictures (key | warp | v2 | target) in `out`.

Two stages (`stage`): "generator" trains all of it at the working size (128) as above;
"regions" starts from a first stage's weights (`init`), keeps them, and trains the regional
refiner (models/regions.py) alone on the eye and mouth patches of the full-size picture
(256, as in use), with the same losses on the patches (the cache's full-size pictures;
models/train_regions.yaml), and optionally a patch critic's (`loss.adversarial`,
models/patch_critic.py: one critic step after each of the refiner's).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from codec_core.format import NUM_LANDMARKS
from models.face_model import (
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    LOWER_LIP_INNER,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
    UPPER_LIP_INNER,
    eye_measures,
)
from models.generator import WORK, Generator
from models.iris_layer import iris_free, key_lid_colours
from models.learned import KeyPictures, correct, full_size, resize, weights_state
from models.motion import MeshTensors, SourceMesh, exact_points, heat_maps, identity_grid
from models.patch_critic import PatchCritic, critic_loss, drawn_loss
from models.perceptual import SqueezeLPIPS
from models.regions import REGIONS, cut, key_patches
from models.train_data import cache_name, load_split

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
STAGES = ("generator", "regions")
REGION_GROUPS = 6            # the first heat-map groups: eye lids, irises, inner and outer lips
GRAD_CLIP = 1.0
REGION_LOSS_SIZE = 64        # region patches are enlarged to this for the perceptual loss (the benchmark's size)
INDEX_FIELDS = ("index", "simplex", "triangles", "neighbours")   # the SourceMesh fields that are indices
MIRROR = np.array([-1.0, 1.0, 1.0], np.float32)   # normalised x, y, depth: x -> -x mirrors the picture
MIRROR_MOTION = np.array([-1.0, 1.0, 1.0, -1.0], np.float32)   # global tx, ty, log_scale, angle, mirrored
CLOSING = 0.6                # a hard pair: an eye below this share of the key frame's openness,
OPENING = 0.04               # or the inner lips this much further apart than in the key frame (normalised)
MOVED = 0.15                 # a moved pair: the landmarks this far from the key frame's on average (normalised,
                             # 19 px at 256; the training frames' 90th percentile is 0.16)


def _mirrored_landmarks() -> np.ndarray:
    """Landmark order of a mirrored face: the right eye's lids and iris take the left's places
    and back, so that every heat-map group keeps its meaning (the other groups are symmetric
    sets, and a group's map does not depend on the order of its points)."""
    order = np.arange(NUM_LANDMARKS)
    for right, left in ((RIGHT_EYE_UPPER + RIGHT_EYE_LOWER, LEFT_EYE_UPPER + LEFT_EYE_LOWER), (RIGHT_IRIS, LEFT_IRIS)):
        order[list(right)], order[list(left)] = list(left), list(right)
    return order


MIRROR_LANDMARKS = _mirrored_landmarks()


@dataclass
class LossWeights:
    l1: float = 1.0
    ssim: float = 0.5
    perceptual: float = 1.0
    region: float = 3.0      # extra L1 weight at the eyes and lips
    temporal: float = 1.0    # L1 of the change between consecutive frames against the real change
    adversarial: float = 0.0  # the regions stage: a patch critic's hinge loss (models/patch_critic.py); 0: none


@dataclass
class TrainConfig:
    cache: Path = Path("out/train_cache")
    split: Path = Path("models/assets/synth_split.yaml")
    out: Path = Path("out/train")
    weights: Path = Path("models/assets/synth_v2.pt")
    steps: int = 3000
    batch: int = 8
    lr: float = 3e-4
    lr_final: float | None = None     # cosine decay from `lr` to this at `steps`; None: constant `lr`
    threads: int = 2
    minutes: float = 110.0
    loss: LossWeights = field(default_factory=LossWeights)
    identity_share: float = 0.1       # pairs whose target is the key frame; none with the temporal loss
    hard_share: float = 0.25          # pairs drawn from `hard_frames` (a closing eye, an opening mouth)
    moved_share: float = 0.0          # of the other pairs, those drawn from `moved_frames` (the face moved far)
    flip: float = 0.5                 # share of pairs mirrored left-right (key frame, geometry, target)
    colour: float = 0.1               # per-channel gain in 1 +- this, the same on key frame and target
    log_every: int = 50
    checkpoint_every: int = 200
    validate_every: int = 250
    seed: int = 0
    max_clips: int | None = None      # tests: use only this many training clips
    stage: str = "generator"          # what trains: "generator" (at 128) or "regions" (the regional
                                      # refiner at 256, models/regions.py; the rest as `init` has it)
    init: Path | None = None          # weights to start from (of this version); None: from scratch

    @classmethod
    def load(cls, path: Path | None) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) if path else {}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        paths = {k: Path(v) for k, v in data.items() if k in ("cache", "split", "out", "weights", "init") and v}
        loss = LossWeights(**data.get("loss", {}))
        config = cls(**{**data, **paths, "loss": loss})
        if config.stage not in STAGES:
            raise ValueError(f"stage {config.stage!r}: one of {', '.join(STAGES)}")
        if config.stage == "regions" and config.init is None:
            raise ValueError("stage 'regions' trains on a trained generator: give its weights as `init`")
        return config


class Clip:
    """One clip's cache (models.train_data), in memory."""

    def __init__(self, path: Path, full: bool = False) -> None:
        with np.load(path) as z:
            if full and "crops_full" not in z:
                raise ValueError(f"{path} has no full-size pictures: prepare the cache again "
                                 "(python -m models.train_data --out NEW_FOLDER)")
            self.crops_full = z["crops_full"] if full else None
            self.key_images_full = z["key_images_full"] if full else None
            self.crops = z["crops"]
            self.frames = np.flatnonzero(z["valid"])
            self.successive = self.frames[np.isin(self.frames + 1, self.frames)]    # the next frame is valid too
            self.keys = z["keys"]
            self.key_images = z["key_images"]
            self.sources = z["sources"]
            self.targets = z["targets"]
            self.landmarks = z["landmarks"]
            self.motions = z["motions"]
        # per key frame, its hard and its moved frames, and those of them whose next frame is valid too
        self.hard, self.hard_successive = self._per_key(hard_frames)
        self.moved, self.moved_successive = self._per_key(moved_frames)
        # the key frames' own landmarks, iris-free pictures and lid colours (models.iris_layer),
        # as they are and mirrored
        own = self.landmarks[np.arange(len(self.keys)), self.keys].astype(np.float32)
        self.key_landmarks = [own, (own * MIRROR[:2])[:, MIRROR_LANDMARKS]]
        self.key_free, self.key_colours = self._key_eyes(self.key_images)
        if self.key_images_full is not None:
            self.key_free_full, self.key_colours_full = self._key_eyes(self.key_images_full)
        # the key frames' meshes, as they are and mirrored (the mirrored key frame's own mesh)
        meshes = [[SourceMesh.build(source * side, WORK) for source in self.sources] for side in (1.0, MIRROR[:2])]
        # per side, per field of SourceMesh: the key frames' arrays stacked (indices as int32)
        self.meshes = [{name: np.stack([getattr(m, name) for m in ms]) for name in MeshTensors._fields}
                       for ms in meshes]
        for side in self.meshes:
            for name in INDEX_FIELDS:
                side[name] = side[name].astype(np.int32)

    def _key_eyes(self, key_images: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The key frames' iris-free pictures and lid colours, as they are and mirrored."""
        free, colours = [], []
        for m, side in enumerate(self.key_landmarks):
            pictures = key_images[:, :, ::-1] if m else key_images
            pixels = (side + 1.0) * (key_images.shape[1] / 2)
            free.append(np.stack([iris_free(p, marks) for p, marks in zip(pictures, pixels)]))
            colours.append(np.stack([key_lid_colours(p, marks) for p, marks in zip(pictures, pixels)]))
        return free, colours

    def _per_key(self, pick: Callable[[np.ndarray, int, np.ndarray], np.ndarray]) -> tuple[list, list]:
        """Per key frame, the frames `pick` chooses, and those of them whose next frame is valid too."""
        chosen = [pick(self.landmarks[k], int(key), self.frames) for k, key in enumerate(self.keys)]
        return chosen, [c[np.isin(c, self.successive)] for c in chosen]

    def pair(self, rng: random.Random, identity_share: float, flip: float = 0.0, colour: float = 0.0,
             consecutive: bool = False, hard_share: float = 0.0,
             moved_share: float = 0.0) -> list[tuple[np.ndarray, ...]]:
        """A key frame and a frame of this clip, drawn at random (a hard one, when the key
        frame has any, with probability `hard_share`; otherwise a moved one with probability
        `moved_share`) and augmented; with `consecutive`, that frame and the next one,
        augmented alike (the temporal loss)."""
        k = rng.randrange(len(self.keys))
        hard = self.hard_successive[k] if consecutive else self.hard[k]
        moved = self.moved_successive[k] if consecutive else self.moved[k]
        if hard_share and len(hard) and rng.random() < hard_share:     # (no draw at 0: a run without them)
            j = int(rng.choice(hard))
        elif moved_share and len(moved) and rng.random() < moved_share:
            j = int(rng.choice(moved))
        elif consecutive:
            j = int(rng.choice(self.successive))
        else:
            j = int(self.keys[k]) if rng.random() < identity_share else int(rng.choice(self.frames))
        m = 1 if rng.random() < flip else 0
        gain = np.array([1.0 + rng.uniform(-colour, colour) for _ in range(3)], np.float32)
        return [self._item(k, i, m, gain) for i in ((j, j + 1) if consecutive else (j,))]

    def _item(self, k: int, j: int, m: int, gain: np.ndarray) -> tuple[np.ndarray, ...]:
        """Key frame k and frame j, mirrored if m, with the per-channel gain."""
        key, crop = self.key_images[k], self.crops[j]
        key_free, key_landmarks, key_colours = self.key_free[m][k], self.key_landmarks[m][k], self.key_colours[m][k]
        source, target = self.sources[k], self.targets[k, j].astype(np.float32)
        landmarks, motion = self.landmarks[k, j].astype(np.float32), self.motions[k, j]
        if m:
            key, crop = key[:, ::-1], crop[:, ::-1]
            source, target = source * MIRROR[:2], target * MIRROR
            landmarks = (landmarks * MIRROR[:2])[MIRROR_LANDMARKS]
            motion = motion * MIRROR_MOTION
        key, key_free, crop = (np.clip(picture * gain, 0, 255).astype(np.uint8) for picture in (key, key_free, crop))
        key_colours = np.clip(key_colours * gain, 0.0, 1.0)
        mesh = tuple(self.meshes[m][name][k] for name in MeshTensors._fields)
        item = (key, key_free, key_landmarks, key_colours, source, mesh, target, landmarks, motion, crop)
        if self.crops_full is None:
            return item
        full = [self.key_images_full[k], self.key_free_full[m][k], self.crops_full[j]]
        if m:
            full[0], full[2] = full[0][:, ::-1], full[2][:, ::-1]
        full = [np.clip(picture * gain, 0, 255).astype(np.uint8) for picture in full]
        return item + (full[0], full[1], np.clip(self.key_colours_full[m][k] * gain, 0.0, 1.0), full[2])


def hard_frames(landmarks: np.ndarray, key: int, frames: np.ndarray) -> np.ndarray:
    """The `frames` (of one key frame's landmarks, (F, 478, 2) normalised) that the warp
    draws worst and the benchmark scores apart: an eye closing below CLOSING of its openness
    in the key frame, or the lips opening OPENING further than there."""
    marks = landmarks.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):      # frames without a face have no landmarks
        eyes = np.stack([eye_measures(m)[:2] for m in marks])
    gap = marks[:, LOWER_LIP_INNER, 1] - marks[:, UPPER_LIP_INNER, 1]
    hard = (eyes < CLOSING * eyes[key]).any(1) | (gap - gap[key] > OPENING)
    return frames[hard[frames]]


def moved_frames(landmarks: np.ndarray, key: int, frames: np.ndarray) -> np.ndarray:
    """The `frames` (of one key frame's landmarks, (F, 478, 2) normalised) whose landmarks are
    on average MOVED or further from the key frame's: a turn, a nod, a moving camera, where the
    warp uncovers most."""
    with np.errstate(invalid="ignore"):          # frames without a face have no landmarks
        moved = np.linalg.norm(landmarks.astype(np.float32) - landmarks[key], axis=-1).mean(1) >= MOVED
    return frames[moved[frames]]


class Pairs:
    """Draws batches of (key frame, target geometry, target picture), identities balanced."""

    def __init__(self, clips: dict[str, list[Clip]], identity_share: float, seed: int, flip: float = 0.0,
                 colour: float = 0.0, consecutive: bool = False, hard_share: float = 0.0,
                 moved_share: float = 0.0) -> None:
        self.clips = clips
        self.identities = sorted(clips)
        self.identity_share = identity_share
        self.flip, self.colour, self.consecutive, self.hard_share = flip, colour, consecutive, hard_share
        self.moved_share = moved_share
        self.rng = random.Random(seed)

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """`size` pairs; with `consecutive`, size / 2 of them each followed by its next frame."""
        items: list[tuple[np.ndarray, ...]] = []
        while len(items) < size:
            clip = self.rng.choice(self.clips[self.rng.choice(self.identities)])
            items += clip.pair(self.rng, self.identity_share, self.flip, self.colour, self.consecutive,
                               self.hard_share, self.moved_share)
        columns = list(zip(*items))
        key, key_free, key_landmarks, key_colours, source, meshes, target, landmarks, motion, crop = columns[:10]
        key, key_free, key_landmarks, key_colours, source, target, landmarks, motion, crop = map(
            np.stack, (key, key_free, key_landmarks, key_colours, source, target, landmarks, motion, crop))
        mesh = MeshTensors(*(torch.from_numpy(np.stack(x)) for x in zip(*meshes)))
        mesh = mesh._replace(**{name: getattr(mesh, name).long() for name in INDEX_FIELDS})

        def picture(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0

        batch = {"key": KeyPictures(picture(key), picture(key_free), torch.from_numpy(key_landmarks),
                                    torch.from_numpy(key_colours)),
                 "source": torch.from_numpy(source), "mesh": mesh,
                 "exact": torch.from_numpy(exact_points(source.shape[1]))[None], "target": torch.from_numpy(target),
                 "landmarks": torch.from_numpy(landmarks), "motion": torch.from_numpy(motion), "picture": picture(crop)}
        if len(columns) > 10:           # the full-size pictures (the regions stage)
            key, key_free, key_colours, crop = (np.stack(x) for x in columns[10:])
            batch["key_full"] = KeyPictures(picture(key), picture(key_free), batch["key"].landmarks,
                                            torch.from_numpy(key_colours))
            batch["picture_full"] = picture(crop)
        return batch


def load_clips(config: TrainConfig, side: str) -> dict[str, list[Clip]]:
    split = load_split(config.split)[side]
    names = list(split)[: config.max_clips] if config.max_clips else list(split)
    clips: dict[str, list[Clip]] = {}
    for name in names:
        path = config.cache / cache_name(name)
        if not path.exists():
            raise FileNotFoundError(f"{path} is not prepared: run `python -m models.train_data`")
        clips.setdefault(split[name], []).append(Clip(path, full=config.stage == "regions"))
    return clips


def ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (Gaussian window, sigma 1.5), per picture (B,)."""
    x = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-x ** 2 / (2 * 1.5 ** 2))
    g = (g / g.sum()).to(a.device)
    window = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return 1.0 - s.mean((1, 2, 3))


def temporal_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of the change between the pictures drawn of consecutive frames (the batch holds
    them in pairs) against the change between the real ones."""
    return ((out[0::2] - out[1::2]) - (target[0::2] - target[1::2])).abs().mean()


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate at `step`: `lr` throughout, or a cosine from `lr` down to `lr_final` at
    `steps` (a function of the step alone, so a resumed run goes on where it was)."""
    if config.lr_final is None:
        return config.lr
    done = min(step / max(config.steps, 1), 1.0)
    return config.lr_final + (config.lr - config.lr_final) * 0.5 * (1.0 + math.cos(math.pi * done))


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.generator = Generator()
        if config.init is not None:
            self.generator.load_state_dict(weights_state(config.init))
        trained = self.generator.regions if config.stage == "regions" else self.generator
        for p in self.generator.parameters():
            p.requires_grad_(False)
        for p in trained.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(trained.parameters(), lr=config.lr)
        self.critic: PatchCritic | None = None     # the regions stage with `loss.adversarial`
        if config.stage == "regions" and config.loss.adversarial > 0:
            self.critic = PatchCritic()
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self._drawn: list[tuple[torch.Tensor, torch.Tensor]] = []     # the last batch's patches, for the critic
        self.perceptual = SqueezeLPIPS()
        self.step = 0
        self.seconds = 0.0
        self.best = float("inf")        # the best validation SqueezeNet LPIPS so far

    def synthesize(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """v2's working-size pictures of a batch, and the plain warp (no correction)."""
        features = self.generator.key_encoder(b["key"].picture)
        out = correct(self.generator, b["key"], features, b["mesh"], b["source"], b["exact"], b["target"],
                      b["landmarks"], b["motion"])
        return out.frame, (out.frame - out.correction).clamp(0.0, 1.0)

    def region_patches(self, b: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per region (models.regions.REGIONS): the full-size picture's patch before the
        refiner, the refiner's correction of it and the target's patch, as in use (the
        generator's part without gradients: the regions stage trains the refiner alone)."""
        key = b["key_full"]
        with torch.no_grad():
            features = self.generator.key_encoder(b["key"].picture)
            out = correct(self.generator, b["key"], features, b["mesh"], b["source"], b["exact"], b["target"],
                          b["landmarks"], b["motion"])
            full = full_size(key.picture, key.iris_free, key.lid_colours, identity_grid(key.picture.shape[-1]),
                             out.disp, out.correction, out.eyes)
            key_inputs = key_patches(key.picture, key.landmarks)
        parts = self.generator.regions.corrections(full, b["landmarks"], key_inputs, key.landmarks)
        return [(patch, correction, cut(b["picture_full"], *frame, region.patch))
                for region, (patch, correction, frame) in zip(REGIONS, parts)]

    def region_losses(self, b: dict) -> dict[str, torch.Tensor]:
        w = self.config.loss
        sums: dict[str, torch.Tensor] = {}
        drawn = [((patch + correction).clamp(0.0, 1.0), target) for patch, correction, target in self.region_patches(b)]
        for out, target in drawn:
            big, target_big = resize(out, REGION_LOSS_SIZE), resize(target, REGION_LOSS_SIZE)
            for name, value in (("l1", (out - target).abs().mean()), ("ssim", ssim_loss(out, target).mean()),
                                ("perceptual", self.perceptual(big, target_big).mean())):
                sums[name] = sums.get(name, 0.0) + value / len(REGIONS)
        sums["total"] = w.l1 * sums["l1"] + w.ssim * sums["ssim"] + w.perceptual * sums["perceptual"]
        if w.temporal:      # consecutive frames in pairs (Pairs.consecutive), as in the first stage
            sums["temporal"] = sum(temporal_loss(out, target) for out, target in drawn) / len(REGIONS)
            sums["total"] = sums["total"] + w.temporal * sums["temporal"]
        if self.critic is not None:
            sums["adversarial"] = sum(drawn_loss(self.critic, out) for out, _ in drawn) / len(REGIONS)
            sums["total"] = sums["total"] + w.adversarial * sums["adversarial"]
            self._drawn = [(out.detach(), target) for out, target in drawn]
        return sums

    def critic_step(self) -> float | None:
        """One step of the patch critic on the patches of the last batch the refiner drew
        (none without `loss.adversarial`); its loss."""
        if self.critic is None or not self._drawn:
            return None
        loss = sum(critic_loss(self.critic, target, out) for out, target in self._drawn) / len(self._drawn)
        self.critic_optimizer.zero_grad()
        loss.backward()
        self.critic_optimizer.step()
        self._drawn = []
        return float(loss.detach())

    def losses(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.config.stage == "regions":
            return self.region_losses(b)
        w = self.config.loss
        out, _ = self.synthesize(b)
        target = b["picture"]
        region = heat_maps(b["landmarks"], WORK)[:, :REGION_GROUPS].amax(1, keepdim=True)
        l1 = ((out - target).abs() * (1.0 + w.region * region)).mean((1, 2, 3))
        parts = {"l1": l1.mean(), "ssim": ssim_loss(out, target).mean(),
                 "perceptual": self.perceptual(out, target).mean()}
        parts["total"] = w.l1 * parts["l1"] + w.ssim * parts["ssim"] + w.perceptual * parts["perceptual"]
        if w.temporal:      # the batch holds consecutive frames in pairs (Pairs.consecutive)
            parts["temporal"] = temporal_loss(out, target)
            parts["total"] = parts["total"] + w.temporal * parts["temporal"]
        return parts

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        critic = {} if self.critic is None else {"critic": self.critic.state_dict(),
                                                 "critic_optimizer": self.critic_optimizer.state_dict()}
        torch.save({"version": Generator.VERSION, "step": self.step, "seconds": self.seconds,
                    "best": self.best, "generator": self.generator.state_dict(),
                    "optimizer": self.optimizer.state_dict(), **critic}, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != Generator.VERSION:
            raise ValueError(f"{path} is a checkpoint of {saved.get('version')!r}, not {Generator.VERSION!r}")
        self.generator.load_state_dict(saved["generator"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.critic is not None and "critic" in saved:
            self.critic.load_state_dict(saved["critic"])
            self.critic_optimizer.load_state_dict(saved["critic_optimizer"])
        self.step, self.seconds = int(saved["step"]), float(saved["seconds"])
        self.best = float(saved.get("best", float("inf")))

    def save_weights(self, path: Path, summary: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"version": Generator.VERSION, "state": self.generator.state_dict(), "trained": summary}, path)

    # -- validation and samples ---------------------------------------------------------

    def compared(self, b: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(with, without, target) of what the stage trains: the working-size pictures with
        the generator's correction and the plain warp, or per region the patches with the
        refiner's correction and without."""
        if self.config.stage == "regions":
            return [((patch + correction).clamp(0.0, 1.0), patch, target)
                    for patch, correction, target in self.region_patches(b)]
        out, warp = self.synthesize(b)
        return [(out, warp, b["picture"])]

    @torch.no_grad()
    def validate(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Mean L1 and SqueezeNet LPIPS of what the stage trains (v2's picture, or the
        refined regions) and of what it starts from (the plain warp, or the regions before
        the refiner) on fixed validation pairs."""
        self.generator.eval()
        sums = {"l1": 0.0, "lpips_sq": 0.0, "warp_l1": 0.0, "warp_lpips_sq": 0.0}
        count = 0
        for b in batches:
            for out, warp, target in self.compared(b):
                count += 1
                sums["l1"] += (out - target).abs().mean().item()
                sums["warp_l1"] += (warp - target).abs().mean().item()
                size = max(target.shape[-1], REGION_LOSS_SIZE)
                sums["lpips_sq"] += self.perceptual(resize(out, size), resize(target, size)).mean().item()
                sums["warp_lpips_sq"] += self.perceptual(resize(warp, size), resize(target, size)).mean().item()
        self.generator.train()
        return {k: round(v / count, 5) for k, v in sums.items()}

    @torch.no_grad()
    def write_samples(self, b: dict[str, torch.Tensor], path: Path) -> None:
        self.generator.eval()
        compared = self.compared(b)
        self.generator.train()
        if self.config.stage == "regions":     # per pair: each region's before | after | target
            rows = [torch.cat([resize(x[None], REGION_LOSS_SIZE)[0] for out, warp, target in compared
                               for x in (warp[i], out[i], target[i])], 2) for i in range(len(b["landmarks"]))]
        else:
            out, warp, target = compared[0]
            rows = [torch.cat([b["key"].picture[i], warp[i], out[i], target[i]], 2) for i in range(len(out))]
        grid = (torch.cat(rows, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), grid[..., ::-1])


def train(config: TrainConfig, fresh: bool = False, progress: bool = True) -> dict:
    """Run (or resume) training; returns the summary written beside the weights."""
    torch.set_num_threads(config.threads)
    trainer = Trainer(config)
    checkpoint = config.out / CHECKPOINT
    if checkpoint.exists() and not fresh:
        trainer.load_checkpoint(checkpoint)
        log.info("resuming from %s at step %d", checkpoint, trainer.step)
    pairs = Pairs(load_clips(config, "training"), config.identity_share, config.seed + trainer.step, config.flip,
                  config.colour, consecutive=config.loss.temporal > 0, hard_share=config.hard_share,
                  moved_share=config.moved_share)
    held_out = Pairs(load_clips(config, "validation"), 0.0, seed=12345)
    val_batches = [held_out.batch(config.batch) for _ in range(4)]
    log_file = (config.out / "log.jsonl").open("w" if trainer.step == 0 else "a")
    started = time.monotonic()

    def validate() -> None:
        summary = {"step": trainer.step, **trainer.validate(val_batches)}
        log_file.write(json.dumps({"validation": summary}) + "\n")
        if summary["lpips_sq"] < trainer.best:
            trainer.best = summary["lpips_sq"]
            trainer.save_weights(config.weights, {**summary, "config": json.loads(json.dumps(asdict(config),
                                                                                            default=str))})

    bar = tqdm(total=config.steps, initial=trainer.step, disable=not progress, desc="training", unit="step")
    try:
        while trainer.step < config.steps:
            if trainer.seconds + time.monotonic() - started > config.minutes * 60:
                log.info("time budget of %g minutes spent at step %d", config.minutes, trainer.step)
                break
            for group in trainer.optimizer.param_groups:
                group["lr"] = learning_rate(config, trainer.step)
            parts = trainer.losses(pairs.batch(config.batch))
            trainer.optimizer.zero_grad()
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(trainer.generator.parameters(), GRAD_CLIP)
            trainer.optimizer.step()
            critic = trainer.critic_step()
            if critic is not None:
                parts["critic"] = torch.tensor(critic)
            trainer.step += 1
            bar.update(1)
            if trainer.step % config.log_every == 0:
                record = {"step": trainer.step, "lr": learning_rate(config, trainer.step),
                          **{k: round(v.item(), 5) for k, v in parts.items()}}
                bar.set_postfix(loss=record["total"])
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if trainer.step % config.validate_every == 0:
                validate()
                trainer.write_samples(val_batches[0], config.out / "samples" / f"step{trainer.step:06d}.png")
            if trainer.step % config.checkpoint_every == 0:
                trainer.seconds += time.monotonic() - started
                started = time.monotonic()
                trainer.save_checkpoint(checkpoint)
        if trainer.step % config.validate_every:
            validate()                  # the last step's weights compete too
    finally:
        bar.close()
        trainer.seconds += time.monotonic() - started
        trainer.save_checkpoint(checkpoint)
        log_file.close()
    trainer.write_samples(val_batches[0], config.out / "samples" / "final.png")
    summary = torch.load(config.weights, map_location="cpu", weights_only=True)["trained"]
    summary.update(steps_run=trainer.step, minutes=round(trainer.seconds / 60, 1))
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="training settings (YAML; see models/train.yaml)")
    ap.add_argument("--fresh", action="store_true", help="start over instead of resuming from the checkpoint")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = TrainConfig.load(args.config)
        config.out.mkdir(parents=True, exist_ok=True)
        summary = train(config, args.fresh)
    except (OSError, ValueError, KeyError) as exc:
        print(f"python -m models.train: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
