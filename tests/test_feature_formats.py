"""Feature formats on a real clip (rt__3): analysis that says what the face does, native motion
models that give back the key frame exactly at its own values and leave the background, geometry
translators that round-trip, and one-line errors."""

import numpy as np
import pytest
import torch

from codec_core.format import FEATURE_FORMATS
from models.feature_formats import (
    CFTE_POINTS,
    FOMM_GROUPS,
    FV2V_GROUPS,
    CfteProjection,
    FormatError,
    analyse,
    key_features,
    load_cfte,
    normalised,
)
from models.format_motion import Fv2vMotion, build_format_synth
from models.motion import identity_grid
from models.train_cfte import fit
from models.translators import GeometryTranslator, TranslatorError, make_translator

NATIVE = ("fomm", "fv2v", "cfte")


@pytest.fixture(scope="module")
def session(rt3_key):
    tracked, ref = rt3_key
    frames = [t for t in tracked[1::4] if t.landmarks is not None]
    return tracked[0].crop, ref, frames


@pytest.mark.parametrize("fmt", FEATURE_FORMATS)
def test_values_have_the_registry_shape(session, fmt):
    _, ref, frames = session
    assert analyse(fmt, frames[0].landmarks, ref).shape == (FEATURE_FORMATS[fmt].count,)
    assert key_features(fmt, ref).shape == (FEATURE_FORMATS[fmt].count,)


@pytest.mark.parametrize("fmt", NATIVE)
def test_key_values_give_back_the_key_frame_exactly(session, fmt):
    key, ref, _ = session
    synth = build_format_synth(fmt, key, ref)
    values = key_features(fmt, ref)
    assert torch.equal(synth.field(values)[0], identity_grid(256))
    assert np.array_equal(synth.render(values), key)


@pytest.mark.parametrize("fmt", NATIVE)
def test_a_frame_moves_the_face_and_leaves_the_background(session, fmt):
    key, ref, frames = session
    synth = build_format_synth(fmt, key, ref)
    moves = [((synth.field(analyse(fmt, f.landmarks, ref))[0] - identity_grid(256)) * 128).abs() for f in frames]
    face = max(float(m.max()) for m in moves)
    corners = max(float(torch.cat([m[:24, :24], m[:24, -24:], m[-24:, :24], m[-24:, -24:]]).max()) for m in moves)
    assert face > 1.0                 # pixels: the face moves over the clip
    assert corners < 0.01             # the picture's corners stay put


def test_fv2v_angles_show_a_known_yaw(session):
    _, ref, _ = session
    model, p = ref.face_model(), ref.reference_params()
    turned = p.copy()
    turned[0] += 12.0
    turned[1] -= 5.0
    base, v = key_features("fv2v", ref), analyse("fv2v", model.landmarks(turned), ref)
    assert np.allclose(v[:3] - base[:3], [12.0, -5.0, 0.0], atol=1e-6)
    assert np.abs(v[6:]).max() < 1e-9      # a pure pose change has no expression deltas


def test_fv2v_key_points_are_the_face_models_landmarks(session):
    _, ref, frames = session
    model = ref.face_model()
    p = model.analyse(frames[-1].landmarks)
    p[:3] += (8.0, -6.0, 4.0)
    lms = model.landmarks(p)
    values = analyse("fv2v", lms, ref)
    motion = Fv2vMotion(np.stack([ref.shape[list(g)].mean(axis=0) for g in FV2V_GROUPS]))
    kp, _ = motion.points(torch.as_tensor(values, dtype=torch.float32)[None])
    expected = normalised(np.stack([lms[list(g), :2].mean(axis=0) for g in FV2V_GROUPS]), 256)
    assert np.abs(kp[0].numpy() - expected).max() < 1e-5


def test_fomm_key_points_move_with_a_translated_face(session):
    _, ref, frames = session
    lms = frames[0].landmarks
    v = analyse("fomm", lms, ref)
    moved = analyse("fomm", lms + np.array([12.0, -8.0, 0.0]), ref)
    assert np.allclose(moved[:20].reshape(10, 2) - v[:20].reshape(10, 2), [12 / 128, -8 / 128], atol=1e-12)
    assert np.allclose(moved[20:], v[20:], atol=1e-12)
    centre = lms[:, :2].mean(axis=0)
    bigger = lms.copy()
    bigger[:, :2] = centre + 1.1 * (lms[:, :2] - centre)
    assert np.allclose(analyse("fomm", bigger, ref)[20:], 1.1 * v[20:], atol=1e-12)
    kp = v[:20].reshape(10, 2)
    for k, g in enumerate(FOMM_GROUPS):
        assert np.allclose(kp[k], normalised(lms[list(g), :2].mean(axis=0), 256))


@pytest.mark.parametrize("fmt,pose_tol,expr_tol", [("fomm", 0.05, 0.05), ("fv2v", 0.05, 0.05), ("cfte", 2.0, 2.0)])
def test_geometry_round_trip_through_a_format(session, fmt, pose_tol, expr_tol):
    """ifvc -> X -> ifvc: pose within `pose_tol` degrees, expression within `expr_tol` (RMS over the
    coefficients, in units of the basis's spread); cfte's 16 numbers cannot hold all of ifvc's 30.
    With the plain weighting: the default for fomm and cfte weighs the fit by the noise of real
    faces and trades this exactness on model-drawn faces for accuracy on real ones
    (tests/test_translators_geometry.py)."""
    _, ref, frames = session
    model, std = ref.face_model(), ref.basis.expression_std
    there, back = make_translator("ifvc", fmt, ref), GeometryTranslator(fmt, "ifvc", ref, measured=False)
    pose, expr = [], []
    for f in frames:
        p = model.analyse(f.landmarks)
        q = back.translate(there.translate(p))
        pose.append(np.abs(q[:3] - p[:3]).max())
        expr.append(np.sqrt(np.mean(((q[10:] - p[10:]) / std) ** 2)))
    assert max(pose) < pose_tol and np.mean(expr) < expr_tol


def test_translation_between_two_formats_matches_their_own_analysis(session):
    """X -> Y against Y's own analysis of the same frame: fv2v carries ifvc's pose, so fv2v -> ifvc
    finds it to a fraction of a degree; fomm's 2D key points see yaw and pitch only through
    foreshortening, so fomm -> fv2v finds them to a few degrees (docs/formats.md)."""
    _, ref, frames = session
    to_ifvc, to_fv2v = make_translator("fv2v", "ifvc", ref), make_translator("fomm", "fv2v", ref)
    exact, loose = [], []
    for f in frames:
        native = analyse("fv2v", f.landmarks, ref)
        exact.append(np.abs(to_ifvc.translate(native)[:3] - native[:3]).max())
        loose.append(np.abs(to_fv2v.translate(analyse("fomm", f.landmarks, ref))[:3] - native[:3]).mean())
    assert max(exact) < 0.25 and np.mean(loose) < 3.0


def test_identity_translator_and_errors(session):
    _, ref, frames = session
    v = analyse("cfte", frames[0].landmarks, ref)
    assert np.array_equal(make_translator("cfte", "cfte", ref).translate(v), v)
    for call in (lambda: make_translator("ifvc", "vp9", ref), lambda: make_translator("mesh", "ifvc", ref),
                 lambda: make_translator("ifvc", "fomm", ref, method="magic")):
        with pytest.raises(TranslatorError) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(TranslatorError) as e:
        make_translator("ifvc", "fomm", ref, method="learned").translate(np.zeros(3))
    assert "shape" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FormatError, match="unknown feature format"):
        analyse("vp9", frames[0].landmarks, ref)
    with pytest.raises(FormatError):
        build_format_synth("ifvc", frames[0].crop, ref)


def test_cfte_asset_is_versioned(tmp_path):
    p = load_cfte()
    assert p.version == "cfte_v1" and p.basis.shape == (2 * len(CFTE_POINTS), 16)
    assert np.allclose(p.basis.T @ p.basis, np.eye(16), atol=1e-5)
    other = tmp_path / "cfte_v0.npz"
    CfteProjection("cfte_v0", p.mean, p.basis).save(other)
    with pytest.raises(FormatError, match="version 'cfte_v0'"):
        load_cfte(other)


def test_cfte_fit_keeps_what_lies_in_its_span():
    rng = np.random.default_rng(1)
    mean, modes = rng.normal(size=136), np.linalg.qr(rng.normal(size=(136, 16)))[0]
    points = (mean + rng.normal(size=(200, 16)) @ modes.T).reshape(200, 68, 2)
    projection, kept = fit(points)
    assert kept > 1 - 1e-9
    assert np.allclose(projection.rebuild(projection.project(points)), points, atol=1e-9)


def test_cfte_training_writes_under_out_and_installs_only_a_new_version(tmp_path, monkeypatch):
    """`python -m models.train_cfte` writes under out/ by default; `--install` copies to the
    shipped asset, and refuses (one line, before any tracking) to replace an asset of the
    same version unless `--force`: cfte streams coded with it would decode wrongly."""
    import models.train_cfte as train_cfte
    from models.feature_formats import CFTE_ASSET

    out = train_cfte.parser().parse_args([]).out
    assert out.parts[0] == "out" and out.resolve() != CFTE_ASSET.resolve()
    empty = tmp_path / "no-clips"
    empty.mkdir()
    with pytest.raises(SystemExit) as refused:
        train_cfte.main(["--install", "--data", str(empty)])          # the shipped cfte_v1 is there
    message = str(refused.value)
    assert "is already cfte_v1" in message and "bump CFTE_VERSION" in message and "\n" not in message
    with pytest.raises(SystemExit, match="no training clips"):          # --force: on to the (missing) clips
        train_cfte.main(["--install", "--force", "--data", str(empty)])
    other = tmp_path / "cfte_v1.npz"
    CfteProjection("cfte_v0", load_cfte().mean, load_cfte().basis).save(other)
    train_cfte.check_install(other, force=False)                       # another version: may be replaced


def test_a_flat_fomm_jacobian_does_not_sweep_far_colours_in(session):
    """A shut eye makes its fomm group flat and its Jacobian nearly singular: the local motion
    is bounded, so the field moves no pixel further than a few key-point spreads would (before
    the bound, a blink on rt__3 sampled the flag and the shirt into the eyes)."""
    key, ref, _ = session
    synth = build_format_synth("fomm", key, ref)
    values = key_features("fomm", ref).copy()
    for k in (2, 3):                                    # both eye groups (FOMM_GROUPS order)
        jac = values[20 + 4 * k:24 + 4 * k].reshape(2, 2)
        jac[1] *= 1e-3                                  # the eye shut: no height left
        values[20 + 4 * k:24 + 4 * k] = jac.reshape(-1)
    moved = (synth.field(values)[0] - identity_grid(256)).abs().max()
    assert moved < 0.5, f"a shut eye moves pixels by {float(moved):.2f} (in [-1, 1] units)"
