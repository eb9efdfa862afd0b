"""The latency benchmark's key frame check (benchmarks/call_keyframes.py, issue 10): the
sender keeps the crop of every key frame it codes, and each key frame the receiver got is
measured against it; the first picture's delay comes from both ends' stamps, in pairs of
calls with and without the sharp key frame; the report's two acceptance lines.

No call here (the benchmark itself makes them): a real crop coded twice with VVenC, the
sender half's own crop dump, and traces made up to known numbers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import REPO, clip

from benchmarks.call_keyframes import (
    KeyframeCheckError,
    first_of,
    first_picture,
    first_picture_pairs,
    keyframe_quality,
    read_crop,
    sender_qps,
)
from benchmarks.latency import KEYFRAME_TARGETS, keyframe_acceptance
from benchmarks.metrics import psnr
from codec.encoder import CodedKeyframe
from codec_core.bitstream import Keyframe
from codec_core.keyframe import decode_keyframe, encode_keyframe
from codec_core.video import read_frames
from live.wire import pack_stream_record
from sender.half import SenderHalf, SenderOptions


def a_crop(size: int = 256) -> np.ndarray:
    """The middle square of rt__3's first frame at `size`: a real picture to code."""
    frame = next(iter(read_frames(clip("rt__3.mp4"), 1)))
    h, w = frame.shape[:2]
    side = min(h, w)
    square = frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    return np.ascontiguousarray(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def coded(key_id: int, crop: np.ndarray, qp: int) -> CodedKeyframe:
    data = encode_keyframe(crop, qp, "faster")
    record = Keyframe(key_id, 1, data, b"the same geometry")
    return CodedKeyframe(record, decode_keyframe(data), None, qp, crop, np.zeros((478, 2)))  # type: ignore[arg-type]


class FakeAnalyser:
    """What SenderHalf needs of an analyser to take a key frame and its sharp twin."""

    recropping = False

    def __init__(self, sharp: CodedKeyframe) -> None:
        self.sharp = sharp
        self.config = SimpleNamespace(intra_interval=50)
        self.format = SimpleNamespace(name="ifvc")
        self.num_values = 30

    def code_sharp(self, small: CodedKeyframe) -> Future:
        future: Future = Future()
        future.set_result(self.sharp)
        return future


def sender_keeps_crops(folder: Path, small: CodedKeyframe, sharp: CodedKeyframe) -> None:
    """A sender half with --dump-keyframe-crops takes a small key frame, then its sharp twin."""
    async def main() -> None:
        fake = FakeAnalyser(sharp)
        half = SenderHalf(SimpleNamespace(name="fake", live=True), fake,   # type: ignore[arg-type]
                          SenderOptions(dump_keyframe_crops=str(folder)))
        half._use_keyframe(small, header=False)
        for _ in range(20):
            await asyncio.sleep(0.01)
            if half._pair is not None and half._pair.sharp is not None:
                break
        assert half._pair is not None and half._pair.sharp is sharp
    asyncio.run(main())


def test_each_key_frame_the_receiver_got_is_measured_against_the_crop_the_sender_kept(tmp_path):
    crop = a_crop()
    small, sharp = coded(0, crop, 32), coded(1, crop, 22)
    crops, records = tmp_path / "crops", tmp_path / "records"
    sender_keeps_crops(crops, small, sharp)
    assert sorted(p.name for p in crops.iterdir()) == ["key-0-small-crop.png", "key-1-sharp-crop.png"]
    assert np.array_equal(read_crop(crops / "key-0-small-crop.png"), crop)        # lossless, RGB
    # the receiver's --dump-keyframes: every record as it came, in order
    records.mkdir()
    for order, (c, kind) in enumerate(((small, "small"), (sharp, "sharp")), 1):
        (records / f"{order:03d}-key-{c.record.key_id}-{kind}.bin").write_bytes(c.record.pack())

    log = ("INFO sender.analysis: key frame 0: 3037 bytes (QP 32), crop CropBox(x0=0, y0=0, size=578)\n"
           "INFO sender.half: sharp key frame 1: 7781 bytes (QP 22), same geometry as key frame 0\n")
    assert sender_qps(log) == {0: 32, 1: 22}
    distance = lambda a, b: float(np.abs(a.astype(float) - b.astype(float)).mean())   # noqa: E731
    quality = keyframe_quality(records, crops, distance, sender_qps(log))

    assert [(q.order, q.key_id, q.kind, q.qp) for q in quality] == [(1, 0, "small", 32), (2, 1, "sharp", 22)]
    got_small, got_sharp = first_of(quality, "small"), first_of(quality, "sharp")
    assert got_small is not None and got_sharp is not None
    for q, c in ((got_small, small), (got_sharp, sharp)):
        assert q.psnr_db == round(psnr(c.picture, crop), 3) and q.lpips == round(distance(c.picture, crop), 5)
        assert q.message_bytes == len(pack_stream_record(c.record)) and q.picture_bytes == len(c.record.picture)
        assert q.size == 256
    assert got_sharp.psnr_db > got_small.psnr_db and got_sharp.lpips < got_small.lpips
    assert got_sharp.same_crop_as_small is True and got_small.same_crop_as_small is None

    # a record without its crop is a one-line error, not a number
    (crops / "key-1-sharp-crop.png").unlink()
    with pytest.raises(KeyframeCheckError, match="no readable key frame crop at .*key-1-sharp-crop.png"):
        keyframe_quality(records, crops)
    assert keyframe_quality(tmp_path / "nothing", crops) == []


def test_first_picture_is_timed_from_the_first_key_frame_sent():
    sender = {"first_session_t": 1000.0, "first_keyframe_t": 3000.0}
    sent = {0: {"capture": 3040.0}, 1: {"capture": 3080.0}}
    got = {1: {"frame": 1, "ready": 3100.0}, 0: {"frame": 0, "ready": 3070.0}}
    fp = first_picture(sender, sent, got)
    assert (fp.frame, fp.after_keyframe_ms, fp.after_session_ms, fp.after_capture_ms,
            fp.capture_after_keyframe_ms) == (0, 70.0, 2070.0, 30.0, 40.0)
    assert first_picture(sender, sent, {}).after_keyframe_ms is None

    pairs = first_picture_pairs([(648.1, 56.6), (84.0, 55.0), (90.0, 60.0), (None, 50.0)])
    assert [r["extra"] for r in pairs["pairs"]] == [591.5, 29.0, 30.0, None]
    assert (pairs["with_sharp"], pairs["small_only"], pairs["extra"], pairs["extra_max"]) == (90.0, 56.6, 30.0, 591.5)


def keys(lpips: float | None, extra: float | None) -> dict:
    sharp = None if lpips is None else {"lpips": lpips}
    return {"ours_small": {"lpips": 0.026}, "ours_sharp": sharp,
            "first_picture_ms": {"pairs": [{}], "with_sharp": 150.0, "small_only": 50.0, "extra": extra,
                                 "extra_max": extra}}


@pytest.mark.parametrize(("lpips", "extra", "met"), [
    (KEYFRAME_TARGETS["sharp_lpips"], KEYFRAME_TARGETS["first_picture_extra_ms"], (True, True)),
    (0.0051, 100.1, (False, False)),
    (None, None, (False, False)),
])
def test_the_two_acceptance_lines(lpips, extra, met):
    rows = keyframe_acceptance(keys(lpips, extra))
    assert tuple(ok for _, _, _, ok in rows) == met
    assert ("no sharp key frame received" in rows[0][2]) == (lpips is None)
    assert keyframe_acceptance(None) == []


def test_first_picture_pairs_must_be_a_count():
    out = subprocess.run([sys.executable, "-m", "benchmarks.latency", "--source", "x.mp4", "--out", "x",
                          "--first-picture-pairs", "-1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--first-picture-pairs: must be 0 or more, got -1" in out.stderr
