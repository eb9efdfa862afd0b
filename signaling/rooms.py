"""Room names that cannot be guessed, and the rule for the ones that can.

Whoever knows a room's name and can reach the signaling server can join it while one
side waits, and receive that side's key frame (its face) and live parameters.  So the
tools make the room (:func:`new_room`: 22 random characters, 128 bits from
``secrets.token_urlsafe``) and show it as the thing to share.  A name a user types still
works; :func:`guessable` says when to warn: fewer than :data:`MIN_ROOM_CHARS` characters,
or fewer than :data:`MIN_DISTINCT_CHARS` different ones (``demo``, ``call-1234``,
``aaaaaaaaaaaaaaaaaaaaaaaa``).  A long name of words passes the rule and may still be
guessed by someone who knows the user: the rule catches the names a scan would try.

``python -m signaling.rooms`` prints a new room name.
"""

from __future__ import annotations

import secrets

__all__ = ["MIN_DISTINCT_CHARS", "MIN_ROOM_CHARS", "ROOM_BYTES", "guessable", "guessable_warning", "new_room"]

#: Random bytes in a room made here (22 characters of ``[A-Za-z0-9_-]``).
ROOM_BYTES = 16
#: A room name shorter than this is guessable.
MIN_ROOM_CHARS = 20
#: A room name with fewer different characters than this is guessable.
MIN_DISTINCT_CHARS = 10


def new_room() -> str:
    """A fresh room name nobody can guess (fits the protocol's room pattern; never starts
    with ``-``, which a command line would take for an option)."""
    while True:
        room = secrets.token_urlsafe(ROOM_BYTES)
        if not room.startswith("-"):
            return room


def guessable(room: str) -> bool:
    """Whether ``room`` is short or plain enough to be found by trying names."""
    return len(room) < MIN_ROOM_CHARS or len(set(room)) < MIN_DISTINCT_CHARS


def guessable_warning(room: str) -> str:
    """One line saying why ``room`` is a risk and what to do instead."""
    return (f"room {room!r} can be guessed: anyone who can reach the signaling server could join it "
            f"and see your face; share a random room instead (e.g. {new_room()})")


if __name__ == "__main__":
    print(new_room())
