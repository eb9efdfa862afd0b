"""Global picture motion (models/global_motion.py): measured at the sender from a real crop
moved by a known similarity, and followed by both synthesizers (the picture border and the
still part of the head rings move with it; the key frame stays exact without it)."""

import cv2
import numpy as np
import pytest

from models.generator import Generator
from models.global_motion import GlobalMotion, apply_motion, similarity_matrix
from models.learned import LearnedSynthesizer
from models.synthesizer import Synthesizer

SIZE = 256
MOTION = np.array([0.06, -0.04, 0.03, 0.02])      # tx, ty (normalised), log_scale, angle (rad)


@pytest.fixture(scope="module")
def key(rt3_key):
    return rt3_key


def pixel_matrix(motion: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of `motion` in crop pixels (pixel centres at i + 0.5)."""
    to_norm = np.array([[2 / SIZE, 0, 1 / SIZE - 1], [0, 2 / SIZE, 1 / SIZE - 1], [0, 0, 1]])
    m = np.vstack([similarity_matrix(motion), [0, 0, 1]])
    return (np.linalg.inv(to_norm) @ m @ to_norm)[:2]


def moved(picture: np.ndarray, motion: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(picture, pixel_matrix(motion), (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def moved_landmarks(landmarks: np.ndarray, motion: np.ndarray) -> np.ndarray:
    m = pixel_matrix(motion)
    return landmarks[:, :2] @ m[:, :2].T + m[:, 2]


def test_a_known_camera_motion_is_measured(key):
    tracked, _ = key
    crop, landmarks = tracked[0].crop, tracked[0].landmarks
    estimate = GlobalMotion(crop, landmarks).estimate(moved(crop, MOTION), moved_landmarks(landmarks, MOTION))
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    error_px = np.abs(apply_motion(corners, estimate) - apply_motion(corners, MOTION)).max() * SIZE / 2
    assert error_px < 1.0, (estimate, MOTION)


def test_a_still_picture_has_no_motion_and_a_flat_one_says_nothing(key):
    tracked, _ = key
    crop, landmarks = tracked[0].crop, tracked[0].landmarks
    assert np.abs(GlobalMotion(crop, landmarks).estimate(crop, landmarks)).max() < 1e-3
    flat = np.full_like(crop, 120)
    assert not GlobalMotion(flat, landmarks).estimate(moved(flat, MOTION), landmarks).any()


@pytest.mark.parametrize("synth_class", [Synthesizer, LearnedSynthesizer])
def test_the_synthesizers_move_the_background_with_the_global_motion(key, synth_class):
    tracked, ref = key
    kwargs = {"generator": Generator()} if synth_class is LearnedSynthesizer else {}
    # head rings marked as background (weight 0): all but the face is the camera's to move
    synth = synth_class(tracked[0].crop, ref.face_model(), ref.reference_params(), np.zeros_like(ref.ring_weights),
                        **kwargs)
    params = ref.reference_params()
    assert np.array_equal(synth.render(params, np.zeros(4)), tracked[0].crop)     # zero motion: exact
    shift = np.array([0.1, 0.0, 0.0, 0.0])                                          # 12.8 px to the right
    out = synth.render(params, shift).astype(int)
    expected = moved(tracked[0].crop, shift).astype(int)
    corner = (slice(8, 40), slice(24, 56))            # the flag, top left, far from the face
    assert np.abs(out[corner] - expected[corner]).mean() < 4
    assert np.abs(tracked[0].crop[corner].astype(int) - expected[corner]).mean() > 3 * np.abs(
        out[corner] - expected[corner]).mean()


@pytest.mark.parametrize("fmt", ["fomm", "fv2v", "cfte"])
def test_the_native_motion_models_move_the_background_too(key, fmt):
    from models.feature_formats import key_features
    from models.format_motion import build_format_synth

    tracked, ref = key
    synth = build_format_synth(fmt, tracked[0].crop, ref)
    values = key_features(fmt, ref)
    assert np.array_equal(synth.render(values, np.zeros(4)), tracked[0].crop)
    shift = np.array([0.1, 0.0, 0.0, 0.0])
    out = synth.render(values, shift).astype(int)
    expected = moved(tracked[0].crop, shift).astype(int)
    corner = (slice(8, 40), slice(24, 56))
    assert np.abs(out[corner] - expected[corner]).mean() < 4
