"""Numbers of a live call: distribution summaries, key frame byte tallies, a JSON stats
file that is rewritten during the call, and a per-frame trace (JSON lines) that benchmarks
join across processes."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def summary(values: Iterable[float]) -> dict:
    """median, p95, mean, max and count of some values (None for an empty set)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"median": None, "p95": None, "mean": None, "max": None, "count": 0}
    r = lambda x: round(float(x), 2)  # noqa: E731
    return {"median": r(np.median(v)), "p95": r(np.percentile(v, 95)), "mean": r(v.mean()), "max": r(v.max()),
            "count": int(v.size)}


def kbps(nbytes: int, seconds: float | None) -> float | None:
    """`nbytes` over `seconds` in kbit/s (None without a duration)."""
    return round(nbytes * 8 / 1000 / seconds, 3) if seconds else None


@dataclass
class KeyframeTally:
    """The bytes of every key frame a call end sent or received (the stream message: record
    type byte and KEYFRAME payload), the small ones and the sharp ones apart (docs/call.md)."""

    small: list[int] = field(default_factory=list)
    sharp: list[int] = field(default_factory=list)

    def add(self, nbytes: int, sharp: bool) -> None:
        (self.sharp if sharp else self.small).append(nbytes)

    @property
    def total(self) -> int:
        return sum(self.small) + sum(self.sharp)

    def snapshot(self, seconds: float | None) -> dict:
        """The stats keys: bytes of each small and each sharp key frame, their total, and
        that total as kbit/s over `seconds` of call."""
        return {"keyframe_bytes_small": list(self.small), "keyframe_bytes_sharp": list(self.sharp),
                "keyframe_bytes_total": self.total, "keyframe_kbps": kbps(self.total, seconds)}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` to `path` so that a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n")
    os.replace(tmp, path)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class StatsFile:
    """Rewrites `path` with `snapshot()` every `interval` seconds while running, and once
    more, marked final, by `close()`."""

    def __init__(self, path: str | Path | None, snapshot: Callable[[], dict], interval: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.snapshot = snapshot
        self.interval = interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._task = asyncio.create_task(self._run(), name="stats-file")

    async def _run(self) -> None:
        while True:
            self.write(final=False)
            await asyncio.sleep(self.interval)

    def write(self, final: bool) -> None:
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, {**self.snapshot(), "final": final})
        except OSError as exc:
            log.warning("cannot write stats to %s: %s", self.path, exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.write(final=True)


class JsonLines:
    """A JSON-lines file (one object per line), or nothing when `path` is None."""

    def __init__(self, path: str | Path | None) -> None:
        self._file = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", buffering=1 << 16)

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(_clean(record), separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
