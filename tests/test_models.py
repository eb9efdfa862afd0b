"""Face model and synthesizer on a real key frame: exact identity, a still background,
and parameters that move the face the way they say."""

import numpy as np
import pytest
from conftest import clip

from codec_core.config import load_config
from codec_core.format import step_vector
from codec_core.video import read_frames
from models.face_model import FaceBasis, canonicalise
from models.face_tracker import detect_still
from models.reference import Reference
from models.segmentation import person_probability
from models.synthesizer import Synthesizer
from models.tracking import CropTracker


@pytest.fixture(scope="module")
def session():
    frames = list(read_frames(clip("rt__3.mp4"), 40))
    tracker = CropTracker(256)
    tracked = [tracker.track(f) for f in frames]
    tracker.close()
    basis, cfg = FaceBasis.load(), load_config()
    steps = step_vector(cfg.steps.values(), basis.num_params)
    key = tracked[0]
    ref = Reference.from_landmarks(basis, key.landmarks, 256, cfg.steps.geometry, steps,
                                   person=person_probability(key.crop))
    synth = Synthesizer(key.crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    return tracked, ref, synth


def test_basis_asset_is_versioned_and_orthonormal():
    b = FaceBasis.load()
    assert b.version == "v1" and b.num_params == 30
    gram = b.expression @ b.expression.T
    assert np.allclose(gram, np.eye(b.num_expression), atol=1e-5)


def test_analysis_reconstructs_landmarks(session):
    tracked, ref, _ = session
    model = ref.face_model()
    errors = []
    for t in tracked:
        rec = model.landmarks(model.analyse(t.landmarks))
        errors.append(np.linalg.norm(rec[:, :2] - t.landmarks[:, :2], axis=1).mean())
    assert np.median(errors) < 1.5  # pixels at 256x256


def test_reference_parameters_give_the_key_frame_exactly(session):
    tracked, ref, synth = session
    assert np.array_equal(synth.render(ref.reference_params()), tracked[0].crop)


def test_reference_geometry_roundtrip(session):
    _, ref, _ = session
    back = Reference.unpack(ref.pack(), ref.basis, 256, ref.geometry_step, ref.param_steps)
    assert np.array_equal(back.geometry.shape_levels, ref.geometry.shape_levels)
    assert np.array_equal(back.geometry.pose_levels, ref.geometry.pose_levels)
    assert np.array_equal(back.ring_weights, ref.ring_weights)


def test_yaw_turns_the_rendered_head_and_background_stays(session):
    tracked, ref, synth = session
    params = ref.reference_params().copy()
    params[0] += 15.0
    frame = synth.render(params)
    key = tracked[0].crop
    # the picture corners (background) are untouched
    for sl in (np.s_[:20, :20], np.s_[:20, -20:]):
        assert np.array_equal(frame[sl], key[sl])
    # re-detected yaw changed by roughly the edit
    basis = FaceBasis.load()
    _, pose_key = canonicalise(detect_still(key), basis, 256)
    _, pose_new = canonicalise(detect_still(frame), basis, 256)
    assert 7.0 < pose_new[0] - pose_key[0] < 23.0


def test_synthesized_video_tracks_the_original_better_than_freeze(session):
    tracked, ref, synth = session
    model = ref.face_model()
    err_synth, err_freeze = [], []
    for t in tracked[1:]:
        frame = synth.render(model.analyse(t.landmarks))
        err_synth.append(np.abs(frame.astype(float) - t.crop).mean())
        err_freeze.append(np.abs(tracked[0].crop.astype(float) - t.crop).mean())
    assert np.mean(err_synth) < np.mean(err_freeze)


def test_field_blur_is_the_same_on_every_device():
    """The CPU blurs the displacement field with OpenCV, CUDA with a torch convolution (not
    run here without a GPU): both must give the same field."""
    import torch

    from models.synthesizer import _blur, _blur_torch, _gaussian_kernel

    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.normal(size=(3, 64, 80)).astype(np.float32))
    maps[:, :10] += 5.0                     # an edge, and the picture border, where replication matters
    kernel = _gaussian_kernel(4.0)
    assert torch.allclose(_blur(maps, kernel), _blur_torch(maps, kernel), atol=1e-5)
