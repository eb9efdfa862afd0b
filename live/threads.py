"""Native thread pools of a live end: one OpenMP thread, decided before any pool starts.

Every live command imports this module first (`import live.threads`), before numpy,
torch, OpenCV or MediaPipe load: it sets OMP_NUM_THREADS=1 unless the environment says
otherwise, because torch's OpenMP workers spin between frames and take a third of a core
each on a 2-core machine that both ends of a call share.  Torch's own thread count for
synthesis is set by the synthesis thread itself (`LiveConfig.render_threads`, the
receiver's --threads; `receiver/render.py`).

`lower_priority` is for the threads whose work may wait while a call goes on (key frames
coded or decoded after the first): on Linux it lowers the calling thread's priority, so
that tracking and synthesis keep their pace on a busy machine.
"""

from __future__ import annotations

import os
import sys
import threading

NATIVE_THREADS = "1"

os.environ.setdefault("OMP_NUM_THREADS", NATIVE_THREADS)

#: How much `lower_priority` adds to a thread's niceness (0 is the default, 19 the lowest).
BACKGROUND_NICENESS = 10


def lower_priority() -> None:
    """Run the calling thread, and the processes it starts (children inherit the niceness of
    the thread that forks them on Linux), BACKGROUND_NICENESS nicer than before: a thread
    pool's `initializer`.  Elsewhere (a thread id is no process id there) or when refused,
    nothing changes."""
    if sys.platform != "linux":
        return
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness))
    except (AttributeError, OSError):
        pass
