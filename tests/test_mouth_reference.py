"""The mouth reference (models/mouth_reference.py): the encoder keeps the clip's widest-open
mouth as two strips in the eye reference's picture, and synthesizer v2 lays them between the
target's inner lips."""

import numpy as np
import pytest
import torch

from codec.eye_reference import MOUTH_OPEN, EyePicker, decode_eye_reference
from codec_core.bitstream import EyeReference
from codec_core.format import I_EYE_L, I_EYE_R
from models.eye_reference import landmark_tensor, picture_tensor
from models.generator import Generator
from models.learned import LearnedSynthesizer
from models.motion import INNER_LIPS
from models.mouth_reference import cut_mouth, inner_gap, lay_mouth_reference, lip_curve, mouth_share

WIDE, SHUT = 0, 10          # rt__3: frame 0's inner lips are 21 px apart, frame 10's 0.2 px


@pytest.fixture(scope="module")
def key(rt3_key):
    return rt3_key


def marks(landmarks: np.ndarray) -> torch.Tensor:
    return landmark_tensor(landmarks, 256)


def between_lips(landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """(size, size) bool: the pixels inside the inner lips' polygon."""
    import cv2
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[list(INNER_LIPS), :2] * 4).astype(np.int32)], 1, shift=2)
    return mask.astype(bool)


def test_a_lip_is_piecewise_linear_through_its_points_and_flat_beyond():
    knots = torch.tensor([[[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    p = torch.tensor([[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]])
    assert torch.allclose(lip_curve(p, knots), torch.tensor([[0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0]]))


def test_laid_at_its_own_lips_the_reference_gives_its_mouth_back(key):
    """Cut from an open mouth and laid on a grey picture at the same landmarks (against a
    shut key frame), the strips give back the pixels between the lips; nothing is laid away
    from the mouth."""
    tracked, _ = key
    frame = tracked[WIDE]
    strips = cut_mouth(frame.crop, frame.landmarks, 48)
    assert strips.shape == (48, 48, 3)
    grey = torch.full((1, 3, 256, 256), 0.5)
    laid = lay_mouth_reference(grey, marks(frame.landmarks), marks(tracked[SHUT].landmarks),
                               picture_tensor(strips), torch.ones(1))
    out = (laid[0].permute(1, 2, 0) * 255).numpy()
    inside = between_lips(frame.landmarks)
    assert inside.sum() > 100
    error = np.abs(out[inside] - frame.crop[inside]).mean()
    spread = np.abs(frame.crop[inside] - frame.crop[inside].mean(0)).mean()
    assert error < 0.25 * spread, (error, spread)        # the mouth's own detail, not a blur of it
    rows, cols = np.nonzero(inside)
    away = np.ones((256, 256), bool)
    away[rows.min() - 4:rows.max() + 5, cols.min() - 4:cols.max() + 5] = False
    assert np.all(out[away] == 127.5)


def test_the_share_comes_in_as_the_lips_part_wider_than_the_key_frames(key):
    tracked, _ = key
    shut, wide = marks(tracked[SHUT].landmarks), marks(tracked[WIDE].landmarks)
    both = torch.cat([shut, wide])
    assert mouth_share(both, shut).tolist() == [0.0, 1.0]
    assert mouth_share(both, wide).tolist() == [0.0, 0.0]      # a key frame this open: nothing to add


def test_the_picker_keeps_the_widest_open_mouth(key):
    tracked, ref = key
    opened = ref.reference_params()[[I_EYE_R, I_EYE_L]]
    picker = EyePicker(opened, 256, 27)
    picker.see(tracked[SHUT].crop, opened, tracked[SHUT].landmarks)      # lips shut, eyes open: nothing
    assert picker.record(0) is None
    assert inner_gap(tracked[42].landmarks) > inner_gap(tracked[13].landmarks) > MOUTH_OPEN * 256
    for i in (13, 42, 30):
        picker.see(tracked[i].crop, opened, tracked[i].landmarks)
    record = picker.record(5)
    assert record is not None and record.present == 4
    assert np.array_equal(picker.patches[2], cut_mouth(tracked[42].crop, tracked[42].landmarks, 48))
    decoded = decode_eye_reference(EyeReference.unpack(record.pack()), 256)
    assert decoded.present.tolist() == [[0.0, 0.0, 1.0]]
    back = decoded.patches[0, :, :, 96:].permute(1, 2, 0).numpy() * 255
    assert np.abs(back - picker.patches[2]).mean() < 4                 # VVC at QP 27


def test_v2_lays_the_mouth_where_the_lips_part_and_gives_the_key_frame_back(rt3_parted_mouth):
    """The key frame's own parameters give back the key frame with the mouth reference too;
    parted wider than the key frame's, the lips show the reference between them, and
    nothing changes away from the mouth."""
    keyframe, ref, parted, mouth = rt3_parted_mouth
    model, own = ref.face_model(), ref.reference_params()
    args = (keyframe, model, own, ref.ring_weights)
    generator = Generator().eval()       # untrained: the plain warp, so that only the reference differs
    with_mouth = LearnedSynthesizer(*args, generator=generator, eyes=mouth)
    without = LearnedSynthesizer(*args, generator=generator)
    assert np.array_equal(with_mouth.render(own), keyframe)
    a, b = with_mouth.render(parted).astype(int), without.render(parted).astype(int)
    changed = np.abs(a - b).sum(-1) > 0
    landmarks = model.landmarks(parted)
    assert changed[between_lips(landmarks)].mean() > 0.9
    rows, cols = np.nonzero(changed)
    lips = landmarks[list(INNER_LIPS), :2]
    assert lips[:, 1].min() - 3 <= rows.min() and rows.max() <= lips[:, 1].max() + 3
    assert lips[:, 0].min() - 4 <= cols.min() and cols.max() <= lips[:, 0].max() + 4
