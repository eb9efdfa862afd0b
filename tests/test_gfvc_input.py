"""The GFVC software's input and option conventions for `encode` (docs/bitstream.md, "GFVC conventions").

Raw RGB 4:4:4 sequences named `NAME_WxH_FPS_8bit_444.rgb` (planar: R, G, B planes per frame),
`--no-crop` for pre-cropped 256x256 input, `--iframe-qp` (= `--qp`) and `--quantization-factor`.
Fixtures are made in tmp_path from the 256x256 clips dpe__d (25 fps) and iplap__129 (30 fps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import clip, one_line_error

from codec.cli import main
from codec.decoder import decode_segment, read_stream, stream_info
from codec_core.config import FRAME_STEP_NAMES, load_config
from codec_core.format import STEP_NAMES
from codec_core.keyframe import decode_keyframe
from codec_core.reference import ReferenceGeometry
from codec_core.video import RawLayout, read_frames, read_raw_frames, write_raw_frames

DPE_FRAMES = 16
IPLAP_FRAMES = 8


def run(*args: str) -> None:
    """The command line, in process (tests/test_codec_cli.py runs it as a process)."""
    assert main(list(args)) == 0


def make_raw(mp4: Path, directory: Path, name: str, fps: int, frames: int) -> Path:
    """The first `frames` frames of `mp4`, as decoded, written as a GFVC raw sequence."""
    pictures = list(read_frames(mp4, frames))
    h, w = pictures[0].shape[:2]
    path = directory / RawLayout(w, h, fps).file_name(name)
    assert write_raw_frames(path, pictures) == frames
    return path


def levels_of(stream: Path) -> list[np.ndarray]:
    parsed = read_stream(stream)
    return [q for seg in parsed.segments for q in decode_segment(seg, parsed.header.values_per_frame)]



@pytest.fixture(scope="module")
def dpe(tmp_path_factory):
    """dpe__d: its first frames as a raw sequence, coded from it and from the mp4 with --no-crop,
    and from the raw sequence again at quantisation factor 2."""
    mp4 = clip("dpe__d.mp4")
    tmp = tmp_path_factory.mktemp("gfvc")
    raw = make_raw(mp4, tmp, "dpe__d", 25, DPE_FRAMES)
    streams = {"raw": tmp / "raw.fcv", "mp4": tmp / "mp4.fcv", "raw_q2": tmp / "raw_q2.fcv"}
    run("encode", str(raw), "-o", str(streams["raw"]), "--no-crop")
    run("encode", str(mp4), "-o", str(streams["mp4"]), "--no-crop", "--frames", str(DPE_FRAMES))
    run("encode", str(raw), "-o", str(streams["raw_q2"]), "--no-crop", "--quantization-factor", "2")
    return mp4, raw, streams


def test_raw_layout_is_planar_rgb(tmp_path):
    """Each frame on disk is the R plane, then G, then B, each W*H bytes row by row (GFVC's
    RawReader_planar); reading gives back the H x W x 3 pictures."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(2)]
    path = tmp_path / "t_6x4_25_8bit_444.rgb"
    write_raw_frames(path, frames)
    data = np.frombuffer(path.read_bytes(), np.uint8)
    assert data.size == 2 * 3 * 4 * 6
    assert np.array_equal(data[:24].reshape(4, 6), frames[0][..., 0])        # frame 0, R plane
    assert np.array_equal(data[24:48].reshape(4, 6), frames[0][..., 1])      # G
    assert np.array_equal(data[72 + 48:].reshape(4, 6), frames[1][..., 2])   # frame 1, B plane
    back = list(read_raw_frames(path))
    assert len(back) == 2 and all(np.array_equal(a, b) for a, b in zip(back, frames, strict=True))
    assert len(list(read_raw_frames(path, max_frames=1))) == 1


def test_raw_sequence_codes_like_the_mp4(dpe):
    """The same frames from the .rgb file and from the mp4 (--no-crop both): the same stream,
    hence the same key frame bytes and parameter levels; size and rate come from the name."""
    _, _, streams = dpe
    a, b = read_stream(streams["raw"]), read_stream(streams["mp4"])
    assert (a.header.width, a.header.height, a.header.fps, a.frame_count) == (256, 256, 25, DPE_FRAMES)
    assert a.keyframe.picture == b.keyframe.picture and a.keyframe.geometry == b.keyframe.geometry
    assert all(np.array_equal(x, y) for x, y in zip(levels_of(streams["raw"]), levels_of(streams["mp4"]),
                                                    strict=True))
    assert streams["raw"].read_bytes() == streams["mp4"].read_bytes()


def key_psnr(stream: Path, picture: np.ndarray) -> float:
    """PSNR of a stream's decoded key frame against `picture`."""
    key = decode_keyframe(read_stream(stream).keyframe.picture).astype(np.float64)
    return float(10 * np.log10(255 ** 2 / ((key - picture) ** 2).mean()))


def test_no_crop_keeps_the_whole_picture(tmp_path):
    """A 256x256 picture with a small face in the middle: without --no-crop the encoder crops
    around the face and scales it up; with it, the key frame is the picture itself (VVC at
    QP 32), and the stream decodes to whole frames."""
    import cv2

    small = [np.pad(cv2.resize(f, (144, 144), interpolation=cv2.INTER_AREA), ((56, 56), (56, 56), (0, 0)),
                    mode="edge") for f in read_frames(clip("dpe__d.mp4"), 3)]
    raw = tmp_path / RawLayout(256, 256, 25).file_name("small")
    write_raw_frames(raw, small)
    run("encode", str(raw), "-o", str(tmp_path / "crop.fcv"))
    run("encode", str(raw), "-o", str(tmp_path / "whole.fcv"), "--no-crop")
    assert key_psnr(tmp_path / "whole.fcv", small[0]) > 35
    assert key_psnr(tmp_path / "crop.fcv", small[0]) < 20
    run("decode", str(tmp_path / "whole.fcv"), "-o", str(tmp_path / "dec.mp4"))
    decoded = list(read_frames(tmp_path / "dec.mp4"))
    assert len(decoded) == 3 and decoded[0].shape == (256, 256, 3)


def test_iplap_30fps_raw_sequence(tmp_path, capsys):
    """A second clip at 30 fps: the rate comes from the name; .rgb and mp4 give the same stream."""
    mp4 = clip("iplap__129.mp4")
    raw = make_raw(mp4, tmp_path, "iplap__129", 30, IPLAP_FRAMES)
    run("encode", str(raw), "-o", str(tmp_path / "raw.fcv"), "--no-crop", "--iframe-qp", "30")
    run("encode", str(mp4), "-o", str(tmp_path / "mp4.fcv"), "--no-crop", "--qp", "30", "--frames", str(IPLAP_FRAMES))
    capsys.readouterr()
    run("info", str(tmp_path / "raw.fcv"))
    info = json.loads(capsys.readouterr().out)
    assert (info["fps"], info["frames"], info["width"]) == (30, IPLAP_FRAMES, 256)
    assert (tmp_path / "raw.fcv").read_bytes() == (tmp_path / "mp4.fcv").read_bytes()
    assert levels_of(tmp_path / "raw.fcv")[0].shape == (34,)      # ifvc 30, then the global motion


def test_quantization_factor_halves_the_steps(dpe):
    """Factor 2 halves the six per-frame steps (the geometry step stays), costs more parameter
    bits, keeps the key frame, and the decoder gets exactly the encoder's levels."""
    from codec.encoder import encode_video
    from models.face_model import FaceBasis

    _, raw, streams = dpe
    one, two = read_stream(streams["raw"]), read_stream(streams["raw_q2"])
    for name, s1, s2 in zip(STEP_NAMES, one.header.steps, two.header.steps, strict=True):
        assert s2 == pytest.approx(s1 / 2 if name in FRAME_STEP_NAMES else s1, rel=1e-6), name
    # the same key frame picture and reference shape; its pose levels are per-frame levels, twice as fine
    assert one.keyframe.picture == two.keyframe.picture
    mean = FaceBasis.load().mean
    g1, g2 = (ReferenceGeometry.unpack(s.keyframe.geometry, mean) for s in (one, two))
    assert np.array_equal(g1.shape_levels, g2.shape_levels)
    assert np.abs(g2.pose_levels - 2 * g1.pose_levels).max() <= 1
    rate = [stream_info(read_stream(streams[k]))["param_kbps"] for k in ("raw", "raw_q2")]
    assert rate[1] > rate[0] * 1.2, rate
    # the encoder's own reconstruction, in process, is what the decoder reads back, bit for bit
    again = raw.parent / "again.fcv"
    res = encode_video(raw, again, load_config().with_quantization_factor(2), FaceBasis.load(), no_crop=True)
    assert again.read_bytes() == streams["raw_q2"].read_bytes()
    decoded = levels_of(streams["raw_q2"])
    assert len(decoded) == len(res.levels) == DPE_FRAMES
    assert all(np.array_equal(d, e) for d, e in zip(decoded, res.levels, strict=True))
    # the same motion, in twice as many levels
    l1, l2 = np.stack(levels_of(streams["raw"])), np.stack(decoded)
    assert np.abs(l2).sum() > 1.5 * np.abs(l1).sum()


@pytest.mark.parametrize("name, size, frames, extra, words", [
    ("seq_256x256_25_8bit_444.rgb", (256, 256), 1.5, [], "not a whole number"),     # truncated
    ("seq_256x256_25_8bit_444.rgb", (256, 256), 0, [], "not a whole number"),       # empty
    ("seq_256x256.rgb", (256, 256), 1, [], "must be named"),                         # no rate in the name
    ("seq_256x256_0_8bit_444.rgb", (256, 256), 1, [], "of 0"),
    ("seq_320x240_25_8bit_444.rgb", (240, 320), 1, ["--no-crop"], "--no-crop needs pictures of 256x256"),
    ("seq_512x512_25_8bit_444.rgb", (512, 512), 1, ["--no-crop"], "--no-crop needs pictures of 256x256"),
    ("seq_256x256_25_8bit_444.rgb", (256, 256), 1, ["--no-crop", "--size", "512"], "needs pictures of 512x512"),
    ("seq_256x256_25_8bit_444.rgb", (256, 256), 1, ["--quantization-factor", "0"], "positive number"),
    ("seq_256x256_25_8bit_444.rgb", (256, 256), 1, ["--quantization-factor", "1e-9"], "outside"),
])
def test_bad_input_is_one_line_error(tmp_path, capsys, name, size, frames, extra, words):
    h, w = size
    path = tmp_path / name
    path.write_bytes(bytes(int(frames * 3 * w * h)))
    error = one_line_error(["encode", str(path), "-o", str(tmp_path / "s.fcv"), *extra], capsys)
    assert words in error, error
    assert not (tmp_path / "s.fcv").exists()


def test_too_fine_a_factor_is_refused(tmp_path, capsys):
    """A factor so large that a level passes the format's bounds is refused at the key frame,
    not written as a stream every decoder would call corrupt."""
    raw = make_raw(clip("dpe__d.mp4"), tmp_path, "dpe__d", 25, 1)
    error = one_line_error(["encode", str(raw), "-o", str(tmp_path / "s.fcv"), "--no-crop",
                            "--quantization-factor", "1000"], capsys)
    assert "too fine" in error and "--quantization-factor" in error, error
    assert not (tmp_path / "s.fcv").exists()


def test_no_crop_is_refused_on_a_non_square_video(tmp_path, capsys):
    """--no-crop on an ordinary (non-square) video file: one line, before any coding."""
    from codec_core.video import VideoWriter

    src = tmp_path / "wide.mp4"
    with VideoWriter(src, 25) as writer:
        for _ in range(3):
            writer.write(np.full((240, 320, 3), 128, np.uint8))
    error = one_line_error(["encode", str(src), "-o", str(tmp_path / "s.fcv"), "--no-crop"], capsys)
    assert "--no-crop needs pictures of 256x256" in error and "320x240" in error, error
