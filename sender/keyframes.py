"""The sender's key frames of one crop on a live call: a small one, then a sharp one.

A key frame goes out first as today's small picture (the offline QP and byte cap), so the
first picture arrives as fast as it can; then the same captured crop, coded again at the
call's QP (`call_keyframe_qp`) on a worker thread, goes out as a second key frame record
with its own key id and the very same reference geometry bytes.  Parameter packets keep
animating the small key frame until the receiver says it is `ready` for the sharp one (it
has decoded it and built its synthesizer); from the next packet on, intra, they carry the
sharp key id.  The levels themselves do not change at the switch: both key frames have
one reference shape and pose, so only the picture gets sharper.  docs/call.md has the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from codec.encoder import CodedKeyframe


@dataclass
class KeyframePair:
    """The key frames of the current crop and which one parameter packets animate."""

    small: CodedKeyframe
    sharp: CodedKeyframe | None = None    # its sharp twin, once coded
    switched: bool = False                # packets animate the sharp one (the receiver is ready for it)

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

    def resent(self) -> None:
        """Both went out again (new session, key frame request): back to the small one until
        the receiver is ready for the sharp one again."""
        self.switched = False
