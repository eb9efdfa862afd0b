"""Synthesizer v2 on ONNX Runtime: `OnnxSynthesizer`, with the interface of
`models.learned.LearnedSynthesizer` (`render(params, motion) -> uint8 H x W x 3`).

The graph is the per-frame graph of `models.export`, one file per set of weights and
picture size whose inputs are the parameters and the key frame's prepared tensors.  At
the key frame, torch prepares those tensors once (`models.learned.build_graph`: the key
encoder's features, the control points, the KeyGeometry buffers) and they are handed to
ONNX Runtime once, as OrtValues on its device; every frame then runs in ONNX Runtime only.

The file is looked for at `models.export.default_path(size)` (`out/onnx/synth_v2_{size}.onnx`)
and exported there on first use, or when the file there was exported from other weights
(its JSON holds their fingerprint); `onnx_model=PATH` overrides the place (exported there
when missing; an error when it holds a graph of other weights).  `device="cuda"` uses
ONNX Runtime's CUDA execution provider, which only the `onnxruntime-gpu` package has
(`pip install -e ".[gpu]"`, in an environment without the `onnx` extra's CPU package).
ONNX Runtime's intra-op threads are limited to torch's thread count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec_core.format import GLOBAL_MOTION_COUNT
from models.export import (
    MOTION,
    NEXT_STATE,
    OUTPUT,
    PARAMS,
    STATE,
    cpu_copy,
    default_path,
    export,
    input_name,
    key_inputs,
    matches,
    read_metadata,
)
from models.eye_reference import EyePatches
from models.face_model import FaceModel
from models.generator import Generator
from models.learned import build_graph, load_generator, steady_start

log = logging.getLogger(__name__)


class OnnxBackendError(RuntimeError):
    """ONNX Runtime is missing, lacks the device asked for, or the model file does not fit."""


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxBackendError('the onnx backend needs ONNX Runtime: pip install -e ".[onnx]" '
                               '(or ".[gpu]" for CUDA)') from exc
    return onnxruntime


def providers(device: torch.device) -> list[Any]:
    """ONNX Runtime execution providers for a torch device; OnnxBackendError when CUDA is asked
    for and this ONNX Runtime has no CUDA provider."""
    ort = _runtime()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise OnnxBackendError(f"the onnx backend runs on cpu or cuda, not {device.type}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise OnnxBackendError("device cuda with the onnx backend needs onnxruntime-gpu (pip install -e \".[gpu]\", "
                               "in an environment without the CPU onnxruntime package), found providers "
                               f"{', '.join(ort.get_available_providers())}")
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """One inference at a time on `threads` intra-op threads (default: torch's thread count),
    threads that sleep rather than spin between frames (a call has other work for the cores)."""
    ort = _runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def model_file(generator: Generator, size: int, onnx_model: Path | None = None, regions: bool = False) -> Path:
    """The exported graph of these weights at this size and setting: found, or exported on first use."""
    path = Path(onnx_model) if onnx_model is not None else default_path(size, regions)
    meta = read_metadata(path)
    if matches(meta, generator, size, regions):
        return path
    if onnx_model is not None and path.exists():
        why = "no JSON beside it" if meta is None else (
            f"it was exported for {meta.get('generator_version')!r} at size {meta.get('size')} "
            f"{'with' if meta.get('regions') else 'without'} the regional refiner from other weights")
        option = " --regions" if regions else ""
        raise OnnxBackendError(f"{path} does not fit the synthesizer's weights ({Generator.VERSION}, size {size}, "
                               f"{'with' if regions else 'without'} the regional refiner): {why}; export it with "
                               f"`python -m models.export --out {path} --size {size}{option}`")
    log.info("exporting synthesizer v2 to ONNX at %s (%s)", path,
             "first use" if meta is None else "the file there was exported from other weights")
    export(generator, path, size, regions=regions)
    return path


class OnnxSynthesizer:
    """Renders frames of one key frame from decoded parameter vectors (synthesizer v2, ONNX Runtime)."""

    def __init__(self, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray, ring_weights: np.ndarray,
                 device: str = "cpu", generator: Generator | None = None, onnx_model: Path | None = None,
                 threads: int | None = None, regions: bool = False, eyes: EyePatches | None = None) -> None:
        ort = _runtime()
        self.device = torch.device(device)
        chosen = providers(self.device)
        generator = cpu_copy(generator) if generator is not None else load_generator()
        size = int(keyframe.shape[0])
        self.model_path = model_file(generator, size, onnx_model, regions)
        self.session = ort.InferenceSession(str(self.model_path), session_options(threads), providers=chosen)
        with torch.inference_mode():
            graph = build_graph(generator, keyframe, model, ref_params, ring_weights, "cpu", regions, eyes)
        where, index = ("cuda", self.device.index or 0) if self.device.type == "cuda" else ("cpu", 0)
        # the key frame's tensors go to the device once; every frame only sends its parameters
        self._key = {name: ort.OrtValue.ortvalue_from_numpy(array, where, index)
                     for name, array in key_inputs(graph).items()}
        self._binding = self.session.io_binding()
        for name, value in self._key.items():
            self._binding.bind_ortvalue_input(name, value)
        self._state = steady_start(1, size).numpy()

    def set_eyes(self, eyes: EyePatches) -> None:
        """Lay `eyes` from the next frame on (an eye reference that came after the key frame)."""
        for name, value in eyes._asdict().items():
            self._key[input_name(f"eye_{name}")].update_inplace(np.ascontiguousarray(value.numpy()))

    def picture(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """The frame (1, 3, S, S) float32 in [0, 1], as the torch graph's output, drawn from the
        steady state the previous frame left (and leaving this one's)."""
        p = np.ascontiguousarray(np.asarray(params, np.float32).reshape(1, -1))
        m = np.zeros((1, GLOBAL_MOTION_COUNT), np.float32) if motion is None else \
            np.ascontiguousarray(np.asarray(motion, np.float32).reshape(1, -1))
        self._binding.bind_cpu_input(PARAMS, p)
        self._binding.bind_cpu_input(MOTION, m)
        self._binding.bind_cpu_input(STATE, self._state)
        self._binding.bind_output(OUTPUT, "cpu")
        self._binding.bind_output(NEXT_STATE, "cpu")
        self.session.run_with_iobinding(self._binding)
        picture, self._state = self._binding.copy_outputs_to_cpu()
        return picture

    def render(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """The frame as uint8 H x W x 3 (rounded half to even, as the torch backend)."""
        picture = self.picture(params, motion)[0].transpose(1, 2, 0) * np.float32(255.0)
        return np.rint(picture).astype(np.uint8)
