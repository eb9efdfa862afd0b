"""The sender's key frames of one crop on a live call: a small one, then a sharp one.

A key frame goes out first as today's small picture (the offline QP and byte cap), so the
first picture arrives as fast as it can; then the same captured crop, coded again at the
call's QP (`call_keyframe_qp`) on a worker thread, goes out as a second key frame record
with its own key id and the very same reference geometry bytes.  Parameter packets keep
animating the small key frame until the receiver says it is `ready` for the sharp one (it
has decoded it and built its synthesizer); from the next packet on, intra, they carry the
sharp key id.  The levels themselves do not change at the switch: both key frames have
one reference shape and pose, so only the picture gets sharper.  docs/call.md has the policy.

Once the caller's eyes have shut (sender.analysis), the crop's eye reference follows: one
EYE_REFERENCE record per key frame of the crop (the small one's, and a copy with the sharp
twin's key id), sent again with them whenever they go again.

Key frame requests are answered within limits (`AnswerLimiter`, docs/wire.md "Bounds"): an
answer (header, small and sharp key frame: tens of kB at 512) may only follow the one
before it once that one's bytes are paid for at `keyframe_answer_rate_bytes_s`, and not
while the `stream` channel still holds more than `keyframe_answer_max_buffered_bytes`
unsent; a request that has to wait is answered once it may, and the ones that come
meanwhile are folded into it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from codec.encoder import CodedKeyframe
from codec_core.bitstream import EyeReference


@dataclass
class KeyframePair:
    """The key frames of the current crop and which one parameter packets animate."""

    small: CodedKeyframe
    sharp: CodedKeyframe | None = None    # its sharp twin, once coded
    switched: bool = False                # packets animate the sharp one (the receiver is ready for it)
    eyes: EyeReference | None = None      # the small one's eye reference, once coded

    def packet_key_id(self, key_id: int) -> int:
        """The key id a parameter packet carries for levels that animate key frame `key_id`."""
        if self.switched and self.sharp is not None and key_id == self.small.record.key_id:
            return self.sharp.record.key_id
        return key_id

    def switch(self, ready_key: int) -> CodedKeyframe | None:
        """The receiver is ready for key frame `ready_key` (low 8 bits).  When that is the
        sharp twin, packets switch to it now (the next one must be intra): it is returned."""
        if self.sharp is None or self.switched or ready_key != self.sharp.record.key_id & 0xFF:
            return None
        self.switched = True
        return self.sharp

    def eye_references(self, sharp: bool) -> list[EyeReference]:
        """The eye reference of the small key frame (`sharp`: of its sharp twin), or none yet."""
        if self.eyes is None or (sharp and self.sharp is None):
            return []
        return [replace(self.eyes, key_id=self.sharp.record.key_id) if sharp else self.eyes]

    def resent(self) -> None:
        """Both went out again (new session, key frame request): back to the small one until
        the receiver is ready for the sharp one again."""
        self.switched = False


#: how soon to look again at a `stream` channel that is too full to answer on (seconds)
BUFFER_RETRY_S = 0.05


@dataclass
class AnswerLimiter:
    """When a key frame request may be answered (no clock of its own: callers pass `now`)."""

    rate: float                     # bytes per second that answers may use on average
    max_buffered: int               # no answer while `stream` holds more than this unsent
    free_at: float = -math.inf      # when the last answer's bytes are paid for

    def wait(self, now: float, buffered: int) -> float:
        """0 when an answer may go now, else how many seconds to wait before asking again."""
        if now < self.free_at:
            return self.free_at - now
        if buffered > self.max_buffered:
            return BUFFER_RETRY_S
        return 0.0

    def answered(self, now: float, nbytes: int) -> None:
        """An answer of `nbytes` went out at `now`."""
        self.free_at = now + nbytes / self.rate
