"""The synthesizers a decoder can use, by name: `warp` (v1, no weights) and `learned` (v2),
and the backend that runs the learned one: `torch` (models.learned) or `onnx` (ONNX Runtime,
models.onnx_synth, on the graph that models.export writes).

Every place that makes pictures (the offline decoder, the live receiver, the web demo)
picks one here with `--synth`, so the choice and its error messages live in one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from models.face_model import FaceModel

SYNTHS = ("warp", "learned")
DEFAULT_SYNTH = "warp"
BACKENDS = ("torch", "onnx")
DEFAULT_BACKEND = "torch"
DEVICES = ("cpu", "cuda")


class Synth(Protocol):
    def render(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """The picture for one frame's values and its global motion (codec_core.format
        GLOBAL_MOTION_NAMES; None: the picture does not move)."""
        ...


@dataclass(frozen=True)
class Synthesis:
    """Which synthesizer makes the pictures, on which backend and device."""

    synth: str = DEFAULT_SYNTH
    backend: str = DEFAULT_BACKEND
    device: str = "cpu"
    onnx_model: Path | None = None
    compiled: bool = False        # learned, torch, CUDA: torch.compile with CUDA graphs (models.learned)
    regions: bool = True          # learned: the regional refiner of the eyes and the mouth (off: lighter)

    def check(self) -> None:
        """ValueError with a one-line reason when this choice cannot run here; loads nothing big."""
        if self.synth not in SYNTHS:
            raise ValueError(f"unknown synthesizer {self.synth!r}: choose one of {', '.join(SYNTHS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend == "onnx" and self.synth != "learned":
            raise ValueError(f"the onnx backend runs the learned synthesizer only, not {self.synth!r}: "
                             "use --synth learned or --backend torch")
        if not self.regions and self.synth != "learned":
            raise ValueError("--no-regions is a setting of the learned synthesizer: add --synth learned")
        if self.compiled and (self.synth, self.backend, self.device) != ("learned", "torch", "cuda"):
            raise ValueError("--compile runs the learned synthesizer on the torch backend on CUDA only: "
                             "add --synth learned --backend torch --device cuda, or leave --compile out")
        if self.device == "cuda" and self.backend == "torch":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda asked for, but no CUDA device is available")
        if self.synth == "learned":
            from models.learned import ASSET

            if not ASSET.exists():
                raise ValueError(f"no learned synthesizer weights at {ASSET}: train them with "
                                 "`python -m models.train` or use --synth warp")

    def build(self, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
              ring_weights: np.ndarray) -> Synth:
        """A synthesizer of one key frame (ValueError, models.learned.WeightsError or
        models.onnx_synth.OnnxBackendError when it cannot be made)."""
        self.check()
        if self.synth == "warp":
            from models.synthesizer import Synthesizer

            return Synthesizer(keyframe, model, ref_params, ring_weights, self.device)
        if self.backend == "onnx":
            from models.onnx_synth import OnnxSynthesizer

            return OnnxSynthesizer(keyframe, model, ref_params, ring_weights, self.device,
                                   onnx_model=self.onnx_model, regions=self.regions)
        from models.learned import LearnedSynthesizer

        return LearnedSynthesizer(keyframe, model, ref_params, ring_weights, self.device, compiled=self.compiled,
                                  regions=self.regions)

    def warm_up(self, size: int) -> None:
        """With `compiled`: pay the compile now, on a made-up key frame of `size` (the compile
        serves every key frame of that size), as a receiver does while it waits for its peer."""
        if not self.compiled:
            return
        import torch

        from codec_core.format import GLOBAL_MOTION_COUNT, NUM_FIXED
        from models.export import example_graph
        from models.learned import compiled_frame_function, key_buffers, load_generator, steady_start

        device = torch.device(self.device)
        graph = example_graph(load_generator(device=device), size, device, self.regions)
        with torch.inference_mode():        # as `LearnedSynthesizer.render` makes its inputs (a guard)
            params = torch.zeros(1, NUM_FIXED + graph.geometry.expression.shape[0], device=device)
            compiled_frame_function(graph)(params, torch.zeros(1, GLOBAL_MOTION_COUNT, device=device),
                                            steady_start(1, device), key_buffers(graph))


def add_synthesis_options(parser: argparse.ArgumentParser) -> None:
    """--synth, --backend, --device, --onnx-model, --compile and --no-regions, as every command
    that makes pictures has them."""
    parser.add_argument("--synth", default=DEFAULT_SYNTH, choices=SYNTHS,
                        help="synthesizer: warp (v1, no weights) or learned (v2) (default: %(default)s)")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                        help="what runs the learned synthesizer: torch or onnx (ONNX Runtime) (default: %(default)s)")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="synthesis device (default: %(default)s)")
    parser.add_argument("--onnx-model", type=Path, metavar="PATH",
                        help="the exported synthesizer for --backend onnx (default: out/onnx/, exported on first use)")
    parser.add_argument("--compile", action="store_true",
                        help="learned synthesizer on CUDA under torch.compile with CUDA graphs, about ten times "
                             "faster a frame; compiled once, in about a minute (a receiver does it at start)")
    parser.add_argument("--no-regions", action="store_true",
                        help="learned synthesizer without its regional refiner of the eyes and the mouth: "
                             "lighter, about a fifth faster on a CPU, softer eyes and mouths")


def synthesis_from_args(args: argparse.Namespace) -> Synthesis:
    """The choice the options name, checked (ValueError with a one-line reason)."""
    choice = Synthesis(args.synth, args.backend, args.device, args.onnx_model, args.compile, not args.no_regions)
    choice.check()
    return choice
