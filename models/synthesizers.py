"""The synthesizers a decoder can use, by name: `warp` (v1, no weights) and `learned` (v2).

Every place that makes pictures (the offline decoder, the live receiver, the web demo)
picks one here with `--synth`, so the choice and its error messages live in one place.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.face_model import FaceModel

SYNTHS = ("warp", "learned")
DEFAULT_SYNTH = "warp"


class Synth(Protocol):
    def render(self, params: np.ndarray) -> np.ndarray: ...


def build_synthesizer(kind: str, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
                      ring_weights: np.ndarray, device: str = "cpu") -> Synth:
    """A synthesizer of one key frame; ValueError for an unknown kind, models.learned.WeightsError
    when the learned one has no weights of its version."""
    if kind == "warp":
        from models.synthesizer import Synthesizer

        return Synthesizer(keyframe, model, ref_params, ring_weights, device)
    if kind == "learned":
        from models.learned import LearnedSynthesizer

        return LearnedSynthesizer(keyframe, model, ref_params, ring_weights, device)
    raise ValueError(f"unknown synthesizer {kind!r}: choose one of {', '.join(SYNTHS)}")
