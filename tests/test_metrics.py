"""Tests of benchmarks.metrics (PSNR, SSIM, LPIPS conformance) and benchmarks.baselines."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from benchmarks.baselines import CodedSequence, encode_hevc, encode_vvc, freeze
from benchmarks.metrics import LPIPS, PSNR_MAX, default_eval_dir, psnr, ssim

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIPS_DIR = REPO_ROOT.parent / "shared" / "data" / "clips"
EVAL_DIR = default_eval_dir()
REFERENCE_DIR = EVAL_DIR / "reference"


def _read_rgb(path: Path) -> np.ndarray:
    """A PNG as uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """img plus Gaussian noise of standard deviation sigma, clipped to uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float64) + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)


def _clip_frames(name: str, n: int, size: int = 256) -> np.ndarray:
    """The first n frames of a clip, resized to size x size, as (n, size, size, 3) uint8 RGB."""
    frames = []
    with av.open(str(CLIPS_DIR / name)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
            if len(frames) == n:
                break
    return np.stack(frames)


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    if not (EVAL_DIR / "lpips" / "alexnet_features.pth").is_file():
        pytest.skip(f"LPIPS weights not found under {EVAL_DIR} (shared/eval missing; set FACECALL_EVAL_DIR)")
    return LPIPS()


@pytest.fixture(scope="module")
def reference_images() -> dict[str, np.ndarray]:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"LPIPS reference images not found in {REFERENCE_DIR}")
    return {n: _read_rgb(REFERENCE_DIR / f"{n}.png") for n in ("ex_ref", "ex_p0", "ex_p1")}


@pytest.fixture(scope="module")
def face_image() -> np.ndarray:
    """A 256x256 face frame from a real clip (or a smooth synthetic image if none)."""
    if (CLIPS_DIR / "rt__3.mp4").is_file():
        return _clip_frames("rt__3.mp4", 1)[0]
    yy, xx = np.mgrid[0:256, 0:256]
    return np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)


def test_lpips_conformance(lpips_model: LPIPS, reference_images: dict[str, np.ndarray]) -> None:
    ref = reference_images["ex_ref"]
    assert round(lpips_model(ref, reference_images["ex_p0"]), 3) == pytest.approx(0.722)
    assert round(lpips_model(ref, reference_images["ex_p1"]), 3) == pytest.approx(0.138)


def test_lpips_identity_and_batch(lpips_model: LPIPS, face_image: np.ndarray) -> None:
    assert lpips_model(face_image, face_image) == pytest.approx(0.0, abs=1e-7)
    noisy = [_noisy(face_image, s) for s in (5.0, 20.0, 40.0)]
    a = np.stack([face_image] * 3)
    dists = lpips_model.batch(a, np.stack(noisy), batch_size=2)
    assert dists.shape == (3,)
    assert np.all(np.diff(dists) > 0), dists
    assert dists[1] == pytest.approx(lpips_model(face_image, noisy[1]), abs=1e-5)


def test_lpips_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="alexnet_features.pth"):
        LPIPS(weights_dir=tmp_path)


def test_psnr_ssim_identity(face_image: np.ndarray) -> None:
    assert psnr(face_image, face_image) == PSNR_MAX
    assert ssim(face_image, face_image) == pytest.approx(1.0, abs=1e-12)


def test_psnr_ssim_monotone_in_noise(face_image: np.ndarray) -> None:
    noisy = [_noisy(face_image, s) for s in (2.0, 8.0, 32.0)]
    psnrs = [psnr(face_image, n) for n in noisy]
    ssims = [ssim(face_image, n) for n in noisy]
    assert psnrs[0] > psnrs[1] > psnrs[2]
    assert 1.0 > ssims[0] > ssims[1] > ssims[2]
    # Gaussian noise of sigma 8 (before clipping) gives about 10 log10(255^2 / 64) = 30.1 dB.
    assert psnrs[1] == pytest.approx(30.1, abs=0.5)


def test_psnr_known_value() -> None:
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = np.full((8, 8, 3), 10, dtype=np.uint8)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255.0**2 / 100.0))


def test_freeze() -> None:
    key = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = freeze(key, 4)
    assert out.shape == (4, 2, 2, 3)
    assert all(np.array_equal(f, key) for f in out)


@pytest.mark.parametrize("encode", [encode_vvc, encode_hevc], ids=["vvc", "hevc"])
def test_baseline_codec_round_trip(encode) -> None:
    if not (CLIPS_DIR / "rt__3.mp4").is_file():
        pytest.skip(f"no test clip in {CLIPS_DIR}")
    frames = _clip_frames("rt__3.mp4", 20)
    coded: CodedSequence = encode(frames, 25.0, 32)
    assert coded.frames.shape == frames.shape
    assert coded.frames.dtype == np.uint8
    assert coded.keyframes == (0,), "low delay: only the first frame is a key frame"
    assert coded.num_bytes > 0
    assert coded.kbps == pytest.approx(8 * coded.num_bytes * 25.0 / 20 / 1000)
    mean_psnr = float(np.mean([psnr(a, b) for a, b in zip(frames, coded.frames)]))
    assert mean_psnr > 25.0, f"{coded.codec}: mean PSNR {mean_psnr:.2f} dB"


def test_the_host_is_named_by_its_cpu_model_and_cores() -> None:
    import os

    from benchmarks import host

    model = host.cpu_model()
    assert model and "\n" not in model
    assert host.describe().startswith(f"{model}, {os.cpu_count()} cores, ")
