"""Stream parsing against real fixtures (tests/fixtures, see make_fixtures.py) and their
truncated, corrupted and foreign variants."""

import math
import struct
from dataclasses import replace

import numpy as np
import pytest
from conftest import FIXTURES

from codec.decoder import decode_segment, parse_stream
from codec_core.bitstream import (
    MAGIC,
    EyeReference,
    Keyframe,
    ParamPacket,
    ParamSegment,
    RecordType,
    SessionHeader,
    StreamError,
    read_records,
    write_file_start,
    write_record,
)
from codec_core.format import KEYFRAME_CODEC_VVC, MAX_PICTURE_BYTES, eye_reference_size
from codec_core.keyframe import decode_keyframe
from codec_core.param_coding import PacketParamDecoder, ParamDecodeError


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_session_header_fixture():
    h = SessionHeader.unpack(fixture("session_header.bin"))
    assert (h.width, h.height, h.fps, h.frame_count) == (256, 256, 25.0, 12)
    assert h.basis_version == "v1" and h.num_params == 30 and h.intra_interval == 5
    assert h.pack() == fixture("session_header.bin")


@pytest.mark.parametrize("name,cls", [("session_header.bin", SessionHeader), ("keyframe.bin", Keyframe),
                                      ("param_segment.bin", ParamSegment), ("param_packet.bin", ParamPacket),
                                      ("eye_reference.bin", EyeReference)])
def test_records_roundtrip(name, cls):
    data = fixture(name)
    assert cls.unpack(data).pack() == data


@pytest.mark.parametrize("name,cls,min_len", [("session_header.bin", SessionHeader, 1), ("keyframe.bin", Keyframe, 7),
                                              ("param_segment.bin", ParamSegment, 6),
                                              ("param_packet.bin", ParamPacket, 8)])
def test_truncated_records_are_refused(name, cls, min_len):
    data = fixture(name)
    for n in range(min_len):
        with pytest.raises(StreamError):
            cls.unpack(data[:n])
    if cls in (SessionHeader,):
        for n in range(len(data)):
            with pytest.raises(StreamError):
                cls.unpack(data[:n])


def test_keyframe_picture_truncated():
    data = fixture("keyframe.bin")
    (plen,) = struct.unpack_from(">I", data, 3)
    with pytest.raises(StreamError, match="truncated"):
        Keyframe.unpack(data[:7 + plen - 1])


def test_invalid_header_values():
    h = SessionHeader.unpack(fixture("session_header.bin"))
    bad_format = bytearray(h.pack())
    bad_format[0] = 9
    with pytest.raises(StreamError, match="format"):
        SessionHeader.unpack(bytes(bad_format))
    bad_fps = bytearray(h.pack())
    bad_fps[5:7] = b"\x00\x00"
    with pytest.raises(StreamError):
        SessionHeader.unpack(bytes(bad_fps))


def test_packet_with_unknown_flags():
    data = bytearray(fixture("param_packet.bin"))
    data[7] |= 0x80
    with pytest.raises(StreamError, match="flags"):
        ParamPacket.unpack(bytes(data))


def test_packet_fixture_decodes_after_its_intra_frame():
    parsed = parse_stream(fixture("short.fcv"))
    levels = decode_segment(parsed.segments[0], 34)    # ifvc 30, then 4 of global motion
    packet = ParamPacket.unpack(fixture("param_packet.bin"))
    assert (packet.frame, packet.capture_ms, packet.intra) == (1, 123456, False)
    dec = PacketParamDecoder(34)
    with pytest.raises(ParamDecodeError):  # a stranger's predicted packet, no intra frame yet
        dec.decode_packet(packet.payload, packet.intra)
    from codec_core.param_coding import PacketParamEncoder
    intra = PacketParamEncoder(34).encode_packet(levels[0], True)
    dec.decode_packet(intra, True)
    assert np.array_equal(dec.decode_packet(packet.payload, False), levels[1])


def test_stream_file_parses():
    parsed = parse_stream(fixture("short.fcv"))
    assert parsed.frame_count == 12 and [s.first_frame for s in parsed.segments] == [0, 5, 10]
    all_levels = [lv for s in parsed.segments for lv in decode_segment(s, 34)]
    assert len(all_levels) == 12


def test_stream_file_truncated_anywhere():
    data = fixture("short.fcv")
    for n in list(range(0, 40)) + list(range(40, len(data), 97)) + [len(data) - 1]:
        with pytest.raises(StreamError):
            parse_stream(data[:n])


def test_stream_file_corrupted_anywhere():
    data = fixture("short.fcv")
    rng = np.random.default_rng(0)
    for pos in rng.choice(np.arange(len(MAGIC) + 1, len(data)), size=60, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(StreamError):
            parse_stream(bytes(bad))


@pytest.mark.parametrize("junk", [b"", b"FCVC", b"\x00" * 100, b"RIFF....WAVEfmt ", b"FCVC\x07rest",
                                  bytes(range(256))])
def test_foreign_data(junk):
    with pytest.raises(StreamError):
        parse_stream(junk)


def test_unknown_record_type_and_missing_parts():
    header = write_record(RecordType.SESSION_HEADER, fixture("session_header.bin"))
    with pytest.raises(StreamError, match="no key frame"):
        parse_stream(write_file_start() + header)
    with pytest.raises(StreamError, match="start with a session header"):
        parse_stream(write_file_start() + write_record(RecordType.KEYFRAME, fixture("keyframe.bin")))
    odd = bytearray(write_record(RecordType.SESSION_HEADER, b""))
    odd[0] = 77
    with pytest.raises(StreamError):
        read_records(write_file_start() + bytes(odd))


# -- EYE_REFERENCE (version 6): the caller's shut eyes and open mouth, after the key frame ---------------------

def eye_reference(**changes) -> bytes:
    """eye_reference.bin with some fields changed (the picture and the rest as they are)."""
    real = EyeReference.unpack(fixture("eye_reference.bin"))
    return replace(real, **changes).pack()


def test_eye_reference_fixture():
    data = fixture("eye_reference.bin")
    eyes = EyeReference.unpack(data)
    assert (eyes.key_id, eyes.codec, eyes.present) == (0, KEYFRAME_CODEC_VVC, 7)
    assert eyes.openness == (float(np.float32(0.12)), float(np.float32(0.3)))
    assert eyes.has(0) and eyes.has(1) and eyes.has(2)
    assert eyes.pack() == data
    picture = decode_keyframe(eyes.picture)              # a real VVC picture of both eyes' patches and the mouth's
    assert picture.shape[1::-1] == eye_reference_size(256) == (144, 48)


def test_truncated_eye_reference_is_refused():
    data = fixture("eye_reference.bin")
    for n in range(len(data)):
        with pytest.raises(StreamError):
            EyeReference.unpack(data[:n])


@pytest.mark.parametrize("changes,match", [
    ({"codec": 2}, "unknown eye reference codec 2"),
    ({"present": 0}, "names patches 0x0"),
    ({"present": 8}, "names patches 0x8"),
    ({"present": 15}, "names patches 0xf"),
    ({"openness": (math.nan, 0.3)}, "openness"),
    ({"openness": (0.12, 1e6)}, "openness"),
    ({"openness": (-1e6, 0.3)}, "openness"),
    ({"openness": (0.12, math.inf)}, "openness"),
])
def test_invalid_eye_references_are_refused(changes, match):
    with pytest.raises(StreamError, match=match) as err:
        EyeReference.unpack(eye_reference(**changes))
    assert "\n" not in str(err.value)


def test_eye_reference_lengths_must_agree():
    data = fixture("eye_reference.bin")
    (plen,) = struct.unpack_from(">I", data, 12)
    assert 16 + plen == len(data)
    past = data[:12] + struct.pack(">I", plen + 1) + data[16:]          # picture_len past the end
    with pytest.raises(StreamError, match="picture bytes"):
        EyeReference.unpack(past)
    with pytest.raises(StreamError, match="picture bytes"):             # trailing bytes
        EyeReference.unpack(data + b"\x00")
    huge = data[:12] + struct.pack(">I", MAX_PICTURE_BYTES + 1) + data[16:]
    with pytest.raises(StreamError, match="too large"):
        EyeReference.unpack(huge)
    one = EyeReference.unpack(eye_reference(present=1))               # one eye only is fine
    assert one.has(0) and not one.has(1) and not one.has(2)
    mouth = EyeReference.unpack(eye_reference(present=4))             # and the mouth alone
    assert mouth.has(2) and not mouth.has(0) and not mouth.has(1)


def stream_with(*records: tuple[RecordType, bytes]) -> bytes:
    return write_file_start() + b"".join(write_record(kind, payload) for kind, payload in records)


def short_records() -> list[tuple[RecordType, bytes]]:
    """short.fcv's records, without an eye reference (should the encoder have sent one)."""
    return [r for r in read_records(fixture("short.fcv")) if r[0] != RecordType.EYE_REFERENCE]


def test_a_stream_with_an_eye_reference_parses():
    header, key, *segments = short_records()
    eyes = (RecordType.EYE_REFERENCE, fixture("eye_reference.bin"))
    parsed = parse_stream(stream_with(header, key, eyes, *segments))
    assert parsed.eyes == EyeReference.unpack(fixture("eye_reference.bin"))
    assert parsed.frame_count == 12 and len(parsed.segments) == 3
    assert parse_stream(stream_with(header, key, *segments)).eyes is None      # the record is optional


@pytest.mark.parametrize("where", ["twice", "before the key frame", "after a segment", "at the end"])
def test_a_misplaced_eye_reference_is_refused(where):
    header, key, *segments = short_records()
    eyes = (RecordType.EYE_REFERENCE, fixture("eye_reference.bin"))
    records = {"twice": [header, key, eyes, eyes, *segments],
               "before the key frame": [header, eyes, key, *segments],
               "after a segment": [header, key, segments[0], eyes, *segments[1:]],
               "at the end": [header, key, *segments, eyes]}[where]
    with pytest.raises(StreamError, match="eye reference") as err:
        parse_stream(stream_with(*records))
    assert "\n" not in str(err.value)


def test_an_eye_reference_of_another_key_frame_is_refused():
    header, key, *segments = short_records()
    other = (RecordType.EYE_REFERENCE, eye_reference(key_id=1))
    with pytest.raises(StreamError, match="belongs to key frame 1"):
        parse_stream(stream_with(header, key, other, *segments))
