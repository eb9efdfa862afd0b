"""Face events at the sender, on pictures composed from two real clips (no network): the
analyser follows the person of its key frame.  A larger face stepping in is not followed;
when the face followed moves, the new crop goes to it, not to the largest face; while it
is away and someone else is in the picture the last parameters are held; a different
person in its place is never animated with its key frame, and gets a key frame of their
own once the first has been gone `face_switch_s`."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import clip

from codec_core.config import load_config
from codec_core.video import read_frames
from live.config import DEFAULT
from models.face_model import FaceBasis
from sender.analysis import Analyser, Analysis

WIDTH, HEIGHT = 1024, 576
SMALL, LARGE = 300, 440          # the person followed, and the larger one stepping in


@pytest.fixture(scope="module")
def people() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames of person A (a man, green screen) and person B (a woman, blue studio)."""
    import cv2

    a = [cv2.resize(f, (SMALL, SMALL), interpolation=cv2.INTER_AREA) for f in read_frames(clip("lp__d0.mp4"), 40)]
    b = [cv2.resize(f, (LARGE, LARGE), interpolation=cv2.INTER_AREA) for f in read_frames(clip("rt__4.mp4"), 40)]
    return a, b


def scene(*placed: tuple[np.ndarray, int, int]) -> np.ndarray:
    """A grey picture with each (face picture, x, y) pasted in, later ones on top."""
    out = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
    for face, x, y in placed:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(WIDTH, x + face.shape[1]), min(HEIGHT, y + face.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = face[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def analyser(**live) -> Analyser:
    # a search of the whole picture on every lost frame, so that nothing here hangs on the clock
    return Analyser(load_config(), FaceBasis.load(), replace(DEFAULT, face_search_interval_s=0.0, **live))


def until_keyframe(an: Analyser, pictures, limit_s: float = 60.0) -> tuple[Analysis, list[Analysis]]:
    """Process pictures (cycling) until a new key frame takes over; the results before it."""
    before: list[Analysis] = []
    deadline, i = time.monotonic() + limit_s, 0
    while time.monotonic() < deadline:
        result = an.process(pictures[i % len(pictures)])
        if result.keyframe is not None:
            return result, before
        before.append(result)
        i += 1
        time.sleep(0.02)
    raise AssertionError(f"no new key frame within {limit_s} s")


def centre(an: Analyser) -> np.ndarray:
    box = an.tracker.box
    return np.array([box.x0 + box.size / 2, box.y0 + box.size / 2])


def test_a_larger_face_steps_in_and_the_face_followed_moves(people):
    a, b = people
    an = analyser(face_switch_s=3600.0)
    try:
        assert an.first_keyframe(scene()) is None                           # nobody there yet
        assert an.first_keyframe(scene((a[0], 40, 140))).record.key_id == 0
        box = an.tracker.box
        for i in range(6):
            assert an.process(scene((a[i], 40, 140))).face
        # B, larger, steps in from the right and stays
        for i, x in enumerate(range(WIDTH, 540, -60)):
            result = an.process(scene((a[6 + i], 40, 140), (b[i], x, 70)))
            assert result.keyframe is None and result.key_id == 0 and an.tracker.box == box
        assert result.face
        # A moves away from its crop: the new crop is A's, B being the larger face
        moved = [scene((a[j], 230, 270), (b[j], 540, 70)) for j in range(20, 40)]
        new, _ = until_keyframe(an, moved)
        assert np.linalg.norm(centre(an) - (230 + SMALL / 2, 270 + SMALL / 2)) < 0.3 * SMALL, an.tracker.box
        assert new.key_id == 1 and an.switches == 0
        assert an.process(moved[0]).face
    finally:
        an.close()


def test_the_face_leaves_and_comes_back_while_another_stays(people):
    a, b = people
    an = analyser(face_switch_s=3600.0)
    try:
        assert an.first_keyframe(scene((a[0], 40, 140))) is not None
        box = an.tracker.box
        for i in range(8):
            result = an.process(scene((a[i], 40, 140), (b[i], 540, 70)))
            assert result.face and result.key_id == 0
        held = result.levels
        for i in range(12):                     # A is gone, B stays: hold, do not follow B
            result = an.process(scene((b[8 + i], 540, 70)))
            assert not result.face and np.array_equal(result.levels, held)
            assert result.keyframe is None and result.key_id == 0 and an.tracker.box == box
        back = [an.process(scene((a[20 + i], 40, 140), (b[20 + i], 540, 70))) for i in range(8)]
        assert all(r.face for r in back[2:]) and all(r.key_id == 0 and r.keyframe is None for r in back)
        assert an.tracker.box == box and an.keyframes == 1 and an.switches == 0
    finally:
        an.close()


def test_another_person_in_the_same_place(people):
    import cv2

    a, b = people
    b = [cv2.resize(f, (SMALL, SMALL), interpolation=cv2.INTER_AREA) for f in b]    # B as large as A
    an = analyser(face_switch_s=3600.0)
    try:
        assert an.first_keyframe(scene((a[0], 360, 140))) is not None
        for i in range(8):
            result = an.process(scene((a[i], 360, 140)))
            assert result.face
        held = result.levels
        for _ in range(3):                      # A leaves ...
            assert not an.process(scene()).face
        for i in range(10):                     # ... and B sits down in the same place: never A's key frame moved by B
            result = an.process(scene((b[i], 360, 140)))
            assert not result.face and np.array_equal(result.levels, held) and result.key_id == 0
        # A has been away long enough: B is followed, with a key frame of B's own
        an.live = replace(an.live, face_switch_s=0.0)
        b_scenes = [scene((b[j], 360, 140)) for j in range(10, 40)]
        new, before = until_keyframe(an, b_scenes)
        assert all(r.key_id == 0 and np.array_equal(r.levels, held) for r in before)
        assert new.key_id == 1 and an.switches == 1
        crop = new.keyframe.crop.reshape(-1, 3).mean(axis=0)
        like_b = np.abs(crop - b_scenes[0][140:440, 360:660].reshape(-1, 3).mean(axis=0)).sum()
        like_a = np.abs(crop - scene((a[0], 360, 140))[140:440, 360:660].reshape(-1, 3).mean(axis=0)).sum()
        assert like_b < like_a
        after = [an.process(s) for s in b_scenes[:5]]
        assert all(r.key_id == 1 for r in after) and sum(r.face for r in after) >= 4
    finally:
        an.close()
