"""Synthesizer v2's ONNX export (models/export.py) and its ONNX Runtime backend (models/onnx_synth.py),
against the torch graph on real frames of a real clip."""

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from codec.eye_reference import EyePicker, decode_eye_reference
from codec_core.format import I_EYE_L, I_EYE_R, I_YAW
from models.export import OPSET, export, key_inputs, main, metadata_path, weights_fingerprint
from models.generator import Generator
from models.learned import LearnedSynthesizer, steady_start
from models.onnx_synth import OnnxBackendError, OnnxSynthesizer
from models.synthesizers import BACKENDS, Synthesis

FRAMES = (15, 30, 45, 59)     # later frames of rt__3: the face has moved and talks


@pytest.fixture(scope="module")
def key(rt3_key):
    return rt3_key


@pytest.fixture(scope="module")
def generator():
    """An untrained generator that draws: a layer that starts at zero (an untrained network
    giving the plain warp) gets random weights, so the comparison covers the network too."""
    torch.manual_seed(0)
    generator = Generator().eval()
    with torch.no_grad():
        for p in generator.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return generator


@pytest.fixture(scope="module")
def exported(tmp_path_factory, generator):
    path = tmp_path_factory.mktemp("onnx") / "synth_v2_256.onnx"
    return path, export(generator, path, 256)


@pytest.fixture(scope="module")
def eyes(key):
    """An eye reference of rt__3's first frame, cut from a later frame, decoded."""
    tracked, ref = key
    key_openness = ref.reference_params()[[I_EYE_R, I_EYE_L]]
    picker = EyePicker(key_openness, 256, 27)
    picker.see(tracked[40].crop, 0.2 * key_openness, tracked[40].landmarks)
    return decode_eye_reference(picker.record(0), 256)


@pytest.fixture
def synths(key, generator, exported, eyes):
    """A torch and an ONNX synthesizer of rt__3's first frame with an eye reference, new for
    each test (each keeps the steady state of the frames it drew)."""
    tracked, ref = key
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    return (LearnedSynthesizer(*args, generator=generator, eyes=eyes),
            OnnxSynthesizer(*args, generator=generator, onnx_model=exported[0], eyes=eyes))


def real_frames(key) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Parameters of later rt__3 frames and a 15 degree turn, with global motions on some."""
    tracked, ref = key
    model = ref.face_model()
    turned = ref.reference_params().copy()
    turned[I_YAW] += 15
    shutting = model.analyse(tracked[FRAMES[1]].landmarks)
    shutting[[I_EYE_R, I_EYE_L]] *= 0.3           # the eye reference half laid
    frames = [model.analyse(tracked[i].landmarks) for i in FRAMES] + [shutting, turned]
    # a global picture motion on some frames (a camera drifting right and zooming in)
    motions = [np.zeros(4)] * 2 + [np.array([0.02 * i, -0.01, 0.01 * i, 0.005]) for i in range(1, len(frames) - 1)]
    return frames, motions


def test_the_export_is_a_checked_model_with_its_json(exported, synths, generator):
    path, meta = exported
    onnx.checker.check_model(str(path), full_check=True)
    saved = json.loads(metadata_path(path).read_text())
    assert saved == meta
    assert saved["generator_version"] == Generator.VERSION and saved["opset"] == OPSET
    assert saved["weights_sha256"] == weights_fingerprint(generator)
    shapes = {i["name"]: i["shape"] for i in saved["inputs"]}
    assert shapes["params"] == [1, 30] and shapes["keyframe"] == [1, 3, 256, 256]
    # the state: correction and field at the working size, then the layers' change at 256 folded in
    assert shapes["state"] == [1, 5 + 3 * 4, 128, 128]
    assert saved["outputs"] == [{"name": "picture", "shape": [1, 3, 256, 256], "dtype": "float32"},
                                {"name": "next_state", "shape": [1, 5 + 3 * 4, 128, 128], "dtype": "float32"}]
    # the key frame is an input, not a constant of the file: every prepared tensor is fed
    graph_inputs = [i.name for i in onnx.load(str(path)).graph.input]
    assert graph_inputs == ["params", "motion", "state", *key_inputs(synths[0].graph)] == list(shapes)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["picture", "next_state"]


def test_onnx_runtime_matches_torch_on_real_frames(key, synths):
    """Frame after frame, each drawn from the steady state the one before left."""
    tracked, _ = key
    torch_synth, onnx_synth = synths
    frames, motions = real_frames(key)
    state = steady_start(1, 256)
    for params, motion in zip(frames, motions, strict=True):
        with torch.inference_mode():
            ours, state = torch_synth.graph(torch.tensor(params, dtype=torch.float32)[None],
                                            torch.tensor(motion, dtype=torch.float32)[None], state)
        theirs = onnx_synth.picture(params, motion)
        assert np.abs(ours.numpy() - theirs).max() * 255 <= 1.0
    # and the frames did move: the comparison is not of key frames
    assert np.abs(onnx_synth.render(frames[-1]).astype(int) - tracked[0].crop.astype(int)).mean() > 2


def test_torch_and_onnx_renderers_draw_the_same_frames(key, synths):
    torch_synth, onnx_synth = synths
    for params, motion in zip(*real_frames(key), strict=True):
        assert np.abs(torch_synth.render(params, motion).astype(int)
                      - onnx_synth.render(params, motion).astype(int)).max() <= 1


def test_onnx_runtime_lays_the_mouth_reference_as_torch_does(rt3_parted_mouth, generator, exported):
    keyframe, ref, parted, mouth = rt3_parted_mouth
    args = (keyframe, ref.face_model(), ref.reference_params(), ref.ring_weights)
    ours = LearnedSynthesizer(*args, generator=generator, eyes=mouth).render(parted).astype(int)
    theirs = OnnxSynthesizer(*args, generator=generator, onnx_model=exported[0], eyes=mouth).render(parted)
    assert np.abs(ours - theirs.astype(int)).max() <= 1
    plain = LearnedSynthesizer(*args, generator=generator).render(parted).astype(int)
    assert (np.abs(ours - plain).sum(-1) > 0).sum() > 50          # the mouth was laid


def test_an_eye_reference_given_after_the_key_frame_draws_as_one_built_with_it(key, synths, generator, exported,
                                                                                eyes):
    """A live receiver gets the eye reference after the key frame (`set_eyes`): torch and
    ONNX Runtime then draw exactly what the synthesizers built with it draw from the same
    steady state (the state carries what the layers drew before: here without the eyes)."""
    tracked, ref = key
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    late = (LearnedSynthesizer(*args, generator=generator), OnnxSynthesizer(*args, generator=generator,
                                                                            onnx_model=exported[0]))
    frames, motions = real_frames(key)
    shutting = len(FRAMES)
    for pair in zip(synths, late, strict=True):
        def draw(i: int, pair=pair) -> list[np.ndarray]:
            return [synth.render(frames[i], motions[i]) for synth in pair]

        assert not np.array_equal(*draw(shutting))     # the eye layer draws nothing in the state
        pair[1].set_eyes(eyes)
        pair[1]._state = pair[0]._state.copy() if isinstance(pair[0]._state, np.ndarray) else pair[0]._state.clone()
        for i in range(shutting, len(frames)):
            assert np.array_equal(*draw(i))


def test_the_key_frames_own_parameters_give_back_the_key_frame_through_onnx(key, synths):
    """Also after other frames: the steady state keeps nothing where nothing moves."""
    tracked, ref = key
    for params, motion in zip(*real_frames(key), strict=True):
        synths[1].render(params, motion)
    assert np.array_equal(synths[1].render(ref.reference_params()), tracked[0].crop)


def test_the_onnx_backend_is_for_the_learned_synthesizer_only(key):
    tracked, ref = key
    assert BACKENDS == ("torch", "onnx")
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    with pytest.raises(ValueError, match="onnx backend"):
        Synthesis("warp", backend="onnx").build(*args)
    with pytest.raises(ValueError, match="unknown backend"):
        Synthesis("learned", backend="tensorrt").build(*args)
    with pytest.raises(ValueError, match="--onnx-model names the exported graph for --backend onnx"):
        Synthesis("warp", onnx_model=Path("graph.onnx")).check()      # it would be ignored


def test_the_refiner_setting_has_its_own_graph_and_adds_the_refiner_only(key, generator, exported, tmp_path):
    """--regions: the regional refiner on top of the default graph, in its own ONNX file."""
    tracked, ref = key
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    with pytest.raises(ValueError, match="--regions is a setting of the learned synthesizer"):
        Synthesis("warp", regions=True).build(*args)
    refined = tmp_path / "refined.onnx"
    assert export(generator, refined, 256, regions=True)["regions"] is True
    with pytest.raises(OnnxBackendError, match="with the regional refiner"):
        OnnxSynthesizer(*args, generator=generator, onnx_model=refined)          # asked without it
    params, motions = real_frames(key)
    torch_refined = LearnedSynthesizer(*args, generator=generator, regions=True)
    onnx_refined = OnnxSynthesizer(*args, generator=generator, onnx_model=refined, regions=True)
    no_refiner = copy.deepcopy(generator)
    for net in (no_refiner.regions.eyes, no_refiner.regions.mouth):
        net.out.weight.data.zero_()
        net.out.bias.data.zero_()
    plain = LearnedSynthesizer(*args, generator=generator)
    zeroed = LearnedSynthesizer(*args, generator=no_refiner, regions=True)
    for p, m in zip(params, motions):
        ours = torch_refined.render(p, m).astype(int)
        assert np.abs(ours - onnx_refined.render(p, m)).max() <= 1
        default = plain.render(p, m)
        assert np.array_equal(default, zeroed.render(p, m))        # the refiner is all it adds
        assert not np.array_equal(ours, default)


def test_a_model_of_other_weights_is_refused_and_a_missing_one_exported(key, exported, tmp_path):
    tracked, ref = key
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    torch.manual_seed(1)
    other = Generator().eval()
    with pytest.raises(OnnxBackendError, match="other weights"):
        OnnxSynthesizer(*args, generator=other, onnx_model=exported[0])
    fresh = tmp_path / "fresh.onnx"
    synth = OnnxSynthesizer(*args, generator=other, onnx_model=fresh)
    assert fresh.exists() and metadata_path(fresh).exists()
    assert np.array_equal(synth.render(ref.reference_params()), tracked[0].crop)


def test_the_command_exports_trained_weights(tmp_path, generator):
    weights, out = tmp_path / "synth.pt", tmp_path / "cli" / "synth.onnx"
    torch.save({"version": Generator.VERSION, "state": generator.state_dict()}, weights)
    assert main(["--out", str(out), "--weights", str(weights), "--size", "512"]) == 0    # (256: the fixture)
    meta = json.loads(metadata_path(out).read_text())
    assert meta["weights_sha256"] == weights_fingerprint(generator) and meta["size"] == 512
    onnx.checker.check_model(str(out), full_check=True)
    assert main(["--out", str(out), "--weights", str(tmp_path / "missing.pt")]) == 1


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="this ONNX Runtime has CUDA")
def test_cuda_without_onnxruntime_gpu_is_a_clear_error(key, generator):
    tracked, ref = key
    with pytest.raises(OnnxBackendError, match="onnxruntime-gpu"):
        OnnxSynthesizer(tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights,
                        device="cuda", generator=generator)


def test_one_frame_function_serves_every_key_frame(key, synths, generator):
    """What --compile compiles (models.learned.frame_function): the key frame's tensors are
    arguments, so a function made from one key frame's graph draws another key frame's
    frames exactly as that key frame's own graph does."""
    from models.learned import frame_function, key_buffers

    tracked, ref = key
    other = LearnedSynthesizer(tracked[0].crop[:, ::-1].copy(), ref.face_model(), ref.reference_params(),
                               ref.ring_weights, generator=generator)
    frames = frame_function(synths[0].graph)
    params = torch.tensor(ref.face_model().analyse(tracked[FRAMES[1]].landmarks), dtype=torch.float32)[None]
    motion = torch.tensor([[0.02, -0.01, 0.01, 0.005]])
    state = steady_start(1, 256)
    with torch.inference_mode():
        state = other.graph(params, motion, state)[1]     # a state left by a frame before
        theirs = other.graph(params, motion, state)
        ours = frames(params, motion, state, key_buffers(other.graph))
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
        assert not torch.equal(synths[0].graph(params, motion, state)[0], theirs[0])     # the key frames differ


def test_compile_is_for_the_learned_synthesizer_on_cuda_only(key):
    tracked, ref = key
    args = (tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights)
    for choice in (Synthesis("learned", compiled=True), Synthesis("warp", device="cuda", compiled=True),
                   Synthesis("learned", "onnx", "cuda", compiled=True)):
        with pytest.raises(ValueError, match="--compile runs the learned synthesizer on the torch backend on CUDA"):
            choice.build(*args)


def test_warm_up_prepares_the_function_every_key_frame_of_the_size_reuses(monkeypatch, key):
    """A receiver with --compile compiles before its peer comes (Synthesis.warm_up, on a
    made-up key frame); torch.compile is replaced here (no CUDA on CI): what is checked is that
    the warm-up runs the function and leaves it where the real key frames will find it, with
    inputs of the same kind as a real key frame's frames give it (a compiled function guards
    on whether a tensor was made in inference mode: on an H200 a real key frame's first frame
    after the warm-up took 22 s, one more compile, when its starting state was not)."""
    from models import learned

    calls = []

    def fake_compile(fn, mode):
        assert mode == "reduce-overhead"
        return lambda *args: calls.append(args) or fn(*args)

    monkeypatch.setattr(learned.torch, "compile", fake_compile)
    monkeypatch.setattr(learned, "_COMPILED", {})
    Synthesis("learned", device="cpu", compiled=True).warm_up(256)
    assert len(calls) == 1 and list(learned._COMPILED) == [(256, "cpu", id(learned.load_generator()), False)]
    Synthesis("learned").warm_up(256)           # without --compile: nothing
    assert len(calls) == 1
    tracked, ref = key
    real = LearnedSynthesizer(tracked[0].crop, ref.face_model(), ref.reference_params(), ref.ring_weights,
                              compiled=True)
    for frame in FRAMES[:2]:
        real.render(ref.face_model().analyse(tracked[frame].landmarks))
    kinds = [[t.is_inference() for t in args[:3]] for args in calls]
    assert len(calls) == 3 and kinds[1] == kinds[2] == kinds[0], kinds
