"""The receiver's view of the prediction chain: which parameter packets may be decoded.

Predicted packets only make sense on top of every packet before them since the last intra
packet.  `PredictionChain` follows the frame numbers (mod 2**16, unordered channel) and
the key frame the packets belong to, and decides for each packet:

- DECODE: it is intra, or the chain up to it is intact;
- BROKEN: a frame before it is missing (or failed to decode): skip it until the next intra;
- LATE: it is one of the frames missing from a gap, arriving within the reorder window
  (`LiveConfig.reorder_window_frames` frames after the newest): it is not lost after all
  (see below);
- STALE: it is older than one already seen and not such a missing frame (too late, or a
  duplicate): drop it (after a long run of these the numbering is taken to have restarted,
  and the chain follows it again);
- FOREIGN: it animates another key frame than the receiver's current or pending ones: drop it.

Reorder window.  The `params` channel is unordered, so a packet may arrive after a newer
one.  A gap counts its frames lost at once (and reports the loss at once, so recovery from
a real loss is as fast as ever), but a missing frame that arrives while the newest frame is
at most `window` frames past it is taken back: it counts as received and reordered, not
lost.  And when the gap opened on an intact chain, the packets after it are *held* (the
decision says `held`; the caller keeps them, at most `window + 1`) instead of thrown away:
once every missing frame of the gap is in, the late packet's decision is DECODE with
`release`, the frames to decode now in order, and the chain is intact again, nothing lost.
Holding costs no latency: those packets could not be decoded before the gap filled anyway.

Key frames: the first one of a session (or after the current one failed) is current at
once.  One that arrives while another is current is *pending*: packets for the current key
frame still decode, and the first packet that carries a pending key id switches the chain
to it (from then on it needs an intra packet, as after any new key frame).  So a sender
may send a new key frame ahead and switch its packets over when it likes (the sharp key
frame right after the small one, docs/call.md), and no frame in between is lost.

It also says when to report a loss to the sender (at once on a new gap, then at most every
`report_interval` seconds while the chain stays broken), which frame to name, and counts
what it saw.  No I/O, no clocks of its own: callers pass `now` in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from live.clock import FRAME_MODULUS, unwrap
from live.config import DEFAULT

MAX_PENDING = 4      # key frames kept waiting for their first packet (the newest ones)


class Verdict(Enum):
    DECODE = "decode"
    BROKEN = "broken"
    LATE = "late"
    STALE = "stale"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    frame: int                  # unwrapped frame number (this session)
    lost: int = 0               # frames found missing just now (the gap before this one)
    report: int | None = None   # frame number (mod 2**16) to name in a loss report, if one is due
    held: bool = False          # keep this packet: it decodes if the gap before it fills in time
    release: tuple[int, ...] = ()   # DECODE of a late packet that filled the gap: these frames
    #                                 (this one among them, the others held) decode now, in order


@dataclass
class _Hole:
    """A gap that opened on an intact chain: the packets after it wait for it to fill."""

    first: int                                   # its first missing frame
    held: list[int] = field(default_factory=list)   # frames whose packets are held
    broken: int = 0                              # of those, how many were counted broken


@dataclass
class ChainCounts:
    received: int = 0           # packets with a new frame number (any verdict but STALE)
    lost: int = 0               # frames never seen (gaps)
    broken: int = 0             # received but not decodable (chain broken)
    stale: int = 0              # too late or duplicate
    reordered: int = 0          # missing frames that came within the reorder window (not lost)
    foreign: int = 0            # for another key frame
    decoded: int = 0
    reports: int = 0            # loss reports asked for


class PredictionChain:
    def __init__(self, report_interval: float = 0.1, resync_after: int = 50,
                 window: int = DEFAULT.reorder_window_frames) -> None:
        self.report_interval = report_interval
        self.resync_after = resync_after        # this many late packets in a row: numbering restarted
        self.window = window                    # reorder window, frames
        self.counts = ChainCounts()
        self.key_id: int | None = None      # low 8 bits of the current key frame's id
        self.pending: list[int] = []        # key frames arrived since (low 8 bits, oldest first)
        self.intact = False
        self.expected: int | None = None    # next unwrapped frame number
        self.first: int | None = None       # first frame number of this session
        self._last_report: float | None = None
        self._stale_run = 0
        self._missing: set[int] = set()     # frames of gaps that may still come (reorder window)
        self._hole: _Hole | None = None

    @property
    def held(self) -> tuple[int, ...]:
        """The frames whose packets the caller should be keeping now."""
        return tuple(self._hole.held) if self._hole is not None else ()

    def new_session(self) -> None:
        """A new peer connection: frame numbers and key frames start over."""
        self.key_id, self.intact, self.expected, self.first = None, False, None, None
        self.pending = []
        self._last_report = None
        self._missing.clear()
        self._hole = None

    def new_key(self, key_id: int) -> None:
        """A key frame arrived.  Without a current key frame it is current at once (its
        packets decode from an intra one on); else it is pending until its first packet."""
        key = key_id & 0xFF
        if self.key_id is None:
            self.key_id, self.intact, self.pending = key, False, []
            return
        self.pending = [k for k in self.pending if k != key][-(MAX_PENDING - 1):] + [key]

    def drop_key(self, key_id: int) -> None:
        """Key frame `key_id` (low 8 bits) is unusable: it is no longer current or pending."""
        if self.key_id == key_id:
            self.key_id = None
        self.pending = [k for k in self.pending if k != key_id]

    def known(self, key_id: int) -> bool:
        """Whether `key_id` (low 8 bits) is the current key frame or a pending one."""
        return key_id == self.key_id or key_id in self.pending

    def _switch(self, key: int) -> None:
        """The first packet of pending key frame `key`: it becomes current, the ones that
        came before it are forgotten, and its chain starts at an intra packet."""
        self.pending = self.pending[self.pending.index(key) + 1:]
        self.key_id, self.intact, self._hole = key, False, None

    def stream_ended(self, last: int) -> int:
        """The stream's last frame was `last` (unwrapped): frames after the last one seen
        are lost too.  Returns how many."""
        if self.expected is None or last < self.expected:
            return 0
        missing = last + 1 - self.expected
        self.counts.lost += missing
        self.expected = last + 1
        return missing

    def decode_failed(self, frame: int, now: float, skipped: int = 0) -> int | None:
        """The packet of (unwrapped) `frame`, judged DECODE, did not decode (nor the
        `skipped` released after it): the chain is broken until the next intra packet.
        Returns the frame to name in a loss report."""
        self.intact, self._hole = False, None
        self.counts.decoded -= 1 + skipped
        self.counts.broken += 1 + skipped
        return self._report(now, frame, force=True)

    def accept(self, frame: int, key_id: int, intra: bool, now: float) -> Decision:
        f = unwrap(frame, self.expected if self.expected is not None else frame)
        if self.expected is not None and f < self.expected:
            if f in self._missing:
                return self._late(f, key_id)
            self.counts.stale += 1
            self._stale_run += 1
            if self._stale_run >= self.resync_after:
                # a run of "late" packets is a sender whose numbering jumped back (or a
                # bogus packet that threw ours forward): follow the packets again
                self.expected, self.intact, self._stale_run = None, False, 0
                self._missing.clear()
                self._hole = None
            return Decision(Verdict.STALE, f)
        self._stale_run = 0
        gap = f - self.expected if self.expected is not None else 0
        if self.first is None:
            self.first = f
        self.expected = f + 1
        self.counts.received += 1
        was_intact = self.intact
        if gap > 0:
            self.counts.lost += gap
            self.intact = False
            self._missing.update(range(max(f - gap, f - self.window), f))
        self._forget_older_than(f - self.window)
        key = key_id & 0xFF
        if key != self.key_id and key in self.pending:
            self._switch(key)
        if self.key_id is None or key != self.key_id:
            self.counts.foreign += 1
            self._hole = None
            return Decision(Verdict.FOREIGN, f, gap)
        if intra:
            self.intact, self._hole = True, None
        if self.intact:
            self.counts.decoded += 1
            return Decision(Verdict.DECODE, f, gap)
        # undecodable: whatever intra packet the sender made up to the frame before this
        # one did not reach us, so ask for one after it
        self.counts.broken += 1
        held = self._hold(f, gap, was_intact)
        return Decision(Verdict.BROKEN, f, gap, self._report(now, f - 1, force=gap > 0), held=held)

    def _forget_older_than(self, oldest: int) -> None:
        """Missing frames before `oldest` can no longer come in time: lost for good (and a
        gap that held packets for them gives up)."""
        self._missing = {m for m in self._missing if m >= oldest}
        if self._hole is not None and self._hole.first < oldest:
            self._hole = None

    def _hold(self, f: int, gap: int, was_intact: bool) -> bool:
        """Whether the broken packet of frame `f` waits for the gap before it to fill."""
        if self._hole is None:
            if not (gap > 0 and was_intact and gap <= self.window):
                return False
            self._hole = _Hole(f - gap)
        self._hole.held.append(f)
        self._hole.broken += 1
        return True

    def _late(self, f: int, key_id: int) -> Decision:
        """Missing frame `f` came after all, within the reorder window: not lost.  It decodes
        (with the packets held after it) when it fills the gap the chain is waiting on."""
        self._missing.discard(f)
        self._stale_run = 0
        self.counts.lost -= 1
        self.counts.received += 1
        self.counts.reordered += 1
        hole = self._hole
        if hole is None or f < hole.first or (key_id & 0xFF) != self.key_id:
            return Decision(Verdict.LATE, f)
        hole.held.append(f)
        if any(m >= hole.first for m in self._missing):
            return Decision(Verdict.LATE, f, held=True)     # more of the gap still to come
        frames = tuple(sorted(hole.held))
        self._hole, self.intact = None, True
        self.counts.broken -= hole.broken
        self.counts.decoded += len(frames)
        return Decision(Verdict.DECODE, f, release=frames)

    def _report(self, now: float, frame: int, force: bool) -> int | None:
        if not force and self._last_report is not None and now - self._last_report < self.report_interval:
            return None
        self._last_report = now
        self.counts.reports += 1
        return frame % FRAME_MODULUS
