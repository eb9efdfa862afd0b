"""Keeping synthesis in step with the call (`--synth auto`, the default).

The learned synthesizer draws the better picture, but on a slow CPU one frame can take
longer than a frame lasts (about 100 ms at 256 on a slow 2-core host, against 40 ms a
frame at 25 fps): the receiver then renders only the newest of the frames waiting, and
the call plays at a few frames a second.  With `--synth auto` the receiver picks the best
setting that keeps up, and steps down (`Synthesis.lighter`: the learned synthesizer
without its regional refiner, then v1) when one does not:

- before the call, on the synthesis thread while the receiver waits for its peer
  (`probe`): each setting renders PROBE_FRAMES frames of a made-up key frame
  (`models.synthesizers.example_keyframe`) at the call's default size, best first, and the
  first whose median is within the budget is taken;
- during the call (`rendered`): when the median synthesis time of the last WINDOW frames
  of a setting is over the budget (the sender, the voice and the browser share the
  machine, which the probe did not see), the next lighter one.

The budget is BUDGET_SHARE of a frame's time at the stream's frame rate: the rest is for
decoding, the sink and the other end.  It never steps back up: a call whose pictures
change in quality back and forth is worse than one that stays a step lower.  A synthesizer
named on the command line (`--synth warp|learned`) is never changed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.synthesizers import Synthesis, example_keyframe

log = logging.getLogger(__name__)

BUDGET_SHARE = 0.8      # of a frame's time at the stream's frame rate that synthesis may take (median)
WINDOW = 25             # frames of one setting measured before it is judged (a second at 25 fps)
PROBE_FRAMES = 5        # frames of the made-up key frame rendered per setting before the call
DEFAULT_FPS = 25.0      # the frame rate assumed until a session header says


@dataclass(frozen=True)
class Step:
    """One step down: from which setting to which, the median it measured, and when."""
    before: str
    after: str
    median_ms: float
    budget_ms: float
    when: str               # "before the call" or "in the call"


class SynthesisPace:
    """The setting a receiver synthesizes with (`synthesis`) and its steps down."""

    def __init__(self, synthesis: Synthesis, fps: float = DEFAULT_FPS) -> None:
        self.synthesis = synthesis.resolved()
        self.adaptive = self.synthesis.automatic
        self.fps = fps
        self.steps: list[Step] = []
        self._times: deque[float] = deque(maxlen=WINDOW)

    @property
    def budget_ms(self) -> float:
        return 1000.0 / self.fps * BUDGET_SHARE

    def set_fps(self, fps: float) -> None:
        """A session header says the stream's frame rate."""
        if fps > 0:
            self.fps = fps

    def probe(self, frame_ms: Callable[[Synthesis], float]) -> Synthesis:
        """Before the call: step down while `frame_ms(setting)` (the median milliseconds a
        frame) is over the budget; the setting taken."""
        while self.adaptive:
            lighter = self.synthesis.lighter()
            if lighter is None:
                break
            ms = frame_ms(self.synthesis)
            if ms <= self.budget_ms:
                break
            self._step(lighter, ms, "before the call")
        return self.synthesis

    def rendered(self, ms: float) -> Synthesis | None:
        """A frame took `ms` to synthesize; the lighter setting to take now, if it is time to."""
        if not self.adaptive:
            return None
        self._times.append(ms)
        if len(self._times) < WINDOW:
            return None
        median = float(np.median(self._times))
        lighter = self.synthesis.lighter()
        if median <= self.budget_ms or lighter is None:
            return None
        self._step(lighter, median, "in the call")
        return lighter

    def _step(self, lighter: Synthesis, median: float, when: str) -> None:
        step = Step(self.synthesis.describe(), lighter.describe(), round(median, 1), round(self.budget_ms, 1), when)
        log.warning("synthesis with %s takes %.0f ms a frame %s, over the %.0f ms a frame has here at %g fps: "
                    "%s from now on (name a synthesizer with --synth to keep it)", step.before, median, when,
                    step.budget_ms, self.fps, step.after)
        self.steps.append(step)
        self.synthesis = lighter
        self._times.clear()


class ProbeStopped(Exception):
    """The receiver is stopping: the probe gave up."""


def frame_ms(synthesis: Synthesis, size: int, stopping: Callable[[], bool] = lambda: False,
             frames: int = PROBE_FRAMES) -> float:
    """The median milliseconds `synthesis` takes a frame of a made-up key frame at `size`
    (the first frame, which pays for warming up, not counted); ProbeStopped as soon as
    `stopping()` says so (checked before each frame)."""
    example = example_keyframe(size)
    synth = synthesis.build(*example)
    rng = np.random.default_rng(0)
    expression = slice(len(example.ref_params) - example.model.basis.num_expression, None)
    times = []
    for _ in range(frames + 1):
        if stopping():
            raise ProbeStopped()
        params = example.ref_params.copy()
        params[expression] += rng.normal(0.0, 0.5, params[expression].shape)    # a face that moves
        start = time.perf_counter()
        synth.render(params)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times[1:]))
