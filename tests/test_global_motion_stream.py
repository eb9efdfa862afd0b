"""Stream version 3: the global-motion group after every frame's values (docs/bitstream.md,
"Global motion"): the session header's global_step, the encoder's global levels and the
decoder's, the refusal of version-2 streams, `info`, and the VVC container.

The streams are the first 12 frames of pcavs__Input_00098, whose camera moves (so the global
levels are not zero), in ifvc and fomm, cropped as the encoder crops (intra interval 5).
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from conftest import FIXTURES, clip, one_line_error

from codec.cli import main
from codec.decoder import FaceDecoder, decode_frames, read_stream
from codec_core.bitstream import Keyframe, ParamSegment, SessionHeader, StreamError, read_records
from codec_core.config import ConfigError, load_config
from codec_core.container import (
    FACE_FEATURE_SEI,
    FIELD_LAYOUTS,
    GLOBAL_MOTION_TYPE,
    USER_DATA_UNREGISTERED,
    decode_levels,
    native_to_vvc,
    read_face_features,
    split_native,
    vvc_to_native,
)
from codec_core.format import GLOBAL_MOTION_COUNT, MAGIC, MAX_STEP, STREAM_VERSION
from codec_core.sei import BitReader, read_sei_nal, split_annexb

FRAMES = 12


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> dict:
    """format -> (stream path, the encoder's levels of every frame)."""
    from codec.encoder import encode_video
    from models.face_model import FaceBasis

    tmp, src = tmp_path_factory.mktemp("global"), clip("pcavs__Input_00098.mp4")
    cfg, basis = load_config().with_overrides(intra_interval=5), FaceBasis.load()
    out = {}
    for fmt in ("ifvc", "fomm"):
        path = tmp / f"{fmt}.fcv"
        res = encode_video(src, path, cfg, basis, max_frames=FRAMES, fmt=fmt)
        out[fmt] = (path, res.levels)
    return out


def cfg_step() -> float:
    """The configured global step as the header carries it (float32)."""
    return float(np.float32(load_config().global_step))


def stream_levels(parsed) -> list[np.ndarray]:
    return [q for s in parsed.segments for q in decode_levels(s, parsed.header.values_per_frame)]



# -- the syntax -----------------------------------------------------------------------------

def test_the_header_carries_global_step_after_the_formats_steps():
    steps = load_config().steps_of("fomm")
    header = SessionHeader(2, 256, 256, 25, 1, 0, "v1", 60, 50, steps, 0.003)
    data = header.pack()
    assert struct.unpack(">f", data[-4:])[0] == np.float32(0.003)
    assert data[-5 - 4 * len(steps)] == len(steps)                    # num_steps counts the format's only
    back = SessionHeader.unpack(data)
    assert back.global_step == float(np.float32(0.003)) and back.pack() == data
    assert (back.num_params, back.values_per_frame) == (60, 60 + GLOBAL_MOTION_COUNT)
    for bad in (0.0, -0.002, MAX_STEP, math.inf, math.nan):
        with pytest.raises(StreamError, match="invalid global step"):
            SessionHeader.unpack(data[:-4] + struct.pack(">f", bad))
    with pytest.raises(StreamError, match="expected"):               # a version-2 header: no global_step
        SessionHeader.unpack(data[:-4])


# 3: the same syntax, fomm's key points defined otherwise; 4: no EYE_REFERENCE record; 5: no mouth in it
@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_an_older_stream_is_refused_in_one_line(tmp_path, capsys, version):
    data = bytearray((FIXTURES / "short.fcv").read_bytes())
    assert data[len(MAGIC)] == STREAM_VERSION == 6
    data[len(MAGIC)] = version
    with pytest.raises(StreamError, match=rf"unsupported stream version {version} \(this decoder reads version 6\)"):
        read_records(bytes(data))
    (tmp_path / "old.fcv").write_bytes(bytes(data))
    error = one_line_error(["info", str(tmp_path / "old.fcv")], capsys)
    assert f"unsupported stream version {version}" in error


def test_global_step_is_configured_and_checked(tmp_path, capsys):
    cfg = load_config()
    assert cfg.global_step == 0.004
    assert cfg.with_overrides(global_step=0.002).global_step == 0.002
    (tmp_path / "c.yaml").write_text("global_step: 0.01\n")
    assert load_config(tmp_path / "c.yaml").global_step == 0.01
    for bad in (0, -1, 1e4):
        (tmp_path / "c.yaml").write_text(f"global_step: {bad}\n")
        with pytest.raises(ConfigError, match="global_step"):
            load_config(tmp_path / "c.yaml")
        with pytest.raises(ConfigError, match="global_step"):
            cfg.with_overrides(global_step=bad)
    assert cfg.with_quantization_factor(2).global_step == cfg.global_step     # the factor leaves it
    error = one_line_error(["encode", str(clip("dpe__d.mp4")), "-o", str(tmp_path / "s.fcv"), "--no-crop",
                            "--frames", "2", "--global-step", "0"], capsys)
    assert "global_step must lie in (0, 1000)" in error and not (tmp_path / "s.fcv").exists()


# -- encoder and decoder --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["ifvc", "fomm"])
def test_levels_round_trip_bit_for_bit_with_global_motion(coded, fmt):
    path, levels = coded[fmt]
    parsed = read_stream(path)
    decoded = stream_levels(parsed)
    assert len(decoded) == len(levels) == FRAMES
    assert all(d.shape == (parsed.header.values_per_frame,) for d in decoded)
    assert all(np.array_equal(d, e) for d, e in zip(decoded, levels, strict=True))
    glob = np.stack(decoded)[:, parsed.header.num_params:]
    assert not glob[0].any()                            # the key frame's own crop: no motion
    assert np.abs(glob).max() >= 3, glob                # this clip's camera moves


def test_the_decoder_gives_each_frame_its_motion(coded, monkeypatch):
    path, levels = coded["ifvc"]
    parsed = read_stream(path)
    decoder = FaceDecoder(parsed.header)
    step = float(np.float32(load_config().global_step))
    n = parsed.header.num_params
    for q in levels:
        assert np.array_equal(decoder.motion(q), q[n:] * step)
        assert np.array_equal(decoder.values(q), decoder.values(q[:n]))     # translators see format values only
    with pytest.raises(StreamError, match="no global motion"):
        decoder.motion(levels[0][:n])
    shown: list[np.ndarray | None] = []
    monkeypatch.setattr(FaceDecoder, "render", lambda self, params, motion=None: shown.append(motion) or params)
    assert len(list(decode_frames(parsed))) == FRAMES
    assert all(np.array_equal(m, q[n:] * step) for m, q in zip(shown, levels, strict=True))


def test_info_reports_the_global_step_and_motion(coded, capsys):
    path, levels = coded["ifvc"]
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["global_step"] == load_config().global_step
    assert info["values_per_frame"] == 34 and info["num_params"] == 30
    tx_ty = np.stack(levels)[:, 30:32] * np.float32(cfg_step())
    assert info["global_max_translation_px"] == pytest.approx(np.hypot(*tx_ty.T).max() * 128, abs=0.01)
    assert info["global_max_translation_px"] > 0


def test_the_encoder_measures_against_its_key_frame_and_restarts_at_zero():
    """Global levels follow the crop's motion against the key frame's crop, hold without a face
    or without a crop, and start again at zero with every key frame."""
    from codec.encoder import CodedKeyframe, FaceEncoder
    from codec_core.keyframe import decode_keyframe
    from models.face_model import FaceBasis
    from models.reference import Reference

    basis = FaceBasis.load()
    encoder = FaceEncoder(load_config(), basis)
    record = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    picture = decode_keyframe(record.picture)
    ref = Reference.unpack(record.geometry, basis, 256, encoder.header_steps[-1], encoder.reference_steps)
    landmarks = ref.face_model().landmarks(ref.reference_params())
    key = CodedKeyframe(record, picture, ref, 30, picture, landmarks)
    encoder.use_keyframe(key)
    n = encoder.format.count
    assert not encoder.levels(landmarks, picture)[n:].any()
    moved = np.roll(picture, 6, axis=1)                          # the whole picture 6 px to the right
    shifted = landmarks + np.array([6.0, 0.0, 0.0])
    first = encoder.levels(shifted, moved)
    assert first.shape == (n + GLOBAL_MOTION_COUNT,)
    tx = first[n] * cfg_step() * 128                                  # pixels
    assert 4 <= tx <= 8 and abs(first[n + 1]) <= 2, first[n:]
    assert np.array_equal(encoder.levels(None, picture)[n:], first[n:])     # no face: held
    assert np.array_equal(encoder.levels(landmarks, None)[n:], first[n:])   # no crop: held
    encoder.use_keyframe(key)
    assert not encoder.levels(shifted, None)[n:].any()                      # a new key frame: zero


# -- the VVC container ------------------------------------------------------------------------

def sei_messages(vvc: bytes) -> list:
    return [m for u in split_annexb(vvc) if u.nal_unit_type == 23 for m in read_sei_nal(u.data)]


@pytest.mark.parametrize("fmt", ["ifvc", "fomm"])
def test_the_vvc_container_carries_the_global_values(coded, fmt, tmp_path):
    path, levels = coded[fmt]
    native = path.read_bytes()
    vvc = native_to_vvc(native)
    assert vvc_to_native(vvc) == native
    (tmp_path / "s.266").write_bytes(vvc)
    assert all(np.array_equal(d, e) for d, e in zip(stream_levels(read_stream(tmp_path / "s.266")), levels,
                                                     strict=True))
    parts = split_native(native)
    messages = sei_messages(vvc)
    if fmt == "ifvc":        # the coded bytes, global levels inside
        segments = [ParamSegment.unpack(m.payload[21:]) for m in messages[2:]]
        assert all(m.payload_type == USER_DATA_UNREGISTERED for m in messages[2:])
    else:                    # the face feature SEI's fields: a 1 x 4 matrix of type GLOBAL_MOTION_TYPE
        fields = [m for m in messages if m.payload_type == FACE_FEATURE_SEI]
        first = 0
        segments = []
        for m in fields:
            segments.append(read_face_features(m.payload, parts.header, first))
            first += segments[-1].frame_count
        group = FIELD_LAYOUTS["fomm"].matrices[-1]
        assert group.type_idx == GLOBAL_MOTION_TYPE and group.indices.tolist() == [[[60, 61, 62, 63]]]
        r = BitReader(fields[0].payload[4:], "test")
        r.u(8), r.ue(), r.ue(), r.ue(), r.u(1), r.u(32)
        assert r.ue() + 1 == 2                                         # jacobians, then the global motion
        r.u(6), r.u(1), r.u(32)
        assert r.u(6) == GLOBAL_MOTION_TYPE and (r.ue() + 1, r.ue() + 1, r.ue() + 1) == (1, 4, 1)
        assert r.u(32) == struct.unpack(">I", struct.pack(">f", parts.header.global_step))[0]
    carried = np.concatenate([decode_levels(s, parts.header.values_per_frame) for s in segments])
    assert np.array_equal(carried, np.stack(levels)) and np.abs(carried[:, -GLOBAL_MOTION_COUNT:]).max() > 0
