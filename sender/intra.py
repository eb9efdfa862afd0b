"""When the sender codes a parameter packet without prediction (intra).

- the first packet of a session and of every new key frame;
- periodically, `interval` frames after the last intra packet;
- after a loss report naming frame F, unless an intra packet after F went out already
  (reports repeat while the receiver waits; only the first one of a loss costs an intra).

Frame numbers here are the sender's own unwrapped counters.
"""

from __future__ import annotations


class IntraPolicy:
    def __init__(self, interval: int) -> None:
        if interval < 1:
            raise ValueError("the intra interval must be at least 1")
        self.interval = interval
        self.last_intra: int | None = None
        self._forced = True

    def force(self) -> None:
        """The next packet is intra (new session, new key frame, key frame sent again)."""
        self._forced = True

    def on_loss(self, frame: int) -> bool:
        """The receiver misses `frame` (or cannot decode after it); True if that costs an intra."""
        if self.last_intra is not None and self.last_intra > frame:
            return False
        self._forced = True
        return True

    def decide(self, frame: int) -> bool:
        """Whether the packet of `frame` is intra (call once per packet, in frame order)."""
        intra = self._forced or self.last_intra is None or frame - self.last_intra >= self.interval
        if intra:
            self.last_intra = frame
            self._forced = False
        return intra
