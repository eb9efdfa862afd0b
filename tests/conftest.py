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
    from codec_core.config import load_config
    from codec_core.format import step_vector
    from models.face_model import FaceBasis
    from models.reference import Reference
    from models.tracking import track_video

    tracked = track_video(clip("rt__3.mp4"), 60)
    cfg, basis = load_config(), FaceBasis.load()
    ref = Reference.from_landmarks(basis, tracked[0].landmarks, 256, cfg.steps.geometry,
                                   step_vector(cfg.steps.values(), basis.num_params))
    return tracked, ref
