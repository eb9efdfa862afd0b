"""Keyboard editing in the receiver's window: the key table fed directly, and a real call
whose receiver window sits on an X display (Xvfb) and gets keys typed with xdotool."""

import os
import shutil
import struct
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import REPO, clip
from liveproc import Processes, read_json, wait_for

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


def test_window_without_a_display_is_skipped_with_a_message(monkeypatch, caplog):
    """No X display: the window cannot open; the sink says so once and the call goes on."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    window = WindowSink()
    picture = np.zeros((64, 64, 3), np.uint8)
    assert window.show(0, picture) and window.show(1, picture) and window.idle()
    assert sum("cannot show a window" in r.message for r in caplog.records) == 1, caplog.text


def test_opencv_window_where_tkinter_is_missing(monkeypatch):
    from receiver import screen

    monkeypatch.setitem(sys.modules, "tkinter", None)       # import tkinter raises ImportError
    monkeypatch.setattr(screen, "CvScreen", lambda title: ("opencv", title))
    assert screen.open_screen("facecall") == ("opencv", "facecall")


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


def _still_clip(path, seconds: float = 2.0, fps: int = 25):
    """rt__3's first frame held for `seconds`, without sound: a head that does not move, so
    that the yaw read from the window changes only with the keys typed (a looping talking
    head turns by a few degrees of its own, as much as the margin the test asserts)."""
    from codec_core.video import VideoWriter, read_frames

    first = next(read_frames(clip("rt__3.mp4"), 1))
    with VideoWriter(path, fps) as writer:
        for _ in range(int(seconds * fps)):
            writer.write(first)
    return path


def test_keys_in_the_window_on_a_display(tmp_path, display):
    """A live call whose receiver shows its window on an X display: the window shows the
    face; typing d four times (yaw +20) into it turns the face it shows (detected yaw, read
    from a dump of the window); r resets.  The sender sends a still head (see `_still_clip`)."""
    from models.face_model import FaceBasis, canonicalise
    from models.face_tracker import FaceTracker

    env = {**os.environ, "DISPLAY": display}

    def x(*args: str) -> str:
        return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=20).stdout.strip()

    basis = FaceBasis.load()
    with FaceTracker(still=True) as tracker, Processes(tmp_path) as p:
        def window_yaw(needed: int = 3, seconds: float = 20.0) -> float:
            """Median detected yaw of the first `needed` screen dumps that show a face (on a
            busy machine the first picture can take a while after the window opens)."""
            values: list[float] = []
            deadline = time.monotonic() + seconds
            while len(values) < needed and time.monotonic() < deadline:
                # the whole screen: a window partly off screen cannot be dumped on its own
                grab = subprocess.run(["xwd", "-silent", "-root"], env=env, capture_output=True, timeout=20)
                assert grab.returncode == 0 and grab.stdout, f"xwd: {grab.stderr.decode(errors='replace')}"
                rgb = _xwd_to_rgb(grab.stdout)
                lm = tracker.detect(np.ascontiguousarray(rgb))
                if lm is not None:
                    values.append(canonicalise(lm, basis, rgb.shape[1])[1][0])
                time.sleep(0.2)
            cv2.imwrite(str(ARTIFACTS / f"window_{len(seen)}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            where = x("xdotool", "search", "--name", "facecall", "getwindowgeometry", "%@")
            assert len(values) >= needed, (f"a face in only {len(values)} window dumps within {seconds} s "
                                           f"(last dump: {ARTIFACTS}/window_{len(seen)}.png; window: {where})\n"
                                           f"{p.tail('receiver')}")
            seen.append(float(np.median(values)))
            return seen[-1]

        seen: list[float] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.env["DISPLAY"] = display
        url = p.signaling()
        p.start("receiver", "receiver", "--signaling", url, "--room", "window", "--window")
        still = _still_clip(tmp_path / "still.mp4")
        p.start("sender", "sender", "--signaling", url, "--room", "window", "--source", str(still),
                "--loop", "--frames", "2000")
        wid = wait_for(lambda: x("xdotool", "search", "--onlyvisible", "--name", "facecall").split("\n")[0], 60,
                       "the receiver's window")
        time.sleep(2.0)
        before = window_yaw(seconds=60.0)     # the first picture: session, key frame and synthesis set up
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


def test_u_in_the_window_mutes_the_voice(tmp_path, display):
    """A two-way call: alice (rt__3, speaking) shows bob's face in her window on an X
    display; `u` typed there mutes her voice and `u` again brings it back.  Bob's stats say
    so, and the voice bob wrote into his file has a silent stretch between speech."""
    from avsync import audio_track

    env = {**os.environ, "DISPLAY": display}

    def x(*args: str) -> str:
        return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=20).stdout.strip()

    bob_file = tmp_path / "bob.mp4"
    with Processes(tmp_path) as p:
        p.env["DISPLAY"] = display
        url = p.signaling()
        p.start("alice", "call", "--signaling", url, "--room", "mute", "--source", str(clip("rt__3.mp4")),
                "--loop", "--frames", "1000", "--window", "--audio-output", "none")
        p.start("bob", "call", "--signaling", url, "--room", "mute", "--source", str(clip("lp__d0.mp4")),
                "--loop", "--frames", "1000", "--output", str(bob_file), "--stats", str(tmp_path / "bob.json"),
                "--wait-peer", "0", "--audio-output", "none")
        wid = wait_for(lambda: x("xdotool", "search", "--onlyvisible", "--name", "facecall").split("\n")[0], 90,
                       "alice's window")
        wait_for(lambda: "the other side's voice is coming in" in p.log("bob"), 30, "alice's voice at bob's")
        time.sleep(2.0)
        x("xdotool", "windowfocus", "--sync", wid)
        x("xdotool", "key", "--window", wid, "u")
        wait_for(lambda: "the other side muted their voice" in p.log("bob"), 10, "bob to hear of the mute")
        muted = wait_for(lambda: (read_json(tmp_path / "bob.json") or {}).get("audio", {}).get("peer_muted"), 10,
                         "bob's stats to say muted")
        time.sleep(2.5)
        x("xdotool", "key", "--window", wid, "u")
        wait_for(lambda: "the other side unmuted their voice" in p.log("bob"), 10, "bob to hear of the unmute")
        time.sleep(4.0)     # speech again in bob's file: on a loaded host the voice is a second or more late
        x("xdotool", "key", "--window", wid, "q")          # alice leaves; bob (--wait-peer 0) ends too
        assert p.wait("alice", 30) == 0, p.tail("alice")
        assert p.wait("bob", 30) == 0, p.tail("bob")
    assert muted is True
    assert "voice muted" in p.log("alice") and "voice live again" in p.log("alice")
    # bob's file: 100 ms loudness; a quiet stretch of 1.5 s or more, with speech before and after it
    sound = audio_track(bob_file)
    rms = np.sqrt(np.mean(sound[: sound.size // 1600 * 1600].reshape(-1, 1600) ** 2, axis=1))
    quiet = rms < 1e-3
    runs, start = [], None
    for i, q in enumerate(list(quiet) + [False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            runs.append((start, i))
            start = None
    long = [(a, b) for a, b in runs if b - a >= 15]
    assert long, f"no silent stretch of 1.5 s in bob's file: quiet runs {runs}"
    a, b = long[0]
    print(f"bob's file: silent from {a / 10:.1f} s to {b / 10:.1f} s (u typed 2.5 s apart), longest quiet runs "
          f"otherwise {sorted((e - s) / 10 for s, e in runs if (s, e) != (a, b))[-3:]} s")
    assert rms[:a].max() > 0.01 and rms[b:].max() > 0.01, "speech before and after the muted stretch"
