"""Measuring the voice of a received file against its source, from the file itself.

- `voice_match`: the normalised cross-correlation of the file's audio track with the
  source's (both 16 kHz mono, on their own files' timelines: time 0 is the first video
  frame), its peak and the lag of the peak (positive: the file's sound comes later).
- `mouth_lag_ms`: how much later the file's mouths move than the source's, from the
  pictures: the inner-lip gap re-detected (MediaPipe face mesh) in every frame of both,
  cross-correlated, the peak refined to a fraction of a frame.
- `av_offset_ms` = sound lag - picture lag: positive when the sound is late against the
  mouth (ITU-R BT.1359 sign).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

RATE = 16000
UPPER_LIP, LOWER_LIP = 13, 14          # inner lip midpoints of the MediaPipe face mesh
EYE_OUTER = (33, 263)                  # outer eye corners: the face's scale


def audio_track(path: Path, rate: int = RATE) -> np.ndarray:
    """The first audio track as float mono at `rate`, index 0 at the first video frame's time."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise AssertionError(f"{path} has no audio track")
        a = c.streams.audio[0]
        v = c.streams.video[0]
        v0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        parts, first = [], None
        for frame in c.decode(a):
            if first is None and frame.pts is not None:
                first = float(frame.pts * frame.time_base)
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    x = np.concatenate(parts).astype(np.float64) / 32768.0
    shift = int(round(((first or 0.0) - v0) * rate))
    return np.concatenate([np.zeros(shift), x]) if shift >= 0 else x[-shift:]


def _xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation of b against a for lags -max_lag..max_lag (b later: positive)."""
    lags = np.arange(-max_lag, max_lag + 1)
    out = np.zeros(lags.size)
    for i, lag in enumerate(lags):
        if lag >= 0:
            x, y = a[:a.size - lag] if lag else a, b[lag:]
        else:
            x, y = a[-lag:], b[:b.size + lag]
        n = min(x.size, y.size)
        x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
        d = np.sqrt((x * x).sum() * (y * y).sum())
        out[i] = (x * y).sum() / d if d > 0 else 0.0
    return lags, out


def _refine(lags: np.ndarray, c: np.ndarray) -> float:
    """The peak's lag, refined by a parabola through it and its neighbours."""
    i = int(np.argmax(c))
    if 0 < i < c.size - 1:
        den = c[i - 1] - 2 * c[i] + c[i + 1]
        if den < 0:
            return float(lags[i] + 0.5 * (c[i - 1] - c[i + 1]) / den)
    return float(lags[i])


@dataclass
class VoiceMatch:
    peak: float          # normalised cross-correlation at its peak
    lag_ms: float        # where: positive, the file's sound is later than the source's


def voice_match(received: Path, source: Path, max_lag_ms: float = 400.0) -> VoiceMatch:
    """The file's sound against the source's, both on their own video timelines, over
    the length of the received file: the waveforms' cross-correlation (by FFT), normalised
    by the energies of the overlapping parts at each lag."""
    r, s = audio_track(received), audio_track(source)
    n = min(r.size, s.size)
    r, s = r[:n] - r[:n].mean(), s[:n] - s[:n].mean()
    size = 1 << int(np.ceil(np.log2(2 * n)))
    full = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(s, size)), size)
    max_lag = int(max_lag_ms * RATE / 1000)
    lags = np.arange(-max_lag, max_lag + 1)
    raw = full[lags % size]                       # sum of r[t + lag] * s[t]
    cr, cs = np.concatenate([[0.0], np.cumsum(r * r)]), np.concatenate([[0.0], np.cumsum(s * s)])
    er = np.where(lags >= 0, cr[n] - cr[np.clip(lags, 0, n)], cr[np.clip(n + lags, 0, n)])
    es = np.where(lags >= 0, cs[np.clip(n - lags, 0, n)], cs[n] - cs[np.clip(-lags, 0, n)])
    c = raw / np.sqrt(np.maximum(er * es, 1e-12))
    return VoiceMatch(float(c.max()), _refine(lags, c) * 1000.0 / RATE)


def lip_gaps(frames: list[np.ndarray]) -> np.ndarray:
    """The inner-lip gap over the eye distance, per frame (NaN where no face is found)."""
    from models.face_tracker import FaceTracker

    out = np.full(len(frames), np.nan)
    with FaceTracker() as tracker:
        for i, frame in enumerate(frames):
            lm = tracker.detect(frame)
            if lm is None:
                continue
            gap = np.linalg.norm(lm[UPPER_LIP, :2] - lm[LOWER_LIP, :2])
            eyes = np.linalg.norm(lm[EYE_OUTER[0], :2] - lm[EYE_OUTER[1], :2])
            out[i] = gap / max(eyes, 1e-6)
    return out


def mouth_lag_ms(received_frames: list[np.ndarray], source_frames: list[np.ndarray], fps: float,
                 max_lag_frames: int = 5) -> tuple[float, float]:
    """(lag ms, peak correlation) of the received mouths against the source's."""
    a, b = lip_gaps(source_frames), lip_gaps(received_frames)
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    fill = lambda x: np.where(np.isnan(x), np.nanmean(x), x)  # noqa: E731
    lags, c = _xcorr(fill(a), fill(b), max_lag_frames)
    return _refine(lags, c) * 1000.0 / fps, float(c.max())
