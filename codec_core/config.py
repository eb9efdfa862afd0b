"""Codec configuration: dataclass schema, defaults from `defaults.yaml`, YAML overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import yaml

from codec_core.format import MAX_INTRA_INTERVAL, MAX_STEP, SIDES, STEP_NAMES

DEFAULTS = Path(__file__).resolve().parent / "defaults.yaml"
#: The crop sides a stream may have (`size`, `--size`): the format's.
SIZES = SIDES
MAX_QP = 63
#: The steps of the per-frame parameters: the ones `--quantization-factor` divides (the
#: key frame's geometry step stays).
FRAME_STEP_NAMES = tuple(name for name in STEP_NAMES if name != "geometry")


class ConfigError(Exception):
    """A configuration file or value is not valid."""


@dataclass(frozen=True)
class Steps:
    angle: float
    translation: float
    log_scale: float
    eye: float
    gaze: float
    expression: float
    geometry: float

    def values(self) -> tuple[float, ...]:
        """The steps in the order the session header carries them (format.STEP_NAMES)."""
        return tuple(getattr(self, name) for name in STEP_NAMES)

    def divided(self, factor: float) -> Steps:
        """The GFVC quantisation factor (docs/bitstream.md, "GFVC conventions"): every per-frame
        step divided by `factor` (2 halves them); the key frame's geometry step stays."""
        return replace(self, **{name: getattr(self, name) / factor for name in FRAME_STEP_NAMES})


assert tuple(f.name for f in fields(Steps)) == STEP_NAMES, "Steps must list format.STEP_NAMES in order"

@dataclass(frozen=True)
class CodecConfig:
    size: int
    keyframe_qp: int
    keyframe_max_bytes: int | None
    keyframe_preset: str
    call_keyframe_qp: int | None           # live calls: the sharp key frame's QP (None: no sharp key frame)
    call_keyframe_max_bytes: int | None    # its byte cap, picture + reference geometry (None: no limit)
    call_keyframe_preset: str              # its VVenC preset
    intra_interval: int
    hysteresis: float
    steps: Steps

    def with_overrides(self, **kw) -> CodecConfig:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def with_quantization_factor(self, factor: float | None) -> CodecConfig:
        """The per-frame steps divided by `factor` (None or 1: as they are); ConfigError when
        the factor is not positive or takes a step outside (0, format.MAX_STEP)."""
        if factor is None or factor == 1:
            return self
        if not 0 < factor < float("inf"):
            raise ConfigError(f"the quantisation factor must be a positive number, not {factor}")
        steps = self.steps.divided(factor)
        if not all(0 < np.float32(s) < MAX_STEP for s in steps.values()):  # as the header carries them
            raise ConfigError(f"quantisation factor {factor} takes a step outside (0, {MAX_STEP:g})")
        return replace(self, steps=steps)

    def to_dict(self) -> dict:
        return asdict(self)


def check_size(size: int, what: str = "--size") -> None:
    """ConfigError unless `size` is a crop side streams may have (`SIZES`)."""
    if size not in SIZES:
        raise ConfigError(f"{what} must be {' or '.join(map(str, SIZES))}, not {size}")


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = dict(base)
    for key, value in over.items():
        if key not in base:
            raise ConfigError(f"unknown configuration key {where}{key!r}")
        out[key] = _merge(base[key], value, f"{where}{key}.") if isinstance(base[key], dict) else value
    return out


def load_config(path: str | Path | None = None) -> CodecConfig:
    """Defaults, overridden by the keys present in `path`."""
    data = yaml.safe_load(DEFAULTS.read_text())
    if path is not None:
        try:
            over = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc}") from None
        if not isinstance(over, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        data = _merge(data, over)
    try:
        steps = Steps(**{f.name: float(data["steps"][f.name]) for f in fields(Steps)})
        cfg = CodecConfig(**{**data, "steps": steps})
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    check_size(cfg.size, "size")
    if cfg.call_keyframe_qp is not None and not 0 <= cfg.call_keyframe_qp <= MAX_QP:
        raise ConfigError(f"call_keyframe_qp must be in 0..{MAX_QP} or null, not {cfg.call_keyframe_qp}")
    if not 1 <= cfg.intra_interval <= MAX_INTRA_INTERVAL:
        raise ConfigError(f"intra_interval must be in 1..{MAX_INTRA_INTERVAL}, not {cfg.intra_interval}")
    if min(vars(steps).values()) <= 0:
        raise ConfigError("quantisation steps must be positive")
    return cfg
