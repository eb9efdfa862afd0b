"""Numbers of a live call: distribution summaries, key frame byte tallies, a JSON stats
file that is rewritten during the call, and a per-frame trace (JSON lines) that benchmarks
join across processes.

Everything kept per frame is bounded, so that a long call does not grow memory: latency and
stage samples live in a `Samples` ring (`LiveConfig.stats_window` values for the median and
p95; count, mean and max over the whole call), key frame sizes in short lists with running
totals (`KEYFRAMES_LISTED`)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from live.config import DEFAULT

log = logging.getLogger(__name__)

#: key frame sizes listed in the stats (the newest); the totals count every key frame
KEYFRAMES_LISTED = 64


def _round(x: float) -> float:
    return round(float(x), 2)


def summary(values: Iterable[float]) -> dict:
    """median, p95, mean, max and count of some values (None for an empty set); of a
    `Samples`: the median and p95 of the values it keeps, the rest over all of them."""
    if isinstance(values, Samples):
        return values.summary()
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"median": None, "p95": None, "mean": None, "max": None, "count": 0}
    return {"median": _round(np.median(v)), "p95": _round(np.percentile(v, 95)), "mean": _round(v.mean()),
            "max": _round(v.max()), "count": int(v.size)}


class Samples:
    """The values of a distribution over a whole call in bounded memory: the newest
    `window` of them in a ring (median, p95), and the count, mean and max of all of them.

    Reads like the list of every value so far: `len()` is the count, and a slice takes the
    values of that range still kept (`s[-50:]` the newest fifty, `s[n:]` those after the
    first n), oldest first."""

    def __init__(self, window: int = DEFAULT.stats_window) -> None:
        if window < 1:
            raise ValueError("a Samples window holds at least one value")
        self._ring = np.empty(window, np.float64)
        self.count = 0
        self._sum = 0.0
        self._max = -math.inf

    def append(self, value: float) -> None:
        self._ring[self.count % len(self._ring)] = value
        self.count += 1
        self._sum += value
        self._max = max(self._max, value)

    def __len__(self) -> int:
        return self.count

    def _kept_from(self) -> int:
        return self.count - min(self.count, len(self._ring))

    def __getitem__(self, index: slice) -> list[float]:
        if not isinstance(index, slice):
            raise TypeError("Samples take slices only")
        start, stop, step = index.indices(self.count)
        if step != 1:
            raise ValueError("Samples take slices with step 1 only")
        start = max(start, self._kept_from())
        if stop <= start:
            return []
        return self._ring[np.arange(start, stop) % len(self._ring)].tolist()

    def __iter__(self) -> Iterator[float]:
        return iter(self[:])

    def summary(self) -> dict:
        if not self.count:
            return summary(())
        kept = np.asarray(self[:])
        return {"median": _round(np.median(kept)), "p95": _round(np.percentile(kept, 95)),
                "mean": _round(self._sum / self.count), "max": _round(self._max), "count": self.count}


def kbps(nbytes: int, seconds: float | None) -> float | None:
    """`nbytes` over `seconds` in kbit/s (None without a duration)."""
    return round(nbytes * 8 / 1000 / seconds, 3) if seconds else None


@dataclass
class KeyframeTally:
    """The bytes of every key frame a call end sent or received (the stream message: record
    type byte and KEYFRAME payload), the small ones and the sharp ones apart (docs/call.md)."""

    small: deque[int] = field(default_factory=lambda: deque(maxlen=KEYFRAMES_LISTED))
    sharp: deque[int] = field(default_factory=lambda: deque(maxlen=KEYFRAMES_LISTED))
    total: int = 0           # bytes of all of them
    count: int = 0           # how many

    def add(self, nbytes: int, sharp: bool) -> None:
        (self.sharp if sharp else self.small).append(nbytes)
        self.total += nbytes
        self.count += 1

    def snapshot(self, seconds: float | None) -> dict:
        """The stats keys: bytes of each small and each sharp key frame (the newest
        KEYFRAMES_LISTED of each), the total of all, and that total as kbit/s over `seconds`."""
        return {"keyframe_bytes_small": list(self.small), "keyframe_bytes_sharp": list(self.sharp),
                "keyframe_bytes_total": self.total, "keyframe_count": self.count,
                "keyframe_kbps": kbps(self.total, seconds)}


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
