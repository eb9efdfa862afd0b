"""The sender's analysis on its own (no network): a face that leaves the picture is held,
a face that comes back elsewhere gets a new crop and a new key frame, and a picture
without a face gives no key frame."""

from __future__ import annotations

import time

import numpy as np
from conftest import clip

from codec_core.config import load_config
from codec_core.video import read_frames
from models.face_model import FaceBasis
from sender.analysis import Analyser


def test_face_leaves_and_comes_back_elsewhere():
    faces = list(read_frames(clip("lp__d0.mp4"), 40))

    def canvas(face: np.ndarray | None, right: bool) -> np.ndarray:
        out = np.full((512, 1024, 3), 60, np.uint8)
        if face is not None:
            if right:
                out[:, 512:] = face
            else:
                out[:, :512] = face
        return out

    analyser = Analyser(load_config(), FaceBasis.load())
    try:
        assert analyser.first_keyframe(canvas(None, False)) is None       # no face: no key frame
        first = analyser.first_keyframe(canvas(faces[0], False))
        assert first is not None and first.record.key_id == 0
        for face in faces[:10]:
            result = analyser.process(canvas(face, False))
            assert result.face and result.keyframe is None and result.key_id == 0
        held = result.levels
        for _ in range(15):                                             # the face is gone: levels held
            result = analyser.process(canvas(None, False))
            assert not result.face and np.array_equal(result.levels, held) and result.keyframe is None
        # back, on the other side of the picture: a new crop, and a key frame coded meanwhile
        new, deadline, i = None, time.monotonic() + 60, 10
        while new is None and time.monotonic() < deadline:
            result = analyser.process(canvas(faces[i % len(faces)], True))
            if result.keyframe is None:
                assert result.key_id == 0                               # still the old one
            new = result.keyframe
            i += 1
            time.sleep(0.02)
        assert new is not None and new.record.key_id == 1 and result.key_id == 1
        assert analyser.tracker.box.x0 >= 400
        result = analyser.process(canvas(faces[i % len(faces)], True))
        assert result.face and result.key_id == 1
    finally:
        analyser.close()
