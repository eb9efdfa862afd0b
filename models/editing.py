"""Named edit controls, applied to decoded parameter vectors before synthesis.

One module for every front end: the command line (`python -m codec_core decode STREAM
-o OUT.mp4 --edit yaw=15 --edit smile=0.8`), the receiver's window (keyboard) and the
browser (sliders, sending `{"type": "edit", "values": {...}}` on the control channel).
The controls, their ranges and meanings are the table `CONTROLS` (docs/editing.md).

Pose and eye controls act on their own parameters.  The expression controls (smile,
jaw_open, brow_raise) act through directions in expression-coefficient space that
`ExpressionEditor` derives from geometry, not by hand: a few geometric features of the
canonical face (lip gap, mouth width, corner lift, brow height, eye openness, all in
face heights or eye widths) are linearised with respect to the coefficients (exact for
the linear ones: the canonical shape is the reference plus `coeffs @ basis.expression`),
and each control's direction is the most plausible coefficient change that moves its
own features by the stated amount while holding the other features still: the minimum
of sum((dc / std)^2), i.e.  dc = S J^T (J S J^T)^-1 df  with S = diag(expression_std^2).

    editor = ExpressionEditor.from_model(reference.face_model())
    edits = Edits.parse(["yaw=15", "smile=0.8"])
    frame = synth.render(apply_edits(params, edits, editor))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from models.face_model import (CHIN, FOREHEAD, I_EYE_L, I_EYE_R, I_GAZE_X, I_GAZE_Y, I_PITCH, I_ROLL, I_SCALE,
                               I_TX, I_TY, I_YAW, LEFT_EYE_CORNERS, LOWER_LIP_INNER, MOUTH_CORNERS, NUM_FIXED,
                               RIGHT_EYE_CORNERS, UPPER_LIP_INNER, FaceBasis, FaceModel, eye_measures)


class EditError(ValueError):
    """An edit names an unknown control or a value outside its range."""


@dataclass(frozen=True)
class Control:
    name: str
    minimum: float
    maximum: float
    default: float | None    # None: an override that is off unless set
    unit: str
    meaning: str


# What "1" means for the expression controls (in face heights: forehead 10 to chin 152
# of the key frame's canonical shape) and for gaze (in eye widths).
JAW_OPEN_GAP = 0.15          # jaw_open=1: inner lip gap (13-14) opens by this
SMILE_WIDTH = 0.06           # smile=1: mouth corners (61-291) this much further apart
SMILE_LIFT = 0.03            # smile=1: corners this much higher relative to the lip centre
BROW_LIFT = 0.04             # brow_raise=1: brows this much higher above the eye corners
GAZE_X_RANGE = 0.20          # gaze_x=1: iris this many eye widths towards the picture's right
GAZE_Y_RANGE = 0.10          # gaze_y=1: iris this many eye widths down

CONTROLS: tuple[Control, ...] = (
    Control("yaw", -30.0, 30.0, 0.0, "degrees",
            "turn the head about the vertical axis, added to the decoded yaw; positive turns the face "
            "towards the picture's left (the subject's own right)"),
    Control("pitch", -20.0, 20.0, 0.0, "degrees",
            "nod about the horizontal axis, added to the decoded pitch; positive tips the nose down"),
    Control("roll", -30.0, 30.0, 0.0, "degrees",
            "tilt in the picture plane, added to the decoded roll; positive turns the head clockwise "
            "as seen in the picture"),
    Control("tx", -0.25, 0.25, 0.0, "frame widths",
            "move the head sideways, added to the decoded position; positive moves right"),
    Control("ty", -0.25, 0.25, 0.0, "frame widths",
            "move the head vertically, added to the decoded position; positive moves down"),
    Control("scale", 0.5, 2.0, 1.0, "factor",
            "multiply the face size (log(scale) is added to the decoded log_scale); 1 leaves it"),
    Control("blink", 0.0, 1.0, 0.0, "fraction",
            "close both eyes by this fraction of their openness; 1 shuts them"),
    Control("blink_left", 0.0, 1.0, 0.0, "fraction",
            "close the subject's own left eye (on the picture's right) by this fraction; combines with "
            "blink as 1 - (1 - blink)(1 - blink_left)"),
    Control("blink_right", 0.0, 1.0, 0.0, "fraction",
            "close the subject's own right eye (on the picture's left) by this fraction; combines with "
            "blink as 1 - (1 - blink)(1 - blink_right)"),
    Control("eyes_open", 0.0, 1.0, 0.0, "fraction",
            "hold the eyes open at the key frame's openness: each eye's decoded openness moves this "
            "fraction of the way there (1 = held, natural blinks vanish); applied before the blink controls"),
    Control("eye_openness", 0.0, 0.5, None, "eye widths",
            "absolute override (off unless set): both eyes at this openness (lid gap over eye width: about "
            "0.3 open, 0 shut) whatever was decoded; replaces eyes_open; applied before the blink controls"),
    Control("gaze_x", -1.0, 1.0, 0.0, f"{GAZE_X_RANGE:g} eye widths",
            f"look sideways: the irises move gaze_x * {GAZE_X_RANGE:g} eye widths, positive towards the "
            "picture's right, added to the decoded gaze"),
    Control("gaze_y", -1.0, 1.0, 0.0, f"{GAZE_Y_RANGE:g} eye widths",
            f"look up or down: the irises move gaze_y * {GAZE_Y_RANGE:g} eye widths, positive down, added "
            "to the decoded gaze"),
    Control("smile", -1.0, 1.0, 0.0, "smile units",
            f"1: mouth {SMILE_WIDTH:g} face heights wider (corners 61-291) and its corners {SMILE_LIFT:g} face "
            "heights higher relative to the lip centre, lip gap held; negative: narrower, corners down"),
    Control("jaw_open", 0.0, 1.0, 0.0, "jaw units",
            f"1: the inner lip gap (13-14) opens by {JAW_OPEN_GAP:g} face heights (forehead 10 to chin 152), "
            "mouth width and corner height held"),
    Control("brow_raise", -1.0, 1.0, 0.0, "brow units",
            f"1: the eyebrows {BROW_LIFT:g} face heights higher above the eye corners; negative lowers them"),
)
CONTROLS_BY_NAME: dict[str, Control] = {c.name: c for c in CONTROLS}


def _control(name: str) -> Control:
    try:
        return CONTROLS_BY_NAME[name]
    except KeyError:
        raise EditError(f"unknown edit control {name!r} (known: {', '.join(CONTROLS_BY_NAME)})") from None


def _check_value(control: Control, value) -> float | None:
    if value is None:
        return control.default
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EditError(f"edit {control.name}: value must be a number, not {value!r}")
    v = float(value)
    if not math.isfinite(v) or not control.minimum <= v <= control.maximum:
        raise EditError(f"edit {control.name}={v:g} is out of range [{control.minimum:g}, {control.maximum:g}] "
                        f"({control.unit})")
    return v


@dataclass(frozen=True)
class Edits:
    """A validated set of control values; controls not named keep their defaults.

    `values` holds only the controls that differ from their defaults."""

    values: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {}
        for name, value in dict(self.values).items():
            if not isinstance(name, str):
                raise EditError(f"edit control names are strings, not {name!r}")
            control = _control(name)
            v = _check_value(control, value)
            if v != control.default:
                clean[name] = v
        object.__setattr__(self, "values", dict(sorted(clean.items())))

    # -- reading -------------------------------------------------------------------------

    def get(self, name: str) -> float | None:
        return self.values.get(name, _control(name).default)

    def __bool__(self) -> bool:
        return bool(self.values)

    # -- making ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, items: Iterable[str]) -> "Edits":
        """From command-line words `NAME=VALUE` (later ones win; VALUE `off` resets a control)."""
        values: dict[str, float | None] = {}
        for item in items:
            name, sep, text = item.partition("=")
            name, text = name.strip(), text.strip()
            if not sep or not name or not text:
                raise EditError(f"edit {item!r} is not NAME=VALUE")
            control = _control(name)
            if text.lower() in ("off", "none", "default"):
                values[name] = None
                continue
            try:
                value = float(text)
            except ValueError:
                raise EditError(f"edit {name}: {text!r} is not a number") from None
            values[name] = _check_value(control, value)
        return cls(values)

    @classmethod
    def from_dict(cls, values: Mapping) -> "Edits":
        """From a JSON object {name: number or null}; null or absent = the default."""
        if not isinstance(values, Mapping):
            raise EditError(f"edit values must be an object of name: number, not {type(values).__name__}")
        return cls(dict(values))

    def to_dict(self) -> dict[str, float]:
        """The controls that differ from their defaults, for JSON."""
        return dict(self.values)

    @classmethod
    def from_message(cls, message: Mapping) -> "Edits":
        """From a control-channel message `{"type": "edit", "values": {...}}`.  The message
        carries the whole edit state: controls it does not name go back to their defaults."""
        if not isinstance(message, Mapping) or message.get("type") != "edit":
            raise EditError('an edit message is {"type": "edit", "values": {...}}')
        return cls.from_dict(message.get("values", {}))

    def to_message(self) -> dict:
        return {"type": "edit", "values": self.to_dict()}

    def with_value(self, name: str, value: float | None) -> "Edits":
        """A copy with one control set (None: back to its default)."""
        return Edits({**self.values, name: value})

    def nudged(self, name: str, delta: float) -> "Edits":
        """A copy with one control moved by `delta`, clamped to its range (for keys and sliders)."""
        control = _control(name)
        start = self.get(name)
        if start is None:
            start = control.minimum if delta >= 0 else control.maximum
        return self.with_value(name, min(control.maximum, max(control.minimum, start + delta)))


# -- expression directions from geometry ------------------------------------------------

BROW_RIGHT = (70, 63, 105, 66, 107)       # the subject's right eyebrow, upper edge
BROW_LEFT = (300, 293, 334, 296, 336)
EYE_CORNERS = RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS
FEATURE_NAMES = ("lip_gap", "mouth_width", "corner_lift", "brow_height", "open_left", "open_right")
# the feature change (in face heights; eye openness in eye widths) that "1" of each control asks for
TARGETS: dict[str, np.ndarray] = {
    "jaw_open": np.array([JAW_OPEN_GAP, 0, 0, 0, 0, 0]),
    "smile": np.array([0, SMILE_WIDTH, SMILE_LIFT, 0, 0, 0]),
    "brow_raise": np.array([0, 0, 0, BROW_LIFT, 0, 0]),
}
EXPRESSION_CONTROLS = tuple(TARGETS)


def face_height(shape: np.ndarray) -> float:
    return float(np.linalg.norm(shape[CHIN, :2] - shape[FOREHEAD, :2]))


def geometric_features(shape: np.ndarray, height: float) -> np.ndarray:
    """FEATURE_NAMES of a canonical shape (478, 3) (image axes: y down), lengths over `height`:
    inner lip gap; mouth width (corner to corner); corner lift (lip centre minus the mean
    corner height: positive when the corners are higher); brow height (mean eye-corner
    height minus mean brow height); eye openness of each eye (lid gap over eye width)."""
    gap = shape[LOWER_LIP_INNER, 1] - shape[UPPER_LIP_INNER, 1]
    width = np.linalg.norm(shape[MOUTH_CORNERS[1], :2] - shape[MOUTH_CORNERS[0], :2])
    centre = (shape[UPPER_LIP_INNER, 1] + shape[LOWER_LIP_INNER, 1]) / 2
    lift = centre - shape[list(MOUTH_CORNERS), 1].mean()
    brow = shape[list(EYE_CORNERS), 1].mean() - shape[list(BROW_RIGHT + BROW_LEFT), 1].mean()
    eyes = eye_measures(shape)
    return np.array([gap / height, width / height, lift / height, brow / height, eyes[0], eyes[1]])


class ExpressionEditor:
    """Expression directions (per unit of smile, jaw_open, brow_raise) for one key frame's
    canonical shape, and the key frame's eye values that `eyes_open` holds."""

    def __init__(self, basis: FaceBasis, reference: np.ndarray | None = None,
                 reference_eyes: np.ndarray | None = None) -> None:
        self.basis = basis
        self.reference = basis.mean if reference is None else np.asarray(reference, dtype=np.float64)
        self.reference_eyes = eye_measures(self.reference) if reference_eyes is None else np.asarray(reference_eyes)
        self.height = face_height(self.reference)
        self.jacobian = self._jacobian()            # (features, K)
        S = np.diag(basis.expression_std ** 2)
        gram = self.jacobian @ S @ self.jacobian.T
        gram += 1e-9 * np.trace(gram) * np.eye(len(gram))   # never singular
        solve = S @ self.jacobian.T @ np.linalg.inv(gram)    # (K, features)
        self.directions: dict[str, np.ndarray] = {name: solve @ df for name, df in TARGETS.items()}

    @classmethod
    def from_model(cls, model: FaceModel) -> "ExpressionEditor":
        return cls(model.basis, model.reference, model.reference_eyes)

    def features(self, shape: np.ndarray) -> np.ndarray:
        return geometric_features(shape, self.height)

    def _jacobian(self, eps: float = 1e-4) -> np.ndarray:
        """d features / d coefficients at the reference (central differences: exact for the
        linear features, the eye ratios are nearly linear for these small moves)."""
        cols = []
        for row in self.basis.expression:
            d = eps * row.reshape(-1, 3)
            cols.append((self.features(self.reference + d) - self.features(self.reference - d)) / (2 * eps))
        return np.stack(cols, axis=1)

    def plausibility(self, name: str) -> float:
        """Size of one unit of a control in training spreads: |dc / expression_std|."""
        return float(np.linalg.norm(self.directions[name] / self.basis.expression_std))


def apply_edits(params: np.ndarray, edits: Edits, editor: ExpressionEditor) -> np.ndarray:
    """A new parameter vector: `params` (as decoded) with `edits` applied."""
    p = np.array(params, dtype=np.float64, copy=True)
    if not edits:
        return p
    g = edits.get
    p[I_YAW] += g("yaw")
    p[I_PITCH] += g("pitch")
    p[I_ROLL] += g("roll")
    p[I_TX] += g("tx")
    p[I_TY] += g("ty")
    p[I_SCALE] += math.log(g("scale"))

    eyes = slice(I_EYE_L, I_EYE_R + 1)
    if g("eye_openness") is not None:
        p[eyes] = g("eye_openness")
    elif g("eyes_open") > 0:
        p[eyes] += g("eyes_open") * (editor.reference_eyes[:2] - p[eyes])
    keep = 1.0 - g("blink")
    p[I_EYE_L] *= keep * (1.0 - g("blink_left"))
    p[I_EYE_R] *= keep * (1.0 - g("blink_right"))
    p[I_GAZE_X] += g("gaze_x") * GAZE_X_RANGE
    p[I_GAZE_Y] += g("gaze_y") * GAZE_Y_RANGE

    for name in EXPRESSION_CONTROLS:
        if g(name):
            p[NUM_FIXED:] += g(name) * editor.directions[name]
    return p
