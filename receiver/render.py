"""The synthesis thread: key frames in order, the newest parameters first, pictures out.

Synthesis takes ~10-30 ms on a CPU, so it never runs on the event loop.  One thread owns
the codec's `FaceDecoder` and the picture sinks and works through a `JobQueue`: session
headers, key frames and session breaks are done in order; a render job still waiting when
a newer one arrives is replaced by it (the stale frame is dropped and counted), so the
renderer shows the newest frame when it falls behind.  Results go back to the event loop
through `loop.call_soon_threadsafe`.

The thread sets torch's thread count (`LiveConfig.render_threads`, the receiver's
--threads) itself, first thing: the count is process-wide, but torch applies it to a
thread when that thread first uses torch, so setting it on this thread is what makes
synthesis run with it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from codec.decoder import FaceDecoder
from codec_core.bitstream import Keyframe, SessionHeader, StreamError
from codec_core.keyframe import KeyframeError
from codec_core.param_coding import ParamDecodeError
from live.clock import wall_ms
from models.face_model import FaceBasis
from models.synthesizers import Synthesis
from receiver.sinks import Sink

log = logging.getLogger(__name__)


@dataclass
class RenderJob:
    frame: int              # unwrapped frame number
    key_id: int             # low 8 bits
    levels: np.ndarray
    capture_ms: int         # the packet's u32 capture stamp
    arrival_ms: float       # wall clock when the packet arrived
    decoded_ms: float       # wall clock when its levels were decoded


@dataclass
class HeaderJob:
    header: SessionHeader


@dataclass
class KeyframeJob:
    record: Keyframe


@dataclass
class BreakJob:
    """The session ended: finish the current output segment."""


@dataclass
class StopJob:
    pass


Job = RenderJob | HeaderJob | KeyframeJob | BreakJob | StopJob


class JobQueue:
    """FIFO of jobs in which a new render job replaces a render job waiting at the tail."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._cond = threading.Condition()

    def put(self, job: Job) -> RenderJob | None:
        """Queue `job`; returns the render job it displaced, if any."""
        with self._cond:
            displaced = None
            if isinstance(job, RenderJob) and self._items and isinstance(self._items[-1], RenderJob):
                displaced = self._items.pop()
            self._items.append(job)
            self._cond.notify()
            return displaced

    def get(self, timeout: float | None = None) -> Job | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class Rendered:
    job: RenderJob
    start_ms: float
    ready_ms: float


@dataclass
class RenderEvents:
    """Callbacks, run on the event loop."""

    rendered: Callable[[Rendered], None]
    keyframe_ready: Callable[[int], None]     # key id (low 8 bits): decoded, synthesis warmed up
    keyframe_failed: Callable[[str], None]
    skipped: Callable[[RenderJob], None]
    quit: Callable[[], None]          # the user closed the window


class RenderWorker:
    def __init__(self, loop, events: RenderEvents, sinks: list[Sink], basis: FaceBasis | None = None,
                 synthesis: Synthesis = Synthesis(), threads: int = 1) -> None:
        self._loop = loop
        self._events = events
        self._sinks = sinks
        self._basis = basis or FaceBasis.load()
        self._synthesis = synthesis
        self._threads = threads
        self.queue = JobQueue()
        self._decoder: FaceDecoder | None = None
        self._usable_key: int | None = None
        self._edits = None            # models.editing.Edits applied before synthesis (None: none)
        self._editor = None           # its ExpressionEditor, made per key frame when first needed
        self._thread = threading.Thread(target=self._run, name="synthesis", daemon=True)
        self._thread.start()

    # -- event-loop side -----------------------------------------------------------------

    def set_header(self, header: SessionHeader) -> None:
        self.queue.put(HeaderJob(header))

    def set_keyframe(self, record: Keyframe) -> None:
        self.queue.put(KeyframeJob(record))

    def render(self, job: RenderJob) -> RenderJob | None:
        """Queue a frame; returns the stale frame it replaced, if any."""
        return self.queue.put(job)

    def session_break(self) -> None:
        self.queue.put(BreakJob())

    def set_edits(self, edits) -> None:
        """Live edits (`models.editing.Edits`, or None for none) for the frames rendered
        from now on; safe to call from any thread (one attribute swap)."""
        self._edits = edits if edits else None

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, close the sinks and end the thread."""
        self.queue.put(StopJob())
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the synthesis thread did not stop within %.0f s", timeout)

    # -- synthesis thread ----------------------------------------------------------------

    def _post(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:      # the loop is closed: shutting down
            pass

    def _run(self) -> None:
        torch.set_num_threads(self._threads)
        try:
            while True:
                job = self.queue.get(timeout=0.05)
                if job is None:
                    if not all([s.idle() for s in self._sinks]):
                        self._post(self._events.quit)
                    continue
                if isinstance(job, StopJob):
                    return
                try:
                    self._do(job)
                except Exception:
                    log.exception("synthesis failed")
        finally:
            for sink in self._sinks:
                try:
                    sink.close()
                except Exception as exc:
                    log.error("closing the output failed: %s", exc)

    def _do(self, job: Job) -> None:
        if isinstance(job, HeaderJob):
            if self._decoder is None or self._decoder.header != job.header:
                try:
                    self._decoder = FaceDecoder(job.header, self._basis, self._synthesis)
                except StreamError as exc:
                    self._decoder = None
                    self._post(self._events.keyframe_failed, str(exc))
                    return
                self._usable_key = None
                for sink in self._sinks:
                    sink.set_fps(job.header.fps)
        elif isinstance(job, KeyframeJob):
            if self._decoder is None:
                return
            try:
                self._decoder.set_keyframe(job.record)
                # one throw-away picture: the first real frame then does not pay for warm-up
                self._decoder.render(self._decoder.params(self._decoder.reference.reference_levels()))
            except (KeyframeError, StreamError, ParamDecodeError, ValueError) as exc:
                self._usable_key = None
                self._post(self._events.keyframe_failed, str(exc))
                return
            self._usable_key = job.record.key_id & 0xFF
            self._editor = None
            self._post(self._events.keyframe_ready, self._usable_key)
        elif isinstance(job, RenderJob):
            if self._decoder is None or self._usable_key != job.key_id:
                self._post(self._events.skipped, job)
                return
            start = wall_ms()
            params = self._decoder.params(job.levels)
            edits = self._edits
            if edits is not None:
                from models.editing import ExpressionEditor, apply_edits

                if self._editor is None:
                    self._editor = ExpressionEditor.from_model(self._decoder.reference.face_model())
                params = apply_edits(params, edits, self._editor)
            picture = self._decoder.render(params)
            ready = wall_ms()
            self._post(self._events.rendered, Rendered(job, start, ready))
            if not all([sink.show(job.frame, picture) for sink in self._sinks]):
                self._post(self._events.quit)
        elif isinstance(job, BreakJob):
            for sink in self._sinks:
                sink.session_break()
