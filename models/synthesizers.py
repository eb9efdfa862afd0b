"""The synthesizers a decoder can use, by name: `warp` (v1, no weights) and `learned` (v2),
and the backend that runs the learned one: `torch` (models.learned) or `onnx` (ONNX Runtime,
models.onnx_synth, on the graph that models.export writes).

Every place that makes pictures (the offline decoder, the live receiver, the web demo)
picks one here with `--synth`, so the choice and its error messages live in one place.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.face_model import FaceModel

SYNTHS = ("warp", "learned")
DEFAULT_SYNTH = "warp"
BACKENDS = ("torch", "onnx")
DEFAULT_BACKEND = "torch"


class Synth(Protocol):
    def render(self, params: np.ndarray) -> np.ndarray: ...


def build_synthesizer(kind: str, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
                      ring_weights: np.ndarray, device: str = "cpu", backend: str = DEFAULT_BACKEND) -> Synth:
    """A synthesizer of one key frame; ValueError for an unknown kind or backend, or the onnx
    backend for a synthesizer other than `learned`; models.learned.WeightsError when the learned
    one has no weights of its version; models.onnx_synth.OnnxBackendError when ONNX Runtime is
    missing or has no provider for the device."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if kind not in SYNTHS:
        raise ValueError(f"unknown synthesizer {kind!r}: choose one of {', '.join(SYNTHS)}")
    if backend == "onnx" and kind != "learned":
        raise ValueError(f"the onnx backend runs the learned synthesizer only, not {kind!r}: "
                         "use --synth learned or the torch backend")
    if kind == "warp":
        from models.synthesizer import Synthesizer

        return Synthesizer(keyframe, model, ref_params, ring_weights, device)
    if backend == "onnx":
        from models.onnx_synth import OnnxSynthesizer

        return OnnxSynthesizer(keyframe, model, ref_params, ring_weights, device)
    from models.learned import LearnedSynthesizer

    return LearnedSynthesizer(keyframe, model, ref_params, ring_weights, device)
