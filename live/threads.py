"""Native thread pools of a live end: one OpenMP thread, decided before any pool starts.

Every live command imports this module first (`import live.threads`), before numpy,
torch, OpenCV or MediaPipe load: it sets OMP_NUM_THREADS=1 unless the environment says
otherwise, because torch's OpenMP workers spin between frames and take a third of a core
each on a 2-core machine that both ends of a call share.  Torch's own thread count for
synthesis is set by the synthesis thread itself (`LiveConfig.render_threads`, the
receiver's --threads; `receiver/render.py`).
"""

from __future__ import annotations

import os

NATIVE_THREADS = "1"

os.environ.setdefault("OMP_NUM_THREADS", NATIVE_THREADS)
