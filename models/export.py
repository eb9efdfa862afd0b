"""Synthesizer v2's per-frame graph exported to ONNX, for ONNX Runtime (`models.onnx_synth`).

    python -m models.export [--out PATH] [--size 256|512] [--weights PATH] [--opset N]

Design: one ONNX file per generator and picture size, for every key frame.  The file holds
the learned weights (the generator is the model, the same for every call) and what depends
only on the picture size (the identity sampling grid), but nothing of one particular face:
the key frame's prepared tensors are inputs of the graph, next to the parameters:

    params                  (1, P)              the frame's parameter vector
    motion                  (1, 4)              the frame's global picture motion
    state                   (1, C, WORK, WORK)  the steady state the previous frame left
                                                (`models.learned.steady_start` for a key
                                                frame's first frame; C = 5 + 3 (S/WORK)^2:
                                                the layers' change folded in)
    keyframe                (1, 3, S, S)        the key frame in [0, 1]
    key_work                (1, 3, WORK, WORK)  the key frame at the generator's working size
    feature0 .. feature3    (1, C_i, h_i, w_i)  the generator's key-encoder features
    key_iris_free           (1, 3, S, S)        the key frame with its irises inpainted away
    key_free_work           (1, 3, WORK, WORK)  the same at the working size
    key_landmarks           (1, 478, 2)         the key frame's landmarks, normalised
    key_lid_colours         (1, 2, 2, 3)        per eye its lid skin and lash colours (models.iris_layer)
    source                  (1, V, 2)           the key frame's control points, normalised
    mesh_index, mesh_weight (1, WORK*WORK, 3)   every working-size pixel's key-frame triangle:
    mesh_simplex            (1, WORK*WORK)      its corners, weights and row in mesh_triangles
    mesh_triangles          (1, 2V-5, 3)        the key frame's triangles (padded rows unused)
    mesh_neighbours         (1, 2V-5, 3)        each triangle's neighbour across each corner, -1 none
    exact                   (1, V)              where the motion field stays exact
    geometry_<name>         ...                 the KeyGeometry buffers (canonical shape, bases,
                                                head rings, border, index lists)
    -> picture              (1, 3, S, S)        the frame in [0, 1]
    -> next_state           (1, C, WORK, WORK)  the steady state for the next frame

They are the buffers of `models.learned.SynthGraph`, which the backend builds with torch
once per key frame (`key_inputs`) and hands to ONNX Runtime once, for all its frames; the
per-frame work (parameters -> control points -> dense motion -> warp -> generator ->
picture) runs in ONNX Runtime only.  A graph per key frame would have baked the face in as
constants, and cost a trace and a check (about half a second on two cores, more on a
busy one) at every key frame of a call, with a file per key frame to keep and clean up;
this way the export is done once per set of weights and size
(`out/onnx/synth_v2_{size}.onnx` by default) and a new key frame costs one torch pass of
the key encoder, as with the torch backend.

Exporter: torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`,
no onnxscript needed), opset 17 (GridSample needs 16; 17 is what ONNX Runtime and
TensorRT have long supported).  The one operator that exporter lacks, `aten::deg2rad`
(the Euler angles of models.motion), is given its ONNX here (`register_symbolics`).
The batch is 1 (the file's shapes are static).  Beside the file a JSON (`<name>.json`)
names the generator version (`Generator.VERSION`), fingerprints of the weights and of the traced code, the
opset, the size and every input and output with its shape; the backend uses it to tell
whether a file on disk was exported from the weights it has.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec_core.format import GLOBAL_MOTION_COUNT, NUM_FIXED
from models.eye_reference import no_eye_patches
from models.generator import WORK, Generator
from models.learned import ASSET, SynthGraph, build_graph, key_buffers, load_generator, steady_start
from models.synthesizers import example_keyframe

log = logging.getLogger(__name__)

OPSET = 17
MIN_OPSET = 16            # GridSample
SIZES = (256, 512)
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "out" / "onnx"
PARAMS = "params"
MOTION = "motion"            # the frame's global picture motion (codec_core.format GLOBAL_MOTION_NAMES)
STATE = "state"              # the steady state the previous frame left (models.learned.steady)
OUTPUT = "picture"
NEXT_STATE = "next_state"
EXPORTER = "torch.onnx.export (TorchScript exporter, dynamo=False)"


def default_path(size: int, regions: bool = False) -> Path:
    """Where the backend looks for (and exports) the graph of one picture size (and setting:
    `regions`, with the regional refiner, has its own file)."""
    return DEFAULT_DIR / f"synth_v2_{size}{'_regions' if regions else ''}.onnx"


def metadata_path(onnx_path: Path) -> Path:
    """The JSON beside an exported file."""
    return Path(onnx_path).with_suffix(".json")


def cpu_copy(generator: Generator) -> Generator:
    """The generator on the CPU in eval mode, leaving the caller's where and as it is."""
    return copy.deepcopy(generator).to("cpu").eval()


def weights_fingerprint(generator: Generator) -> str:
    """SHA-256 of the generator's weights (names, shapes and values, in state-dict order)."""
    digest = hashlib.sha256(Generator.VERSION.encode())
    for name, value in generator.state_dict().items():
        array = value.detach().to("cpu", torch.float32).contiguous().numpy()
        digest.update(name.encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def code_fingerprint() -> str:
    """SHA-256 of the source of the modules the graph is traced from: an exported file of
    the same weights but older motion code is not used."""
    import models.eye_reference
    import models.generator
    import models.iris_layer
    import models.layers
    import models.learned
    import models.motion
    import models.mouth_reference
    import models.regions

    digest = hashlib.sha256()
    for module in (models.motion, models.layers, models.generator, models.iris_layer, models.regions,
                   models.eye_reference, models.mouth_reference, models.learned):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def input_name(buffer: str) -> str:
    """The graph input that carries a SynthGraph buffer ("geometry.reference" -> "geometry_reference")."""
    return buffer.replace(".", "_")


def key_inputs(graph: SynthGraph) -> dict[str, np.ndarray]:
    """The key frame's prepared tensors as the graph's inputs (name -> array, contiguous)."""
    return {input_name(name): np.ascontiguousarray(b.detach().cpu().numpy()) for name, b in key_buffers(graph).items()}


class PerFrame(torch.nn.Module):
    """SynthGraph.forward with the key frame's buffers as arguments instead of constants."""

    def __init__(self, graph: SynthGraph) -> None:
        super().__init__()
        self.graph = graph
        self.names = list(key_buffers(graph))

    def forward(self, params: torch.Tensor, motion: torch.Tensor, state: torch.Tensor,
                *key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.func.functional_call refuses to run under the tracer: swap the buffers by hand
        saved = {name: self._swap(name, value) for name, value in zip(self.names, key, strict=True)}
        try:
            return self.graph(params, motion, state)
        finally:
            for name, value in saved.items():
                self._swap(name, value)

    def _swap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Put `value` in the place of the graph's buffer `name` (dotted); the tensor it held."""
        owner, _, leaf = name.rpartition(".")
        module = self.graph.get_submodule(owner)
        held = module._buffers[leaf]
        module._buffers[leaf] = value
        return held


def example_graph(generator: Generator, size: int, device: str | torch.device = "cpu",
                  regions: bool = False) -> SynthGraph:
    """A SynthGraph of a made-up key frame (`models.synthesizers.example_keyframe`) to trace
    the export with: the traced operations do not depend on the values, only on the shapes.
    Its eye reference layer is on (laying nothing here), so that the file serves key frames
    with and without one."""
    return build_graph(generator, *example_keyframe(size), device, regions, no_eye_patches(size, device))


def _deg2rad(g: Any, x: Any) -> Any:
    """ONNX for aten::deg2rad (models.motion.euler_yxz), which the TorchScript exporter lacks: x * pi / 180."""
    return g.op("Mul", x, g.op("Constant", value_t=torch.tensor(math.pi / 180.0, dtype=torch.float32)))


def register_symbolics(opset: int) -> None:
    """Teach the exporter the operators of the graph that it has no ONNX for."""
    torch.onnx.register_custom_op_symbolic("aten::deg2rad", _deg2rad, opset)


def _shapes(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"name": name, "shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()]


def export(generator: Generator, out: Path, size: int = 256, opset: int = OPSET,
           regions: bool = False) -> dict[str, Any]:
    """Export the per-frame graph of `size` (`regions`: with the regional refiner) to `out`
    (and its JSON beside it); the metadata.
    Written to temporary files and moved into place, so a reader never sees half a file."""
    if size not in SIZES:
        raise ValueError(f"size {size}: choose one of {', '.join(map(str, SIZES))}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: GridSample needs {MIN_OPSET} or later")
    import onnx

    generator = cpu_copy(generator)
    graph = example_graph(generator, size, regions=regions)
    key = key_inputs(graph)
    params = np.zeros((1, NUM_FIXED + graph.geometry.expression.shape[0]), np.float32)
    motion = np.zeros((1, GLOBAL_MOTION_COUNT), np.float32)
    state = steady_start(1, size).numpy()
    module = PerFrame(graph).eval()
    register_symbolics(opset)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)     # len(tensor): batch 1 is the export's
            warnings.filterwarnings("ignore", "(.*legacy TorchScript-based ONNX export|The feature will be removed)",
                                    DeprecationWarning)                  # the exporter chosen on purpose
            torch.onnx.export(module, (torch.from_numpy(params), torch.from_numpy(motion), torch.from_numpy(state),
                                       *(torch.from_numpy(a) for a in key.values())),
                              str(staged), input_names=[PARAMS, MOTION, STATE, *key],
                              output_names=[OUTPUT, NEXT_STATE],
                              opset_version=opset, dynamo=False, do_constant_folding=True, external_data=False)
        onnx.checker.check_model(str(staged), full_check=True)
        outputs = {OUTPUT: np.zeros((1, 3, size, size), np.float32), NEXT_STATE: state}
        meta = {"generator_version": Generator.VERSION, "weights_sha256": weights_fingerprint(generator),
                "code_sha256": code_fingerprint(),
                "size": size, "regions": regions, "work_size": WORK, "opset": opset, "exporter": EXPORTER,
                "torch": torch.__version__,
                "onnx": onnx.__version__, "inputs": _shapes({PARAMS: params, MOTION: motion, STATE: state, **key}),
                "outputs": _shapes(outputs)}
        meta_staged = Path(tmp) / "meta.json"
        meta_staged.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(staged, out)
        os.replace(meta_staged, metadata_path(out))
    log.info("exported synthesizer v2 (%s, %dx%d, opset %d) to %s", Generator.VERSION, size, size, opset, out)
    return meta


def read_metadata(onnx_path: Path) -> dict[str, Any] | None:
    """The JSON beside an exported file, or None when the file or its JSON is missing or unreadable."""
    meta = metadata_path(onnx_path)
    if not Path(onnx_path).exists() or not meta.exists():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def matches(meta: dict[str, Any] | None, generator: Generator, size: int, regions: bool = False) -> bool:
    """Whether an exported file (its metadata) is the graph of these weights at this size and setting."""
    return (meta is not None and meta.get("generator_version") == Generator.VERSION and meta.get("size") == size
            and meta.get("regions") == regions
            and meta.get("weights_sha256") == weights_fingerprint(generator)
            and meta.get("code_sha256") == code_fingerprint())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m models.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="ONNX file (default: out/onnx/synth_v2_{size}.onnx, "
                    "with --regions synth_v2_{size}_regions.onnx)")
    ap.add_argument("--size", type=int, default=256, choices=SIZES, help="picture size (default 256)")
    ap.add_argument("--weights", type=Path, default=ASSET, help=f"generator weights (default {ASSET})")
    ap.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    ap.add_argument("--regions", action="store_true",
                    help="with the regional refiner of the eyes and the mouth (--synth learned --regions)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from models.learned import WeightsError

    try:
        generator = load_generator(args.weights)
    except WeightsError as exc:
        log.error("error: %s", exc)
        return 1
    export(generator, args.out or default_path(args.size, args.regions), args.size, args.opset, args.regions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
