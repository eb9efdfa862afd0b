"""Helpers of the live-call tests: real processes (signaling, sender, receiver, call peers)
started from the repository, logs in files, everything killed in the end; and the face
checks on received video."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import benchmarks.processes

REPO = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 150.0
_LISTENING = re.compile(r"signaling server listening on (ws://\S+)")


class Processes(benchmarks.processes.Processes):
    """Start `python -m ...` processes; on exit every one still running is killed."""

    @property
    def tmp(self) -> Path:
        return self.folder

    def start(self, name: str, *args: str) -> subprocess.Popen:
        return self.launch(name, [sys.executable, "-m", *args])

    def signaling(self) -> str:
        """Start a signaling server on a free port; its ws:// URL."""
        proc = self.start("signaling", "signaling", "--host", "127.0.0.1", "--port", "0")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.log("signaling"))
            if m:
                return m.group(1)
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"signaling server did not start:\n{self.log('signaling')}")

    def wait(self, name: str, timeout: float = PROCESS_TIMEOUT) -> int:
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not finish within {timeout:.0f} s:\n{self.tail(name)}") from None

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.procs[name].send_signal(sig)

    def tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def expect_ok(self, name: str, timeout: float = PROCESS_TIMEOUT) -> None:
        rc = self.wait(name, timeout)
        assert rc == 0, f"{name} exited with {rc}:\n{self.tail(name)}"


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> dict[int, dict]:
    return {r["frame"]: r for r in map(json.loads, path.read_text().splitlines())}


def video_frames(path: Path) -> list[np.ndarray]:
    from codec_core.video import read_frames

    return list(read_frames(path))


def sender_crops(clip: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The crops and landmarks the sender sees for the first n frames of a clip."""
    from models.tracking import track_video

    tracked = track_video(clip, n)
    return [t.crop for t in tracked], [t.landmarks for t in tracked]


def landmark_error(frames: list[np.ndarray], reference: list[np.ndarray | None]) -> float:
    """Median over frames of the mean landmark distance, in crop widths, between the faces
    re-detected in `frames` and the reference landmarks (frames without a face count 1)."""
    from models.face_tracker import FaceTracker

    errors = []
    with FaceTracker() as tracker:
        for frame, ref in zip(frames, reference):
            found = tracker.detect(frame)
            if ref is None:
                continue
            errors.append(1.0 if found is None else
                          float(np.linalg.norm(found[:, :2] - ref[:, :2], axis=1).mean() / frame.shape[1]))
    return float(np.median(errors))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))
