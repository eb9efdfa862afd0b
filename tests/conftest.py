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


def clip(name: str) -> Path:
    path = CLIPS / name
    if not path.exists():
        pytest.skip(f"test clip {path} is missing (../shared/data)")
    return path
