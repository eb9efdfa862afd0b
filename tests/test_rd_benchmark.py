"""End-to-end smoke test of the rate-distortion benchmark (benchmarks.rd) on one short clip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
CLIP = DATA_DIR / "clips" / "pcavs__Pose_Source_00067.mp4"
LPIPS_DIR = REPO_ROOT.parent / "shared" / "eval" / "lpips"

pytestmark = [
    pytest.mark.skipif(not CLIP.is_file(),
                       reason=f"test clip missing: {CLIP} (../shared/data is not beside the checkout)"),
    pytest.mark.skipif(not LPIPS_DIR.is_dir(), reason=f"LPIPS weights missing: {LPIPS_DIR}"),
]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_rd_benchmark_one_short_clip(tmp_path):
    from benchmarks.rd import main

    out = tmp_path / "rd"
    rc = main([str(CLIP), "--out", str(out), "--frames", "30", "--vvc-qps", "44", "54", "--hevc-qps", "44", "51"])
    assert rc == 0
    for name in ("report.md", "results.json", "rd.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["clips_ok"] == 1
    (clip,) = data["clips"]
    assert clip["status"] == "ok", clip.get("error") or clip.get("problems")
    assert clip["frames"] == 30
    ours, frz = clip["ours"], clip["freeze"]
    for key in ("lpips", "psnr", "ssim", "total_kbps", "param_kbps", "keyframe_bytes", "encode_fps", "decode_fps"):
        assert _number(ours[key]), key
    for key in ("lpips", "psnr", "ssim", "kbps"):
        assert _number(frz[key]), key
    assert [p["qp"] for p in clip["vvc"]] == [44, 54]
    assert [p["qp"] for p in clip["hevc"]] == [44, 51]
    for p in clip["vvc"] + clip["hevc"]:
        assert all(_number(p[k]) for k in ("kbps", "lpips", "psnr", "ssim")), p
    for codec in ("vvc", "hevc"):
        assert _number(clip[f"{codec}_match"]["ratio"])
    assert _number(ours["face"]["pose_err_median_deg"])
    assert _number(ours["face"]["landmark_err_mean"])
    assert _number(frz["face"]["landmark_err_mean"])
    assert clip["vvc_nearest"]["qp"] in (44, 54)
    assert "| criterion |" in (out / "report.md").read_text()

    # both synthesizers by default, on the same stream: v1 as "ours", v2 beside it with its own numbers
    assert ours["synth"] == "warp" and list(clip["synths"]) == ["learned"]
    v2 = clip["synths"]["learned"]
    for key in ("lpips", "psnr", "ssim", "decode_fps"):
        assert _number(v2[key]), key
    assert _number(v2["face"]["pose_err_median_deg"])
    assert v2["lpips_frames"] != ours["lpips_frames"]          # decoded by a different synthesizer
    for codec in ("vvc", "hevc"):
        assert _number(v2[f"{codec}_match"]["ratio"])
    assert clip["frame_counts"]["decoded_learned"] == clip["frame_counts"]["decoded"]
    side = data["summary"]["synths"]
    assert list(side) == ["warp", "learned"]
    assert side["learned"]["lpips_median"] == pytest.approx(v2["lpips"])
    assert side["warp"]["lpips_median"] == pytest.approx(ours["lpips"])
    assert side["learned"]["below_first"] == int(v2["lpips"] < ours["lpips"])
    report = (out / "report.md").read_text()
    assert "## Synthesizers side by side" in report
    assert "| Synthesizer learned (v2): LPIPS median" in report and "| learned (v2) |" in report

    # --rebuild redoes the report from results.json alone
    (out / "report.md").unlink()
    assert main(["--out", str(out), "--rebuild"]) == 0
    assert "rebuilt from results.json" in (out / "report.md").read_text()
    again = json.loads((out / "results.json").read_text())
    assert again["clips"][0]["vvc_match"] == clip["vvc_match"]
    assert again["clips"][0]["synths"]["learned"]["vvc_match"] == v2["vvc_match"]
    assert again["summary"]["synths"] == data["summary"]["synths"]
    assert _number(again["clips"][0]["vvc_match_freeze"]["ratio"])


def test_one_synthesizer_has_no_side_by_side(tmp_path):
    """--synths with one name: it is 'ours', nothing beside it (and old results read the same way)."""
    from benchmarks.rd import main

    out = tmp_path / "rd"
    rc = main([str(CLIP), "--out", str(out), "--frames", "10", "--vvc-qps", "54", "--hevc-qps", "51",
               "--synths", "learned"])
    assert rc == 0
    (clip,) = json.loads((out / "results.json").read_text())["clips"]
    assert clip["ours"]["synth"] == "learned" and clip["synths"] == {}
    assert "side by side" not in (out / "report.md").read_text()


def test_rate_to_match():
    from benchmarks.rd import FLAG_AT_LOWEST, FLAG_BEYOND_HIGHEST, FLAG_INTERPOLATED, rate_to_match

    pts = [{"kbps": 40.0, "lpips": 0.05}, {"kbps": 10.0, "lpips": 0.15}, {"kbps": 20.0, "lpips": 0.10}]
    rate, flag = rate_to_match(pts, 0.125)   # halfway between 10 and 20 kbps in LPIPS: geometric mean
    assert flag == FLAG_INTERPOLATED and rate == pytest.approx(math.sqrt(10.0 * 20.0))
    assert rate_to_match(pts, 0.10) == (pytest.approx(20.0), FLAG_INTERPOLATED)
    assert rate_to_match(pts, 0.20) == (10.0, FLAG_AT_LOWEST)
    assert rate_to_match(pts, 0.01) == (40.0, FLAG_BEYOND_HIGHEST)
