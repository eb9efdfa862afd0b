"""Installing a learned asset over the shipped one: refused when the shipped file already
holds this code's version (streams or pictures made with it would silently change), unless
forced.  Shared by the small training scripts that write `models/assets/*.npz`."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def refuse_same_version(asset: Path, version: str, force: bool, prog: str, why: str) -> None:
    """SystemExit (one line, naming `prog`) when `asset` exists and holds `version`, without `force`;
    `why`: what would go wrong, and what to do instead."""
    if force or not asset.exists():
        return
    with np.load(asset) as saved:
        held = str(saved["version"]) if "version" in saved.files else None
    if held == version:
        raise SystemExit(f"python -m {prog}: error: {asset} is already {version}: {why}, or pass --force")
