"""The key frames of a benchmarked call: how close each one the receiver got is to the crop the
sender coded it from, and how soon the receiver's first picture came.

`benchmarks.latency` runs its calls with the receiver's `--dump-keyframes DIR` (every key
frame record as it came: NNN-key-ID-small|sharp.bin) and the sender's `--dump-keyframe-crops
DIR` (the captured crop of every key frame coded: key-ID-small|sharp-crop.png, lossless).
Here each record is decoded as the receiver decodes it and measured against its own crop
(PSNR, LPIPS-alex); and the first picture's delay is taken from the sender's stats and the
per-frame traces of both ends (all wall-clock ms of one machine).  docs/call.md, "Key frames:
a small one, then a sharp one", has the policy these numbers check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.metrics import psnr
from codec_core.bitstream import Keyframe, StreamError
from codec_core.keyframe import KeyframeError, decode_keyframe
from live.wire import pack_stream_record

RECORD_NAME = re.compile(r"(\d+)-key-(\d+)-(small|sharp)\.bin")
QP_LINE = re.compile(r"key frame (\d+): \d+ bytes \(QP (\d+)\)")

Distance = Callable[[np.ndarray, np.ndarray], float]


class KeyframeCheckError(ValueError):
    """The dumps of a call cannot be measured (a record without its crop, a bad file)."""


@dataclass
class KeyframeQuality:
    """One key frame as the receiver got it, against the crop the sender coded it from."""

    order: int               # the receiver's count of key frames received (1 = the first)
    key_id: int
    kind: str                # "small" or "sharp"
    message_bytes: int       # as one KEYFRAME message (what the stats count)
    picture_bytes: int       # the VVC picture alone
    qp: int | None           # from the sender's log line, None when it has none
    size: int                # side of the picture (pixels)
    psnr_db: float
    lpips: float | None      # None when no LPIPS was given
    same_crop_as_small: bool | None   # a sharp one: its crop is its small twin's, pixel for pixel


def read_crop(path: Path) -> np.ndarray:
    """An RGB crop the sender kept (PNG); KeyframeCheckError when it is missing or unreadable."""
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if picture is None:
        raise KeyframeCheckError(f"no readable key frame crop at {path}")
    return np.ascontiguousarray(picture[:, :, ::-1])


def sender_qps(log_text: str) -> dict[int, int]:
    """Key id -> QP, from the sender's "key frame ID: N bytes (QP Q)" log lines."""
    return {int(m.group(1)): int(m.group(2)) for m in QP_LINE.finditer(log_text)}


def keyframe_quality(records: Path, crops: Path, lpips: Distance | None = None,
                     qps: Mapping[int, int] | None = None) -> list[KeyframeQuality]:
    """Every key frame record the receiver kept in `records`, decoded and measured against
    its crop in `crops`, in the order they arrived."""
    files = sorted((p, RECORD_NAME.fullmatch(p.name)) for p in records.glob("*.bin")) if records.is_dir() else []
    out = []
    for path, m in files:
        if m is None:
            continue
        order, key_id, kind = int(m.group(1)), int(m.group(2)), m.group(3)
        try:
            record = Keyframe.unpack(path.read_bytes())
            picture = decode_keyframe(record.picture)
        except (OSError, StreamError, KeyframeError) as exc:
            raise KeyframeCheckError(f"cannot decode the key frame in {path}: {exc}") from None
        crop = read_crop(crops / f"key-{key_id}-{kind}-crop.png")
        if crop.shape != picture.shape:
            raise KeyframeCheckError(f"key frame {key_id}: picture {picture.shape} but crop {crop.shape}")
        same = None
        if kind == "sharp":
            twin = crops / f"key-{key_id - 1}-small-crop.png"
            same = bool(np.array_equal(read_crop(twin), crop)) if twin.is_file() else None
        out.append(KeyframeQuality(order, key_id, kind, len(pack_stream_record(record)), len(record.picture),
                                   (qps or {}).get(key_id), picture.shape[0], round(psnr(picture, crop), 3),
                                   round(lpips(picture, crop), 5) if lpips is not None else None, same))
    return out


def first_of(quality: list[KeyframeQuality], kind: str) -> KeyframeQuality | None:
    """The first key frame of that kind the receiver got."""
    return next((q for q in quality if q.kind == kind), None)


@dataclass
class FirstPicture:
    """When the receiver's first picture was ready (wall ms) and how long after what."""

    frame: int | None
    after_keyframe_ms: float | None     # the first key frame went out (session open, key frame coded)
    after_session_ms: float | None      # the sender's first session opened
    after_capture_ms: float | None      # the capture of the first frame sent (its latency, for frame 0)
    capture_after_keyframe_ms: float | None   # that capture after the first key frame went out (a file
    #                                           sender starts playing on the receiver's `ready` for it)


def first_picture(sender_stats: dict, sent: Mapping[int, dict], got: Mapping[int, dict]) -> FirstPicture:
    """From the sender's stats (first_keyframe_t, first_session_t: wall ms) and the per-frame
    traces (sender: capture; receiver: ready) of one call."""
    if not got:
        return FirstPicture(None, None, None, None, None)
    first = min(got.values(), key=lambda r: r["ready"])
    ready = float(first["ready"])

    def since(t: float | None) -> float | None:
        return round(ready - t, 1) if t is not None else None

    capture = min((r["capture"] for r in sent.values()), default=None)
    keyframe_t = sender_stats.get("first_keyframe_t")
    return FirstPicture(int(first["frame"]), since(keyframe_t), since(sender_stats.get("first_session_t")),
                        since(capture),
                        round(capture - keyframe_t, 1) if capture is not None and keyframe_t is not None else None)


def as_dicts(quality: list[KeyframeQuality]) -> list[dict]:
    return [asdict(q) for q in quality]


def first_picture_pairs(pairs: list[tuple[float | None, float | None]]) -> dict:
    """The first picture's delay (ms after the first key frame went out) of calls with the
    sharp key frame and without, in pairs: each pair's difference, and the medians over the
    pairs (a pair missing either number is left out of them)."""
    rows = [{"with_sharp": a, "small_only": b, "extra": round(a - b, 1) if a is not None and b is not None else None}
            for a, b in pairs]
    whole = [r for r in rows if r["extra"] is not None]

    def median(key: str) -> float | None:
        return round(float(np.median([r[key] for r in whole])), 1) if whole else None

    return {"pairs": rows, "with_sharp": median("with_sharp"), "small_only": median("small_only"),
            "extra": median("extra"), "extra_max": max((r["extra"] for r in whole), default=None)}
