"""Processes of a scripted call (signaling, sender, receiver, ...): started from the
repository without a display, each one's output in `FOLDER/NAME.log`, all killed on the
way out.  The benchmarks that run whole calls use it, and so do the live-call tests
(tests/liveproc.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Processes:
    """`launch(name, argv)` starts one; leaving the `with` block kills every one still running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def launch(self, name: str, argv: Sequence[str]) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "w") as out:
            proc = subprocess.Popen(list(argv), cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def wait_log(self, name: str, pattern: re.Pattern | str, timeout: float) -> re.Match:
        """The first match of `pattern` in NAME's output; RuntimeError when it has not come
        within `timeout` seconds or the process ended without it."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self.log(name))
            if m:
                return m
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not say {pattern.pattern!r}:\n{self.log(name)[-2000:]}")

    def stop(self, name: str) -> None:
        """SIGTERM, then kill after 5 s."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
