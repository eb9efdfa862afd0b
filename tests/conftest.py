"""Shared test fixtures: where the shared data lives, and skips when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECALL_SHARED", REPO.parent / "shared"))
CLIPS = SHARED / "data" / "clips"
STILLS = SHARED / "data" / "stills"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHROMIUM = Path("/usr/bin/chromium")     # Debian's, driven by Playwright (never `playwright install`)

try:
    from playwright.sync_api import sync_playwright
except ImportError:           # pragma: no cover - depends on the machine
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.exists(),
    reason="the playwright package is not installed (scripts/setup installs it)" if sync_playwright is None
    else "/usr/bin/chromium is missing (scripts/setup installs Debian's chromium when run as root)")


def one_line_error(argv: list[str], capsys) -> str:
    """Run `python -m codec_core` in process: it must fail with status 1 and exactly one
    `error:` line, no traceback; that line."""
    from codec.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def clip(name: str) -> Path:
    path = CLIPS / name
    if not path.exists():
        pytest.skip(f"test clip {path} is missing (../shared/data)")
    return path


@pytest.fixture(scope="session")
def rt3_key():
    """The first 60 frames of rt__3 tracked as the encoder does, and the reference of frame 0
    (no segmentation): what the synthesizer tests animate."""
    from models.tracking import track_video

    tracked = track_video(clip("rt__3.mp4"), 60)
    return tracked, key_reference(tracked[0].landmarks)


def key_reference(landmarks):
    """The reference (no segmentation) of a key frame with these tracked landmarks, at 256."""
    from codec_core.config import load_config
    from codec_core.format import step_vector
    from models.face_model import FaceBasis
    from models.reference import Reference

    cfg, basis = load_config(), FaceBasis.load()
    return Reference.from_landmarks(basis, landmarks, 256, cfg.steps.geometry,
                                    step_vector(cfg.steps.values(), basis.num_params))


@pytest.fixture(scope="session")
def rt3_parted_mouth(rt3_key):
    """A key frame with its lips shut (rt__3 frame 10, its own reference), parameters that
    part them 8 px (the expression coefficient that parts them most), and a mouth reference
    cut from an open mouth (frame 42) as the graph takes it (`models.eye_reference.EyePatches`).
    Returns (key frame, reference, parted parameters, patches)."""
    import numpy as np
    import torch

    from codec_core.format import NUM_FIXED
    from models.eye_reference import EyePatches, no_eye_patches, picture_tensor
    from models.mouth_reference import cut_mouth, inner_gap

    tracked, _ = rt3_key
    ref = key_reference(tracked[10].landmarks)
    model, own = ref.face_model(), ref.reference_params()
    gaps = [inner_gap(model.landmarks(own + np.eye(len(own))[k])) for k in range(NUM_FIXED, len(own))]
    k = NUM_FIXED + int(np.argmax(gaps))
    step = 0.05 if max(gaps) > inner_gap(model.landmarks(own)) else -0.05
    parted = own.copy()
    while inner_gap(model.landmarks(parted)) < 8.0:
        parted[k] += step
    empty = no_eye_patches(256)
    patches = empty.patches.clone()
    patches[..., 96:] = picture_tensor(cut_mouth(tracked[42].crop, tracked[42].landmarks, 48))
    return tracked[10].crop, ref, parted, EyePatches(patches, empty.openness, torch.tensor([[0.0, 0.0, 1.0]]))

