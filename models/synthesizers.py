"""The synthesizers a decoder can use, by name: `warp` (v1, no weights) and `learned` (v2),
and the backend that runs the learned one: `torch` (models.learned) or `onnx` (ONNX Runtime,
models.onnx_synth, on the graph that models.export writes).

Every place that makes pictures (the offline decoder, the live receiver, the web demo)
picks one here with `--synth`, so the choice and its error messages live in one place.

`--synth auto`, the commands' default, is the best picture this machine can give: the
learned synthesizer (on CUDA when there is one), or v1 when the learned weights are missing
or the stream's feature format is not ifvc (`resolved`).  Its regional refiner of the eyes
and the mouth is off unless asked for (`--regions`): since the stream carries the caller's
shut eyes and open mouth, the refiner buys little (1.4 points on shut eyes) for a quarter
more time a frame, and without it the mouths are better and the picture flickers less
(README, the lighter setting).  A live receiver also keeps the synthesizer in step with the
call: it steps down to `lighter` settings (the learned one without its refiner, then v1)
while synthesis cannot keep up with the frame rate (receiver.pace).  A synthesizer named
explicitly is never changed.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from codec_core.format import NUM_RING_POINTS, POSE, RING_WEIGHT_MAX
from models.face_model import FaceBasis, FaceModel, eye_measures

if TYPE_CHECKING:
    from models.eye_reference import EyePatches

SYNTHS = ("auto", "warp", "learned")
DEFAULT_SYNTH = "auto"          # the commands' default (`Synthesis()` itself is v1: library callers name theirs)
BACKENDS = ("torch", "onnx")
DEFAULT_BACKEND = "torch"
DEVICES = ("cpu", "cuda")
log = logging.getLogger(__name__)


class Synth(Protocol):
    def render(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """The picture for one frame's values and its global motion (codec_core.format
        GLOBAL_MOTION_NAMES; None: the picture does not move)."""
        ...


@dataclass(frozen=True)
class Synthesis:
    """Which synthesizer makes the pictures, on which backend and device."""

    synth: str = "warp"
    backend: str = DEFAULT_BACKEND
    device: str = "cpu"
    onnx_model: Path | None = None
    compiled: bool = False        # learned, torch, CUDA: torch.compile with CUDA graphs (models.learned)
    regions: bool = False         # learned: with the regional refiner of the eyes and the mouth (--regions)
    automatic: bool = False       # picked by --synth auto (`resolved`): a live receiver may step it down

    def resolved(self, ifvc: bool = True) -> Synthesis:
        """What --synth auto stands for on a stream (`ifvc`: of the ifvc feature format): the
        learned synthesizer (this choice's other settings kept) when the format is ifvc and
        its weights are here, else v1.  A learned synthesizer auto picked meets another
        format with v1; one named explicitly is kept as it is (and refused there)."""
        if self.synth == "learned" and self.automatic and not ifvc:
            return self.warp()
        if self.synth != "auto":
            return self
        if not ifvc:
            return self.warp()
        from models.learned import weights_problem

        if (problem := weights_problem()) is not None:
            _say_once(f"{problem}: synthesizer v1 draws instead")
            return self.warp()
        return replace(self, synth="learned", automatic=True)

    def warp(self) -> Synthesis:
        """v1 on this choice's device, picked automatically as this one was."""
        return Synthesis("warp", device=self.device, automatic=self.automatic or self.synth == "auto")

    def lighter(self) -> Synthesis | None:
        """The next lighter setting (the learned synthesizer without its refiner, then v1), or
        None for v1."""
        if self.synth == "learned" and self.regions and self.backend == "torch" and not self.compiled:
            return replace(self, regions=False)
        return None if self.synth == "warp" else self.warp()

    def describe(self) -> str:
        """The setting as the options would name it, e.g. "learned --regions (torch, cpu)"."""
        if self.synth != "learned":
            return self.synth
        return f"learned{' --regions' if self.regions else ''} ({self.backend}, {self.device})"

    def check(self) -> None:
        """ValueError with a one-line reason when this choice cannot run here; loads at most the
        learned synthesizer's weights (once a process)."""
        if self.synth not in SYNTHS:
            raise ValueError(f"unknown synthesizer {self.synth!r}: choose one of {', '.join(SYNTHS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend == "onnx" and self.synth != "learned":
            raise ValueError(f"the onnx backend runs the learned synthesizer only, not {self.synth!r}: "
                             "use --synth learned or --backend torch")
        if self.onnx_model is not None and self.backend != "onnx":
            raise ValueError("--onnx-model names the exported graph for --backend onnx: add --backend onnx "
                             "--synth learned, or leave --onnx-model out")
        if self.regions and self.synth == "warp":
            raise ValueError("--regions is a setting of the learned synthesizer: add --synth learned")
        if self.compiled and (self.synth.replace("auto", "learned"), self.backend, self.device) != (
                "learned", "torch", "cuda"):
            raise ValueError("--compile runs the learned synthesizer on the torch backend on CUDA only: "
                             "add --synth learned --backend torch --device cuda, or leave --compile out")
        if self.device == "cuda" and self.backend == "torch":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda asked for, but no CUDA device is available")
        if self.synth == "learned" and not self.automatic:
            from models.learned import weights_problem

            if (problem := weights_problem()) is not None:
                raise ValueError(problem)

    def build(self, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
              ring_weights: np.ndarray, eyes: EyePatches | None = None) -> Synth:
        """A synthesizer of one key frame (ValueError, models.learned.WeightsError or
        models.onnx_synth.OnnxBackendError when it cannot be made); `eyes`, the key frame's eye
        reference, is laid by v2 (v1 paints its own lids)."""
        if self.synth == "auto":
            return self.resolved().build(keyframe, model, ref_params, ring_weights, eyes)
        self.check()
        if self.synth == "warp":
            from models.synthesizer import Synthesizer

            return Synthesizer(keyframe, model, ref_params, ring_weights, self.device)
        if self.backend == "onnx":
            from models.onnx_synth import OnnxSynthesizer

            return OnnxSynthesizer(keyframe, model, ref_params, ring_weights, self.device,
                                   onnx_model=self.onnx_model, regions=self.regions, eyes=eyes)
        from models.learned import LearnedSynthesizer

        return LearnedSynthesizer(keyframe, model, ref_params, ring_weights, self.device, compiled=self.compiled,
                                  regions=self.regions, eyes=eyes)

    def warm_up(self, size: int) -> None:
        """With `compiled`: pay the compile now, on a made-up key frame of `size` (the compile
        serves every key frame of that size), as a receiver does while it waits for its peer."""
        if not self.compiled:
            return
        import torch

        from codec_core.format import GLOBAL_MOTION_COUNT, NUM_FIXED
        from models.learned import build_graph, compiled_frame_function, key_buffers, load_generator, steady_start

        device = torch.device(self.device)
        graph = build_graph(load_generator(device=device), *example_keyframe(size), device, self.regions)
        with torch.inference_mode():        # as `LearnedSynthesizer.render` makes its inputs (a guard)
            params = torch.zeros(1, NUM_FIXED + graph.geometry.expression.shape[0], device=device)
            compiled_frame_function(graph)(params, torch.zeros(1, GLOBAL_MOTION_COUNT, device=device),
                                            steady_start(1, size, device), key_buffers(graph))


class ExampleKeyframe(NamedTuple):
    """A made-up key frame and what `Synthesis.build` takes with it."""
    picture: np.ndarray         # (size, size, 3) uint8
    model: FaceModel
    ref_params: np.ndarray
    ring_weights: np.ndarray


def example_keyframe(size: int) -> ExampleKeyframe:
    """The face basis' mean face in the middle of a grey ramp: to trace the export with, and
    to time a synthesizer on before a call (what is computed does not depend on the values)."""
    basis = FaceBasis.load()
    pose = np.zeros(POSE.stop - POSE.start)
    pose[3:] = (0.5, 0.45, np.log(0.15))          # tx, ty, log_scale: a face in the middle
    ref_params = np.concatenate([pose, eye_measures(basis.mean), np.zeros(basis.num_expression)])
    ramp = np.linspace(40, 220, size, dtype=np.float32)
    picture = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                        np.full((size, size), 128, np.float32)], -1).astype(np.uint8)
    return ExampleKeyframe(picture, FaceModel(basis, basis.mean, size), ref_params,
                           np.full(NUM_RING_POINTS, RING_WEIGHT_MAX, np.int64))


def add_synthesis_options(parser: argparse.ArgumentParser) -> None:
    """--synth, --backend, --device, --onnx-model, --compile and --regions, as every command
    that makes pictures has them."""
    parser.add_argument("--synth", default=DEFAULT_SYNTH, choices=SYNTHS,
                        help="synthesizer: warp (v1, no weights), learned (v2), or auto: learned when its "
                             "weights are here and the stream is ifvc, and in a call lighter while it cannot "
                             "keep up (default: %(default)s)")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                        help="what runs the learned synthesizer: torch or onnx (ONNX Runtime) (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES,
                        help="synthesis device (default: cuda with --synth auto when there is one, else cpu)")
    parser.add_argument("--onnx-model", type=Path, metavar="PATH",
                        help="the exported synthesizer for --backend onnx (default: out/onnx/, exported on first use)")
    parser.add_argument("--compile", action="store_true",
                        help="learned synthesizer on CUDA under torch.compile with CUDA graphs, about ten times "
                             "faster a frame; compiled once, in about a minute (a receiver does it at start)")
    parser.add_argument("--regions", action="store_true",
                        help="learned synthesizer with its regional refiner of the eyes and the mouth: about a "
                             "quarter slower on a CPU, a little sharper shut eyes, a little more flicker "
                             "(a live receiver drops it first when it cannot keep up)")


def synthesis_from_args(args: argparse.Namespace) -> Synthesis:
    """The choice the options name, checked (ValueError with a one-line reason)."""
    device = args.device or ("cuda" if args.synth == "auto" and args.backend == "torch" and _cuda() else "cpu")
    choice = Synthesis(args.synth, args.backend, device, args.onnx_model, args.compile, args.regions)
    choice.check()
    return choice


_SAID: set[str] = set()


def _say_once(warning: str) -> None:
    if warning not in _SAID:
        _SAID.add(warning)
        log.warning("%s", warning)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
