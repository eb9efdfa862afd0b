"""Our streams in a standard VVC bitstream (codec_core/container.py, docs/bitstream.md "VVC container").

Native streams of all four formats (20 frames of dpe__d, coded as they are) go to `.266` and
back bit for bit; the `.266` decodes in PyAV as one picture, the key frame, sample for
sample; fomm's and fv2v's levels travel in the face feature SEI's fields; a stream with an
EYE_REFERENCE record (version 6) carries it as user data kind 4 and comes back bit for bit;
the broken files that tests/fixtures/container/make_fixtures.py makes from a real clip when
the tests run are refused with one line each.
"""

from __future__ import annotations

import json
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import FIXTURES, clip

from codec.cli import main
from codec_core.bitstream import EyeReference, RecordType, StreamError, read_records, write_file_start, write_record
from codec_core.container import (
    CONTAINER_UUID,
    FACE_FEATURE_SEI,
    FIELD_LAYOUTS,
    KIND_EYES,
    USER_DATA_UNREGISTERED,
    decode_levels,
    join_native,
    native_to_vvc,
    read_face_features,
    split_native,
    vvc_to_native,
)
from codec_core.format import FEATURE_FORMATS, STREAM_VERSION
from codec_core.sei import BitReader, BitWriter, SeiMessage, escape, read_sei_nal, sei_nal, split_annexb, unescape

sys.path.insert(0, str(FIXTURES / "container"))
from make_fixtures import BROKEN, EYE_REFERENCE, with_eyes, write_fixtures  # noqa: E402

FRAMES = 20


@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> dict[str, Path]:
    """A native stream of each format: the first 20 frames of dpe__d with --no-crop."""
    src, out = clip("dpe__d.mp4"), tmp_path_factory.mktemp("container")
    paths = {}
    for name in FEATURE_FORMATS:
        paths[name] = out / f"{name}.fcv"
        assert main(["encode", str(src), "-o", str(paths[name]), "--frames", str(FRAMES), "--no-crop",
                     "--format", name]) == 0
    return paths


@pytest.fixture(scope="module")
def container(tmp_path_factory) -> Path:
    """The container fixtures (fomm.fcv, fomm.266 and the broken .266 files), made from 8
    frames of dpe__d."""
    out = tmp_path_factory.mktemp("container_fixtures")
    write_fixtures(out, clip("dpe__d.mp4"))
    return out


def sei_units(vvc: bytes) -> list:
    return [u for u in split_annexb(vvc) if u.nal_unit_type == 23]


def sei_messages(vvc: bytes) -> list:
    return [m for u in split_annexb(vvc) if u.nal_unit_type == 23 for m in read_sei_nal(u.data)]


def decoded_planes(data: bytes | Path) -> list[list[np.ndarray]]:
    """Every picture PyAV decodes from a .266 file (or raw bytes), as its Y, U, V planes."""
    if isinstance(data, Path):
        with av.open(str(data)) as container:
            assert container.streams.video[0].codec_context.name == "vvc"
            frames = list(container.decode(video=0))
    else:
        codec = av.CodecContext.create("vvc", "r")
        frames = [f for p in [*codec.parse(data), *codec.parse(None)] for f in codec.decode(p)]
        frames += list(codec.decode(None))
    return [[np.array(plane, copy=True) for plane in (np.frombuffer(p, np.uint8) for p in f.planes)]
            for f in frames]


@pytest.mark.parametrize("name", list(FEATURE_FORMATS))
def test_round_trip_is_exact(streams, name):
    native = streams[name].read_bytes()
    vvc = native_to_vvc(native)
    assert vvc_to_native(vvc) == native
    assert native_to_vvc(native) == vvc                     # deterministic
    key = split_native(native).keyframe.picture
    # the key frame's own NAL units are all there, unchanged and in order
    ours = [u for u in split_annexb(vvc) if u.nal_unit_type == 23]
    rest = bytearray(vvc)
    for u in reversed(ours):
        del rest[u.start:u.end]
    assert bytes(rest) == key


@pytest.mark.parametrize("name", list(FEATURE_FORMATS))
def test_pyav_shows_the_key_frame(streams, name, tmp_path):
    native = streams[name].read_bytes()
    path = tmp_path / f"{name}.266"
    path.write_bytes(native_to_vvc(native))
    shown = decoded_planes(path)
    key = decoded_planes(split_native(native).keyframe.picture)
    assert len(shown) == 1 and len(key) == 1
    for a, b in zip(shown[0], key[0], strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["fomm", "fv2v"])
def test_fomm_and_fv2v_travel_in_fields(streams, name):
    """Their frames are face feature SEI fields, not our coded bytes; the fields read back
    give the levels of the native segments."""
    native = streams[name].read_bytes()
    parts = split_native(native)
    messages = sei_messages(native_to_vvc(native))
    fields = [m for m in messages if m.payload_type == FACE_FEATURE_SEI]
    assert len(fields) == len(parts.segments)
    expected = 0
    for m, seg in zip(fields, parts.segments, strict=True):
        seg_back = read_face_features(m.payload, parts.header, expected)
        assert np.array_equal(decode_levels(seg_back, parts.header.values_per_frame),
                              decode_levels(seg, parts.header.values_per_frame))
        expected += seg.frame_count
    # the first field after format, first_frame and frame count: the key points
    layout = FIELD_LAYOUTS[name]
    r = BitReader(fields[0].payload[4:], "test")          # after its CRC-32
    assert (r.u(8), r.ue(), r.ue() + 1, r.ue() + 1) == (parts.header.format, 0, parts.segments[0].frame_count,
                                                        layout.coordinates.shape[0])
    assert [m.payload_type for m in messages].count(USER_DATA_UNREGISTERED) == 2    # session, key frame


@pytest.mark.parametrize("name", ["ifvc", "cfte"])
def test_ifvc_and_cfte_travel_as_coded_bytes(streams, name):
    native = streams[name].read_bytes()
    parts = split_native(native)
    messages = sei_messages(native_to_vvc(native))
    assert all(m.payload_type == USER_DATA_UNREGISTERED and m.payload.startswith(CONTAINER_UUID) for m in messages)
    eyes = [KIND_EYES] if parts.eyes is not None else []       # the encoder sends ifvc's when an eye shut
    assert [m.payload[20] for m in messages] == [1, 2] + eyes + [3] * len(parts.segments)
    assert messages[2 + len(eyes)].payload[21:] == parts.segments[0].pack()


def test_bits_and_emulation_prevention():
    w = BitWriter()
    values = [0, 1, 2, 3, 7, 255, 1 << 20, (1 << 32) - 2]
    for v in values:
        w.ue(v)
        w.abs_sign(-v)
    w.align_payload()
    r = BitReader(w.to_bytes(), "test")
    assert [(r.ue(), r.abs_sign()) for _ in values] == [(v, -v) for v in values]
    r.end_payload()
    for rbsp in (b"\x00\x00\x00\x00\x01", b"\x00\x00", b"\x00\x00\x03\x00\x00\x02\x01", bytes(range(4)) * 3):
        escaped = escape(rbsp)
        assert b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped and b"\x00\x00\x02" not in escaped
        assert unescape(escaped) == rbsp
    with pytest.raises(StreamError, match="leading zeros"):
        BitReader(bytes(5) + b"\x80", "test").ue()


def test_fixture_is_a_real_stream(container):
    """fomm.266 of the fixtures is fomm.fcv, and PyAV shows its key frame."""
    assert vvc_to_native((container / "fomm.266").read_bytes()) == (container / "fomm.fcv").read_bytes()
    assert len(decoded_planes(container / "fomm.266")) == 1


# -- the eye reference (stream version 6): user data kind 4 --------------------------------------

@pytest.mark.parametrize("name", list(FEATURE_FORMATS))
def test_a_stream_with_an_eye_reference_round_trips(streams, name):
    """The EYE_REFERENCE record rides as user data kind 4, right after the key frame's message,
    its payload byte for byte, and comes back in its place; the key frame's NAL units stay
    the picture, unchanged (the eye picture is inside our message, not beside it)."""
    native = with_eyes(streams[name].read_bytes())
    assert [kind for kind, _ in read_records(native)][:3] == [RecordType.SESSION_HEADER, RecordType.KEYFRAME,
                                                             RecordType.EYE_REFERENCE]
    vvc = native_to_vvc(native)
    assert vvc_to_native(vvc) == native
    user = [m.payload for m in sei_messages(vvc) if m.payload_type == USER_DATA_UNREGISTERED]
    assert [p[20] for p in user][:3] == [1, 2, KIND_EYES]
    assert [p[20] for p in user].count(KIND_EYES) == 1
    assert user[2][21:] == EYE_REFERENCE.read_bytes()
    assert split_native(native).eyes == EyeReference.unpack(EYE_REFERENCE.read_bytes())
    ours = [u for u in split_annexb(vvc) if u.nal_unit_type == 23]
    rest = bytearray(vvc)
    for u in reversed(ours):
        del rest[u.start:u.end]
    assert bytes(rest) == split_native(native).keyframe.picture
    without = join_native(replace(split_native(native), eyes=None))       # and without one, none comes back
    assert vvc_to_native(native_to_vvc(without)) == without
    assert KIND_EYES not in [m.payload[20] for m in sei_messages(native_to_vvc(without))
                             if m.payload_type == USER_DATA_UNREGISTERED]


def test_the_eye_fixture_is_a_real_stream(container):
    """fomm_eyes.266 is fomm_eyes.fcv, our decoder's parser finds its eyes, and PyAV still
    shows one picture: the key frame, sample for sample."""
    from codec.decoder import read_stream

    native = (container / "fomm_eyes.fcv").read_bytes()
    assert vvc_to_native((container / "fomm_eyes.266").read_bytes()) == native
    assert read_stream(container / "fomm_eyes.266").eyes == EyeReference.unpack(EYE_REFERENCE.read_bytes())
    shown = decoded_planes(container / "fomm_eyes.266")
    key = decoded_planes(split_native(native).keyframe.picture)
    assert len(shown) == 1
    assert all(np.array_equal(a, b) for a, b in zip(shown[0], key[0], strict=True))


def test_a_266_of_another_stream_version_is_refused_in_one_line(container):
    """The session header message names the native stream version (6): a version-5 `.266` is
    refused by it, in one line."""
    vvc = (container / "fomm.266").read_bytes()
    session = sei_units(vvc)[0]
    (msg,) = read_sei_nal(session.data)
    body = bytearray(msg.payload[20:])                      # fc_kind, fc_stream_version, session header
    assert body[:2] == bytes([1, STREAM_VERSION]) == b"\x01\x06"
    body[1] = 5
    payload = CONTAINER_UUID + zlib.crc32(body).to_bytes(4, "big") + bytes(body)
    old = vvc[:session.start] + b"\x00\x00\x00\x01" + sei_nal([SeiMessage(USER_DATA_UNREGISTERED, payload)]) \
        + vvc[session.end:]
    with pytest.raises(StreamError, match=r"carries a version-5 stream \(this decoder reads version 6\)") as err:
        vvc_to_native(old)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("where", ["twice", "before the key frame", "after a segment", "another key frame"])
def test_a_native_stream_with_a_misplaced_eye_reference_is_not_converted(container, where):
    """native_to_vvc checks the native records as the decoder does: one eye reference at most,
    right after the key frame, naming its key_id."""
    header, key, *segments = read_records((container / "fomm.fcv").read_bytes())
    eyes = (RecordType.EYE_REFERENCE, EYE_REFERENCE.read_bytes())
    other = (RecordType.EYE_REFERENCE, replace(EyeReference.unpack(EYE_REFERENCE.read_bytes()), key_id=1).pack())
    records = {"twice": [header, key, eyes, eyes, *segments],
               "before the key frame": [header, eyes, key, *segments],
               "after a segment": [header, key, segments[0], eyes, *segments[1:]],
               "another key frame": [header, key, other, *segments]}[where]
    stream = write_file_start() + b"".join(write_record(kind, payload) for kind, payload in records)
    with pytest.raises(StreamError, match="eye reference") as err:
        native_to_vvc(stream)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_fixtures_are_refused_in_one_line(container, name):
    with pytest.raises(StreamError) as err:
        vvc_to_native((container / name).read_bytes())
    message = str(err.value)
    assert BROKEN[name][1] in message and "\n" not in message


def test_byte_flips_are_refused(container):
    """Flipping any one of a sample of bytes (SEI and picture alike) is a one-line StreamError:
    every SEI message and the key frame's NAL units carry a CRC-32, as the native records do."""
    vvc = (container / "fomm.266").read_bytes()
    positions = range(4, len(vvc), 7)
    read = []
    for pos in positions:
        broken = bytearray(vvc)
        broken[pos] ^= 0xA5
        try:
            vvc_to_native(bytes(broken))
            read.append(pos)
        except StreamError as exc:
            assert "\n" not in str(exc)
    assert read == []


# -- the command line: encode --container vvc, decode and info of .266 files --------------------

def test_encode_container_vvc_writes_the_converted_stream(streams, tmp_path):
    out = tmp_path / "fv2v.266"
    assert main(["encode", str(clip("dpe__d.mp4")), "-o", str(out), "--frames", str(FRAMES), "--no-crop",
                 "--format", "fv2v", "--container", "vvc"]) == 0
    assert out.read_bytes() == native_to_vvc(streams["fv2v"].read_bytes())    # the encoder is deterministic


def test_decoder_gets_the_native_frames_from_the_266(container, tmp_path):
    """The acceptance line: our decoder gets exactly the frames of the native stream."""
    from codec.decoder import decode_frames, read_stream

    native = list(decode_frames(read_stream(container / "fomm.fcv")))
    carried = list(decode_frames(read_stream(container / "fomm.266")))
    assert len(native) == len(carried) == 8
    assert all(np.array_equal(a, b) for a, b in zip(native, carried, strict=True))


def test_streams_are_told_apart_by_their_content_not_their_name(container, tmp_path):
    """`read_stream` (decode, info, tests, benchmarks) reads a VVC bitstream by its start code
    and a native stream by its magic, whatever the file is called."""
    from codec.decoder import read_stream

    native = read_stream(container / "fomm.fcv")
    renamed = tmp_path / "fomm.bin"
    renamed.write_bytes((container / "fomm.266").read_bytes())
    carried = read_stream(renamed)
    assert carried.segments == native.segments and carried.total_bytes == renamed.stat().st_size
    misnamed = tmp_path / "native.266"                     # a native stream named .266
    misnamed.write_bytes((container / "fomm.fcv").read_bytes())
    assert read_stream(misnamed) == native
    assert main(["info", str(misnamed)]) == 0


def test_a_stream_that_cannot_be_converted_leaves_no_file(tmp_path, capsys, monkeypatch):
    """`encode --container vvc` converts in memory: when that fails, one error line and no
    native stream left behind at the output path."""
    import codec.encoder

    def refuse(stream: bytes) -> bytes:
        raise StreamError("the key frame's VVC picture holds no coded slice")

    monkeypatch.setattr(codec.encoder, "native_to_vvc", refuse)
    out = tmp_path / "s.266"
    assert main(["encode", str(clip("dpe__d.mp4")), "-o", str(out), "--frames", "2", "--no-crop",
                 "--container", "vvc"]) == 1
    assert "error: the key frame's VVC picture holds no coded slice" in capsys.readouterr().err
    assert not out.exists()


def test_a_foreign_user_data_sei_of_the_key_frame_stays_in_its_picture(container):
    """A key frame whose own bitstream carries a user data SEI (another UUID, before its
    slices) goes to .266 and back bit for bit: that SEI is the picture's, not ours."""
    from codec_core.sei import PH_NUT, VCL_TYPES

    parts = split_native((container / "fomm.fcv").read_bytes())
    picture = parts.keyframe.picture
    first_vcl = next(u for u in split_annexb(picture) if u.nal_unit_type in VCL_TYPES or u.nal_unit_type == PH_NUT)
    foreign_uuid = bytes(b ^ 0xFF for b in CONTAINER_UUID)
    foreign = b"\x00\x00\x00\x01" + sei_nal([SeiMessage(USER_DATA_UNREGISTERED, foreign_uuid + b"x264 options")])
    picture = picture[:first_vcl.start] + foreign + picture[first_vcl.start:]
    native = join_native(replace(parts, keyframe=replace(parts.keyframe, picture=picture)))
    vvc = native_to_vvc(native)
    assert vvc_to_native(vvc) == native
    assert [m.payload[:16] for m in sei_messages(vvc)].count(foreign_uuid) == 1


def test_info_and_errors_of_266_files(container, capsys, tmp_path):
    assert main(["info", str(container / "fomm.266")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["frames"], info["file_bytes"]) == ("fomm", 8, (container / "fomm.266").stat().st_size)
    for argv in (["info", str(container / "sei_size.266")],
                 ["decode", str(container / "unknown_uuid.266"), "-o", str(tmp_path / "x.mp4")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x.mp4").exists()


def test_a_codeword_our_encoder_would_not_make_is_refused(container):
    """A fomm segment with a byte after its codeword decodes natively, but its fields could not
    give it back: native_to_vvc says so in one line (ifvc's bytes travel as they are)."""
    parts = split_native((container / "fomm.fcv").read_bytes())
    padded = replace(parts.segments[0], payload=parts.segments[0].payload + b"\x00")
    odd = join_native(replace(parts, segments=(padded, *parts.segments[1:])))
    with pytest.raises(StreamError, match="not coded as our encoder codes its levels"):
        native_to_vvc(odd)
