"""Keyboard editing in the receiver's window (no display needed: keys are fed directly)."""

from models.editing import CONTROLS_BY_NAME
from receiver.sinks import WINDOW_KEYS, WindowSink


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
