"""Stream version 2 and its feature formats (issue 11; version 3 adds the global motion after
their values): the session header of every format, its refusals, `encode --format`, `info`,
`decode` natively and with another `--decoder-format` (the stream's values translated), the
per-format `--quantization-factor`, one-line errors.

Streams are 10 frames of the 256x256 clip dpe__d coded with --no-crop, one per format.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, clip, one_line_error

from codec.cli import main
from codec.decoder import FaceDecoder, decode_segment, parse_stream, read_stream
from codec_core.bitstream import SessionHeader, StreamError, read_records
from codec_core.config import load_config
from codec_core.format import FEATURE_FORMATS, FORMAT_BY_ID, KEY_LEVEL_STEPS, MAGIC, STREAM_VERSION, reference_steps
from codec_core.video import read_frames

FRAMES = 10
FORMATS = tuple(FEATURE_FORMATS)


def header_of(name: str, **changes) -> SessionHeader:
    fmt = FEATURE_FORMATS[name]
    fields = dict(format=fmt.id, width=256, height=256, fps_num=25, fps_den=1, frame_count=0, basis_version="v1",
                  num_params=fmt.count, intra_interval=50, steps=load_config().steps_of(name),
                  global_step=load_config().global_step)
    return SessionHeader(**{**fields, **changes})



# -- the session header ----------------------------------------------------------------------

@pytest.mark.parametrize("name", FORMATS)
def test_header_round_trip_of_every_format(name):
    fmt = FEATURE_FORMATS[name]
    header = header_of(name)
    data = header.pack()
    back = SessionHeader.unpack(data)
    assert back.pack() == data and back.steps == tuple(float(np.float32(s)) for s in header.steps)
    assert back == header_of(name, steps=back.steps, global_step=back.global_step)
    assert back.feature_format is fmt and back.num_params == fmt.count and back.values_per_frame == fmt.count + 4
    # num_steps u8, then that many f32 in the format's step order, the geometry step last, then global_step
    assert data[-5 - 4 * len(fmt.step_names)] == len(fmt.step_names)
    assert back.global_step == float(np.float32(load_config().global_step))
    assert back.geometry_step == pytest.approx(load_config().steps_of(name)[-1])
    assert fmt.step_names[-1] == "geometry" and FORMAT_BY_ID[fmt.id] is fmt


@pytest.mark.parametrize("name", FORMATS)
def test_header_refuses_a_count_or_step_count_that_does_not_match_its_format(name):
    fmt = FEATURE_FORMATS[name]
    for wrong in (fmt.count - 1, fmt.count + 1, 30 if name != "ifvc" else 60):
        with pytest.raises(StreamError, match=f"{wrong} values per frame; format {name} has {fmt.count}"):
            SessionHeader.unpack(header_of(name, num_params=wrong).pack())
    steps = load_config().steps_of(name)
    for wrong_steps in (steps[:-1], steps + (0.5,), (0.5,) * 7 if len(steps) != 7 else (0.5,) * 5):
        with pytest.raises(StreamError, match=f"{len(wrong_steps)} quantisation steps; format {name}"):
            SessionHeader.unpack(header_of(name, steps=wrong_steps).pack())
    # a step count byte that does not match the steps that follow: a length error, not a misread
    data = bytearray(header_of(name).pack())
    data[-5 - 4 * len(steps)] += 1
    with pytest.raises(StreamError):
        SessionHeader.unpack(bytes(data))


@pytest.mark.parametrize("fmt_id", [0, 5, 9, 255])
def test_header_refuses_an_unknown_format_id(fmt_id):
    with pytest.raises(StreamError, match=f"unknown feature format {fmt_id} ") as err:
        SessionHeader.unpack(header_of("ifvc", format=fmt_id).pack())
    assert "\n" not in str(err.value) and "fomm" in str(err.value)


def test_a_version_1_stream_is_refused_naming_its_version(tmp_path, capsys):
    data = bytearray((FIXTURES / "short.fcv").read_bytes())
    assert data[len(MAGIC)] == STREAM_VERSION == 6
    data[len(MAGIC)] = 1
    with pytest.raises(StreamError, match="unsupported stream version 1 "):
        read_records(bytes(data))
    (tmp_path / "v1.fcv").write_bytes(bytes(data))
    assert "version 1" in one_line_error(["info", str(tmp_path / "v1.fcv")], capsys)


def test_a_stream_naming_an_unknown_format_is_one_line(tmp_path, capsys):
    from codec_core.bitstream import RecordType, write_file_start, write_record

    parsed = parse_stream((FIXTURES / "short.fcv").read_bytes())
    bad = bytearray(parsed.header.pack())
    bad[0] = 7
    data = (write_file_start() + write_record(RecordType.SESSION_HEADER, bytes(bad))
            + write_record(RecordType.KEYFRAME, parsed.keyframe.pack())
            + b"".join(write_record(RecordType.PARAM_SEGMENT, s.pack()) for s in parsed.segments))
    (tmp_path / "x.fcv").write_bytes(data)
    for command in (["info"], ["decode", "-o", str(tmp_path / "x.mp4")]):
        error = one_line_error([command[0], str(tmp_path / "x.fcv"), *command[1:]], capsys)
        assert "unknown feature format 7" in error, error
    assert not (tmp_path / "x.mp4").exists()


# -- quantisation steps and the quantisation factor --------------------------------------------

def test_default_steps_follow_each_formats_step_order():
    cfg = load_config()
    for name, fmt in FEATURE_FORMATS.items():
        steps = cfg.steps_of(name)
        assert len(steps) == len(fmt.step_names) and all(s > 0 for s in steps)
        vector = fmt.step_vector(steps)
        assert vector.shape == (fmt.count,)
        for i, group in enumerate(fmt.value_steps):
            assert vector[i] == np.float32(steps[fmt.step_names.index(group)])


def test_quantization_factor_per_format():
    """ifvc divides its configured steps; fomm and cfte quantise value * F (step 1/F); fv2v the
    same in its natural units (an angle step of one radian / F, sent in degrees).  Only the
    named format changes; the geometry step stays."""
    cfg = load_config()
    assert cfg.with_quantization_factor(2).steps_of("ifvc")[:-1] == tuple(s / 2 for s in cfg.steps_of("ifvc")[:-1])
    assert cfg.with_quantization_factor(64, "fomm").steps_of("fomm") == (1 / 64, 1 / 64, cfg.steps_of("fomm")[-1])
    assert cfg.with_quantization_factor(4, "cfte").steps_of("cfte") == (0.25, cfg.steps_of("cfte")[-1])
    fv2v = cfg.with_quantization_factor(256, "fv2v")
    assert fv2v.steps_of("fv2v") == pytest.approx((180 / math.pi / 256, 1 / 256, 1 / 256, 1 / 256,
                                                   cfg.steps_of("fv2v")[-1]))
    assert fv2v.steps_of("ifvc") == cfg.steps_of("ifvc") and fv2v.steps_of("fomm") == cfg.steps_of("fomm")


def test_the_key_frames_own_levels_use_the_headers_steps_where_the_format_has_them():
    cfg = load_config()
    fomm = reference_steps(FEATURE_FORMATS["fomm"], cfg.steps_of("fomm"))
    assert fomm == tuple(KEY_LEVEL_STEPS.values()) + (cfg.steps_of("fomm")[-1],)
    fv2v_steps = (0.5, 0.002, 0.004, 0.02, 0.03)
    assert reference_steps(FEATURE_FORMATS["fv2v"], fv2v_steps)[:3] == (0.5, 0.002, 0.004)
    assert reference_steps(FEATURE_FORMATS["ifvc"], cfg.steps_of("ifvc")) == cfg.steps_of("ifvc")


# -- coding every format ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> dict[str, Path]:
    """12 frames of dpe__d in every format, coded with the command line."""
    mp4 = clip("dpe__d.mp4")
    tmp = tmp_path_factory.mktemp("formats")
    out = {}
    for name in FORMATS:
        out[name] = tmp / f"{name}.fcv"
        assert main(["encode", str(mp4), "-o", str(out[name]), "--no-crop", "--frames", str(FRAMES),
                     "--format", name]) == 0
    return out


@pytest.mark.parametrize("name", FORMATS)
def test_encode_format_then_info(streams, name, capsys):
    fmt = FEATURE_FORMATS[name]
    capsys.readouterr()
    assert main(["info", str(streams[name])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["values_per_frame"], info["frames"]) == (name, fmt.count + 4, FRAMES)
    assert list(info["steps"]) == list(fmt.step_names)
    configured = zip(fmt.step_names, load_config().steps_of(name), strict=True)
    assert info["steps"] == {k: pytest.approx(v, rel=1e-6) for k, v in configured}
    parsed = read_stream(streams[name])
    levels = [q for s in parsed.segments for q in decode_segment(s, parsed.header.values_per_frame)]
    assert len(levels) == FRAMES and all(q.shape == (fmt.count + 4,) for q in levels)
    assert any(not np.array_equal(levels[0], q) for q in levels[1:])         # the face moves


def test_the_decoder_reads_back_the_encoders_levels_bit_for_bit(streams, tmp_path):
    """The encoder's reconstruction (in process) is the stream the command line wrote, and the
    decoder gets exactly its levels, for a format other than ifvc."""
    from codec.encoder import encode_video
    from models.face_model import FaceBasis

    res = encode_video(clip("dpe__d.mp4"), tmp_path / "fv2v.fcv", load_config(), FaceBasis.load(),
                       max_frames=FRAMES, no_crop=True, fmt="fv2v")
    assert (tmp_path / "fv2v.fcv").read_bytes() == streams["fv2v"].read_bytes()
    parsed = read_stream(streams["fv2v"])
    decoded = [q for s in parsed.segments for q in decode_segment(s, parsed.header.values_per_frame)]
    assert all(np.array_equal(d, e) for d, e in zip(decoded, res.levels, strict=True))


@pytest.mark.parametrize("name", FORMATS)
def test_decode_every_format_natively(streams, name, tmp_path):
    assert main(["decode", str(streams[name]), "-o", str(tmp_path / "out.mp4")]) == 0
    frames = list(read_frames(tmp_path / "out.mp4"))
    assert len(frames) == FRAMES and frames[0].shape == (256, 256, 3)


@pytest.mark.parametrize("src", FORMATS)
def test_every_decoder_format_plays_every_stream(streams, src):
    """All 12 ordered pairs: the stream's values go through a translator into the decoder
    format's synthesizer (in process, without writing video)."""
    parsed = read_stream(streams[src])
    levels = [q for s in parsed.segments for q in decode_segment(s, parsed.header.values_per_frame)]
    for dst in FORMATS:
        if dst == src:
            continue
        decoder = FaceDecoder(parsed.header, decoder_format=dst)
        assert decoder.translates and decoder.decoder_format.name == dst
        decoder.set_keyframe(parsed.keyframe)
        params = [decoder.params(q) for q in levels]
        assert all(p.shape == (FEATURE_FORMATS[dst].count,) and np.isfinite(p).all() for p in params)
        pictures = [decoder.render(p, decoder.motion(q)) for p, q in zip(params[-1:], levels[-1:], strict=True)]
        assert all(p.shape == (256, 256, 3) and p.dtype == np.uint8 for p in pictures)


def test_decode_with_another_decoder_format_on_the_command_line(streams, tmp_path):
    assert main(["decode", str(streams["fomm"]), "-o", str(tmp_path / "a.mp4"), "--decoder-format", "ifvc",
                 "--translator", "geometry"]) == 0
    assert len(list(read_frames(tmp_path / "a.mp4"))) == FRAMES
    # edits work on ifvc parameters: a stream of another format decoded as ifvc takes them
    assert main(["decode", str(streams["cfte"]), "-o", str(tmp_path / "b.mp4"), "--decoder-format", "ifvc",
                 "--edit", "smile=0.5"]) == 0
    assert len(list(read_frames(tmp_path / "b.mp4"))) == FRAMES


@pytest.mark.parametrize("argv, words", [
    (["--decoder-format", "mesh478"], "unknown feature format 'mesh478'"),
    (["--decoder-format", "fomm", "--synth", "learned"], "--synth learned runs on ifvc parameters only"),
    (["--decoder-format", "fv2v", "--edit", "smile=0.5"], "--edit works on ifvc parameters"),
    (["--decoder-format", "cfte", "--translator", "magic"], "unknown translator 'magic'"),
])
def test_decoder_choices_that_cannot_play_are_one_line(streams, tmp_path, capsys, argv, words):
    error = one_line_error(["decode", str(streams["ifvc"]), "-o", str(tmp_path / "x.mp4"), *argv], capsys)
    assert words in error, error
    assert not (tmp_path / "x.mp4").exists()


def test_a_pair_without_a_translator_is_one_line(streams, tmp_path, capsys, monkeypatch):
    """Without the learned translators' weights a pair has no `learned` translator: asking for
    one is a one-line error, and no output file is left."""
    import models.translator_nets
    from codec.translation import TRANSLATOR_METHODS as OURS
    from models.translators import TRANSLATOR_METHODS

    assert tuple(TRANSLATOR_METHODS) == OURS
    monkeypatch.setattr(models.translator_nets, "TRANSLATORS_ASSET", tmp_path / "no-translators.pt")
    error = one_line_error(["decode", str(streams["ifvc"]), "-o", str(tmp_path / "x.mp4"), "--decoder-format",
                            "fomm", "--translator", "learned"], capsys)
    assert error.startswith("error: ") and not (tmp_path / "x.mp4").exists()
    assert f"no learned translators at {tmp_path / 'no-translators.pt'}" in error, error


def test_encode_refuses_an_unknown_format(tmp_path, capsys):
    error = one_line_error(["encode", str(clip("dpe__d.mp4")), "-o", str(tmp_path / "s.fcv"), "--format", "mesh478",
                            "--no-crop", "--frames", "2"], capsys)
    assert "unknown feature format 'mesh478'" in error and "ifvc, fomm, fv2v, cfte" in error
    assert not (tmp_path / "s.fcv").exists()


def test_session_header_fixture_is_an_ifvc_version_3_header():
    data = (FIXTURES / "session_header.bin").read_bytes()
    header = SessionHeader.unpack(data)
    assert header.feature_format.name == "ifvc" and header.num_params == 30 and header.values_per_frame == 34
    assert struct.unpack_from(">B", data, len(data) - 33)[0] == 7      # num_steps, 7 steps, global_step


def test_the_encoder_builds_a_key_frame_s_format_geometry_once(monkeypatch):
    """FaceEncoder keeps the key frame's FormatGeometry (made in use_keyframe) for every frame's
    analysis instead of rebuilding it per frame; the values are those of `analyse` without it."""
    from codec.encoder import CodedKeyframe, FaceEncoder
    from codec_core.bitstream import Keyframe
    from codec_core.param_coding import quantise
    from models.face_model import FaceBasis
    from models.feature_formats import FormatGeometry, analyse
    from models.reference import Reference

    basis = FaceBasis.load()
    encoder = FaceEncoder(load_config(), basis, "fomm")
    record = Keyframe.unpack((FIXTURES / "keyframe.bin").read_bytes())
    ref = Reference.unpack(record.geometry, basis, 256, encoder.header_steps[-1], encoder.reference_steps)
    made = []
    of = FormatGeometry.of
    monkeypatch.setattr(FormatGeometry, "of", classmethod(lambda cls, reference: made.append(1) or of(reference)))
    key = ref.face_model().landmarks(ref.reference_params())
    encoder.use_keyframe(CodedKeyframe(record, np.zeros((256, 256, 3), np.uint8), ref, 30,
                                       np.zeros((256, 256, 3), np.uint8), key))
    made.clear()
    frames = [key + np.array([3.0 * i, -2.0 * i, 0.0]) for i in range(1, 5)]
    got = [encoder.levels(lm) for lm in frames]
    assert made == []                                   # no FormatGeometry per frame
    n = encoder.format.count
    assert np.array_equal(got[-1][:n], quantise(analyse("fomm", frames[-1], ref), encoder.steps, got[-2][:n],
                                                encoder.config.hysteresis))
    assert not got[-1][n:].any()                        # no crop: the global motion holds (zero)
    assert len(made) == 1                               # (`analyse` alone makes one each time)
