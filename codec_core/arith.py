"""Adaptive binary arithmetic coder.

A bit-oriented integer arithmetic coder (the classic Witten-Neal-Cleary scheme with
E3 "pending bit" scaling, 32-bit state) driving binary decisions whose probabilities
adapt as they are coded.  Each `Context` keeps the probability that its next bin is 1
as a 16-bit number and moves it towards every coded value with an exponential update
whose rate slows as the context ages, so a context learns quickly and then settles.

Contexts live outside the coder: the parameter coder keeps one `ContextSet` across all
frames of a segment (no per-frame reset), and a stream may end and resume a codeword
at any bin.  `ArithmeticEncoder.finish()` terminates a codeword with at most two bits
and pads it to a whole byte; the decoder reads zeros past the end of its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATE_BITS = 32
FULL = (1 << STATE_BITS) - 1
HALF = 1 << (STATE_BITS - 1)
QUARTER = 1 << (STATE_BITS - 2)
PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS
PROB_MIN = 1 << 5  # keep both symbols codable: p in [PROB_MIN, PROB_ONE - PROB_MIN]


@dataclass
class Context:
    """Adaptive probability of a binary decision being 1.

    The update moves the probability a fraction 2**-shift towards each coded value, the
    shift growing from 1 to `MAX_SHIFT` with the number of values seen: a young context
    learns fast (close to a running count), an old one settles.
    """

    p: int = PROB_ONE // 2
    count: int = 0

    MAX_SHIFT = 6

    @property
    def p1(self) -> int:
        return min(max(self.p, PROB_MIN), PROB_ONE - PROB_MIN)

    def update(self, bit: int) -> None:
        shift = min(self.count + 1, self.MAX_SHIFT)
        target = PROB_ONE if bit else 0
        self.p += (target - self.p) >> shift
        if self.count < self.MAX_SHIFT:
            self.count += 1


@dataclass
class ContextSet:
    """A lazily grown family of contexts addressed by any hashable key."""

    contexts: dict = field(default_factory=dict)

    def __getitem__(self, key) -> Context:
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self.contexts[key] = Context()
        return ctx

    def reset(self) -> None:
        self.contexts.clear()


def _split(low: int, high: int, p1: int) -> int:
    """The last value of the '0' sub-interval: [low, mid] codes 0, [mid+1, high] codes 1."""
    span = high - low + 1
    return low + ((span * (PROB_ONE - p1)) >> PROB_BITS) - 1


class ArithmeticEncoder:
    """Writes binary decisions into a byte string."""

    def __init__(self) -> None:
        self._low = 0
        self._high = FULL
        self._pending = 0
        self._bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self._bits.append(bit)
        if self._pending:
            self._bits.extend([bit ^ 1] * self._pending)
            self._pending = 0

    def _renormalise(self) -> None:
        low, high = self._low, self._high
        while True:
            if high < HALF:
                self._emit(0)
            elif low >= HALF:
                self._emit(1)
                low -= HALF
                high -= HALF
            elif low >= QUARTER and high < HALF + QUARTER:
                self._pending += 1
                low -= QUARTER
                high -= QUARTER
            else:
                break
            low = low << 1
            high = (high << 1) | 1
        self._low, self._high = low, high

    def encode(self, bit: int, ctx: Context) -> None:
        """Code one bin with an adaptive context, then update the context."""
        mid = _split(self._low, self._high, ctx.p1)
        if bit:
            self._low = mid + 1
        else:
            self._high = mid
        ctx.update(bit)
        self._renormalise()

    def encode_bypass(self, bit: int) -> None:
        """Code one equiprobable bin (no context)."""
        mid = self._low + ((self._high - self._low + 1) >> 1) - 1
        if bit:
            self._low = mid + 1
        else:
            self._high = mid
        self._renormalise()

    def finish(self) -> bytes:
        """Terminate the codeword (at most two more bits) and return it padded to bytes."""
        # Any value in [low, high] decodes correctly; one of 01... or 10... (followed by
        # zeros, which the decoder reads past the end) lies inside, because the range
        # always spans more than a quarter.
        if self._low == 0 and self._pending == 0:
            pass  # all zeros lie in [low, high]: the implied trailing zeros suffice
        elif self._low < QUARTER:
            self._pending += 1
            self._emit(0)
        else:
            self._pending += 1
            self._emit(1)
        bits = self._bits
        while bits and bits[-1] == 0:  # trailing zeros are implied by the decoder
            bits.pop()
        out = bytearray((len(bits) + 7) // 8)
        for i, b in enumerate(bits):
            if b:
                out[i >> 3] |= 0x80 >> (i & 7)
        self._low, self._high, self._pending, self._bits = 0, FULL, 0, []
        return bytes(out)


class ArithmeticDecoder:
    """Reads binary decisions back from a byte string written by `ArithmeticEncoder`."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._nbits = len(data) * 8
        self._pos = 0
        self._low = 0
        self._high = FULL
        self._code = 0
        for _ in range(STATE_BITS):
            self._code = (self._code << 1) | self._read_bit()

    @property
    def bits_read(self) -> int:
        """Bits taken from the input so far, the implied zeros past its end included."""
        return self._pos

    def _read_bit(self) -> int:
        pos = self._pos
        self._pos += 1
        if pos >= self._nbits:
            return 0
        return (self._data[pos >> 3] >> (7 - (pos & 7))) & 1

    def _renormalise(self) -> None:
        low, high, code = self._low, self._high, self._code
        while True:
            if high < HALF:
                pass
            elif low >= HALF:
                low -= HALF
                high -= HALF
                code -= HALF
            elif low >= QUARTER and high < HALF + QUARTER:
                low -= QUARTER
                high -= QUARTER
                code -= QUARTER
            else:
                break
            low = low << 1
            high = (high << 1) | 1
            code = (code << 1) | self._read_bit()
        self._low, self._high, self._code = low, high, code

    def decode(self, ctx: Context) -> int:
        mid = _split(self._low, self._high, ctx.p1)
        if self._code <= mid:
            bit = 0
            self._high = mid
        else:
            bit = 1
            self._low = mid + 1
        ctx.update(bit)
        self._renormalise()
        return bit

    def decode_bypass(self) -> int:
        mid = self._low + ((self._high - self._low + 1) >> 1) - 1
        if self._code <= mid:
            bit = 0
            self._high = mid
        else:
            bit = 1
            self._low = mid + 1
        self._renormalise()
        return bit
