"""Loss: with 10% of the parameter packets dropped at random, the call goes on, the
receiver never decodes a frame from a broken prediction chain, and after each loss it is
back to exactly the parameters of a lossless run within one intra interval.

Two runs of the same clip with --frames N (sender and receiver as real processes): one
lossless, one with `--drop-params 0.1 --seed 7`.  The sender's levels do not depend on
what the network does, so both runs send the same levels; the receivers dump the levels
they decoded per frame number."""

from __future__ import annotations

from conftest import clip
from liveproc import Processes, read_json, read_jsonl

from codec_core.config import load_config

CLIP = "rt__3.mp4"
FRAMES = 100


def run_call(p: Processes, url: str, name: str, *sender_args: str) -> None:
    tmp = p.tmp
    p.start(f"{name}-receiver", "receiver", "--signaling", url, "--room", name, "--stats", str(tmp / f"{name}.json"),
            "--dump-levels", str(tmp / f"{name}-received.jsonl"))
    p.start(f"{name}-sender", "sender", "--signaling", url, "--room", name, "--source", str(clip(CLIP)),
            "--frames", str(FRAMES), "--dump-sent", str(tmp / f"{name}-sent.jsonl"), *sender_args)
    p.expect_ok(f"{name}-sender")
    p.expect_ok(f"{name}-receiver")


def test_ten_percent_parameter_loss(tmp_path):
    interval = load_config().intra_interval
    with Processes(tmp_path) as p:
        url = p.signaling()
        run_call(p, url, "lossless")
        run_call(p, url, "lossy", "--drop-params", "0.1", "--seed", "7")
    clean_sent, clean = read_jsonl(tmp_path / "lossless-sent.jsonl"), read_jsonl(tmp_path / "lossless-received.jsonl")
    lossy_sent, lossy = read_jsonl(tmp_path / "lossy-sent.jsonl"), read_jsonl(tmp_path / "lossy-received.jsonl")

    # the runs are comparable: same frames, same levels sent; the lossless one got everything
    assert sorted(clean_sent) == sorted(lossy_sent) == list(range(FRAMES))
    assert all(clean_sent[f]["levels"] == lossy_sent[f]["levels"] for f in range(FRAMES))
    assert sorted(clean) == list(range(FRAMES))

    dropped = sorted(f for f, r in lossy_sent.items() if r["dropped"])
    assert 4 <= len(dropped) <= 25, dropped
    assert not set(dropped) & set(lossy)

    # never a frame from a broken chain: every decoded frame is exactly the lossless one
    for f, r in lossy.items():
        assert r["levels"] == clean[f]["levels"], f"frame {f} decoded differently after a loss"

    # the call went on, and after every loss it is back within one intra interval
    assert max(lossy) >= FRAMES - 3
    recovery = []
    for f in dropped:
        back = min((g for g in lossy if g > f), default=None)
        assert back is not None and back - f <= interval, f"no decoded frame within {interval} after {f}"
        recovery.append(back - f)
    # with loss reports the sender answers with an intra packet after about one frame
    assert sorted(recovery)[len(recovery) // 2] <= 3, recovery

    stats = read_json(tmp_path / "lossy.json")
    assert stats["final"] is True
    assert stats["frames_lost"] == len(dropped)
    assert stats["loss_reports_sent"] >= 1
    assert stats["frames_rendered"] >= 0.6 * FRAMES
