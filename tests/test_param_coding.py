"""Quantisation, prediction and parameter frame coding."""

import numpy as np
import pytest

from codec_core.arith import ArithmeticDecoder, ArithmeticEncoder
from codec_core.config import load_config
from codec_core.format import step_vector
from codec_core.param_coding import (
    PacketParamDecoder,
    PacketParamEncoder,
    ParamDecodeError,
    ParamFrameDecoder,
    ParamFrameEncoder,
    dequantise,
    quantise,
)


def test_quantise_error_within_half_step():
    rng = np.random.default_rng(0)
    step = step_vector(load_config().steps.values(), 30)
    x = rng.normal(size=(100, 30)) * 5
    for row in x:
        err = np.abs(dequantise(quantise(row, step), step) - row)
        assert (err <= step / 2 + 1e-12).all()


def test_hysteresis_holds_small_changes_and_follows_large_ones():
    step = np.full(3, 1.0)
    prev = np.array([0, 0, 0])
    q = quantise(np.array([0.9, -0.95, 1.1]), step, prev, hysteresis=0.5)
    assert q.tolist() == [0, 0, 1]
    # without a previous value it is plain rounding
    assert quantise(np.array([0.9, -0.95, 1.1]), step).tolist() == [1, -1, 1]


def test_steps_follow_the_configuration():
    s = load_config().steps
    v = step_vector(s.values(), 14)
    f32 = lambda x: float(np.float32(x))  # noqa: E731  (steps travel as float32 in the header)
    assert v[0] == f32(s.angle) and v[3] == f32(s.translation) and v[5] == f32(s.log_scale)
    assert v[6] == f32(s.eye) and v[8] == f32(s.gaze) and (v[10:] == f32(s.expression)).all()


def _levels(n, k, seed=0):
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.integers(-2, 3, size=(n, k)), axis=0)
    walk[n // 2, 0] += 10_000  # a big jump exercises the Exp-Golomb escape
    return walk.astype(np.int64)


def test_segment_roundtrip_with_periodic_intra():
    levels = _levels(120, 30)
    enc, coder = ArithmeticEncoder(), ParamFrameEncoder(30)
    for i, q in enumerate(levels):
        coder.encode(enc, q, intra=(i % 25 == 0))
    dec, dcoder = ArithmeticDecoder(enc.finish()), ParamFrameDecoder(30)
    out = [dcoder.decode(dec, intra=(i % 25 == 0)) for i in range(len(levels))]
    assert np.array_equal(np.array(out), levels)


def test_still_frames_cost_almost_nothing():
    levels = np.tile(np.arange(30), (200, 1))
    enc, coder = ArithmeticEncoder(), ParamFrameEncoder(30)
    for i, q in enumerate(levels):
        coder.encode(enc, q, intra=(i == 0))
    assert len(enc.finish()) < 60  # the intra frame plus ~0 for 199 unchanged frames


def test_packets_roundtrip_and_recover_at_intra_after_loss():
    levels = _levels(60, 20, seed=2)
    intra = [i % 20 == 0 or i == 33 for i in range(60)]
    enc = PacketParamEncoder(20)
    packets = [enc.encode_packet(q, f) for q, f in zip(levels, intra)]
    dec = PacketParamDecoder(20)
    for i, (p, f) in enumerate(zip(packets, intra)):
        assert np.array_equal(dec.decode_packet(p, f), levels[i])
    # lose packet 30: frames until the next intra (33) cannot be trusted; 33.. decode exactly
    dec = PacketParamDecoder(20)
    for i in range(30):
        dec.decode_packet(packets[i], intra[i])
    for i in range(33, 60):
        assert np.array_equal(dec.decode_packet(packets[i], intra[i]), levels[i])


def test_predicted_frame_before_intra_is_refused():
    with pytest.raises(ParamDecodeError):
        PacketParamDecoder(5).decode_packet(b"\x00", intra=False)


def test_a_segment_whose_codeword_runs_out_long_before_its_frames_is_refused():
    """Two bytes that declare 1000 frames: refused once the decoder reads OVERRUN_BITS past
    the codeword, not decoded frame by frame from implied zeros (a 2 KB stream of such
    segments took seconds of `info`); a real segment still decodes to its last frame."""
    from codec_core.bitstream import ParamSegment
    from codec_core.param_coding import ParamDecodeError, decode_segment, encode_segment

    with pytest.raises(ParamDecodeError, match="ends before its 1000 frames"):
        decode_segment(ParamSegment(0, 1000, b"\x00\x01"), 34)
    levels = [np.full(34, i % 3, np.int64) for i in range(50)]
    payload = encode_segment(levels, 34)
    assert all(np.array_equal(a, b) for a, b in zip(decode_segment(ParamSegment(0, 50, payload), 34), levels))
