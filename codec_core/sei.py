"""VVC NAL units and SEI messages at the bit level: what `codec_core.container` writes and reads.

Annex-B byte streams split into NAL units (`split_annexb`), the 2-byte VVC NAL unit header,
emulation prevention (`escape`, `unescape`), Exp-Golomb bit writing and reading (`BitWriter`,
`BitReader`: u(n), ue(v), and GFV's absolute value with a sign flag) and the SEI RBSP of
H.266 7.3.2.7 / H.274 (`sei_nal`, `read_sei_nal`: payloadType and payloadSize as 0xFF-extended
bytes, the payload, then rbsp trailing bits).  Everything corrupt raises `StreamError` with
one line.  Pure: no numpy even.  docs/bitstream.md, "VVC container", has the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from codec_core.bitstream import StreamError

START_CODE = b"\x00\x00\x01"
NAL_HEADER_BYTES = 2
# nal_unit_type values of H.266 Table 5 that this module and the container look at
VCL_TYPES = range(0, 12)        # TRAIL .. reserved VCL: the picture's coded slices
PH_NUT = 19
PREFIX_SEI_NUT = 23
MAX_UE_LEADING_ZEROS = 31       # ue(v) of at most 32 bits' prefix: values up to 2^32 - 2 (as H.266 allows)


@dataclass(frozen=True)
class NalUnit:
    """One NAL unit of an Annex-B stream: `span` is where it lies in the stream, its start
    code (and zero_byte) included; `data` the NAL unit itself (header and payload, escaped)."""

    start: int
    end: int
    data: bytes

    @property
    def nal_unit_type(self) -> int:
        return self.data[1] >> 3

    @property
    def layer_id(self) -> int:
        return self.data[0] & 0x3F


def nal_header(nal_unit_type: int, layer_id: int = 0, temporal_id: int = 0) -> bytes:
    """forbidden_zero_bit f(1), nuh_reserved_zero_bit u(1), nuh_layer_id u(6),
    nal_unit_type u(5), nuh_temporal_id_plus1 u(3)."""
    return bytes([layer_id & 0x3F, (nal_unit_type << 3) | (temporal_id + 1)])


def split_annexb(data: bytes) -> list[NalUnit]:
    """The NAL units of an Annex-B byte stream, in order.  A unit's span starts at its start
    code, with the zero_byte before it when there is one; it ends where the next one starts
    (so that the spans tile the stream after its leading zeros).  StreamError when the stream
    does not start with a start code or a NAL unit is shorter than its header."""
    positions = []
    at = data.find(START_CODE)
    while at >= 0:
        positions.append(at)
        at = data.find(START_CODE, at + 3)
    if not positions or any(data[:positions[0]]):
        raise StreamError("not an Annex-B VVC bitstream (no start code at its beginning)")
    units = []
    for i, pos in enumerate(positions):
        start = pos - 1 if pos > 0 and data[pos - 1] == 0 else pos
        end = (positions[i + 1] - 1 if data[positions[i + 1] - 1] == 0 else positions[i + 1]) \
            if i + 1 < len(positions) else len(data)
        nal = data[pos + 3:end].rstrip(b"\x00")      # trailing_zero_8bits belong to no NAL unit
        if len(nal) < NAL_HEADER_BYTES:
            raise StreamError(f"truncated NAL unit at byte {pos} ({len(nal)} bytes, shorter than its header)")
        if nal[0] & 0x80:
            raise StreamError(f"NAL unit at byte {pos} has its forbidden_zero_bit set")
        if nal[1] & 7 == 0:
            raise StreamError(f"NAL unit at byte {pos} has nuh_temporal_id_plus1 0")
        units.append(NalUnit(start, end, nal))
    return units


def escape(rbsp: bytes) -> bytes:
    """Emulation prevention: 0x03 after every two zero bytes that a byte 0x00..0x03 follows
    (and after two zero bytes that end the unit)."""
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    if zeros >= 2:
        out.append(3)
    return bytes(out)


def unescape(nal: bytes) -> bytes:
    """The RBSP of an escaped NAL unit; StreamError for a 0x000003 that is not followed by
    0x00..0x03 (or the end) and for 0x000000..0x000002 (which escaping never leaves)."""
    out, zeros = bytearray(), 0
    i = 0
    while i < len(nal):
        b = nal[i]
        if zeros >= 2:
            if b == 3:
                if i + 1 < len(nal) and nal[i + 1] > 3:
                    raise StreamError(f"bad emulation prevention in a NAL unit (0x000003 followed by "
                                      f"0x{nal[i + 1]:02x})")
                zeros = 0
                i += 1
                continue
            if b <= 2:
                raise StreamError(f"bad emulation prevention in a NAL unit (unescaped 0x0000{b:02x})")
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
        i += 1
    return bytes(out)


class BitWriter:
    """Bits, most significant first, as SEI syntax writes them."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, value: int, n: int) -> None:
        """u(n): `value` in n bits."""
        if not 0 <= value < (1 << n):
            raise ValueError(f"{value} does not fit in {n} bits")
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))

    def ue(self, value: int) -> None:
        """ue(v): Exp-Golomb of order 0."""
        if value < 0:
            raise ValueError(f"ue(v) of a negative value {value}")
        code = value + 1
        n = code.bit_length()
        self.bits.extend([0] * (n - 1))
        self.u(code, n)

    def abs_sign(self, value: int) -> None:
        """A signed integer as GFV writes its coordinates and matrix elements: the magnitude
        as ue(v), then, when it is not 0, a sign flag u(1) (1: negative)."""
        self.ue(abs(value))
        if value:
            self.u(int(value < 0), 1)

    @property
    def byte_aligned(self) -> bool:
        return len(self.bits) % 8 == 0

    def align_payload(self) -> None:
        """The end of an SEI payload that is not byte aligned: sei_payload_bit_equal_to_one,
        then sei_payload_bit_equal_to_zero up to the byte boundary (H.274 8.2 / H.266 D.2)."""
        if not self.byte_aligned:
            self.bits.append(1)
            self.bits.extend([0] * (-len(self.bits) % 8))

    def to_bytes(self) -> bytes:
        assert self.byte_aligned, "write whole bytes"
        out = bytearray()
        for i in range(0, len(self.bits), 8):
            byte = 0
            for bit in self.bits[i:i + 8]:
                byte = (byte << 1) | bit
            out.append(byte)
        return bytes(out)


class BitReader:
    """Reads what `BitWriter` writes; StreamError (one line naming `what`) past the end."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0                 # in bits
        self.what = what

    @property
    def bits_left(self) -> int:
        return 8 * len(self.data) - self.pos

    def _bit(self) -> int:
        if self.pos >= 8 * len(self.data):
            raise StreamError(f"{self.what} is truncated (its fields run past its end)")
        bit = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return bit

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self._bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self._bit():
            zeros += 1
            if zeros > MAX_UE_LEADING_ZEROS:
                raise StreamError(f"{self.what}: an Exp-Golomb code has more than {MAX_UE_LEADING_ZEROS} "
                                  "leading zeros (corrupt)")
        return (1 << zeros) - 1 + self.u(zeros)

    def abs_sign(self) -> int:
        magnitude = self.ue()
        return -magnitude if magnitude and self.u(1) else magnitude

    def end_payload(self) -> None:
        """The payload's end: nothing, when its fields ended byte aligned, else a 1 bit and
        zero bits to the end (`BitWriter.align_payload`); StreamError for anything else."""
        if self.bits_left == 0:
            return
        if self.bits_left >= 8 or self.u(1) != 1 or self.u(self.bits_left) != 0:
            raise StreamError(f"{self.what} has data after its fields (corrupt or a different syntax)")


@dataclass(frozen=True)
class SeiMessage:
    payload_type: int
    payload: bytes


def ff_coded(value: int) -> bytes:
    """payloadType / payloadSize: 0xFF for every whole 255, then the rest (H.266 7.3.6.1)."""
    return b"\xff" * (value // 255) + bytes([value % 255])


def sei_nal(messages: list[SeiMessage], layer_id: int = 0) -> bytes:
    """One prefix SEI NAL unit (header, escaped sei_rbsp) holding `messages` in order."""
    rbsp = bytearray()
    for m in messages:
        rbsp += ff_coded(m.payload_type) + ff_coded(len(m.payload)) + m.payload
    rbsp.append(0x80)                   # rbsp_trailing_bits: rbsp_stop_one_bit, then zeros to the byte
    header = nal_header(PREFIX_SEI_NUT, layer_id)
    return header + escape(bytes(rbsp))


def read_sei_nal(nal: bytes) -> list[SeiMessage]:
    """The messages of one (prefix or suffix) SEI NAL unit, escaped as it travels; StreamError
    for bad emulation prevention, a payload size past the NAL unit, or bad trailing bits."""
    rbsp = unescape(nal[NAL_HEADER_BYTES:])
    messages, pos = [], 0

    def ff_value(what: str) -> int:
        nonlocal pos
        value = 0
        while pos < len(rbsp) and rbsp[pos] == 0xFF:
            value += 255
            pos += 1
        if pos >= len(rbsp):
            raise StreamError(f"SEI NAL unit is truncated (in a {what})")
        value += rbsp[pos]
        pos += 1
        return value

    while True:
        payload_type = ff_value("payloadType")
        size = ff_value("payloadSize")
        if pos + size > len(rbsp) - 1:         # the last byte is rbsp_trailing_bits
            raise StreamError(f"SEI message of payloadType {payload_type} claims {size} bytes, past the end of "
                              "its NAL unit")
        messages.append(SeiMessage(payload_type, bytes(rbsp[pos:pos + size])))
        pos += size
        if pos == len(rbsp) - 1:
            break
    if rbsp[pos] != 0x80:
        raise StreamError("SEI NAL unit does not end with rbsp_trailing_bits")
    return messages
