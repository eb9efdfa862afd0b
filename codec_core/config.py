"""Codec configuration: dataclass schema, defaults from `defaults.yaml`, YAML overrides."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

import msgspec
import numpy as np
import yaml

from codec_core.format import FEATURE_FORMATS, MAX_INTRA_INTERVAL, MAX_STEP, SIDES, STEP_NAMES

DEFAULTS = Path(__file__).resolve().parent / "defaults.yaml"
#: The crop sides a stream may have (`size`, `--size`): the format's.
SIZES = SIDES
MAX_QP = 63
#: The steps of ifvc's per-frame parameters: the ones `--quantization-factor` divides (the
#: key frame's geometry step stays).
FRAME_STEP_NAMES = tuple(name for name in STEP_NAMES if name != "geometry")
#: `--quantization-factor F` in the GFVC software's convention (docs/bitstream.md, "GFVC
#: conventions"): a value in these units is multiplied by F and rounded, so the step of each
#: per-frame group is unit / F.  fomm's and cfte's values are dimensionless; fv2v's are taken
#: in their natural units (radians for its angles, which it sends in degrees; frame widths,
#: ln units, canonical units).  ifvc is not here: F divides its configured steps.
GFVC_UNITS: dict[str, dict[str, float]] = {
    "fomm": {"keypoint": 1.0, "jacobian": 1.0},
    "fv2v": {"angle": 180 / math.pi, "translation": 1.0, "log_scale": 1.0, "delta": 1.0},
    "cfte": {"feature": 1.0},
}


class ConfigError(Exception):
    """A configuration file or value is not valid."""


@dataclass(frozen=True)
class _FormatSteps:
    """The quantisation steps of one feature format (a dataclass whose fields are the
    format's step names, in order)."""

    def values(self) -> tuple[float, ...]:
        """The steps in the order the session header carries them (the format's step_names)."""
        return tuple(float(getattr(self, f.name)) for f in fields(self))

    def with_factor(self: S, factor: float) -> S:
        """The GFVC quantisation factor (docs/bitstream.md, "GFVC conventions"), this format's
        way: ifvc divides every per-frame step by `factor`; the others make each per-frame
        step GFVC_UNITS / factor.  The key frame's geometry step stays."""
        fmt = next(name for name, schema in STEP_SCHEMAS.items() if schema is type(self))
        units = GFVC_UNITS.get(fmt)
        frame = FEATURE_FORMATS[fmt].frame_step_names
        if units is None:
            return replace(self, **{name: getattr(self, name) / factor for name in frame})
        return replace(self, **{name: units[name] / factor for name in frame})


@dataclass(frozen=True)
class Steps(_FormatSteps):
    """ifvc's steps."""

    angle: float
    translation: float
    log_scale: float
    eye: float
    gaze: float
    expression: float
    geometry: float


@dataclass(frozen=True)
class FommSteps(_FormatSteps):
    keypoint: float
    jacobian: float
    geometry: float


@dataclass(frozen=True)
class Fv2vSteps(_FormatSteps):
    angle: float
    translation: float
    log_scale: float
    delta: float
    geometry: float


@dataclass(frozen=True)
class CfteSteps(_FormatSteps):
    feature: float
    geometry: float


@dataclass(frozen=True)
class FormatSteps:
    """Every feature format's steps (defaults.yaml `steps:`, one mapping per format)."""

    ifvc: Steps
    fomm: FommSteps
    fv2v: Fv2vSteps
    cfte: CfteSteps

    def of(self, fmt: str) -> _FormatSteps:
        return getattr(self, fmt)


STEP_SCHEMAS: dict[str, type[_FormatSteps]] = {"ifvc": Steps, "fomm": FommSteps, "fv2v": Fv2vSteps, "cfte": CfteSteps}
for _name, _schema in STEP_SCHEMAS.items():
    assert tuple(f.name for f in fields(_schema)) == FEATURE_FORMATS[_name].step_names, \
        f"{_schema.__name__} must list the steps of format {_name} in order"
assert tuple(STEP_SCHEMAS) == tuple(FEATURE_FORMATS), "one step schema per feature format"


@dataclass(frozen=True)
class CodecConfig:
    size: int
    keyframe_qp: int
    keyframe_max_bytes: int | None
    keyframe_preset: str
    call_keyframe_qp: int | None           # live calls: the sharp key frame's QP (None: no sharp key frame)
    call_keyframe_max_bytes: int | None    # its byte cap, picture + reference geometry (None: no limit)
    call_keyframe_preset: str              # its VVenC preset
    eye_reference_qp: int | None           # the EYE_REFERENCE picture's QP (None: no eye reference)
    intra_interval: int
    hysteresis: float
    global_step: float                     # the global-motion group's step, every format (docs/bitstream.md)
    format_steps: FormatSteps              # defaults.yaml `steps:`

    @property
    def steps(self) -> Steps:
        """ifvc's steps."""
        return self.format_steps.ifvc

    def steps_of(self, fmt: str) -> tuple[float, ...]:
        """Format `fmt`'s steps in the order its session header carries them."""
        return self.format_steps.of(fmt).values()

    def with_overrides(self, **kw) -> CodecConfig:
        """These settings replaced (None: kept); ConfigError for one out of its range."""
        cfg = replace(self, **{k: v for k, v in kw.items() if v is not None})
        check_config(cfg)
        return cfg

    def with_quantization_factor(self, factor: float | None, fmt: str = "ifvc") -> CodecConfig:
        """Format `fmt`'s per-frame steps under GFVC quantisation factor `factor` (None: as
        configured; see `_FormatSteps.with_factor`); ConfigError when the factor is not
        positive or takes a step outside (0, format.MAX_STEP)."""
        if factor is None or (factor == 1 and fmt not in GFVC_UNITS):
            return self
        if not 0 < factor < float("inf"):
            raise ConfigError(f"the quantisation factor must be a positive number, not {factor}")
        steps = self.format_steps.of(fmt).with_factor(factor)
        if not all(0 < np.float32(s) < MAX_STEP for s in steps.values()):  # as the header carries them
            raise ConfigError(f"quantisation factor {factor} takes a step outside (0, {MAX_STEP:g})")
        return replace(self, format_steps=replace(self.format_steps, **{fmt: steps}))  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["steps"] = data.pop("format_steps")
        return data


def check_global_step(step: float, what: str = "global_step") -> None:
    """ConfigError unless `step` lies in (0, format.MAX_STEP) as the session header carries it (float32)."""
    if not 0 < np.float32(step) < MAX_STEP:
        raise ConfigError(f"{what} must lie in (0, {MAX_STEP:g}), not {step}")


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


S = TypeVar("S", bound=_FormatSteps)


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
    try:        # the schema's types (an int is an int, not 2.5 or "27"), then the ranges
        settings = {k: v for k, v in data.items() if k != "steps"}
        cfg = msgspec.convert(settings | {"format_steps": data["steps"]}, CodecConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    check_config(cfg)
    return cfg


def check_config(cfg: CodecConfig) -> None:
    """ConfigError for a setting outside its range."""
    check_size(cfg.size, "size")
    check_global_step(cfg.global_step)
    for name in ("keyframe_qp", "call_keyframe_qp", "eye_reference_qp"):
        qp = getattr(cfg, name)
        if qp is not None and not 0 <= qp <= MAX_QP:
            raise ConfigError(f"{name} must be in 0..{MAX_QP}{'' if name == 'keyframe_qp' else ' or null'}, not {qp}")
    if not 1 <= cfg.intra_interval <= MAX_INTRA_INTERVAL:
        raise ConfigError(f"intra_interval must be in 1..{MAX_INTRA_INTERVAL}, not {cfg.intra_interval}")
    for name in STEP_SCHEMAS:
        if not all(0 < np.float32(v) < MAX_STEP for v in cfg.format_steps.of(name).values()):
            raise ConfigError(f"the quantisation steps of format {name} must lie in (0, {MAX_STEP:g})")
