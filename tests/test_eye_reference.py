"""The eye reference (models/eye_reference.py): the encoder keeps each eye's most shut moment,
sends it as one small VVC picture, and synthesizer v2 lays it where an eye shuts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codec.eye_reference import EyePicker, decode_eye_reference
from codec_core.bitstream import EyeReference, StreamError
from codec_core.format import I_EYE_L, I_EYE_R, KEYFRAME_CODEC_VVC, eye_reference_size
from codec_core.keyframe import encode_keyframe
from models.eye_reference import START, cut_eye, eye_shares, no_eye_patches
from models.generator import Generator
from models.learned import LearnedSynthesizer
from models.motion import identity_grid
from models.regions import REGIONS, lay_back, patch_frame, to_patch

OPEN = [I_EYE_R, I_EYE_L]


@pytest.fixture(scope="module")
def key(rt3_key):
    return rt3_key


def key_openness(ref) -> np.ndarray:
    return ref.reference_params()[OPEN]


def reference_of(key, frame: int = 40, share: float = 0.2):
    """The eye reference a picker keeps from one later rt__3 frame, as if its eyes were at
    `share` of the key frame's openness there, coded and decoded."""
    tracked, ref = key
    picker = EyePicker(key_openness(ref), 256, 27)
    picker.see(tracked[frame].crop, share * key_openness(ref), tracked[frame].landmarks)
    record = picker.record(7)
    assert record is not None
    return record, decode_eye_reference(record, 256)


def test_the_picker_keeps_each_eyes_most_shut_moment_below_the_start(key):
    tracked, ref = key
    opened = key_openness(ref)
    picker = EyePicker(opened, 256, 27)
    picker.see(tracked[5].crop, opened * 0.9, tracked[5].landmarks)          # hardly closing: nothing kept
    assert picker.record(0) is None
    picker.see(tracked[10].crop, opened * [0.5, 0.9], tracked[10].landmarks)  # the right eye closing
    picker.see(tracked[20].crop, opened * [0.3, 0.95], tracked[20].landmarks)  # shut further: this one
    picker.see(tracked[30].crop, opened * [0.4, 0.5], tracked[30].landmarks)   # the left eye's only one
    record = picker.record(3)
    assert record.key_id == 3 and record.present & 3 == 3
    assert np.allclose(record.openness, opened * [0.3, 0.5], atol=1e-6)
    assert np.array_equal(picker.patches[0], cut_eye(tracked[20].crop, tracked[20].landmarks, 0))
    assert np.array_equal(picker.patches[1], cut_eye(tracked[30].crop, tracked[30].landmarks, 1))
    decoded = decode_eye_reference(EyeReference.unpack(record.pack()), 256)
    assert decoded.patches.shape == (1, 3, 48, 144)
    # what comes back is the patches side by side, VVC-coded at QP 27
    grey = np.full((48, 48, 3), 128, np.uint8)                 # (a part not kept is grey)
    sent = np.concatenate([grey if p is None else p for p in picker.patches], 1).astype(float)
    back = decoded.patches[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(back - sent).mean() < 3


def test_a_patch_is_the_eye_on_the_refiners_frame(key):
    """The patch holds the eye in its middle: the lid landmarks fall inside the patch's
    inner half, whatever the eye (the left one is mirrored: its corners swap sides)."""
    tracked, _ = key
    picture = tracked[0].crop
    for eye in (0, 1):
        patch = cut_eye(picture, tracked[0].landmarks, eye)
        assert patch.shape == (48, 48, 3)
        # darker in the middle (the iris and lashes) than at the patch's edge (skin)
        assert patch[18:30, 12:36].mean() < patch[[0, -1]].mean() - 10


def test_the_reference_comes_in_as_the_eye_shuts():
    eyes = no_eye_patches(256)._replace(openness=torch.tensor([[0.1, 0.2]]), present=torch.tensor([[1.0, 1.0]]))
    key_open = torch.tensor([[0.5, 0.5]])
    shares = eye_shares(torch.tensor([[0.5, 0.5], [START * 0.5, 0.5], [0.1, 0.2], [0.0, 0.05]]), key_open, eyes)
    assert torch.allclose(shares, torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
    halfway = eye_shares(torch.tensor([[(START * 0.5 + 0.1) / 2, 0.25]]), key_open, eyes)
    assert torch.allclose(halfway, torch.tensor([[0.5, 0.5]]), atol=1e-5)
    # an eye without a patch gets none, however shut
    one_eye = eyes._replace(present=torch.tensor([[0.0, 1.0]]))
    assert eye_shares(torch.tensor([[0.0, 0.0]]), key_open, one_eye).tolist() == [[0.0, 1.0]]


def test_v2_draws_the_reference_where_the_eye_shuts_and_nothing_else(key):
    """The key frame's own parameters give back the key frame; shut eyes show the reference
    patch; the rest of the picture is what v2 draws without it."""
    tracked, ref = key
    record, eyes = reference_of(key)
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    generator = Generator().eval()       # untrained: the plain warp, so that only the reference differs
    with_eyes = LearnedSynthesizer(*args, generator=generator, eyes=eyes)
    without = LearnedSynthesizer(*args, generator=generator)
    shut = ref.reference_params().copy()
    shut[OPEN] = np.array(record.openness)
    # each a key frame's first frame: drawn whole (a frame after another keeps some of it)
    a, b = with_eyes.render(shut).astype(int), without.render(shut).astype(int)
    assert np.array_equal(with_eyes.render(ref.reference_params()), tracked[0].crop)
    changed = np.abs(a - b).sum(-1) > 0
    marks = ref.face_model().landmarks(shut)[:, :2]
    for eye, corners in ((0, (33, 133)), (1, (263, 362))):
        centre = marks[list(corners)].mean(0).round().astype(int)
        assert changed[centre[1], centre[0]]
        # there the picture is the reference's patch laid back: cut it out again and compare
        again = cut_eye(a.astype(np.uint8), marks, eye)[12:36, 12:36].astype(float)
        sent = eyes.patches[0, :, 12:36, eye * 48 + 12:eye * 48 + 36].permute(1, 2, 0).numpy() * 255
        assert np.abs(again - sent).mean() < 4
    # nothing changed away from the eyes: below the nose, or in the picture's corners
    assert not changed[150:].any() and not changed[:40, :40].any()


def test_a_reference_of_the_wrong_size_is_refused():
    picture = np.full((48, 48, 3), 128, np.uint8)
    record = EyeReference(0, KEYFRAME_CODEC_VVC, 1, (0.1, 0.0), encode_keyframe(picture, 40))
    with pytest.raises(StreamError, match="eye reference is 48x48, a 256 stream's is 144x48"):
        decode_eye_reference(record, 256)
    with pytest.raises(StreamError, match="the eye reference's picture: "):
        decode_eye_reference(EyeReference(0, KEYFRAME_CODEC_VVC, 1, (0.1, 0.0), record.picture[:20]), 256)
    assert eye_reference_size(512) == (288, 96)


@pytest.mark.parametrize("size", [256, 512])
def test_laying_back_on_a_square_equals_sampling_the_patch_at_every_pixel(key, size):
    """`regions.lay_back` (the refiner's and the eye reference's) works on a square of
    pixels around the patch; sampling the patch at every pixel of the picture gives the same."""
    tracked, _ = key
    torch.manual_seed(0)
    marks = torch.from_numpy(tracked[0].landmarks[None, :, :2]).float() * (2.0 / 256) - 1.0
    marks = torch.cat([marks, marks + 0.04])                  # two frames, the second moved
    grid = identity_grid(size).reshape(1, size * size, 2)
    for region in REGIONS:
        patch = torch.rand(2, 4, region.patch, region.patch)
        frame = patch_frame(region, marks)
        everywhere = F.grid_sample(patch, to_patch(grid, *frame).view(2, size, size, 2), mode="bilinear",
                                   padding_mode="zeros", align_corners=False).flatten(2)
        laid, index = lay_back(patch, frame, size)
        picture = torch.zeros(2, 4, size * size).scatter(2, index, laid)
        assert everywhere.abs().sum() > 0 and torch.allclose(picture, everywhere, atol=1e-6)


def test_a_key_frame_without_a_reference_skips_the_layer_and_draws_the_same(key):
    """Without an eye reference the graph leaves the layer out; with the layer on and no
    patches (as the ONNX file and a compiled function have it) the picture is the same."""
    tracked, ref = key
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    generator = Generator().eval()
    without = LearnedSynthesizer(*args, generator=generator)
    layered = LearnedSynthesizer(*args, generator=generator, eyes=no_eye_patches(256))
    assert not without.graph.lays_eyes and layered.graph.lays_eyes
    shut = ref.reference_params().copy()
    shut[OPEN] = 0.0
    assert np.array_equal(without.render(shut), layered.render(shut))
