"""Property tests of every parser that reads bytes from outside (hypothesis), and the replay
of the inputs the fuzzer found (tests/fixtures/fuzz/TARGET/*.bin).

The targets are the long fuzz run's (`benchmarks.fuzz`, which says what each one covers):
stream files, session headers, `stream` channel records, parameter packets and payloads,
the key frame wrapper, the EYE_REFERENCE record and the whole key frame as the receiver prepares it, the receiver
half fed message sequences, uploaded pictures, and the JSON messages of signaling, of the
call's control channel and of the web demo's `/ws`.  Inputs are real ones (the stream
fixtures, a real aiortc offer, real pictures) mutated by hypothesis in the fuzzer's own
mutation language, plus structured inputs built field by field.  For every input the
parser returns or raises its documented error with a one-line message (`Target.errors`),
never another exception; it does not hang (an input interrupted after `HANG_S` fails);
and what it allocates (tracemalloc) is bounded by `ALLOC_BASE` plus `ALLOC_PER_BYTE` per
input byte, so no declared count is allocated before it is checked; the peak resident
memory (native code too) grows by at most `MAX_RSS_GROWTH`.

Deterministic for CI: derandomized, no example database.  The long run is
`python -m benchmarks.fuzz` (reports/fuzz/).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz import (
    INTERESTING,
    Target,
    apply_op,
    bad_words,
    pack_messages,
    run_one,
    targets,
    unpack_messages,
)

#: An input still running after this many seconds fails as a hang (a safety net, not a timing).
HANG_S = 60.0
#: What a parser may allocate for one input: this much, plus ALLOC_PER_BYTE per input byte.
ALLOC_BASE = 8 << 20
ALLOC_PER_BYTE = 64
#: How far the peak resident memory may grow on one input (native code too: FFmpeg, OpenCV).
MAX_RSS_GROWTH = 64 << 20

REGRESSIONS = FIXTURES / "fuzz"
#: Regression inputs whose parser is not fixed yet (file name: reason).  Remove an entry
#: when its fix lands: the test then passes, and strict=True makes a stale entry fail.
KNOWN: dict[str, str] = {}     # regression inputs that still fail, with the reason (xfail, strict)


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


def check(name: str, data: bytes) -> None:
    """`data` parses, or is refused with the target's documented error in one line; no
    hang, no other exception, bounded allocation."""
    outcome = run_one(targets()[name], data, HANG_S, trace_alloc=True)
    if outcome.kind == "crash" and outcome.error is not None:
        raise outcome.error
    assert outcome.kind != "hang", f"{name}: input of {len(data)} bytes ran past {HANG_S} s"
    if outcome.kind == "refused" and outcome.error is not None:
        why = bad_words(outcome.error)
        assert why is None, f"{name}: refusal is not one clear line ({why}): {str(outcome.error)[:200]!r}"
    limit = ALLOC_BASE + ALLOC_PER_BYTE * len(data)
    assert outcome.alloc <= limit, f"{name}: {outcome.alloc} bytes allocated for {len(data)} input bytes"
    assert outcome.rss_growth <= MAX_RSS_GROWTH + ALLOC_PER_BYTE * len(data), \
        f"{name}: resident memory grew by {outcome.rss_growth >> 20} MiB for {len(data)} input bytes"


@pytest.fixture(scope="module", autouse=True)
def warm() -> None:
    """Every target built and run once on its seeds (imports, caches), outside the
    allocation measurements."""
    for target in targets().values():
        for seed in target.seeds:
            run_one(target, seed, HANG_S)


# -- strategies ------------------------------------------------------------------------------

_pos = st.integers(0, 1 << 16)
OPS = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("byte"), _pos, st.integers(0, 255)),
    st.tuples(st.just("int"), _pos, st.integers(0, 2), st.integers(0, len(INTERESTING) - 1), st.integers(-1, 1)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("delete"), _pos, st.integers(1, 64)),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("repeat"), _pos, st.integers(1, 16), st.integers(0, 63)),
    st.tuples(st.just("splice"), st.integers(0, 15), _pos, _pos),
    st.tuples(st.just("overwrite"), st.integers(0, 15), _pos, _pos, st.integers(1, 64)),
)


@st.composite
def mutated(draw, name: str, seeds: tuple[bytes, ...] | None = None) -> bytes:
    """A real input of target `name` with a few mutations (checksums fixed up, mostly)."""
    target: Target = targets()[name]
    pool = seeds or target.seeds
    data = draw(st.sampled_from(pool))
    for op in draw(st.lists(OPS, min_size=1, max_size=5)):
        data = apply_op(data, op, pool)
    if target.fixup is not None and draw(st.integers(0, 3)) > 0:
        data = target.fixup(data)
    return data


u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
f32 = st.floats(width=32)


HEADER_FIELDS = ">BHHHHIBH"


@st.composite
def session_headers(draw, frame_count: int | None = None) -> bytes:
    """A SESSION_HEADER payload: the real one with a few fields set to any value of their
    width (or to 512, the other picture size); its 7 steps, then its global step."""
    real = (FIXTURES / "session_header.bin").read_bytes()
    n = struct.calcsize(HEADER_FIELDS)
    fields = list(struct.unpack_from(HEADER_FIELDS, real))
    num_steps = real[-5 - 4 * 7]
    assert num_steps == 7, "the fixture is an ifvc header (7 steps)"
    version, steps = real[n + 1:len(real) - 33], list(struct.unpack_from(">7f", real, len(real) - 32))
    (global_step,) = struct.unpack_from(">f", real, len(real) - 4)
    widths = {"B": u8, "H": u16, "I": u32}
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(fields) + 2))
        if i < len(fields):
            special = {0: (1, 2, 3, 4), 1: (512,), 2: (512,)}.get(i, ())     # any feature format id, or a size
            fields[i] = draw(st.sampled_from(special) | widths[HEADER_FIELDS[1 + i]]) if special else \
                draw(widths[HEADER_FIELDS[1 + i]])
        elif i == len(fields):
            version = draw(st.binary(max_size=8))
        elif i == len(fields) + 1:
            global_step = draw(f32)
        elif steps and draw(st.booleans()):
            steps[draw(st.integers(0, len(steps) - 1))] = draw(f32)
        else:       # another step count: fewer or more steps, a count that does not match them
            steps = draw(st.lists(f32, max_size=9))
            num_steps = draw(st.sampled_from((len(steps),)) | u8)
    if frame_count is not None:
        fields[5] = frame_count
    return (struct.pack(HEADER_FIELDS, *fields) + bytes([len(version)]) + version + bytes([num_steps])
            + struct.pack(f">{len(steps)}f", *steps) + struct.pack(">f", global_step))


def record(rtype: int, payload: bytes) -> bytes:
    from codec_core.bitstream import RecordType, write_record

    return write_record(RecordType(rtype), payload)


@st.composite
def stream_files(draw) -> bytes:
    """A stream file built record by record: any header, the real key frame (or any bytes),
    parameter segments with any frame counts and codewords."""
    from codec_core.bitstream import write_file_start

    counts = draw(st.lists(st.sampled_from((1, 5, 50, 1000, 1001, 0xFFFF)) | st.integers(1, 0xFFFF), max_size=3))
    first, segments = 0, []
    for n in counts:
        segments.append(record(3, struct.pack(">IH", first, n) + draw(st.binary(max_size=40))))
        first += n
    key = draw(st.sampled_from([(FIXTURES / "keyframe.bin").read_bytes()]) | st.binary(max_size=64))
    return (write_file_start() + record(1, draw(session_headers(frame_count=first))) + record(2, key)
            + b"".join(segments))


@st.composite
def packets(draw) -> bytes:
    """A PARAM_PACKET of any field values and any codeword."""
    return struct.pack(">HIBB", draw(u16), draw(u32), draw(u8), draw(st.sampled_from((0, 1)) | u8)) + draw(
        st.binary(max_size=48))


@st.composite
def keyframe_records(draw) -> bytes:
    """A KEYFRAME payload with any declared picture length, the real geometry or any bytes."""
    real = (FIXTURES / "keyframe.bin").read_bytes()
    geometry = draw(st.sampled_from([real[7 + struct.unpack_from(">I", real, 3)[0]:]]) | st.binary(max_size=200))
    picture = draw(st.binary(max_size=64))
    plen = draw(st.sampled_from((len(picture),)) | u32)
    return struct.pack(">HBI", draw(u16), draw(st.sampled_from((1,)) | u8), plen) + picture + geometry


@st.composite
def eye_reference_records(draw) -> bytes:
    """An EYE_REFERENCE payload with any present bits, openness and declared picture length,
    the real picture or any bytes."""
    real = (FIXTURES / "eye_reference.bin").read_bytes()
    picture = draw(st.sampled_from([real[16:]]) | st.binary(max_size=64))
    plen = draw(st.sampled_from((len(picture),)) | u32)
    return struct.pack(">HBBffI", draw(u16), draw(st.sampled_from((1,)) | u8), draw(st.sampled_from((1, 2, 3)) | u8),
                       draw(f32), draw(f32), plen) + picture + draw(st.sampled_from((b"",)) | st.binary(max_size=8))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)
FIELDS = {
    "signaling_client": ("room", "sdp", "candidate"),
    "signaling_server": ("room", "peers", "initiator", "code", "message", "sdp", "candidate"),
    "control": ("frame", "key_id", "pts", "wall_ms", "muted"),
    "page": ("room", "sdp", "fps", "values", "name", "data", "muted"),
}
CANDIDATE_KEYS = ("candidate", "sdpMid", "sdpMLineIndex", "usernameFragment", "protocol")


def tags_of(name: str) -> list[str]:
    return [json.loads(s)["type"] for s in targets()[name].seeds]


@st.composite
def json_messages(draw, name: str) -> bytes:
    """A JSON object with a known or any type and the target's fields (or others) holding any
    JSON value; or any JSON value; or a field nested very deep."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return json.dumps(draw(JSON)).encode()
    message: dict = {}
    if kind != 1:
        message["type"] = draw(st.sampled_from(tags_of(name)) | JSON)
    keys = st.sampled_from(FIELDS[name]) | st.text(max_size=6)
    for key in draw(st.lists(keys, max_size=4)):
        value = draw(JSON | st.dictionaries(st.sampled_from(CANDIDATE_KEYS) | st.text(max_size=6), JSON, max_size=4))
        message[key] = value
    text = json.dumps(message, ensure_ascii=draw(st.booleans()))
    if kind == 2 and message:
        depth = draw(st.sampled_from((100, 1000, 10_000, 100_000)) | st.integers(1, 100_000))
        key = json.dumps(next(iter(message)))
        text = "{" + key + ":" + "[" * depth + "]" * draw(st.sampled_from((depth, 0))) + "}"
    return text.encode("utf-8", "surrogatepass")


def json_inputs(name: str):
    return st.one_of(json_messages(name), mutated(name), st.binary(max_size=64))


def real_messages() -> list[tuple[int, bytes]]:
    return unpack_messages(targets()["receiver"].seeds[0])


@st.composite
def message_sequences(draw) -> bytes:
    """Real `stream` and `params` messages, mutated, dropped, repeated and reordered."""
    real = real_messages()
    pool = tuple(m for _, m in real)
    out = []
    for _ in range(draw(st.integers(1, 24))):
        channel, message = draw(st.sampled_from(real))
        if draw(st.booleans()):
            for op in draw(st.lists(OPS, min_size=1, max_size=3)):
                message = apply_op(message, op, pool)
        out.append((draw(st.sampled_from((channel, channel, 1 - channel))), message))
    return pack_messages(out)


# -- one property per parser -----------------------------------------------------------------

@fuzz_settings(100)
@given(data=st.one_of(mutated("stream_file"), st.binary(max_size=64)))
def test_stream_file(data):
    check("stream_file", data)


@fuzz_settings(60)
@given(data=stream_files())
def test_stream_file_built(data):
    check("stream_file", data)


@fuzz_settings(150)
@given(data=st.one_of(mutated("session_header"), session_headers(), st.binary(max_size=80)))
def test_session_header(data):
    check("session_header", data)


@fuzz_settings(150)
@given(data=st.one_of(mutated("stream_message"), st.builds(lambda h: b"\x01" + h, session_headers()),
                      st.builds(lambda k: b"\x02" + k, keyframe_records()), st.binary(max_size=64)))
def test_stream_channel_message(data):
    check("stream_message", data)


@fuzz_settings(150)
@given(data=st.one_of(mutated("param_packet"), packets(), st.binary(max_size=40)))
def test_param_packet(data):
    check("param_packet", data)


@fuzz_settings(150)
@given(data=st.one_of(mutated("param_payload"), st.binary(max_size=64)))
def test_param_payload(data):
    check("param_payload", data)


@fuzz_settings(60)
@given(data=st.one_of(mutated("keyframe_wrapper"), keyframe_records(), st.binary(max_size=64)))
def test_keyframe_wrapper(data):
    check("keyframe_wrapper", data)


@fuzz_settings(100)
@given(data=st.one_of(mutated("eye_reference"), eye_reference_records(), st.binary(max_size=40)))
def test_eye_reference(data):
    check("eye_reference", data)


@fuzz_settings(15)
@given(data=mutated("keyframe"))
def test_keyframe_prepared(data):
    check("keyframe", data)


@fuzz_settings(60)
@given(data=st.one_of(message_sequences(), mutated("receiver")))
def test_receiver_half_never_raises(data):
    check("receiver", data)


@fuzz_settings(40)
@given(data=st.one_of(mutated("picture"), st.binary(max_size=64)))
def test_uploaded_picture(data):
    check("picture", data)


@pytest.mark.parametrize("name", ["signaling_client", "signaling_server", "control", "page"])
def test_json_messages(name):
    @fuzz_settings(150)
    @given(data=json_inputs(name))
    def prop(data):
        check(name, data)

    prop()


@fuzz_settings(60)
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_binary_frames_are_refused_in_words(data):
    """A JSON parser given bytes (a binary websocket frame or data-channel message) refuses
    it, or reads it as text, and says so in one line."""
    from live.wire import WireError, parse_control
    from signaling.protocol import ProtocolError, parse_client_message
    from web_demo.messages import PageMessageError, parse_page_message

    for parse, error in ((parse_control, WireError), (parse_client_message, ProtocolError),
                         (parse_page_message, PageMessageError)):
        try:
            parse(data)
        except error as exc:
            assert bad_words(exc) is None, str(exc)


# -- regression inputs -----------------------------------------------------------------------

def regression_inputs() -> list:
    out = []
    for path in sorted(REGRESSIONS.glob("*/*.bin")):
        key = f"{path.parent.name}/{path.name}"
        if path.parent.name == "seeds":
            continue
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        out.append(pytest.param(path, id=key, marks=marks))
    return out


@pytest.mark.parametrize("path", regression_inputs())
def test_regression_input(path: Path):
    """Every input the fuzzer found (README.md there) is refused or parsed as documented."""
    check(path.parent.name, path.read_bytes())


def test_regression_inputs_are_there():
    """The replay above has inputs to replay, and each names a target."""
    found = [p for p in REGRESSIONS.glob("*/*.bin") if p.parent.name != "seeds"]
    assert found
    assert {p.parent.name for p in found} <= set(targets())
    assert set(KNOWN) <= {f"{p.parent.name}/{p.name}" for p in found}
