"""Fuzzing every parser that reads bytes from outside, from real inputs, with a fixed seed.

    python -m benchmarks.fuzz [--out reports/fuzz] [--inputs 1074000] [--jobs 1] [--resume]
                              [--targets NAME ...] [--seed 13]

The targets (`targets()`, also the property tests' in tests/test_fuzz.py) are the stream file reader
(records, session header, parameter segments), the session header, the live `stream`
channel's records, parameter packets with their decoding, the parameter coder's payloads
(arithmetic decoder and binarisation), the key frame wrapper with its reference geometry,
the EYE_REFERENCE record,
the whole key frame as the receiver prepares it (VVC picture, geometry, synthesizer), the
receiver half fed sequences of data-channel messages, the web demo's uploaded pictures,
and the JSON messages of signaling (both directions), of the call's control channel and of
the web demo's ``/ws``.  Each starts from real inputs (tests/fixtures: a real stream and
its records; tests/fixtures/fuzz/seeds: a real aiortc offer, a candidate, pictures) and
mutates them: bit flips, interesting integers, truncations, deletions, insertions,
repeats and splices of another seed, with CRCs fixed up for the stream files and PNG chunks
so that mutations reach the parsers behind the checksums; JSON targets also get
structural mutations (a field replaced by any JSON value, fields added or dropped, the
type changed, deep nesting).

An input passes when its parser returns or raises the parser's documented error
(`Target.errors`) with a one-line message.  Anything else is a finding: another exception
(a crash: shrunk by greedy deletion), an input that runs past `--hang-s` (interrupted by
SIGALRM: a hang), one that needs more than `--slow-s` twice (slow), a refusal that is not
one clear line (words), and one that allocates more than `--max-alloc-mb`: the traced peak
(tracemalloc, every `TRACE_EVERY`-th input) or, for every input, the growth of the
process's peak resident memory (reset before each input: native code counts too).
Findings land in OUT/findings/; moved to tests/fixtures/fuzz/TARGET/ they become the
regression inputs tests/test_fuzz.py replays.

The run is cut in chunks of a fixed size, each with its own seed: `--resume` skips the
chunks OUT/state.json lists as done, so an interrupted run goes on where it stopped and
gives the same inputs.  Writes OUT/report.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import functools
import hashlib
import json
import logging
import multiprocessing
import platform
import random
import resource
import signal
import struct
import sys
import time
import traceback
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.fuzz")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SEEDS = FIXTURES / "fuzz" / "seeds"

#: Every this many inputs one runs under tracemalloc (its allocation peak is measured).
TRACE_EVERY = 64
#: The slowest input of a chunk is kept up to this many bytes (for the report, to time it again).
SLOWEST_BYTES = 8192
#: Inputs per chunk (the unit of `--resume` and of the work handed to a process).
CHUNK = 4000
#: Integers that break parsers: limits of u8, u16, u32 and their neighbours.
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 255 * 4, 512, 256, 4096, 65535 * 8)


class Hang(Exception):
    """Raised by SIGALRM inside a parser that runs past the per-input limit."""


# -- mutations -------------------------------------------------------------------------------
#
# One mutation is a tuple (kind, ...) of small integers and bytes; positions are taken
# modulo the input's length, so any tuple applies to any input.  The long run draws them
# with `random_op`; the property tests draw them with hypothesis (tests/test_fuzz.py).

Op = tuple


def apply_op(data: bytes, op: Op, donors: Sequence[bytes]) -> bytes:
    """`data` with one mutation applied."""
    kind, n = op[0], len(data)

    def at(pos: int, room: int = 0) -> int:
        return pos % (n + 1 - room) if n + 1 - room > 0 else 0

    if kind == "flip" and n:
        i = op[1] % n
        return data[:i] + bytes([data[i] ^ (1 << (op[2] & 7))]) + data[i + 1:]
    if kind == "byte" and n:
        i = op[1] % n
        return data[:i] + bytes([op[2] & 0xFF]) + data[i + 1:]
    if kind == "int":
        width = (1, 2, 4)[op[2] % 3]
        value = INTERESTING[op[3] % len(INTERESTING)] + op[4]
        i = at(op[1], width)
        return data[:i] + (value % (1 << (8 * width))).to_bytes(width, "big") + data[i + width:]
    if kind == "truncate":
        return data[:at(op[1])]
    if kind == "delete":
        i = at(op[1])
        return data[:i] + data[i + op[2]:]
    if kind == "insert":
        i = at(op[1])
        return data[:i] + bytes(op[2]) + data[i:]
    if kind == "repeat":
        i = at(op[1])
        chunk = data[i:i + max(1, op[2])]
        return data[:i] + chunk * (1 + op[3] % 64) + data[i:]
    if kind == "splice" and donors:
        donor = donors[op[1] % len(donors)]
        return data[:at(op[2])] + donor[op[3] % (len(donor) + 1):]
    if kind == "overwrite" and donors:
        donor = donors[op[1] % len(donors)]
        j = op[3] % (len(donor) + 1)
        piece = donor[j:j + op[4]]
        i = at(op[2])
        return data[:i] + piece + data[i + len(piece):]
    return data


def random_op(rng: random.Random, data: bytes) -> Op:
    """One mutation, drawn at random (small values favoured, as hypothesis does)."""
    n = max(1, len(data))
    pos = rng.randrange(n + 1)
    kind = rng.choices(("flip", "byte", "int", "truncate", "delete", "insert", "repeat", "splice", "overwrite"),
                       (5, 4, 4, 1, 2, 2, 1, 1, 2))[0]
    small = rng.choice((1, 1, 2, 4, 8, 16, 64, 512))
    if kind == "flip":
        return (kind, pos, rng.randrange(8))
    if kind == "byte":
        return (kind, pos, rng.randrange(256))
    if kind == "int":
        return (kind, pos, rng.randrange(3), rng.randrange(len(INTERESTING)), rng.choice((0, 0, 0, -1, 1)))
    if kind == "truncate":
        return (kind, pos)
    if kind == "delete":
        return (kind, pos, rng.randint(1, small))
    if kind == "insert":
        return (kind, pos, rng.randbytes(rng.randint(1, small)))
    if kind == "repeat":
        return (kind, pos, rng.randint(1, small), rng.randrange(64))
    if kind == "splice":
        return (kind, rng.randrange(1 << 16), pos, rng.randrange(1 << 16))
    return (kind, rng.randrange(1 << 16), pos, rng.randrange(1 << 16), rng.randint(1, 4 * small))


def mutate_bytes(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> bytes:
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        data = apply_op(data, random_op(rng, data), donors)
    return data


# -- checksum fix-ups: so that mutations reach the parsers behind them ------------------------

def fix_stream_crcs(data: bytes) -> bytes:
    """A stream file with every record CRC that can be found recomputed (the framing as it is)."""
    out, pos = bytearray(data), 5
    while pos + 5 <= len(out):
        (length,) = struct.unpack_from(">I", out, pos + 1)
        end = pos + 5 + length
        if end + 4 > len(out):
            break
        struct.pack_into(">I", out, end, zlib.crc32(bytes(out[pos:end])))
        pos = end + 4
    return bytes(out)


def fix_png_crcs(data: bytes) -> bytes:
    """A PNG file with every chunk CRC that can be found recomputed."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, pos)
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        struct.pack_into(">I", out, end, zlib.crc32(bytes(out[pos + 4:end])))
        pos = end + 4
    return bytes(out)


# -- message sequences (the receiver target) ------------------------------------------------
#
# One input is a sequence of data-channel messages: (channel byte, u16 length, message)...,
# channel 0 `stream`, 1 `params`; whatever does not frame is dropped.

def pack_messages(messages: Sequence[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([ch]) + struct.pack(">H", len(m)) + m for ch, m in messages)


def unpack_messages(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 3 <= len(data):
        ch = data[pos] & 1
        (n,) = struct.unpack_from(">H", data, pos + 1)
        out.append((ch, data[pos + 3:pos + 3 + n]))
        pos += 3 + n
    return out


def mutate_messages(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> bytes:
    messages = unpack_messages(data)
    pool = [m for d in donors for m in unpack_messages(d)]
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        i = rng.randrange(len(messages)) if messages else 0
        what = rng.choices(("mutate", "drop", "dup", "swap", "insert", "reorder"), (8, 1, 1, 1, 1, 1))[0]
        if what == "mutate" and messages:
            ch, m = messages[i]
            messages[i] = (ch, mutate_bytes(rng, m, [d for _, d in pool]))
        elif what == "drop" and messages:
            del messages[i]
        elif what == "dup" and messages:
            messages.insert(i, messages[i])
        elif what == "swap" and len(messages) > 1:
            j = rng.randrange(len(messages))
            messages[i], messages[j] = messages[j], messages[i]
        elif what == "insert" and pool:
            messages.insert(i, rng.choice(pool))
        elif what == "reorder":
            rng.shuffle(messages)
    return pack_messages(messages[:200])


# -- JSON ------------------------------------------------------------------------------------

_STRINGS = ("", "a", "demo", "x" * 64, "x" * 65, "\u0000", "\ud800", "\U0001F600", "`", "` - at `$.a`",
            "$.room", "Expected `str`", "keyframe-request", "join", "\n", "a\nb", "data:;base64,", "../x",
            "data:image/png;base64,AAAA", "data:image/png;base64,====", "1e999")
_NUMBERS = (0, -1, 1, 0.5, -0.0, 1e14, 1e14 + 1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64,
            -(2 ** 63) - 1, 10 ** 30, 1e308, -1e308, 5e-324, 65535, 65536, 255, 256)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, leaning to the ones that break schemas."""
    kind = rng.choices(("null", "bool", "number", "string", "array", "object"),
                       (1, 1, 3, 3, 1 if depth < 4 else 0, 1 if depth < 4 else 0))[0]
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "number":
        return rng.choice(_NUMBERS) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
    if kind == "string":
        if rng.random() < 0.7:
            return rng.choice(_STRINGS)
        return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x10FFFF))))
                       for _ in range(rng.choice((1, 8, 100, 5000))))
    if kind == "array":
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(("type", "room", "sdp", "frame", "key_id", "values", "candidate", "x", "`k`", "")):
            random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _nest(value: Any, depth: int, obj: bool) -> str:
    text = json.dumps(value)
    return ('{"a":' * depth + text + "}" * depth) if obj else ("[" * depth + text + "]" * depth)


def mutate_json(rng: random.Random, data: bytes, donors: Sequence[bytes], tags: Sequence[str]) -> bytes:
    """A JSON message mutated as a structure (or, a third of the time, as bytes)."""
    if rng.random() < 0.33:
        return mutate_bytes(rng, data, donors)
    try:
        value = json.loads(data)
    except ValueError:
        value = random_json(rng)
    for _ in range(rng.choice((1, 1, 2, 3))):
        what = rng.choices(("field", "add", "drop", "type", "nest", "whole", "deep"), (6, 2, 2, 2, 1, 1, 1))[0]
        if isinstance(value, dict) and what in ("field", "drop") and value:
            key = rng.choice(list(value))
            if what == "drop":
                del value[key]
            else:
                value[key] = _mutate_value(rng, value[key])
        elif isinstance(value, dict) and what == "add":
            value[rng.choice(("type", "room", "sdp", "frame", "x", "values", "muted", "`a`"))] = random_json(rng)
        elif isinstance(value, dict) and what == "type":
            value["type"] = rng.choice(list(tags) + ["", "JOIN", None, 1, ["join"]])
        elif what == "nest":
            value = [value] if rng.random() < 0.5 else {"type": value}
        elif what == "deep":
            depth = rng.choice((100, 1000, 10000, 100000))
            text = _nest(random_json(rng), depth, rng.random() < 0.5)
            if isinstance(value, dict) and value and rng.random() < 0.7:
                key = rng.choice(list(value))
                marker = "\u0001MARK\u0001"
                value[key] = marker
                return json.dumps(value).replace(json.dumps(marker), text).encode()
            return text.encode()
        else:
            value = random_json(rng)
    return json.dumps(value, ensure_ascii=rng.random() < 0.5, separators=rng.choice(((",", ":"), (", ", ": ")))
                      ).encode("utf-8", "surrogatepass")


def _mutate_value(rng: random.Random, value: Any) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.6:
        key = rng.choice(list(value))
        return {**value, key: _mutate_value(rng, value[key])}
    if isinstance(value, str) and value and rng.random() < 0.5:
        raw = mutate_bytes(rng, value.encode("utf-8", "surrogatepass"), [])
        return raw.decode("utf-8", "replace")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + rng.choice((-1, 1, 0.5, 1e-9, 2 ** 16, -(2 ** 16)))
    return random_json(rng)


def as_text(data: bytes) -> str:
    """A fuzz input as a websocket or data-channel text message (always valid UTF-8 there)."""
    return data.decode("utf-8", "replace")


# -- targets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One parser: how to call it, what it may raise, its real seeds and how to mutate them."""

    name: str
    what: str
    parse: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]
    weight: int                                     # share of the long run's inputs (thousands)
    mutate: Callable[[random.Random, bytes, Sequence[bytes]], bytes] = mutate_bytes
    fixup: Callable[[bytes], bytes] | None = None   # applied to 3 mutated inputs in 4

    def generate(self, rng: random.Random) -> bytes:
        data = self.mutate(rng, rng.choice(self.seeds), self.seeds)
        if self.fixup is not None and rng.random() < 0.75:
            data = self.fixup(data)
        return data


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def seed(name: str) -> bytes:
    return (SEEDS / name).read_bytes()


class RecordingWorker:
    """Stands in for the receiver's render thread: keeps what the receiver half hands it
    (key frames are decoded by the `keyframe` target, pictures by nobody)."""

    def __init__(self) -> None:
        self.jobs = 0

    def set_header(self, header) -> None:
        self.jobs += 1

    def set_keyframe(self, record) -> None:
        self.jobs += 1

    def set_eyes(self, record) -> None:
        self.jobs += 1

    def render(self, job) -> None:
        self.jobs += 1

    def session_break(self) -> None:
        self.jobs += 1


class RecordingSession:
    """Stands in for a peer session: keeps the control messages the receiver half sends."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_control(self, message) -> bool:
        self.sent.append(message)
        return True


@functools.lru_cache(maxsize=1)
def _basis():
    from models.face_model import FaceBasis

    return FaceBasis.load()


@functools.lru_cache(maxsize=1)
def _real_session() -> tuple[bytes, bytes, list[bytes]]:
    """The fixture stream as a live call sends it: header and key frame messages on
    `stream`, and its frames' levels coded as parameter packets (an intra packet every 5)."""
    from codec.decoder import decode_segment, parse_stream
    from codec_core.bitstream import ParamPacket
    from codec_core.param_coding import PacketParamEncoder
    from live.wire import pack_stream_record

    parsed = parse_stream(fixture("short.fcv"))
    levels = [q for s in parsed.segments for q in decode_segment(s, parsed.header.values_per_frame)]
    enc = PacketParamEncoder(parsed.header.values_per_frame)
    packets = []
    for f, q in enumerate(levels):
        intra = f % parsed.header.intra_interval == 0
        packets.append(ParamPacket(f, 1000 + 40 * f, parsed.keyframe.key_id, intra, enc.encode_packet(q, intra)).pack())
    return pack_stream_record(parsed.header), pack_stream_record(parsed.keyframe), packets


def _parse_stream_file(data: bytes) -> object:
    from codec.decoder import decode_segment, parse_stream

    parsed = parse_stream(data)
    return [decode_segment(s, parsed.header.values_per_frame) for s in parsed.segments]


def _stream_with_eyes() -> bytes:
    """The fixture stream with the fixture EYE_REFERENCE record after its key frame (version 5)."""
    from codec_core.bitstream import RecordType, read_records, write_file_start, write_record

    records = [r for r in read_records(fixture("short.fcv")) if r[0] != RecordType.EYE_REFERENCE]
    records.insert(2, (RecordType.EYE_REFERENCE, fixture("eye_reference.bin")))
    return write_file_start() + b"".join(write_record(kind, payload) for kind, payload in records)


def _parse_eye_reference(data: bytes) -> object:
    from codec_core.bitstream import EyeReference

    return EyeReference.unpack(data)


def _parse_header(data: bytes) -> object:
    from codec_core.bitstream import SessionHeader

    return SessionHeader.unpack(data)


def _parse_stream_message(data: bytes) -> object:
    from live.wire import unpack_stream_record

    return unpack_stream_record(data)


def _parse_packet(data: bytes) -> object:
    """A packet decoded as the receiver does, after the fixture's intra packet (so a
    predicted packet has a frame to predict from)."""
    from codec_core.bitstream import ParamPacket
    from codec_core.format import GLOBAL_MOTION_COUNT
    from codec_core.param_coding import PacketParamDecoder, check_levels

    first = ParamPacket.unpack(_real_session()[2][0])
    dec = PacketParamDecoder(_basis().num_params + GLOBAL_MOTION_COUNT)    # ifvc's values, then the global motion
    dec.decode_packet(first.payload, first.intra)
    packet = ParamPacket.unpack(data)
    return check_levels(dec.decode_packet(packet.payload, packet.intra))


def _parse_payload(data: bytes) -> object:
    """A parameter codeword as a segment carries it: an intra frame, then predicted ones,
    read until the codeword's bits and some implied zeros are used up."""
    from codec_core.arith import ArithmeticDecoder
    from codec_core.format import GLOBAL_MOTION_COUNT
    from codec_core.param_coding import ParamFrameDecoder, check_levels

    coder, dec = ParamFrameDecoder(_basis().num_params + GLOBAL_MOTION_COUNT), ArithmeticDecoder(data)
    frames = [check_levels(coder.decode(dec, intra=True))]
    while len(frames) < 64 and dec.bits_read <= 8 * len(data) + 64:
        frames.append(check_levels(coder.decode(dec, intra=False)))
    return frames


def _parse_keyframe_wrapper(data: bytes) -> object:
    from codec_core.bitstream import Keyframe
    from codec_core.reference import ReferenceGeometry

    record = Keyframe.unpack(data)
    return ReferenceGeometry.unpack(record.geometry, _basis().mean)


@functools.lru_cache(maxsize=1)
def _face_decoder():
    from codec.decoder import FaceDecoder
    from codec_core.bitstream import SessionHeader

    return FaceDecoder(SessionHeader.unpack(fixture("session_header.bin")), _basis())


def _prepare_keyframe(data: bytes) -> object:
    """A KEYFRAME payload made ready as the receiver's key frame thread does it: VVC
    picture, reference geometry, synthesizer, one throw-away picture."""
    import torch

    from codec_core.bitstream import Keyframe
    from receiver.render import _prepare

    torch.set_num_threads(1)
    return _prepare(_face_decoder(), Keyframe.unpack(data))


def _keyframe_errors() -> tuple[type[BaseException], ...]:
    from receiver.render import KEYFRAME_ERRORS

    return KEYFRAME_ERRORS


def _feed_receiver(data: bytes) -> object:
    """A fresh receiver half in a session, fed a sequence of `stream` and `params`
    messages; it must drop what is bad and never raise."""
    from live.config import DEFAULT
    from receiver.half import ReceiverHalf

    half = ReceiverHalf(_basis(), DEFAULT)
    half.attach(RecordingWorker())  # type: ignore[arg-type]
    half.session_opened(RecordingSession())  # type: ignore[arg-type]
    for channel, message in unpack_messages(data):
        (half.on_params if channel else half.on_stream)(message)
    return half.stats


def _eye_message() -> bytes:
    """A real EYE_REFERENCE as a live call sends it on `stream` (wire version 5)."""
    return bytes([5]) + fixture("eye_reference.bin")


def _receiver_seeds() -> tuple[bytes, ...]:
    header, key, packets = _real_session()
    full = [(0, header), (0, key), (0, _eye_message())] + [(1, p) for p in packets]
    return (pack_messages(full), pack_messages(full[:3] + full[8:]),
            pack_messages([(1, p) for p in packets[:3]] + full[:2] + [(1, p) for p in packets[3:]]))


def _decode_picture(data: bytes) -> object:
    from web_demo.portrait import decode_image

    return decode_image(data)


def _picture_errors() -> tuple[type[BaseException], ...]:
    from web_demo.portrait import PortraitError

    return (PortraitError,)


def _parse_page(data: bytes) -> object:
    from web_demo import messages

    message = messages.parse_page_message(as_text(data))
    if isinstance(message, messages.OpenPortrait):
        return message.upload()
    if isinstance(message, messages.SetEdits):
        return message.edits
    if isinstance(message, messages.StartCall):
        return message.camera_fps
    return message


def _page_errors() -> tuple[type[BaseException], ...]:
    from web_demo.messages import PageMessageError

    # OpenPortrait.upload's documented error is ValueError (broken base64)
    return (PageMessageError, ValueError)


def _parse_client(data: bytes) -> object:
    """A frame as the signaling server takes it: parsed, then relayed (encoded again), or
    refused with an error message (encoded)."""
    from signaling.protocol import Error, ProtocolError, encode, parse_client_message

    try:
        message = parse_client_message(as_text(data))
    except ProtocolError as exc:
        encode(Error(exc.code, str(exc)))
        raise
    return encode(message)


def _parse_server(data: bytes) -> object:
    from signaling.protocol import parse_server_message

    return parse_server_message(as_text(data))


def _parse_control(data: bytes) -> object:
    from live.wire import parse_control

    return parse_control(as_text(data))


def _json_seeds(messages: Sequence[dict]) -> tuple[bytes, ...]:
    return tuple(json.dumps(m, separators=(",", ":")).encode() for m in messages)


def _signaling_seeds(server: bool) -> tuple[bytes, ...]:
    sdp, candidate = seed("offer.sdp").decode(), json.loads(seed("candidate.json"))
    relayed = [{"type": "offer", "sdp": sdp}, {"type": "answer", "sdp": sdp},
               {"type": "candidate", "candidate": candidate}, {"type": "candidate", "candidate": None},
               {"type": "bye"}]
    if server:
        return _json_seeds(relayed + [{"type": "joined", "room": "call-4f2a", "peers": 2, "initiator": True},
                                      {"type": "peer-joined"}, {"type": "peer-left"},
                                      {"type": "error", "code": "room-full", "message": "room demo is full"}])
    return _json_seeds([{"type": "join", "room": "call-4f2a"}] + relayed)


def _control_seeds() -> tuple[bytes, ...]:
    return _json_seeds([{"type": "keyframe-request"}, {"type": "loss", "frame": 7}, {"type": "ready", "key_id": 1},
                        {"type": "end", "frame": 249}, {"type": "end", "frame": None},
                        {"type": "audio-clock", "pts": 960, "wall_ms": 1764130000123.5},
                        {"type": "muted", "muted": True}])


def _page_seeds() -> tuple[bytes, ...]:
    png, jpg = seed("portrait.png"), seed("portrait.jpg")
    return _json_seeds([
        {"type": "call", "room": "call-4f2a", "sdp": seed("offer.sdp").decode(), "fps": 30},
        {"type": "hangup"},
        {"type": "edit", "values": {"yaw": 15, "smile": 0.8, "blink": None}},
        {"type": "edit", "values": {}},
        {"type": "portrait", "name": "lp__d8.jpg"},
        {"type": "portrait", "data": "data:image/png;base64," + base64.b64encode(png).decode()},
        {"type": "portrait", "data": "data:image/jpeg;base64," + base64.b64encode(jpg).decode()},
        {"type": "mute", "muted": False}])


def _json_target(name: str, what: str, parse, errors, seeds, tags, weight) -> Target:
    return Target(name, what, parse, errors, seeds, weight,
                  mutate=functools.partial(mutate_json, tags=tags))


@functools.lru_cache(maxsize=1)
def targets() -> dict[str, Target]:
    """Every target by name (built once per process: seeds are read and made here)."""
    from codec_core.bitstream import StreamError
    from codec_core.param_coding import ParamDecodeError
    from live.wire import WireError
    from signaling.protocol import ProtocolError

    header, key, packets = _real_session()
    segment = fixture("param_segment.bin")
    all_tags = ("join", "offer", "answer", "candidate", "bye", "joined", "peer-joined", "peer-left", "error",
                "keyframe-request", "loss", "ready", "end", "audio-clock", "muted", "call", "hangup", "edit",
                "portrait", "mute")
    out = [
        Target("stream_file", "stream file: records, header, key frame record, eye reference, parameter segments "
               "decoded (codec.decoder.parse_stream, decode_segment)", _parse_stream_file,
               (StreamError, ParamDecodeError), (fixture("short.fcv"), _stream_with_eyes()), 150,
               fixup=fix_stream_crcs),
        Target("session_header", "SESSION_HEADER payload (SessionHeader.unpack)", _parse_header, (StreamError,),
               (fixture("session_header.bin"),), 60),
        Target("stream_message", "live `stream` channel message (live.wire.unpack_stream_record)",
               _parse_stream_message, (StreamError,), (header, key, _eye_message()), 80),
        Target("param_packet", "live PARAM_PACKET, unpacked and decoded (ParamPacket.unpack, "
               "PacketParamDecoder, check_levels)", _parse_packet, (StreamError, ParamDecodeError),
               tuple(packets) + (fixture("param_packet.bin"),), 120),
        Target("param_payload", "parameter codeword (arithmetic decoder, binarisation, ParamFrameDecoder)",
               _parse_payload, (ParamDecodeError,), (segment[6:],) + tuple(p[8:] for p in packets), 100),
        Target("keyframe_wrapper", "KEYFRAME payload and its reference geometry codeword (Keyframe.unpack, "
               "ReferenceGeometry.unpack)", _parse_keyframe_wrapper, (StreamError, ParamDecodeError),
               (fixture("keyframe.bin"),), 30),
        Target("eye_reference", "EYE_REFERENCE payload (EyeReference.unpack)", _parse_eye_reference, (StreamError,),
               (fixture("eye_reference.bin"),), 30),
        Target("keyframe", "KEYFRAME prepared as the receiver does (VVC decoding, reference, synthesizer)",
               _prepare_keyframe, _keyframe_errors(), (fixture("keyframe.bin"),), 4),
        Target("receiver", "receiver half fed `stream` and `params` message sequences (must never raise)",
               _feed_receiver, (), _receiver_seeds(), 60, mutate=mutate_messages),
        Target("picture", "web demo upload picture (web_demo.portrait.decode_image)", _decode_picture,
               _picture_errors(), (seed("portrait.png"), seed("portrait.jpg")), 20,
               fixup=lambda d: fix_png_crcs(d) if d.startswith(b"\x89PNG") else d),
        _json_target("signaling_client", "signaling, client to server (parse_client_message)", _parse_client,
                     (ProtocolError,), _signaling_seeds(False), all_tags, 150),
        _json_target("signaling_server", "signaling, server to client (parse_server_message)", _parse_server,
                     (ProtocolError,), _signaling_seeds(True), all_tags, 80),
        _json_target("control", "call control channel (live.wire.parse_control)", _parse_control, (WireError,),
                     _control_seeds(), all_tags, 120),
        _json_target("page", "web demo /ws (web_demo.messages.parse_page_message, upload, edits)", _parse_page,
                     _page_errors(), _page_seeds(), all_tags, 100),
    ]
    return {t.name: t for t in out}


# -- running ---------------------------------------------------------------------------------

@dataclass
class Finding:
    kind: str            # crash | hang | slow | alloc
    signature: str       # exception type and where it was raised
    message: str
    input_hex: str
    trace: str = ""
    size: float = 0.0    # seconds (slow, hang) or bytes (alloc): the worst of a signature is kept


@dataclass
class ChunkResult:
    target: str
    chunk: int
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    seconds: float = 0.0
    max_input_s: float = 0.0
    max_alloc_bytes: int = 0
    max_rss_growth: int = 0
    max_rss_kb: int = 0
    slowest_hex: str = ""
    findings: list[Finding] = field(default_factory=list)


def on_alarm(signum, frame) -> None:
    raise Hang("input ran past the time limit")


def signature(exc: BaseException) -> str:
    """Exception type and the innermost project frame it went through."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if str(REPO) in f.filename and "/.venv/" not in f.filename] or frames
    where = f"{Path(ours[-1].filename).relative_to(REPO) if str(REPO) in ours[-1].filename else ours[-1].filename}:" \
            f"{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


@dataclass
class Outcome:
    """What one input did."""

    kind: str                            # accepted | refused | crash | hang
    seconds: float
    alloc: int                           # bytes: traced peak (with trace_alloc), else 0
    rss_growth: int                      # bytes: peak resident memory during the input over that before it
    rss_peak: int                        # bytes: the process's peak resident memory during the input
    error: BaseException | None = None   # the refusal, crash or hang


def run_one(target: Target, data: bytes, hang_s: float, trace_alloc: bool = False) -> Outcome:
    """Run one input, in the main thread (a SIGALRM after `hang_s` interrupts it).  Two
    measures of what it allocates: the traced peak (tracemalloc: Python and numpy) with
    `trace_alloc`, and always the growth of the process's peak resident memory (native
    code too: FFmpeg, OpenCV), the peak reset before the input."""
    rss_before = reset_peak_rss()
    if trace_alloc:
        tracemalloc.start()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_s)
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        target.parse(data)
        kind = "accepted"
    except Hang as e:
        kind, error = "hang", e
    except target.errors as e:
        kind, error = "refused", e
    except Exception as e:  # noqa: BLE001 - anything else is what the fuzzer looks for
        kind, error = "crash", e
    finally:
        elapsed = time.perf_counter() - start
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        peak = 0
        if trace_alloc:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        rss_peak = peak_rss()
    return Outcome(kind, elapsed, peak, max(0, rss_peak - rss_before), rss_peak, error)


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process in bytes, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1]) * 1024
    return out


def reset_peak_rss() -> int:
    """Reset the process's peak resident memory to what it holds now (Linux: clear_refs 5);
    returns that.  Elsewhere the peak cannot be reset, and the peak so far is returned."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status()["VmRSS"]
    except OSError:
        return peak_rss()


def peak_rss() -> int:
    """The process's peak resident memory (since the last reset), in bytes."""
    try:
        return _proc_status()["VmHWM"]
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


#: The longest refusal: one clear line, values from outside cut short.
MAX_WORDS = 400


def bad_words(error: BaseException) -> str | None:
    """Why a refusal's message is not one clear line (None: it is)."""
    text = str(error)
    if not text.strip():
        return "empty message"
    if "\n" in text or "\r" in text:
        return "message of several lines"
    if len(text) > MAX_WORDS:
        return f"message of {len(text)} characters"
    return None


def shrink(target: Target, data: bytes, keep: Callable[[bytes], bool], tries: int = 400) -> bytes:
    """A shorter input that still does what `keep` says (greedy deletion of chunks)."""
    step = max(1, len(data) // 2)
    while step >= 1 and tries > 0:
        i, changed = 0, False
        while i < len(data) and tries > 0:
            candidate = data[:i] + data[i + step:]
            tries -= 1
            if keep(candidate):
                data, changed = candidate, True
            else:
                i += step
        if not changed:
            step //= 2
    return data


def run_chunk(name: str, chunk: int, count: int, base_seed: int, hang_s: float, slow_s: float,
              max_alloc: int) -> ChunkResult:
    """`count` inputs of target `name`, chunk number `chunk` (its own seed: resumable)."""
    logging.disable(logging.CRITICAL)       # the parsers' drop messages, thousands of them
    target = targets()[name]
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{base_seed}/{name}/{chunk}".encode()).digest()[:8], "big"))
    result = ChunkResult(name, chunk)
    seen: dict[str, int] = {}
    start = time.perf_counter()
    for i in range(count):
        data = target.generate(rng)
        outcome = run_one(target, data, hang_s, trace_alloc=i % TRACE_EVERY == 0)
        result.inputs += 1
        if outcome.seconds > result.max_input_s:
            result.max_input_s, result.slowest_hex = outcome.seconds, data[:SLOWEST_BYTES].hex()
        result.max_alloc_bytes = max(result.max_alloc_bytes, outcome.alloc)
        result.max_rss_growth = max(result.max_rss_growth, outcome.rss_growth)
        result.max_rss_kb = max(result.max_rss_kb, outcome.rss_peak // 1024)
        if outcome.kind == "accepted":
            result.accepted += 1
        elif outcome.kind == "refused":
            result.refused += 1
        finding = _finding(target, data, outcome, hang_s, slow_s, max_alloc)
        if finding is None:
            continue
        if finding.signature not in seen:
            seen[finding.signature] = len(result.findings)
            result.findings.append(finding)
        elif finding.size > result.findings[seen[finding.signature]].size:
            result.findings[seen[finding.signature]] = finding
    result.seconds = time.perf_counter() - start
    return result


def _finding(target: Target, data: bytes, outcome: Outcome, hang_s: float, slow_s: float,
             max_alloc: int) -> Finding | None:
    error = outcome.error
    if outcome.kind == "crash" and error is not None:
        sig = signature(error)

        def same(d: bytes) -> bool:
            o = run_one(target, d, hang_s)
            return o.kind == "crash" and o.error is not None and signature(o.error) == sig

        small = shrink(target, data, same)
        again = run_one(target, small, hang_s).error
        trace = "".join(traceback.format_exception(again)) if again is not None else ""
        return Finding("crash", sig, str(error)[:300], small.hex(), trace[-4000:])
    if outcome.kind == "hang":
        return Finding("hang", f"hang in {target.name}", f"over {hang_s} s", data.hex(), size=outcome.seconds)
    if outcome.kind == "refused" and error is not None and (why := bad_words(error)) is not None:
        return Finding("words", f"{why} from {signature(error)}", str(error)[:300], data.hex())
    if outcome.seconds > slow_s:
        # timed again: a busy machine may have paused the first run
        again_s = min(run_one(target, data, hang_s).seconds for _ in range(2))
        if again_s > slow_s:
            return Finding("slow", f"slow input of {target.name}", f"{again_s:.2f} s", data.hex(), size=again_s)
    alloc = max(outcome.alloc, outcome.rss_growth)
    if alloc > max_alloc:
        return Finding("alloc", f"allocation in {target.name}", f"{alloc / 2 ** 20:.1f} MiB allocated for "
                       f"{len(data)} input bytes", data.hex(), size=alloc)
    return None


# -- the whole run ---------------------------------------------------------------------------

def plan(names: Sequence[str], total: int) -> list[tuple[str, int, int]]:
    """(target, chunk, count) for `total` inputs split over `names` by their weights."""
    weights = {n: targets()[n].weight for n in names}
    scale = total / sum(weights.values())
    tasks = []
    for n in names:
        want = round(weights[n] * scale)
        size = CHUNK if weights[n] >= 20 else CHUNK // 8
        for c in range((want + size - 1) // size):
            tasks.append((n, c, min(size, want - c * size)))
    return tasks


def summarise(results: list[ChunkResult], names: Sequence[str]) -> dict:
    per: dict[str, dict] = {}
    for n in names:
        rs = [r for r in results if r.target == n]
        findings: dict[str, dict] = {}
        for r in rs:
            for f in r.findings:
                if f.signature not in findings or f.size > findings[f.signature]["size"]:
                    findings[f.signature] = asdict(f)
        per[n] = {
            "what": targets()[n].what,
            "inputs": sum(r.inputs for r in rs),
            "accepted": sum(r.accepted for r in rs),
            "refused": sum(r.refused for r in rs),
            "seconds": round(sum(r.seconds for r in rs), 1),
            "max_input_ms": round(1000 * max((r.max_input_s for r in rs), default=0.0), 2),
            "slowest_input_hex": max(rs, key=lambda r: r.max_input_s).slowest_hex if rs else "",
            "max_traced_alloc_mib": round(max((r.max_alloc_bytes for r in rs), default=0) / 2 ** 20, 2),
            "max_rss_growth_mib": round(max((r.max_rss_growth for r in rs), default=0) / 2 ** 20, 2),
            "max_rss_mib": round(max((r.max_rss_kb for r in rs), default=0) / 1024, 1),
            "findings": list(findings.values()),
        }
    return per


def write_report(out: Path, per: dict, args: argparse.Namespace, wall_s: float) -> None:
    total = sum(p["inputs"] for p in per.values())
    crashes = sum(1 for p in per.values() for f in p["findings"] if f["kind"] == "crash")
    other = sum(1 for p in per.values() for f in p["findings"] if f["kind"] != "crash")
    results = {"inputs": total, "crash_signatures": crashes, "other_findings": other, "wall_s": round(wall_s, 1),
               "seed": args.seed, "jobs": args.jobs, "hang_s": args.hang_s, "slow_s": args.slow_s,
               "max_alloc_mb": args.max_alloc_mb, "trace_every": TRACE_EVERY, "python": platform.python_version(),
               "machine": platform.machine(), "targets": per}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Fuzzing the parsers", "",
        f"`python -m benchmarks.fuzz --out {args.out} --inputs {args.inputs} --jobs {args.jobs} --seed {args.seed}`"
        f" ({total:,} inputs, {wall_s / 60:.1f} min wall on {args.jobs} process(es); per-input limit "
        f"{args.hang_s} s, slow above {args.slow_s} s, traced allocation limit {args.max_alloc_mb} MB, one input "
        f"in {TRACE_EVERY} traced).", "",
        f"**{crashes} crash signature(s), {other} other finding(s).**", "",
        "| target | inputs | accepted | refused | crashes | other findings | max ms / input | max traced MiB "
        "| max RSS growth MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, p in per.items():
        c = sum(1 for f in p["findings"] if f["kind"] == "crash")
        lines.append(f"| {n} | {p['inputs']:,} | {p['accepted']:,} | {p['refused']:,} | {c} | "
                     f"{len(p['findings']) - c} | {p['max_input_ms']} | {p['max_traced_alloc_mib']} | "
                     f"{p['max_rss_growth_mib']} | {p['max_rss_mib']} |")
    lines += ["", "Targets:", ""] + [f"- `{n}`: {p['what']}" for n, p in per.items()]
    found = [(n, f) for n, p in per.items() for f in p["findings"]]
    if found:
        lines += ["", "## Findings", ""]
        for n, f in found:
            lines += [f"- `{n}` {f['kind']}: {f['signature']}: {f['message']} (input {len(f['input_hex']) // 2} "
                      f"bytes: `{f['input_hex'][:160]}{'...' if len(f['input_hex']) > 160 else ''}`)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    fdir = out / "findings"
    fdir.mkdir(exist_ok=True)
    for n, f in found:
        tag = hashlib.sha1(f["signature"].encode()).hexdigest()[:8]
        (fdir / f"{n}-{f['kind']}-{tag}.bin").write_bytes(bytes.fromhex(f["input_hex"]))
        if f["trace"]:
            (fdir / f"{n}-{f['kind']}-{tag}.txt").write_text(f["trace"])


def _init_worker() -> None:
    targets()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/fuzz")
    ap.add_argument("--inputs", type=int, default=1_074_000, help="inputs over all targets (split by weight)")
    ap.add_argument("--targets", nargs="*", help="only these targets (default: all)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--jobs", type=int, default=1, help="processes")
    ap.add_argument("--resume", action="store_true", help="skip the chunks OUT/state.json lists as done")
    ap.add_argument("--hang-s", type=float, default=10.0, help="an input running longer is a hang")
    ap.add_argument("--slow-s", type=float, default=1.0, help="an input running longer (twice) is slow")
    ap.add_argument("--max-alloc-mb", type=float, default=64.0, help="a traced allocation peak above this is a finding")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tqdm import tqdm

    names = args.targets or list(targets())
    unknown = [n for n in names if n not in targets()]
    if unknown:
        print(f"error: unknown target(s) {', '.join(unknown)}; known: {', '.join(targets())}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    done: dict[str, dict] = {}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("seed") == args.seed and state.get("inputs") == args.inputs:
            done = state["chunks"]
    tasks = [t for t in plan(names, args.inputs) if f"{t[0]}/{t[1]}" not in done]
    results = [ChunkResult(**{**r, "findings": [Finding(**f) for f in r["findings"]]}) for r in done.values()]
    start = time.perf_counter() - sum(r.seconds for r in results) / max(1, args.jobs)
    bar = tqdm(total=sum(c for _, _, c in plan(names, args.inputs)), initial=sum(r.inputs for r in results),
               unit="input", smoothing=0.05)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker) as pool:
        futures = {pool.submit(run_chunk, n, c, k, args.seed, args.hang_s, args.slow_s,
                               int(args.max_alloc_mb * 2 ** 20)): (n, c) for n, c, k in tasks}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results.append(r)
            done[f"{r.target}/{r.chunk}"] = asdict(r)
            state_path.write_text(json.dumps({"seed": args.seed, "inputs": args.inputs, "chunks": done}))
            bar.update(r.inputs)
            bar.set_postfix_str(f"{r.target}; findings {sum(len(x.findings) for x in results)}")
            for f in r.findings:
                bar.write(f"{r.target}: {f.kind} {f.signature}: {f.message}")
    bar.close()
    per = summarise(results, names)
    write_report(out, per, args, time.perf_counter() - start)
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
