"""Keyboard editing in the receiver's window: the key table fed directly, and a real call
whose receiver window sits on an X display (Xvfb) and gets keys typed with xdotool."""

import os
import shutil
import struct
import subprocess
import time

import cv2
import numpy as np
import pytest
from conftest import REPO, clip
from liveproc import Processes, wait_for

from models.editing import CONTROLS_BY_NAME
from receiver.sinks import WINDOW_KEYS, WindowSink

ARTIFACTS = REPO / "artifacts" / "window"


def test_keys_nudge_controls_and_reset():
    seen = []
    window = WindowSink(on_edits=seen.append)
    window._key("d")
    window._key("d")
    window._key("b")
    assert seen[-1].get("yaw") == 10.0 and seen[-1].get("blink") == 0.5
    window._key("r")
    assert not seen[-1]
    window._key("?")  # unbound keys do nothing
    assert len(seen) == 4


def test_every_key_names_a_real_control():
    assert {name for name, _ in WINDOW_KEYS.values()} <= set(CONTROLS_BY_NAME)


# -- on a real X display (Xvfb), keys typed with xdotool -----------------------------------------

def _xwd_to_rgb(data: bytes) -> np.ndarray:
    """An XWD screen dump (ZPixmap, 24 or 32 bits per pixel, as Xvfb's 24-bit screens give) as RGB."""
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order, bits_per_pixel, bytes_per_line, ncolors = (
        fields[0], fields[4], fields[5], fields[7], fields[11], fields[12], fields[19])
    assert bits_per_pixel in (24, 32), f"unexpected XWD pixel size {bits_per_pixel}"
    size = bits_per_pixel // 8
    start = header_size + 12 * ncolors
    pixels = np.frombuffer(data[start:start + height * bytes_per_line], np.uint8).reshape(height, bytes_per_line)
    pixels = pixels[:, :size * width].reshape(height, width, size)
    return pixels[..., 2::-1] if byte_order == 0 else pixels[..., size - 3:]     # LSB first: B, G, R (, x)


@pytest.fixture
def display():
    tools = [shutil.which(t) for t in ("Xvfb", "xdotool", "xwd")]
    if not all(tools):
        pytest.skip("Xvfb, xdotool or xwd is missing (scripts/setup installs xvfb, xdotool, x11-apps as root)")
    for number in range(90 + os.getpid() % 100, 300, 7):
        name = f":{number}"
        proc = subprocess.Popen(["Xvfb", name, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # up when it answers; gone at once when that display is taken (then the next number)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            if subprocess.run(["xdotool", "getmouselocation"], env={**os.environ, "DISPLAY": name},
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        if proc.poll() is None:
            break
    else:
        pytest.fail("no Xvfb display could be started")
    try:
        assert time.monotonic() < deadline, f"Xvfb on {name} did not answer within 20 s"
        yield name
    finally:
        proc.terminate()
        proc.wait(10)


def test_keys_in_the_window_on_a_display(tmp_path, display):
    """A live call whose receiver shows its window on an X display: the window shows the
    face; typing d four times (yaw +20) into it turns the face it shows (detected yaw, read
    from a dump of the window); r resets."""
    from models.face_model import FaceBasis, canonicalise
    from models.face_tracker import FaceTracker

    env = {**os.environ, "DISPLAY": display}

    def x(*args: str) -> str:
        return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=20).stdout.strip()

    basis = FaceBasis.load()
    with FaceTracker(still=True) as tracker, Processes(tmp_path) as p:
        def window_yaw(shots: int = 5) -> float:
            values = []
            for _ in range(shots):
                # the whole screen: a window partly off screen cannot be dumped on its own
                grab = subprocess.run(["xwd", "-silent", "-root"], env=env, capture_output=True, timeout=20)
                assert grab.returncode == 0 and grab.stdout, f"xwd: {grab.stderr.decode(errors='replace')}"
                rgb = _xwd_to_rgb(grab.stdout)
                lm = tracker.detect(np.ascontiguousarray(rgb))
                if lm is not None:
                    values.append(canonicalise(lm, basis, rgb.shape[1])[1][0])
                time.sleep(0.2)
            assert len(values) >= 3, f"face seen in the window in {len(values)} of {shots} dumps"
            cv2.imwrite(str(ARTIFACTS / f"window_{len(seen)}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            seen.append(float(np.median(values)))
            return seen[-1]

        seen: list[float] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.env["DISPLAY"] = display
        url = p.signaling()
        p.start("receiver", "receiver", "--signaling", url, "--room", "window", "--window")
        p.start("sender", "sender", "--signaling", url, "--room", "window", "--source", str(clip("rt__3.mp4")),
                "--loop", "--frames", "1000")
        wid = wait_for(lambda: x("xdotool", "search", "--onlyvisible", "--name", "facecall").split("\n")[0], 60,
                       "the receiver's window")
        time.sleep(2.0)
        before = window_yaw()
        x("xdotool", "windowfocus", "--sync", wid)      # no window manager: focus it directly
        for _ in range(4):
            x("xdotool", "key", "--window", wid, "d")
            time.sleep(0.1)
        wait_for(lambda: "'yaw': 20.0" in p.log("receiver"), 10, "the receiver to log yaw 20")
        time.sleep(0.5)
        after = window_yaw()
        x("xdotool", "key", "--window", wid, "r")
        wait_for(lambda: "edits: none" in p.log("receiver"), 10, "the receiver to log the reset")
        time.sleep(0.5)
        back = window_yaw()
        x("xdotool", "key", "--window", wid, "q")          # q ends the call on the receiver's side
        assert p.wait("receiver", 30) == 0, p.tail("receiver")
    print(f"window: detected yaw {before:.1f} -> {after:.1f} (yaw +20 typed) -> {back:.1f} (r)")
    assert after - before > 8 and after - back > 8, (before, after, back)
