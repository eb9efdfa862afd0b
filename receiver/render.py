"""The synthesis thread: key frames in order, the newest parameters first, pictures out.

Synthesis takes ~10-30 ms on a CPU, so it never runs on the event loop.  One thread owns
the codec's `FaceDecoder` and the picture sinks and works through a `JobQueue`: session
headers, key frames and session breaks are done in order; a render job still waiting when
a newer one arrives is replaced by it (the stale frame is dropped and counted), so the
renderer shows the newest frame when it falls behind.  Results go back to the event loop
through `loop.call_soon_threadsafe`.

Key frames are decoded, and their synthesizer built and warmed up, on a second thread
(`keyframe`, 30-50 ms), so that a key frame arriving while another one is animated (the
sharp one after the small one, a new crop) does not hold up the frames of the current one;
a sharp twin or a copy sent again of a key frame kept (the same reference geometry) goes to
a third thread (`keyframe-bg`) of lower priority (`live.threads.lower_priority`), so that
on a busy machine its decoding does not take the synthesis thread's CPU either (on a slow
2-core host the sharp key frame's decoding made a frame or two drop at the start of every
call).  A new crop's key frame does not: the next packets name it, and the synthesis
thread waits for it.
The synthesis thread keeps the key frames it has been given by key id; a frame animates
the one its packet names, switching to it when that is another one than before (a frame
for a key frame still being decoded waits for it, so frames keep their order, until `stop`) and
forgetting the key frames that came before it.

Bounded and all or nothing: at most `max_setup` session headers, key frames and eye references
wait in the queue (`set_header` / `set_keyframe` / `set_eyes` return False for one more:
the caller drops it and says so), at most MAX_KEYFRAMES key frames are kept, and at most MAX_DECODES wait for or
are in the key frame thread (one more is refused as failed; one displaced before its
decoding started is skipped), so a peer that floods key frames cannot queue work without end.  A
key frame switches the decoder over only once it has decoded whole (picture, reference,
synthesizer: `FaceDecoder.use_keyframe`); one that fails changes nothing, and a copy of a
key id sent again that fails leaves the copy before it in use (`keyframe_failed(..., kept=True)`).

Feature formats (docs/call.md, "Feature formats in a call"): the decoder plays a stream of
any format with the synthesizer of its `DecoderChoice.decoder_format` (None: the stream's
own), translating the values when the two differ (`codec.decoder.FaceDecoder`); each frame's
global motion (the levels after the format's) goes to the synthesizer as it is.  A choice
that cannot play the stream (the learned translator without its weights, `--synth learned`
with a format other than ifvc) is `unplayable`, with the header it is about: one line, and
the receiver stops asking for key frames that would fail the same way (unless a newer header
came meanwhile).  The viewer's edits (models/editing.py) work on ifvc
parameters: with another decoder format they are refused with one log line per change.

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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import torch

from codec.decoder import DecodedKeyframe, DecoderFormatError, FaceDecoder
from codec.translation import DEFAULT_TRANSLATOR
from codec_core.bitstream import EyeReference, Keyframe, SessionHeader, StreamError
from codec_core.config import load_config
from codec_core.format import IFVC, FeatureFormat, format_named
from codec_core.keyframe import KeyframeError
from codec_core.param_coding import ParamDecodeError
from live.clock import wall_ms
from live.config import DEFAULT
from live.threads import lower_priority
from models.face_model import FaceBasis
from models.synthesizers import Synthesis
from receiver.pace import ProbeStopped, SynthesisPace, frame_ms
from receiver.sinks import Sink

log = logging.getLogger(__name__)

MAX_KEYFRAMES = 4      # key frames kept (the current one and the newest that came after it)
MAX_DECODES = MAX_KEYFRAMES + 1   # key frames waiting for or in the key frame thread
WAIT_SLICE_S = 0.05   # a frame waiting for its key frame's decoding looks for `stop` this often
KEYFRAME_ERRORS = (KeyframeError, StreamError, ParamDecodeError, ValueError)


@dataclass(frozen=True)
class DecoderChoice:
    """How this receiver plays what it receives: the feature format whose synthesizer makes
    the pictures (None: each stream's own) and how other formats' values are translated to
    it (codec.translation.TRANSLATOR_METHODS)."""

    decoder_format: str | None = None
    translator: str = DEFAULT_TRANSLATOR

    def format_for(self, stream: FeatureFormat) -> FeatureFormat:
        """The decoder format used for a stream of format `stream`."""
        return stream if self.decoder_format is None else format_named(self.decoder_format)

    def describe(self, stream: FeatureFormat) -> dict[str, str | None]:
        """The stream's format, the decoder's, and the translator method when they differ."""
        decoder = self.format_for(stream)
        return {"stream_format": stream.name, "decoder_format": decoder.name,
                "translator": self.translator if decoder is not stream else None}


NATIVE = DecoderChoice()     # each stream played with its own format's synthesizer


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
    session: int = 0        # the worker's session count when it was queued (`RenderWorker.session_break`)


@dataclass
class EyesJob:
    record: EyeReference


@dataclass
class BreakJob:
    """The session ended: finish the current output segment."""


@dataclass
class StopJob:
    pass


Job = RenderJob | HeaderJob | KeyframeJob | EyesJob | BreakJob | StopJob


SetupJob = HeaderJob | KeyframeJob | EyesJob
SETUP_JOBS = (HeaderJob, KeyframeJob, EyesJob)   # each holds one of `max_setup` places until it is taken


class JobQueue:
    """FIFO of jobs in which a new render job replaces a render job waiting at the tail, and
    at most `max_setup` session header, key frame and eye reference jobs wait (`put_setup`)."""

    def __init__(self, max_setup: int = DEFAULT.max_queued_setup_jobs) -> None:
        self._items: deque = deque()
        self._cond = threading.Condition()
        self.max_setup = max_setup
        self._setup = 0             # setup jobs waiting

    def put_setup(self, job: SetupJob) -> bool:
        """Queue a session header, key frame or eye reference job unless `max_setup` wait already."""
        with self._cond:
            if self._setup >= self.max_setup:
                return False
            self._setup += 1
            self._items.append(job)
            self._cond.notify()
            return True

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
            if not self._items:
                return None
            job = self._items.popleft()
            if isinstance(job, SETUP_JOBS):
                self._setup -= 1
            return job

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class Rendered:
    job: RenderJob
    start_ms: float
    ready_ms: float
    synthesis: str = ""     # the setting that drew it (`Synthesis.describe`)
    eyes: bool = False      # and whether it laid the caller's shut eyes (an eye reference)


@dataclass
class RenderEvents:
    """Callbacks, run on the event loop."""

    rendered: Callable[[Rendered], None]
    keyframe_ready: Callable[[int], None]     # key id (low 8 bits): decoded, synthesis warmed up
    keyframe_failed: Callable[..., None]   # key id (None: the session header), why[, kept: an earlier copy stays]
    skipped: Callable[[RenderJob], None]
    quit: Callable[[], None]          # the user closed the window
    # the decoder choice cannot play the stream of this header (header, why); None: reported as
    # keyframe_failed.  The header says which one: the receiver ignores word about an earlier one.
    unplayable: Callable[[SessionHeader, str], None] | None = None


class RenderWorker:
    def __init__(self, loop, events: RenderEvents, sinks: list[Sink], basis: FaceBasis | None = None,
                 synthesis: Synthesis = Synthesis(), threads: int = 1,
                 max_setup: int = DEFAULT.max_queued_setup_jobs, choice: DecoderChoice = NATIVE) -> None:
        self._loop = loop
        self._events = events
        self._sinks = sinks
        self._basis = basis or FaceBasis.load()
        self._pace = SynthesisPace(synthesis)      # its `synthesis` draws (--synth auto: steps down)
        self._stopping = threading.Event()         # `stop` was called (the probe gives up)
        self._choice = choice
        self._threads = threads
        self.queue = JobQueue(max_setup)
        self._sessions = 0            # session breaks asked for (event loop side)
        self._decoder: FaceDecoder | None = None
        self._keys: dict[int, Future] = {}       # low 8 bits -> DecodedKeyframe, oldest first
        self._geometry: dict[int, bytes] = {}    # low 8 bits -> its reference geometry (a twin has the same)
        self._earlier: dict[int, Future] = {}    # a key id sent again: its copy before, decoded
        self._eyes: dict[int, EyeReference] = {}  # low 8 bits -> the key frame's eye reference
        self._current: int | None = None         # the key frame the decoder animates (low 8 bits)
        self._in_use: Future | None = None       # and the decoding of it that it uses
        self._prep = ThreadPoolExecutor(1, thread_name_prefix="keyframe", initializer=torch.set_num_threads,
                                        initargs=(threads,))
        self._background = ThreadPoolExecutor(1, thread_name_prefix="keyframe-bg", initializer=_background_thread,
                                              initargs=(threads,))
        self._decode_slots = threading.BoundedSemaphore(MAX_DECODES)
        self._edits = None            # models.editing.Edits applied before synthesis (None: none)
        self._editor = None           # its ExpressionEditor, made per key frame when first needed
        self._edits_refused = None    # the edits last refused (decoder format not ifvc): logged once
        self._unplayable: SessionHeader | None = None   # a header this decoder choice cannot play
        self._failures = 0            # jobs that raised (logged with a traceback once)
        self._thread = threading.Thread(target=self._run, name="synthesis", daemon=True)
        self._thread.start()

    # -- event-loop side -----------------------------------------------------------------

    def set_header(self, header: SessionHeader) -> bool:
        """Queue a session header; False when too many headers and key frames wait already."""
        return self.queue.put_setup(HeaderJob(header))

    def set_keyframe(self, record: Keyframe) -> bool:
        """Queue a key frame; False when too many headers and key frames wait already."""
        return self.queue.put_setup(KeyframeJob(record, self._sessions))

    def set_eyes(self, record: EyeReference) -> bool:
        """Queue a key frame's eye reference; False when too many setup jobs wait already."""
        return self.queue.put_setup(EyesJob(record))

    def render(self, job: RenderJob) -> RenderJob | None:
        """Queue a frame; returns the stale frame it replaced, if any."""
        return self.queue.put(job)

    def session_break(self) -> None:
        self._sessions += 1
        self.queue.put(BreakJob())

    def _ready(self, key: int, session: int) -> None:
        """(event loop) Key frame `key` of session `session` is decoded: `keyframe_ready`, unless a
        session break came since it was queued (the next session numbers its key frames anew:
        a late word about an old one would name a new one not decoded yet)."""
        if session == self._sessions:
            self._events.keyframe_ready(key)

    def set_edits(self, edits) -> None:
        """Live edits (`models.editing.Edits`, or None for none) for the frames rendered
        from now on; safe to call from any thread (one attribute swap)."""
        self._edits = edits if edits else None

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, close the sinks and end the thread."""
        self._stopping.set()
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
        self._warm_up()
        try:
            while True:
                job = self.queue.get(timeout=0.01 if any(s.pending() for s in self._sinks) else 0.05)
                if job is None:
                    if not all([s.idle() for s in self._sinks]):
                        self._post(self._events.quit)
                    continue
                if isinstance(job, StopJob):
                    return
                try:
                    self._do(job)
                except Exception:
                    self._failures += 1
                    n = self._failures      # the first with its traceback, then a line now and then
                    if n == 1:
                        log.exception("synthesis failed")
                    elif n % 100 == 0:
                        log.error("synthesis failed again [%d so far]", n)
        finally:
            for pool in (self._prep, self._background):
                pool.shutdown(wait=False, cancel_futures=True)
            for sink in self._sinks:
                try:
                    sink.close()
                except Exception as exc:
                    log.error("closing the output failed: %s", exc)

    def _warm_up(self) -> None:
        """Before a peer comes: --synth auto times its settings (receiver.pace); --compile
        compiles the learned synthesizer for the default size."""
        size = load_config().size
        if self._pace.adaptive:
            try:
                self._pace.probe(lambda setting: probed_ms(setting, size, self._stopping.is_set))
            except ProbeStopped:
                return
            except Exception:
                log.exception("timing the synthesizers failed: %s it is", self._pace.synthesis.describe())
            log.info("synthesis: %s", self._pace.synthesis.describe())
        if not self._pace.synthesis.compiled:
            return
        log.info("compiling the learned synthesizer for CUDA at %d (once, about a minute)", size)
        try:
            self._pace.synthesis.warm_up(size)
        except Exception:
            log.exception("compiling ahead failed: the first key frame compiles instead")
            return
        log.info("compiled")

    # -- key frames ----------------------------------------------------------------------

    def _forget_keys(self) -> None:
        self._keys.clear()
        self._geometry.clear()
        self._earlier.clear()
        self._eyes.clear()
        self._current, self._in_use = None, None

    def _drop_key(self, key: int) -> None:
        self._keys.pop(key, None)           # (its decoding, if it has not started, is skipped)
        self._geometry.pop(key, None)
        self._earlier.pop(key, None)
        self._eyes.pop(key, None)

    def _add_key(self, decoder: FaceDecoder, record: Keyframe, session: int) -> None:
        """Start decoding a key frame (of session `session`) on the key frame thread; ready or
        failed is posted."""
        key = record.key_id & 0xFF
        if not self._decode_slots.acquire(blocking=False):
            kept = key in self._earlier or (key in self._keys and _decoded(self._keys[key]))   # a copy: it stays
            self._post(self._events.keyframe_failed, key, f"{MAX_DECODES} key frames wait to be decoded already",
                       kept)
            return
        before = self._keys.pop(key, None)  # sent again: the newest copy, at the end
        if before is not None and _decoded(before):
            self._earlier[key] = before     # in use (or ready) until the new copy has decoded
        others = [k for k in self._keys if k != self._current]
        for old in others[:max(0, len(self._keys) + 1 - MAX_KEYFRAMES)]:
            self._drop_key(old)             # the oldest of too many that never got a frame
        mine: list[Future] = []
        # a sharp twin, or a copy sent again, of a key frame that animates the frames meanwhile (or
        # will) can wait below the synthesis thread; a new crop's is named by the next packets: not
        twin = record.geometry in {self._geometry[k] for k in [*self._keys, *self._earlier] if k in self._geometry}
        other = any(not f.done() or _decoded(f) for f in self._keys.values()) or bool(self._earlier)
        pool = self._background if twin and other else self._prep
        self._geometry[key] = record.geometry
        future = pool.submit(self._decode, key, mine, decoder, record)
        self._keys[key] = future            # before `mine` holds it: the thread checks both (`_Displaced`)
        mine.append(future)
        future.add_done_callback(lambda done: self._prepared(key, done, decoder.header, session))

    def _decode(self, key: int, mine: list[Future], decoder: FaceDecoder, record: Keyframe) -> DecodedKeyframe:
        """(key frame thread) `_prepare` a key frame, unless it was displaced meanwhile."""
        try:
            if mine and self._keys.get(key) is not mine[0]:
                raise _Displaced()
            return _prepare(decoder, record)
        finally:
            self._decode_slots.release()

    def _prepared(self, key: int, future: Future, header: SessionHeader, session: int) -> None:
        """(key frame thread) A key frame of the stream of `header` is decoded, or failed; tell
        the event loop unless it was superseded meanwhile."""
        if self._keys.get(key) is not future or future.cancelled() or isinstance(future.exception(), _Displaced):
            return
        exc = future.exception()
        if exc is None:
            self._post(self._ready, key, session)
            return
        if isinstance(exc, DecoderFormatError):
            self._cannot_play(header, key, str(exc))
            return
        if not isinstance(exc, KEYFRAME_ERRORS):
            log.error("key frame %d failed", key, exc_info=exc)
        self._post(self._events.keyframe_failed, key, str(exc), key in self._earlier)

    def _cannot_play(self, header: SessionHeader, key: int | None, why: str) -> None:
        """The decoder choice cannot play the stream of `header` (the header itself, key None,
        or a key frame's translator): `unplayable` on the event loop (without one:
        `keyframe_failed`)."""
        if self._events.unplayable is not None:
            self._post(self._events.unplayable, header, why)
        else:
            self._post(self._events.keyframe_failed, key, why)

    def _use_key(self, key: int) -> bool:
        """Make key frame `key` the one the decoder animates (waiting for its decoding if
        needed); False when this thread does not have it decoded."""
        future = self._keys.get(key)
        if future is None or self._decoder is None:
            return False
        earlier = self._earlier.get(key)
        if earlier is not None and not _decoded(future):
            if future.done():               # the copy sent again failed: the earlier one for good
                self._keys[key] = future = earlier
                del self._earlier[key]
            else:                           # still decoding: the earlier one meanwhile
                future = earlier
        if future is self._in_use:
            return True
        while not future.done():            # in slices: `stop` ends the wait (a decoding may take VVdeC's 120 s)
            if self._stopping.is_set():
                return False
            wait([future], timeout=WAIT_SLICE_S)
        try:
            decoded: DecodedKeyframe = future.result()
        except Exception:
            return False
        self._lay_eyes(key, decoded)            # one that came while this copy was being decoded
        self._decoder.use_keyframe(decoded)     # picture, reference, key id and synthesizer at once
        if future is self._keys.get(key):
            self._earlier.pop(key, None)
        if key != self._current:
            for old in list(self._keys):    # the key frames that came before it are done with
                if old == key:
                    break
                self._drop_key(old)
            self._editor = None
        self._current, self._in_use = key, future
        return True

    # -- jobs ----------------------------------------------------------------------------

    def _do(self, job: Job) -> None:
        if isinstance(job, HeaderJob):
            if self._decoder is None or self._decoder.header != job.header:
                self._forget_keys()
                self._decoder = self._unplayable = None
                try:
                    self._decoder = FaceDecoder(job.header, self._basis, self._pace.synthesis,
                                                self._choice.decoder_format, self._choice.translator)
                except DecoderFormatError as exc:
                    self._unplayable = job.header
                    self._cannot_play(job.header, None, str(exc))
                    return
                except StreamError as exc:
                    self._post(self._events.keyframe_failed, None, str(exc))
                    return
                self._pace.set_fps(job.header.fps)
                for sink in self._sinks:
                    sink.set_fps(job.header.fps)
        elif isinstance(job, KeyframeJob):
            if self._decoder is not None:
                self._add_key(self._decoder, job.record, job.session)
            elif self._unplayable is not None:
                log.debug("key frame %d of a stream this decoder cannot play: not decoded", job.record.key_id)
            else:
                self._post(self._events.keyframe_failed, job.record.key_id & 0xFF, "no usable session header")
        elif isinstance(job, EyesJob):
            self._add_eyes(job.record)
        elif isinstance(job, RenderJob):
            if not self._use_key(job.key_id):
                self._post(self._events.skipped, job)
                return
            start = wall_ms()
            params = self._decoder.params(job.levels)
            edits = self._edits
            if edits is not None and self._decoder.decoder_format is not IFVC:
                if edits is not self._edits_refused:
                    self._edits_refused = edits
                    log.warning("edits refused: they work on ifvc parameters, and this receiver plays decoder "
                                "format %s (start it with --decoder-format ifvc to edit any stream)",
                                self._decoder.decoder_format.name)
            elif edits is not None:
                from models.editing import ExpressionEditor, apply_edits

                if self._editor is None:
                    self._editor = ExpressionEditor.from_model(self._decoder.reference.face_model())
                params = apply_edits(params, edits, self._editor)
            picture = self._decoder.render(params, self._decoder.motion(job.levels))
            ready = wall_ms()
            self._post(self._events.rendered, Rendered(job, start, ready, self._decoder.synthesis.describe(),
                                                       self._decoder.lays_eyes))
            shown = all([sink.show(job.frame, picture) for sink in self._sinks])
            # paced on ifvc streams only: another format's pictures come from its own motion model
            lighter = self._pace.rendered(ready - start) if self._decoder.decoder_format is IFVC else None
            if lighter is not None:         # after the picture is out: the step down builds a synthesizer
                self._decoder.set_synthesis(lighter)
            if not shown:
                self._post(self._events.quit)
        elif isinstance(job, BreakJob):
            self._forget_keys()             # the next session numbers its key frames anew
            for sink in self._sinks:
                sink.session_break()

    def _add_eyes(self, record: EyeReference) -> None:
        """A key frame's eye reference: kept for when the key frame is decoded or used; the
        key frame in use lays it from the next frame on (v2; v1 ignores it)."""
        key = record.key_id & 0xFF
        if self._eyes.get(key) == record:
            return                          # sent again with its key frame: nothing new
        self._eyes[key] = record
        while len(self._eyes) > MAX_KEYFRAMES:
            self._eyes.pop(next(iter(self._eyes)))      # the oldest first (a retake replaces a key's in place)
        if key == self._current and self._in_use is not None:
            self._lay_eyes(key, self._in_use.result())

    def _lay_eyes(self, key: int, decoded: DecodedKeyframe) -> None:
        """(synthesis thread) `decoded` lays the eye reference kept for `key` from now on,
        unless it has it already; one that does not fit or decode is a WARNING and forgotten,
        the key frame drawn without it."""
        record = self._eyes.get(key)
        if record is None or decoded.eye_reference == record:
            return
        try:
            self._decoder.add_eyes(decoded, record)
        except StreamError as exc:
            log.warning("key frame %d: its eye reference is unusable (%s); drawn without it", record.key_id, exc)
            self._eyes.pop(key, None)


_PROBED: dict[tuple[Synthesis, int], float] = {}
_PROBING = threading.Lock()     # two tabs opening at once: one probes, the other waits for its number


def probed_ms(synthesis: Synthesis, size: int, stopping: Callable[[], bool]) -> float:
    """`receiver.pace.frame_ms`, once per setting and size in a process (the web demo's
    tabs each have a worker; probing side by side they would slow each other down)."""
    with _PROBING:
        if (synthesis, size) not in _PROBED:
            _PROBED[synthesis, size] = frame_ms(synthesis, size, stopping)
        return _PROBED[synthesis, size]


def _background_thread(threads: int) -> None:
    """The key frame thread for a sharp twin or a copy sent again of a key frame kept:
    below the synthesis thread (`live.threads.lower_priority`), so that on a busy machine
    decoding one does not make the frames of the other drop."""
    torch.set_num_threads(threads)
    lower_priority()


class _Displaced(Exception):
    """A key frame displaced before its decoding started: not decoded."""


def _decoded(future: Future) -> bool:
    """Whether `future` holds a decoded key frame."""
    return future.done() and not future.cancelled() and future.exception() is None


def _prepare(decoder: FaceDecoder, record: Keyframe) -> DecodedKeyframe:
    """(key frame thread) Decode a key frame (its synthesizer, and translator when the formats
    differ) and render one throw-away picture of its own values in the decoder's format, so
    that the first real frame does not pay for warm-up."""
    decoded = decoder.decode_keyframe(record)
    decoded.synth.render(decoded.key_params)
    while decoder.fit_synthesis(decoded):   # the receiver stepped down meanwhile: built for it here, not
        decoded.synth.render(decoded.key_params)    # on the synthesis thread when it is switched to
    return decoded
