"""Translators between feature formats: the values of a stream's format -> the decoder's format.

`make_translator(src, dst, reference, method)` gives one per key frame (a new key frame needs
a new one).  Method "geometry" goes through the shared face geometry, the ifvc parameter
vector p of the key frame's face model (docs/formats.md, "Translators"):

  ifvc -> X    X's analysis of the landmarks p describes: analyse(X, model.landmarks(p));
  X -> ifvc    p fitted by least squares (scipy.optimize.least_squares, Levenberg-Marquardt)
               so that analyse(X, model.landmarks(p)) matches the values, warm-started from the
               previous frame's p (the first frame: the key frame's).  fomm and cfte (2D formats
               that confuse a head turn with an expression): a maximum a posteriori fit, the
               misfit weighted by the measured noise of real faces against the face model plus
               the quantisation noise, a Gaussian prior on p - p_key with the spread real faces
               move (models.translator_prior's asset).  fv2v, which carries the pose: each value
               in units of VALUE_SCALE, a weak pull (PRIOR) towards the key frame's parameters
               for what it does not observe (gaze);
  X -> Y       through the fitted p.

Method "learned" goes through small networks and a shared latent (models.translator_nets,
trained by `python -m models.train_translators`): src's encoder maps the frame's values and
the key frame's own src values to the latent, dst's decoder maps the latent and the key frame's
own dst values to dst values.  Stateless, one frame at a time.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from codec_core.format import EXPRESSION, EYES, FEATURE_FORMATS, NUM_FIXED
from models.feature_formats import CFTE_POINTS, FOMM_GROUPS, FV2V_GROUPS, FormatGeometry, load_cfte
from models.reference import Reference
from models.translator_prior import NOISE_FORMATS, PriorError, load_prior

TRANSLATOR_METHODS = ("geometry", "learned")
# what one unit of least-squares residual is, per step group of each format (docs/formats.md)
VALUE_SCALE = {"keypoint": 0.005, "jacobian": 0.02, "angle": 0.5, "translation": 0.002, "log_scale": 0.003,
               "delta": 0.005, "feature": 0.005}
# the size of one unit of the fitted variable, per ifvc parameter (expression: the basis's spread)
PARAM_SCALE_FIXED = np.array([5.0, 5.0, 5.0, 0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 0.1])
PRIOR = 0.05             # weight of the pull towards the key frame's parameters, in fitted units (fv2v)
NOISE_SHRINK = 0.5       # the measured noise matrix is pulled this far towards its diagonal (docs/formats.md)
FD_STEP = 1e-4           # forward-difference step of the Jacobian, in fitted units


class TranslatorError(ValueError):
    """A translator that cannot be made (unknown format or method, none built yet)."""


class Translator(Protocol):
    src: str
    dst: str

    def translate(self, values_src: np.ndarray) -> np.ndarray: ...


class IdentityTranslator:
    def __init__(self, fmt: str) -> None:
        self.src = self.dst = fmt

    def translate(self, values_src: np.ndarray) -> np.ndarray:
        return np.array(values_src, dtype=np.float64)


class GeometryTranslator:
    """src -> ifvc parameters -> dst, for one key frame; keeps the last fitted parameters."""

    def __init__(self, src: str, dst: str, reference: Reference, steps: np.ndarray | None = None,
                 measured: bool = True) -> None:
        """`steps`: the src values' quantisation steps (None: the default configuration's);
        `measured` False: fomm and cfte fitted as fv2v is (the plain weighting, for comparison)."""
        self.src, self.dst = src, dst
        self.size = reference.size
        self.model = reference.face_model()
        self.geometry = FormatGeometry.of(reference)
        basis = reference.basis
        self._expression = basis.expression                  # (K, 1434)
        self._eyes = basis.eyes                              # (4, 1434)
        self._reference_eyes = self.model.reference_eyes
        self.key_params = reference.reference_params()
        self.param_scale = np.concatenate([PARAM_SCALE_FIXED, basis.expression_std])
        self.previous = self.key_params.copy()
        # the landmarks the src analysis reads (the fit computes only these)
        self._fit_points = np.arange(len(self.model.reference)) if src == "ifvc" else points_read(src, self.geometry)
        columns = (3 * self._fit_points[:, None] + np.arange(3)).reshape(-1)
        self._fit_expression, self._fit_eyes = self._expression[:, columns], self._eyes[:, columns]
        if "cfte" in (src, dst):
            load_cfte()                                      # fail now, not on the first frame
        if src != "ifvc":
            self._whiten, self._pull = fit_weights(src, self.param_scale, steps, measured)

    # -- the forward model, batched --------------------------------------------------------------

    def landmarks(self, params: np.ndarray, only_read: bool = False) -> np.ndarray:
        """models.face_model.FaceModel.landmarks on a batch: (B, 30) -> (B, 478, 3) crop pixels;
        `only_read`: only the points the src analysis reads (the others left 0)."""
        points = self._fit_points if only_read else slice(None)
        expression, eyes = (self._fit_expression, self._fit_eyes) if only_read else (self._expression, self._eyes)
        delta = params[:, EXPRESSION] @ expression + (params[:, EYES] - self._reference_eyes) @ eyes
        canon = self.model.reference[points] + delta.reshape(len(params), -1, 3)
        R = Rotation.from_euler("YXZ", params[:, :3], degrees=True).as_matrix()
        s = np.exp(params[:, 5]) * self.size
        t = np.stack([params[:, 3], params[:, 4], np.zeros(len(params))], 1) * self.size
        placed = s[:, None, None] * (canon @ R.transpose(0, 2, 1)) + t[:, None]
        if not only_read:
            return placed
        out = np.zeros((len(params), len(self.model.reference), 3))
        out[:, points] = placed
        return out

    def from_params(self, params: np.ndarray) -> np.ndarray:
        """dst values of one ifvc parameter vector."""
        if self.dst == "ifvc":
            return params.copy()
        return self.geometry.values(self.dst, self.landmarks(params[None]))[0]

    # -- the fit ------------------------------------------------------------------------------

    def fit(self, values: np.ndarray) -> np.ndarray:
        """The ifvc parameters whose src analysis best matches `values`."""
        target = np.asarray(values, dtype=np.float64)

        def params_of(u: np.ndarray) -> np.ndarray:
            return self.key_params + u * self.param_scale

        def residuals(u: np.ndarray) -> np.ndarray:       # u (B, 30) -> (B, count + 30)
            v = self.geometry.values(self.src, self.landmarks(params_of(u), only_read=True))
            return np.concatenate([(v - target) @ self._whiten, self._pull * u], 1)

        def fun(u: np.ndarray) -> np.ndarray:
            return residuals(u[None])[0]

        def jac(u: np.ndarray) -> np.ndarray:
            r = residuals(np.concatenate([u[None], u + FD_STEP * np.eye(len(u))]))
            return ((r[1:] - r[0]) / FD_STEP).T

        u0 = (self.previous - self.key_params) / self.param_scale
        result = least_squares(fun, u0, jac=jac, method="lm", xtol=1e-6, ftol=1e-6, max_nfev=100)
        return params_of(result.x)

    def translate(self, values_src: np.ndarray) -> np.ndarray:
        values = np.asarray(values_src, dtype=np.float64)
        count = FEATURE_FORMATS[self.src].count
        if values.shape != (count,):
            raise TranslatorError(f"{self.src} values have shape {values.shape}, not ({count},)")
        params = values.copy() if self.src == "ifvc" else self.fit(values)
        self.previous = params
        return self.from_params(params)


def fit_weights(src: str, param_scale: np.ndarray, steps: np.ndarray | None,
                measured: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """How the X -> ifvc fit weighs its residuals: the (n, n) symmetric matrix W the value misfit
    is multiplied by, and the (30,) weights of the fitted variable u = (p - p_key) / param_scale.
    fomm, cfte (measured): W = S^-1/2, S = the measured model-mismatch noise (its off-diagonal
    part scaled by 1 - NOISE_SHRINK) + step^2 / 12; weights param_scale / motion_rms (a Gaussian
    prior on p - p_key).  Otherwise: W = diag(1 / VALUE_SCALE), weights PRIOR."""
    fmt = FEATURE_FORMATS[src]
    if not (measured and src in NOISE_FORMATS):
        return np.diag([1.0 / VALUE_SCALE[g] for g in fmt.value_steps]), np.full(len(param_scale), PRIOR)
    try:
        prior = load_prior()
    except PriorError as exc:
        raise TranslatorError(str(exc)) from None
    if steps is None:
        from codec_core.config import load_config

        steps = fmt.step_vector(load_config().steps_of(src))
    steps = np.asarray(steps, dtype=np.float64)
    if steps.shape != (fmt.count,):
        raise TranslatorError(f"{src} steps have shape {steps.shape}, not ({fmt.count},)")
    noise = prior.noise[src]
    noise = (1 - NOISE_SHRINK) * noise + NOISE_SHRINK * np.diag(np.diag(noise)) + np.diag(steps ** 2 / 12)
    eigenvalues, vectors = np.linalg.eigh(noise)
    whiten = (vectors / np.sqrt(eigenvalues)) @ vectors.T
    return whiten, param_scale / prior.motion_rms


def points_read(fmt: str, geometry: FormatGeometry) -> np.ndarray:
    """The landmark indices the analysis of `fmt` (not ifvc) reads, sorted."""
    groups = {"fomm": FOMM_GROUPS, "fv2v": FV2V_GROUPS + (tuple(geometry.rigid),), "cfte": (CFTE_POINTS,)}[fmt]
    return np.array(sorted({i for g in groups for i in g}), dtype=np.int64)


def make_translator(src: str, dst: str, reference: Reference, method: str = "geometry",
                    steps: np.ndarray | None = None) -> Translator:
    """A translator of `src` values to `dst` values for the key frame `reference`; `steps`: the
    stream's quantisation step of each src value (None: the default configuration's)."""
    for fmt in (src, dst):
        if fmt not in FEATURE_FORMATS:
            raise TranslatorError(f"unknown feature format {fmt!r}: choose one of {', '.join(FEATURE_FORMATS)}")
    if method not in TRANSLATOR_METHODS:
        raise TranslatorError(f"unknown translator method {method!r}: choose one of {', '.join(TRANSLATOR_METHODS)}")
    if src == dst:
        return IdentityTranslator(src)
    if method == "learned":
        return LearnedTranslator(src, dst, reference)
    return GeometryTranslator(src, dst, reference, steps)


class LearnedTranslator:
    """src -> shared latent -> dst through the trained networks, for one key frame."""

    def __init__(self, src: str, dst: str, reference: Reference) -> None:
        import torch

        from models.feature_formats import key_features
        from models.translator_nets import TranslatorWeightsError, load_nets

        self.src, self.dst = src, dst
        try:
            self.nets = load_nets(counts={f: FEATURE_FORMATS[f].count for f in (src, dst)})
        except TranslatorWeightsError as exc:
            raise TranslatorError(str(exc)) from None
        self._torch = torch
        self.key_src = torch.from_numpy(key_features(src, reference).astype(np.float32))[None]
        self.key_dst = torch.from_numpy(key_features(dst, reference).astype(np.float32))[None]

    def translate(self, values_src: np.ndarray) -> np.ndarray:
        values = np.asarray(values_src, dtype=np.float32)
        count = FEATURE_FORMATS[self.src].count
        if values.shape != (count,):
            raise TranslatorError(f"{self.src} values have shape {values.shape}, not ({count},)")
        with self._torch.no_grad():
            out = self.nets.translate(self.src, self.dst, self._torch.from_numpy(values)[None], self.key_src,
                                      self.key_dst)
        return out[0].numpy().astype(np.float64)


assert NUM_FIXED == len(PARAM_SCALE_FIXED)
