"""The machine a benchmark ran on, in words: timings depend on it.

Machines of one kind differ: the same 2-core kind has measured synthesizer v2 at 29 ms a
frame on one host and 73 ms on another (README, Synthesis speed), so every timing report
names the CPU model beside the core count.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """E.g. 'AMD EPYC, 2 cores, x86_64'."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}"
