"""Named edit controls, applied to decoded parameter vectors before synthesis.

One module for every front end: the command line (`python -m codec_core decode STREAM
-o OUT.mp4 --edit yaw=15 --edit smile=0.8`), the receiver's window (keyboard) and the
browser demo (sliders, sending `{"type": "edit", "values": {...}}` to the demo server on
its `/ws` websocket).  Edits are the viewer's own: they are applied where the picture is
made and never travel to the other end of a call (edits a sender asks for are a later feature).
The controls, their ranges and meanings are the table `CONTROLS` (docs/editing.md).

Pose and eye controls act on their own parameters (yaw and pitch also add the expression
change that goes with a real head turn: see `fit_pose_companion`).  The expression controls (smile,
jaw_open, brow_raise) act through directions in expression-coefficient space that
`ExpressionEditor` derives from geometry, not by hand: a few geometric features of the
canonical face (lip gap, mouth width, corner lift, brow height, eye openness, all in
face heights or eye widths) are linearised with respect to the coefficients (exact for
all but the eye ratios: the canonical shape is the reference plus `coeffs @ basis.expression`),
and each control's direction is the most plausible coefficient change that moves its
own features by the stated amount while holding the other features still: the minimum
of sum((dc / std)^2), i.e.  dc = S J^T (J S J^T)^-1 df  with S = diag(expression_std^2).

    editor = ExpressionEditor.from_model(reference.face_model())
    edits = Edits.parse(["yaw=15", "smile=0.8"])
    frame = synth.render(apply_edits(params, edits, editor))
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from codec_core.format import (
    EXPRESSION,
    I_EYE_L,
    I_EYE_R,
    I_GAZE_X,
    I_GAZE_Y,
    I_PITCH,
    I_ROLL,
    I_SCALE,
    I_TX,
    I_TY,
    I_YAW,
)
from models.face_model import (
    CHIN,
    FOREHEAD,
    LEFT_EYE_CORNERS,
    LOWER_LIP_INNER,
    MOUTH_CORNERS,
    RIGHT_EYE_CORNERS,
    UPPER_LIP_INNER,
    FaceBasis,
    FaceModel,
    eye_measures,
)

log = logging.getLogger(__name__)


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
    if not math.isfinite(v):
        raise EditError(f"edit {control.name}: {v} is not a finite number")
    if not control.minimum <= v <= control.maximum:
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

    def __hash__(self) -> int:
        return hash(tuple(self.values.items()))

    # -- reading -------------------------------------------------------------------------

    def get(self, name: str) -> float | None:
        return self.values.get(name, _control(name).default)

    def __bool__(self) -> bool:
        return bool(self.values)

    # -- making ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, items: Iterable[str]) -> Edits:
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
    def from_dict(cls, values: Mapping) -> Edits:
        """From a JSON object {name: number or null}; null or absent = the default."""
        if not isinstance(values, Mapping):
            raise EditError(f"edit values must be an object of name: number, not {type(values).__name__}")
        return cls(dict(values))

    def to_dict(self) -> dict[str, float]:
        """The controls that differ from their defaults, for JSON."""
        return dict(self.values)

    @classmethod
    def from_message(cls, message: Mapping) -> Edits:
        """From an edit message `{"type": "edit", "values": {...}}` (the web demo's `/ws`).  The message
        carries the whole edit state: controls it does not name go back to their defaults."""
        if not isinstance(message, Mapping) or message.get("type") != "edit":
            raise EditError('an edit message is {"type": "edit", "values": {...}}')
        return cls.from_dict(message.get("values", {}))

    def to_message(self) -> dict:
        return {"type": "edit", "values": self.to_dict()}

    def with_value(self, name: str, value: float | None) -> Edits:
        """A copy with one control set (None: back to its default)."""
        return Edits({**self.values, name: value})

    def nudged(self, name: str, delta: float) -> Edits:
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
    inner lip gap; mouth width (corner to corner, across); corner lift (lip centre minus the mean
    corner height: positive when the corners are higher); brow height (mean eye-corner
    height minus mean brow height); eye openness of each eye (lid gap over eye width)."""
    gap = shape[LOWER_LIP_INNER, 1] - shape[UPPER_LIP_INNER, 1]
    width = shape[MOUTH_CORNERS[1], 0] - shape[MOUTH_CORNERS[0], 0]
    centre = (shape[UPPER_LIP_INNER, 1] + shape[LOWER_LIP_INNER, 1]) / 2
    lift = centre - shape[list(MOUTH_CORNERS), 1].mean()
    brow = shape[list(EYE_CORNERS), 1].mean() - shape[list(BROW_RIGHT + BROW_LEFT), 1].mean()
    eyes = eye_measures(shape)
    return np.array([gap / height, width / height, lift / height, brow / height, eyes[0], eyes[1]])


# -- the non-rigid part of a head turn ----------------------------------------------------
#
# A real head turn, as the landmark tracker sees it, is not a rigid rotation of the
# frontal mesh: the outline points slide over the cheeks and the tracker's depth changes
# with the view, and the analysis puts that into the expression coefficients.  Rendering
# a rigid rotation alone re-detects as about two thirds of the asked angle (yaw 15 ->
# 8-11 degrees on three clips), while the full decoded parameters of real turns
# re-detect at their own angle.  So yaw and pitch edits also add the expression change
# that accompanies a turn in real footage: D(yaw + d, pitch + e) - D(yaw, pitch), where
# D is a quadratic in the absolute head pose fitted by `fit_pose_companion` (per-clip
# least squares on the basis' training frames) and then projected so that it leaves the
# expression features above (lip gap, mouth, brows, eye openness) where they are.

POSE_FEATURE_SCALE = 30.0            # degrees: keeps the polynomial terms of similar size
POSE_FIT_RANGE = ((-25.0, 25.0), (-5.0, 16.0))   # yaw, pitch seen in the fit: D is flat beyond


def pose_terms(yaw: float, pitch: float) -> np.ndarray:
    """The polynomial terms of D (its coefficients are `POSE_COMPANION`'s rows)."""
    y = float(np.clip(yaw, *POSE_FIT_RANGE[0])) / POSE_FEATURE_SCALE
    p = float(np.clip(pitch, *POSE_FIT_RANGE[1])) / POSE_FEATURE_SCALE
    return np.array([y, p, y * y, p * p, y * p])


def fit_pose_companion(clips: list[np.ndarray], basis: FaceBasis, size: int = 256) -> np.ndarray:
    """Least-squares coefficients (5, K) of the expression coefficients on `pose_terms`
    within each clip (per-clip means removed).  `clips`: crop-space landmarks (F, 478, 3)."""
    from models.face_model import canonicalise

    xs, ys = [], []
    for lm in clips:
        model = FaceModel(basis, canonicalise(lm[0], basis, size)[0], size)
        params = np.array([model.analyse(x) for x in lm])
        terms = np.array([pose_terms(y, p) for y, p in params[:, :2]])
        xs.append(terms - terms.mean(axis=0))
        ys.append(params[:, EXPRESSION] - params[:, EXPRESSION].mean(axis=0))
    coef, *_ = np.linalg.lstsq(np.concatenate(xs), np.concatenate(ys), rcond=None)
    return coef


def basis_fingerprint(basis: FaceBasis) -> str:
    """Names one trained basis (retraining keeps the version but changes the coefficients)."""
    return f"{basis.version}:{hashlib.sha1(basis.expression.astype(np.float32).tobytes()).hexdigest()[:12]}"


# Keyed by `basis_fingerprint`; refit with `python -m models.editing --fit-pose` whenever the
# basis is retrained (a basis without an entry edits the pose rigidly and logs a warning).
# Fitted on the frames that trained the basis (frame 250 onwards of ../shared/data/clips;
# the clips the tests use are shorter, so they are not in the fit).
POSE_COMPANION: dict[str, np.ndarray] = {"v1:f47260e59c95": np.array([
    [-0.2954, -2.627, -0.5812, 1.152, -0.01473, 0.2651, 0.2025, -0.04225, -0.6598, -0.08979,
     0.2609, 0.1252, 0.0603, -0.0008927, 0.1032, 0.0275, -0.0149, -0.1135, 0.001078, 0.03258],
    [-3.116, 0.3093, 4.05, 1.395, -0.5814, -0.6405, 0.4803, -0.01195, -0.5747, 0.3184,
     0.1387, 0.3428, 0.0809, 0.1133, 0.06152, -0.06243, -0.1716, 0.07212, -0.0531, -0.2691],
    [-1.1, -0.9669, 2.973, 0.6128, 0.2828, 0.9161, 0.2258, -0.3238, 0.3628, -0.5032,
     -0.1358, 0.1871, -0.1901, -0.1971, -0.3665, -0.2635, 0.3348, 0.4092, 0.129, 0.2658],
    [-0.1232, -0.2463, -12.32, -2.272, -1.902, 0.0846, -1.711, 0.2259, 0.0283, 0.1248,
     0.4101, -0.7843, 0.1012, -0.4688, -0.2045, 0.2307, 0.2691, -0.3382, 0.06288, 0.6304],
    [1.747, 3.024, 0.6471, -1.136, 1.145, 0.163, -0.3893, -0.2346, 0.4621, -0.3425,
     0.5853, 0.173, -0.0448, -0.186, -0.6804, -0.3782, 0.2606, 0.5617, 0.04695, -0.02441]])}


class ExpressionEditor:
    """Expression directions (per unit of smile, jaw_open, brow_raise) for one key frame's
    canonical shape, the expression change that accompanies a head turn, and the key
    frame's eye values that `eyes_open` holds."""

    def __init__(self, basis: FaceBasis, reference: np.ndarray | None = None,
                 reference_eyes: np.ndarray | None = None, pose_companion: bool = True) -> None:
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
        # the turn's companion, less what it would do to the features (the same weighted projection)
        companion = None
        if pose_companion:
            companion = POSE_COMPANION.get(basis_fingerprint(basis))
            if companion is None or companion.shape[1] != basis.num_expression:
                log.warning("no head-turn companion for face basis %s: pose edits are rigid (refit with "
                            "`python -m models.editing --fit-pose`)", basis_fingerprint(basis))
                companion = None
        keep = np.eye(basis.num_expression) - solve @ self.jacobian
        self.pose_companion = None if companion is None else companion @ keep.T    # (terms, K)

    @classmethod
    def from_model(cls, model: FaceModel, **kw) -> ExpressionEditor:
        return cls(model.basis, model.reference, model.reference_eyes, **kw)

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

    def turn(self, yaw: float, pitch: float, d_yaw: float, d_pitch: float) -> np.ndarray:
        """Expression change (K,) that goes with turning from (yaw, pitch) by (d_yaw, d_pitch)."""
        if self.pose_companion is None or (d_yaw == 0 and d_pitch == 0):
            return np.zeros(self.basis.num_expression)
        return (pose_terms(yaw + d_yaw, pitch + d_pitch) - pose_terms(yaw, pitch)) @ self.pose_companion

    def plausibility(self, name: str) -> float:
        """Size of one unit of a control in training spreads: |dc / expression_std|."""
        return float(np.linalg.norm(self.directions[name] / self.basis.expression_std))


def apply_edits(params: np.ndarray, edits: Edits, editor: ExpressionEditor) -> np.ndarray:
    """A new parameter vector: `params` (as decoded) with `edits` applied."""
    p = np.array(params, dtype=np.float64, copy=True)
    if not edits:
        return p
    g = edits.get
    p[EXPRESSION] += editor.turn(p[I_YAW], p[I_PITCH], g("yaw"), g("pitch"))
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
            p[EXPRESSION] += g(name) * editor.directions[name]
    return p


def _format_rows(coef: np.ndarray, per_line: int = 10) -> str:
    rows = []
    for row in coef:
        chunks = [", ".join(f"{v:.4g}" for v in row[i:i + per_line]) for i in range(0, len(row), per_line)]
        rows.append("[" + ",\n     ".join(chunks) + "]")
    return "[\n    " + ",\n    ".join(rows) + "]"


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Edit controls: print the table, or refit the turn companion.")
    ap.add_argument("--fit-pose", action="store_true",
                    help="fit POSE_COMPANION on the basis' training frames and print it")
    ap.add_argument("--holdout-frames", type=int, default=250)
    args = ap.parse_args(argv)
    if not args.fit_pose:
        for c in CONTROLS:
            default = "off" if c.default is None else f"{c.default:g}"
            print(f"{c.name:13s} {c.minimum:g}..{c.maximum:g} (default {default}, {c.unit}): {c.meaning}")
        return
    from models.train_basis import DEFAULT_DATA, clip_landmarks

    basis, clips = FaceBasis.load(), []
    for path in sorted(DEFAULT_DATA.glob("*.mp4")):
        lm = clip_landmarks(path)[args.holdout_frames:]
        lm = lm[~np.isnan(lm).any(axis=(1, 2))]
        if len(lm) >= 10:
            clips.append(lm)
    coef = fit_pose_companion(clips, basis)
    print(f"# {sum(map(len, clips))} frames from {len(clips)} clips, basis {basis.version}")
    key = f'"{basis_fingerprint(basis)}"'
    print(f"POSE_COMPANION: dict[str, np.ndarray] = {{{key}: np.array({_format_rows(coef)})}}")


if __name__ == "__main__":
    main()
