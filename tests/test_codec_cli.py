"""The offline codec's command line on real clips: round trip, info, and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, REPO, clip

from codec_core.video import VideoWriter, read_frames


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "codec_core", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    src = clip("rt__3.mp4")
    tmp = tmp_path_factory.mktemp("codec")
    stream, crop, out = tmp / "s.fcv", tmp / "crop.mp4", tmp / "out.mp4"
    run("encode", str(src), "-o", str(stream), "--frames", "60", "--save-crop", str(crop))
    run("decode", str(stream), "-o", str(out))
    return stream, crop, out


def test_roundtrip_real_clip(encoded):
    stream, crop, out = encoded
    crops = np.stack(list(read_frames(crop)))
    decoded = np.stack(list(read_frames(out)))
    assert crops.shape == decoded.shape == (60, 256, 256, 3)
    # the synthesized video follows the real one far better than a grey picture would
    mse = ((crops.astype(float) - decoded) ** 2).mean()
    grey = ((crops.astype(float) - 128) ** 2).mean()
    assert mse < grey / 10


def test_saved_crop_is_lossless_copy_of_coded_frames(encoded):
    _, crop, _ = encoded
    frames = list(read_frames(crop))
    assert len(frames) == 60 and frames[0].shape == (256, 256, 3)


def test_info_reports_rates(encoded):
    stream, _, _ = encoded
    info = json.loads(run("info", str(stream)).stdout)
    for key in ("frames", "fps", "width", "height", "format", "keyframe_bytes", "eye_reference_bytes", "param_bytes",
                "param_kbps", "total_kbps"):
        assert key in info
    assert info["frames"] == 60 and info["width"] == info["height"] == 256
    assert 100 < info["eye_reference_bytes"] < 1000       # rt__3 blinks in its first 60 frames
    assert 0 < info["keyframe_bytes"] and info["keyframe_bytes"] + info["geometry_bytes"] <= 4000
    size = stream.stat().st_size
    assert info["total_kbps"] == pytest.approx(size * 8 / (60 / info["fps"]) / 1000, rel=1e-3)


@pytest.mark.parametrize("command", ["decode", "info"])
def test_bad_streams_give_one_line_errors(tmp_path, command, encoded):
    stream, _, _ = encoded
    data = stream.read_bytes()
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0x10
    variants = {"truncated": data[: len(data) - 7], "corrupt": bytes(corrupt), "foreign": b"\x1aE\xdf\xa3" * 64,
                "empty": b""}
    for name, blob in variants.items():
        path = tmp_path / f"{name}.fcv"
        path.write_bytes(blob)
        args = [command, str(path)] + (["-o", str(tmp_path / "o.mp4")] if command == "decode" else [])
        assert_one_line_error(run(*args, check=False))
    assert_one_line_error(run(command, str(tmp_path / "missing.fcv"),
                              *(["-o", str(tmp_path / "o.mp4")] if command == "decode" else []), check=False))


def test_a_decode_that_fails_half_way_leaves_no_video(tmp_path):
    """The fixture stream with its last parameter segment's codeword garbled (its record
    still well formed): one line, and neither a shorter video nor the one that was there
    before at the output."""
    from codec_core.bitstream import RecordType, read_records, write_file_start, write_record

    records = read_records((FIXTURES / "short.fcv").read_bytes())
    kind, payload = records[-1]
    assert kind == RecordType.PARAM_SEGMENT and len(records) > 3
    broken = tmp_path / "broken.fcv"
    broken.write_bytes(write_file_start() + b"".join(write_record(t, p) for t, p in records[:-1])
                       + write_record(kind, payload[:6] + b"\xff" * 40))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older video")
    proc = run("decode", str(broken), "-o", str(out), "--synth", "warp", check=False)
    assert_one_line_error(proc)
    assert out.read_bytes() == b"an older video" and not list(tmp_path.glob("*.partial*"))


def test_a_video_whose_frame_rate_a_stream_cannot_declare_is_refused_before_coding(tmp_path):
    src = tmp_path / "fast.mp4"
    with VideoWriter(src, 200) as w:
        for _ in range(5):
            w.write(np.full((240, 320, 3), 90, np.uint8))
    proc = run("encode", str(src), "-o", str(tmp_path / "x.fcv"), check=False)
    assert_one_line_error(proc)
    assert "frame rate, 200.00 a second, is outside the 1 to 120" in proc.stderr


def test_video_without_a_face(tmp_path):
    src = tmp_path / "noface.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(src, 25) as w:
        for _ in range(10):
            w.write(np.full((240, 320, 3), rng.integers(0, 255, 3), np.uint8))
    proc = run("encode", str(src), "-o", str(tmp_path / "x.fcv"), check=False)
    assert_one_line_error(proc)
    assert "no face" in proc.stderr


def test_not_a_video(tmp_path):
    src = tmp_path / "text.mp4"
    src.write_text("hello")
    assert_one_line_error(run("encode", str(src), "-o", str(tmp_path / "x.fcv"), check=False))


def write_clip(path, frames, black=range(0)):
    """`frames` as a 25 fps clip, those numbered in `black` blacked out (no face)."""
    with VideoWriter(path, 25) as w:
        for i, f in enumerate(frames):
            w.write(np.zeros_like(f) if i in black else f)
    return path


def test_face_leaving_mid_clip_holds_last_parameters(tmp_path):
    """Frames 10-19 hide the face: the encoder goes on, every frame is still coded."""
    frames = list(read_frames(clip("rt__3.mp4"), 30))
    src = write_clip(tmp_path / "gone.mp4", frames, black=range(10, 20))
    stream, out = tmp_path / "gone.fcv", tmp_path / "gone_out.mp4"
    proc = run("encode", str(src), "-o", str(stream))
    assert "face lost in" in proc.stderr
    run("decode", str(stream), "-o", str(out))
    decoded = list(read_frames(out))
    assert len(decoded) == 30
    # while the face is gone the picture holds still (up to the output file's H.264 coding)
    held = [np.abs(decoded[9].astype(float) - decoded[i]).mean() for i in range(10, 20)]
    moving = [np.abs(decoded[i].astype(float) - decoded[i + 1]).mean() for i in range(0, 9)]
    assert max(held) < 0.5 < max(moving)


def test_no_face_at_the_start(tmp_path):
    """Frames 0-7 show no face: the encoder waits for it instead of stopping, and those
    frames show the first face found (as frames after a loss show the last one)."""
    frames = list(read_frames(clip("rt__3.mp4"), 20))
    src = write_clip(tmp_path / "late.mp4", frames, black=range(8))
    stream, out = tmp_path / "late.fcv", tmp_path / "late_out.mp4"
    proc = run("encode", str(src), "-o", str(stream))
    assert "no face in the first 8 frames" in proc.stderr
    run("decode", str(stream), "-o", str(out))
    decoded = list(read_frames(out))
    assert len(decoded) == 20
    held = [np.abs(decoded[8].astype(float) - decoded[i]).mean() for i in range(8)]
    assert max(held) < 0.5 and decoded[0].mean() > 20       # the face, not the black frames
    blank = write_clip(tmp_path / "blank.mp4", frames[:5], black=range(5))
    proc = run("encode", str(blank), "-o", str(tmp_path / "blank.fcv"), check=False)
    assert_one_line_error(proc)
    assert "no face found in any of the video's 5 frames" in proc.stderr


def test_fixture_stream_decodes(tmp_path):
    out = tmp_path / "fixture.mp4"
    run("decode", str(FIXTURES / "short.fcv"), "-o", str(out))
    assert len(list(read_frames(out))) == 12
