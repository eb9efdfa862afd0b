"""Parameter coding: quantisation, prediction and binarisation onto the arithmetic coder.

Per frame, every parameter is quantised with its own step (docs/bitstream.md).  A
predicted frame codes q_t - q_{t-1} (the previous *reconstructed* frame); an intra frame
codes q_t itself.  Each integer is binarised as

    nonzero flag | sign | magnitude-1 as up to 4 unary bins | rest as Exp-Golomb (bypass)

with an adaptive context per parameter, bin and mode (intra / predicted).  Contexts are
reset at intra frames and persist over all the predicted frames between them.

The key frame's reference shape (478 canonical points) is coded once, as its difference
from the basis mean shape, each point predicted from the nearest point coded before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codec_core.arith import STATE_BITS, ArithmeticDecoder, ArithmeticEncoder, ContextSet
from codec_core.bitstream import ParamSegment
from codec_core.format import (
    EG_ORDER_GEOMETRY,
    EG_ORDER_INTRA,
    EG_ORDER_PREDICTED,
    MAX_EG_VALUE,
    MAX_LEVEL,
    MAX_SHAPE_LEVEL,
    NUM_UNARY,
)

# how far past its end a segment's codeword may be read: the decoder's look-ahead (STATE_BITS)
# and the encoder's flush; the 8226 frames of the 20 clips' streams read at most 35 bits past it
OVERRUN_BITS = 2 * STATE_BITS


class ParamDecodeError(Exception):
    """A parameter payload does not decode to valid values."""


def quantise(x: np.ndarray, step: np.ndarray, previous: np.ndarray | None = None,
             hysteresis: float = 0.0) -> np.ndarray:
    """Nearest level, except that a value stays at `previous` until the input is more than
    (0.5 + hysteresis) steps away from it: steady faces give steady parameters."""
    q = np.rint(x / step).astype(np.int64)
    if previous is not None and hysteresis > 0:
        hold = np.abs(x / step - previous) <= 0.5 + hysteresis
        q = np.where(hold, previous, q)
    return q


def dequantise(q: np.ndarray, step: np.ndarray) -> np.ndarray:
    return q * step


# -- binarisation ------------------------------------------------------------------------

def _write_exp_golomb(enc: ArithmeticEncoder, value: int, k: int) -> None:
    while value >= (1 << k):
        enc.encode_bypass(1)
        value -= 1 << k
        k += 1
    enc.encode_bypass(0)
    for i in range(k - 1, -1, -1):
        enc.encode_bypass((value >> i) & 1)


def _read_exp_golomb(dec: ArithmeticDecoder, k: int) -> int:
    value = 0
    while dec.decode_bypass():
        value += 1 << k
        k += 1
        if value > MAX_EG_VALUE:
            raise ParamDecodeError("Exp-Golomb prefix too long (corrupt payload)")
    rest = 0
    for _ in range(k):
        rest = (rest << 1) | dec.decode_bypass()
    return value + rest


def write_int(enc: ArithmeticEncoder, ctxs: ContextSet, key, value: int, eg_order: int) -> None:
    """Code one signed integer with contexts ctxs[(key, bin)]."""
    enc.encode(int(value != 0), ctxs[key, 0])
    if value == 0:
        return
    enc.encode(int(value < 0), ctxs[key, 1])
    m = abs(value) - 1
    for j in range(NUM_UNARY):
        more = int(m > j)
        enc.encode(more, ctxs[key, 2 + j])
        if not more:
            return
    _write_exp_golomb(enc, m - NUM_UNARY, eg_order)


def read_int(dec: ArithmeticDecoder, ctxs: ContextSet, key, eg_order: int) -> int:
    if not dec.decode(ctxs[key, 0]):
        return 0
    negative = dec.decode(ctxs[key, 1])
    m = 0
    for j in range(NUM_UNARY):
        if not dec.decode(ctxs[key, 2 + j]):
            break
        m += 1
    else:
        m = NUM_UNARY + _read_exp_golomb(dec, eg_order)
    value = m + 1
    return -value if negative else value


# -- parameter frames --------------------------------------------------------------------

class ParamFrameCoder:
    """State shared by encoder and decoder: the contexts and the previous reconstruction."""

    def __init__(self, num_params: int) -> None:
        self.num_params = num_params
        self.contexts = ContextSet()
        self.previous: np.ndarray | None = None

    def start_intra(self) -> None:
        self.contexts.reset()


class ParamFrameEncoder(ParamFrameCoder):
    def encode(self, enc: ArithmeticEncoder, q: np.ndarray, intra: bool) -> None:
        if intra:
            self.start_intra()
        elif self.previous is None:
            raise ValueError("the first parameter frame must be intra")
        pred = np.zeros_like(q) if intra else self.previous
        mode, order = ("i", EG_ORDER_INTRA) if intra else ("p", EG_ORDER_PREDICTED)
        for i, r in enumerate((q - pred).tolist()):
            write_int(enc, self.contexts, (mode, i), r, order)
        self.previous = q.copy()


class ParamFrameDecoder(ParamFrameCoder):
    def decode(self, dec: ArithmeticDecoder, intra: bool) -> np.ndarray:
        if intra:
            self.start_intra()
        elif self.previous is None:
            raise ParamDecodeError("a predicted parameter frame arrived before any intra frame")
        mode, order = ("i", EG_ORDER_INTRA) if intra else ("p", EG_ORDER_PREDICTED)
        r = np.array([read_int(dec, self.contexts, (mode, i), order) for i in range(self.num_params)], dtype=np.int64)
        q = r if self.previous is None or intra else self.previous + r
        self.previous = q.copy()
        return q


def check_levels(levels: np.ndarray) -> np.ndarray:
    """`levels` as they are, or ParamDecodeError when they are beyond any face (corrupt input)."""
    if np.abs(levels).max(initial=0) > MAX_LEVEL:
        raise ParamDecodeError("parameter values out of range (corrupt payload)")
    return levels


# -- parameter segments (stream files) ----------------------------------------------------

def encode_segment(levels: Sequence[np.ndarray], num_params: int) -> bytes:
    """Frames of `num_params` levels as one PARAM_SEGMENT codeword: the first intra, the
    others predicted."""
    coder, enc = ParamFrameEncoder(num_params), ArithmeticEncoder()
    for i, q in enumerate(levels):
        coder.encode(enc, q, intra=(i == 0))
    return enc.finish()


def decode_segment(segment: ParamSegment, num_params: int) -> list[np.ndarray]:
    """The levels of every frame of a PARAM_SEGMENT; ParamDecodeError when they are beyond
    any face, or when the codeword ran out OVERRUN_BITS before its last frame (corrupt input:
    a few bytes that declare a thousand frames are refused at once, not decoded from zeros)."""
    coder, dec = ParamFrameDecoder(num_params), ArithmeticDecoder(segment.payload)
    end, frames = 8 * len(segment.payload) + OVERRUN_BITS, []
    for i in range(segment.frame_count):
        frames.append(check_levels(coder.decode(dec, intra=(i == 0))))
        if dec.bits_read > end:
            raise ParamDecodeError(f"the segment's codeword ends before its {segment.frame_count} frames "
                                   "(corrupt payload)")
    return frames


# -- reference geometry ------------------------------------------------------------------

def encode_geometry(enc: ArithmeticEncoder, q: np.ndarray, predictors: np.ndarray) -> None:
    """Quantised (478, 3) differences from the mean shape."""
    ctxs = ContextSet()
    for i in range(len(q)):
        base = q[predictors[i]] if predictors[i] >= 0 else np.zeros(3, np.int64)
        for axis in range(3):
            write_int(enc, ctxs, ("g", axis), int(q[i, axis] - base[axis]), EG_ORDER_GEOMETRY)


def decode_geometry(dec: ArithmeticDecoder, predictors: np.ndarray) -> np.ndarray:
    """The (len(predictors), 3) levels; ParamDecodeError as soon as one is beyond
    MAX_SHAPE_LEVEL (corrupt input: no need to read the rest)."""
    ctxs = ContextSet()
    q = [[0, 0, 0] for _ in range(len(predictors))]
    for i, p in enumerate(predictors.tolist()):
        base = q[p] if p >= 0 else [0, 0, 0]
        for axis in range(3):
            level = base[axis] + read_int(dec, ctxs, ("g", axis), EG_ORDER_GEOMETRY)
            if abs(level) > MAX_SHAPE_LEVEL:
                raise ParamDecodeError("reference geometry is corrupt (a shape level is out of range)")
            q[i][axis] = level
    return np.array(q, np.int64).reshape(len(predictors), 3)


# -- live packets ------------------------------------------------------------------------

class PacketParamEncoder(ParamFrameEncoder):
    """Live mode: every frame is its own terminated codeword (one data-channel packet);
    contexts and prediction still run on from frame to frame until the next intra frame."""

    def encode_packet(self, q: np.ndarray, intra: bool) -> bytes:
        enc = ArithmeticEncoder()
        self.encode(enc, q, intra)
        return enc.finish()


class PacketParamDecoder(ParamFrameDecoder):
    def decode_packet(self, payload: bytes, intra: bool) -> np.ndarray:
        return self.decode(ArithmeticDecoder(payload), intra)
