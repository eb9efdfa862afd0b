"""Synthesizer v2: the key frame warped along a dense motion field, corrected by a learned
generator where the warp cannot work (models/generator.py), as one torch graph per frame.

`SynthGraph` is that graph for one key frame: what depends only on the key frame (its
control points, its features, its picture at both sizes, its eye and mouth patches) is
prepared once in `__init__`; `forward(params)` does the rest (parameters -> control points
-> dense motion -> warp -> generator -> full-size picture -> regional refiner of the eyes
and the mouth, models/regions.py -> the caller's shut eyes where an eye shuts, from the
stream's eye reference, models/eye_reference.py) with tensor code only, so it runs on CUDA and exports to
ONNX.  The correction is gated by how far the picture moves there (the occlusion gate:
where control points move, the warp may have stretched, uncovered or hidden something):
where nothing moves (the background of a still face, or every pixel for the key frame's
own parameters) the output is the warp, which is the key frame itself.

`LearnedSynthesizer` has the interface of synthesizer v1 (`models.synthesizer.Synthesizer`):
built from a decoded key frame and its reference, `render(params)` gives a uint8 picture.
On CUDA it can run under torch.compile with CUDA graphs (`compiled_frame_function`), the
key frame's tensors as inputs so that one compile serves every key frame.

The correction is kept steady from frame to frame where the picture holds still: each
frame's graph takes the previous frame's *steady state* (its gated correction and its
displacement field, at the working size) and renews the correction pixel by pixel as far
as the field moved there since (`renewal`); where nothing moved it keeps STEADY_KEEP of the
previous one.  A still face's quantised parameters wobble by a step from frame to frame,
and the generator answered each wobble with a slightly different texture: the flicker of a
still clip.  The first frame of a key frame starts from `steady_start` (nothing kept), and
where the gate is all but shut nothing is kept either, so where the picture does not move
the output is the warp, whatever came before.

What the layers after the generator draw at full size (the regional refiner, the eye and
mouth references) is kept steady by the same rule (`steady_layers`): their change to the
picture is renewed as far as the field moved there, so that a mouth reference's teeth do not
jump with each quantisation step of the lips.  The state carries it at full size, folded into
the working size's grid (`pixel_unshuffle`: 3 (S/WORK)^2 channels after the five above).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from models.eye_reference import OPENNESS, EyePatches, lay_eye_references, no_eye_patches
from models.face_model import FaceModel
from models.generator import WORK, Generator, warp_features
from models.iris_layer import EyeTarget, eye_targets, iris_free, key_lid_colours, lay_irises
from models.motion import (
    KeyConstants,
    KeyGeometry,
    MeshTensors,
    SourceMesh,
    dense_motion,
    exact_points,
    global_field,
    heat_maps,
    identity_grid,
    normalised,
)
from models.mouth_reference import lay_mouth_reference
from models.regions import REGIONS, key_patches

ASSET = Path(__file__).resolve().parent / "assets" / "synth_v2.pt"
GATE_SCALE = 0.004        # normalised motion at which the correction is 63 % on (0.5 px at 256)
STEADY_SCALE = 0.01       # normalised motion since the previous frame at which 63 % of what was kept is renewed
STEADY_KEEP = 0.9         # share of the previous frame's correction kept where nothing moved
STEADY_FAR = 1.0e4        # the displacement of `steady_start`: so far from any field that nothing is kept
STEADY_GATE = 1.0e-3      # where the gate is below this (the correction there under 1/1000), nothing is kept
# buffers of SynthGraph that are the same for every key frame of a size (the rest are the key frame's)
CONSTANT_BUFFERS = ("full_grid",)


class WeightsError(Exception):
    """The learned synthesizer's weights are missing or of another version."""


def load_generator(path: Path = ASSET, device: str | torch.device = "cpu") -> Generator:
    """The trained generator; WeightsError when the file is missing or of another version.
    Loaded once per file version and device: every key frame of a call shares it (read-only)."""
    if not Path(path).exists():
        raise WeightsError(f"no learned synthesizer weights at {path}: train them with `python -m models.train` "
                           "or use --synth warp")
    return _load_generator(Path(path).resolve(), Path(path).stat().st_mtime_ns, str(device))


@lru_cache(maxsize=4)
def _load_generator(path: Path, mtime_ns: int, device: str) -> Generator:
    generator = Generator()
    generator.load_state_dict(weights_state(path))
    return generator.eval().to(device)


def weights_problem(path: Path | None = None) -> str | None:
    """Why the learned synthesizer cannot use the weights at `path` (default ASSET): missing,
    unreadable or of another version, in one line; None when it can (read once per file version)."""
    try:
        load_generator(ASSET if path is None else path)
    except WeightsError as exc:
        return str(exc)
    return None


def weights_state(path: Path) -> dict[str, torch.Tensor]:
    """The generator's state in a weights file; WeightsError when it is unreadable or of
    another version."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:    # a truncated or foreign file: torch says why in its own words
        raise WeightsError(f"{path} is not a learned synthesizer weights file ({type(exc).__name__})") from None
    if not isinstance(saved, dict) or saved.get("version") != Generator.VERSION:
        found = saved.get("version") if isinstance(saved, dict) else None
        raise WeightsError(f"{path} holds learned synthesizer {found!r}, this code needs {Generator.VERSION!r}")
    return saved["state"]


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class SynthGraph(torch.nn.Module):
    """Per-frame synthesis for one key frame: parameters (B, P) -> pictures (B, 3, S, S) in [0, 1]."""

    def __init__(self, generator: Generator, geometry: KeyGeometry, keyframe: torch.Tensor,
                 ref_params: torch.Tensor, key_iris_free: torch.Tensor, lid_colours: torch.Tensor,
                 regions: bool = False, eyes: EyePatches | None = None) -> None:
        super().__init__()
        self.generator = generator
        self.regions = regions          # the regional refiner on (--regions; off by default)
        self.geometry = geometry
        size = keyframe.shape[-1]
        self.size = size
        device = keyframe.device
        with torch.no_grad():
            source, key_landmarks = geometry.points(ref_params[None])
            source = source[..., :2]
            key_work = resize(keyframe, WORK)
            key_free_work = resize(key_iris_free, WORK)
            features = generator.key_encoder(key_work)
        mesh = SourceMesh.build(normalised(source[0], size).cpu().numpy(), WORK).tensors(device)
        self.register_buffer("keyframe", keyframe)
        self.register_buffer("key_iris_free", key_iris_free)
        self.register_buffer("key_landmarks", normalised(key_landmarks[..., :2], size))
        self.register_buffer("key_lid_colours", lid_colours)
        self.register_buffer("key_work", key_work)
        self.register_buffer("key_free_work", key_free_work)
        self.register_buffer("source", normalised(source, size))
        for name, table in mesh._asdict().items():
            self.register_buffer(f"mesh_{name}", table)
        self.register_buffer("exact", torch.from_numpy(exact_points(source.shape[1]))[None].to(device))
        self.register_buffer("full_grid", identity_grid(size, device))
        # without an eye reference its buffers are there (every graph of a size has the same
        # inputs) but its layer is skipped: it would lay nothing
        self.lays_eyes = eyes is not None
        self.register_buffer("key_openness", ref_params[list(OPENNESS)][None])
        for name, value in (eyes or no_eye_patches(size))._asdict().items():
            self.register_buffer(f"eye_{name}", value.to(device))
        self.levels = len(features)
        for i, f in enumerate(features):
            self.register_buffer(f"feature{i}", f)
        if regions:
            with torch.no_grad():
                for i, r in enumerate(key_patches(keyframe, self.key_landmarks)):
                    self.register_buffer(f"key_region{i}", r)

    def forward(self, params: torch.Tensor, motion: torch.Tensor,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pictures (B, 3, S, S) in [0, 1] for parameters (B, P) and global motions (B, 4) (the
        full-size warp plus the upsampled correction), and the steady state for the next frame,
        from this one's `state` (B, `state_channels(S)`, WORK, WORK) (None: `steady_start`)."""
        if state is None:
            state = steady_start(len(params), self.size, params.device)
        target, landmarks = self.geometry.points(params, motion)
        target = frame_points(target, self.size)
        features = [getattr(self, f"feature{i}") for i in range(self.levels)]
        mesh = MeshTensors(*(getattr(self, f"mesh_{name}") for name in MeshTensors._fields))
        landmarks = normalised(landmarks[..., :2], self.size)
        key = KeyPictures(self.key_work, self.key_free_work, self.key_landmarks, self.key_lid_colours)
        corrected = correct(self.generator, key, features, mesh, self.source, self.exact, target, landmarks, motion,
                            state)
        full = under = full_size(self.keyframe, self.key_iris_free, self.key_lid_colours, self.full_grid,
                                 corrected.disp, corrected.correction, corrected.eyes)
        if self.regions:
            key_regions = [getattr(self, f"key_region{i}") for i in range(len(REGIONS))]
            full = self.generator.regions(full, landmarks, key_regions, self.key_landmarks)
        if self.lays_eyes:
            reference = EyePatches(self.eye_patches, self.eye_openness, self.eye_present)
            full = lay_eye_references(full, landmarks, params[:, list(OPENNESS)], self.key_openness, reference)
            n = self.eye_patches.shape[-2]
            full = lay_mouth_reference(full, landmarks, self.key_landmarks, self.eye_patches[..., 2 * n:],
                                       self.eye_present[:, 2])
        layers = steady_layers(full - under, corrected.renew, state, self.size)
        folded = F.pixel_unshuffle(layers, self.size // WORK)
        return (under + layers).clamp(0.0, 1.0), torch.cat([corrected.state, folded], 1)


def full_size(keyframe: torch.Tensor, key_iris_free: torch.Tensor, lid_colours: torch.Tensor,
              full_grid: torch.Tensor, disp: torch.Tensor, correction: torch.Tensor,
              eyes: list[EyeTarget]) -> torch.Tensor:
    """The full-size picture (B, 3, S, S) before the regional refiner: the key frame (1 or B,
    3, S, S) warped along the working-size field `disp`, its irises laid, and the upsampled
    working-size `correction` added.  Shared by the per-frame graph and training."""
    grid = sampling_grid(disp, full_grid)
    full = F.grid_sample(keyframe.expand(len(disp), -1, -1, -1), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)
    full = lay_irises(full, grid, keyframe, key_iris_free, eyes, lid_colours, full_grid)
    size = full_grid.shape[0]
    if size != WORK:
        correction = F.interpolate(correction, size=(size, size), mode="bilinear", align_corners=False)
    return (full + correction).clamp(0.0, 1.0)


def state_channels(size: int) -> int:
    """Channels of the steady state at picture size `size`: the correction (3) and the field
    (2) at the working size, then the layers' change at full size, folded (`pixel_unshuffle`)."""
    if size % WORK:
        raise ValueError(f"a picture size of {size} is not a multiple of the working size {WORK}")
    return 5 + 3 * (size // WORK) ** 2


def steady_start(batch: int, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The steady state (B, `state_channels(size)`, WORK, WORK) of a key frame's first frame:
    nothing kept."""
    return torch.cat([torch.zeros(batch, 3, WORK, WORK, device=device),
                      torch.full((batch, 2, WORK, WORK), STEADY_FAR, device=device),
                      torch.zeros(batch, state_channels(size) - 5, WORK, WORK, device=device)], 1)


def renewal(gate: torch.Tensor, disp: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """(B, 1, WORK, WORK) how much of what the previous frame drew over the warp is renewed:
    as far as the field `disp` moved since it was `before`; wholly where the `gate` is all but
    shut (there the picture is the warp, whatever came before)."""
    renew = 1.0 - STEADY_KEEP * torch.exp(-(disp - before).norm(dim=1, keepdim=True) / STEADY_SCALE)
    return torch.where(gate > STEADY_GATE, renew, torch.ones_like(renew))


def steady_layers(change: torch.Tensor, renew: torch.Tensor, state: torch.Tensor, size: int) -> torch.Tensor:
    """The full-size layers' `change` to the picture (B, 3, S, S; S = `size`, a number, so
    that the export sees a constant) renewed (`renew`, upsampled) from the previous frame's,
    unfolded from `state`'s channels after the first five."""
    renew = F.interpolate(renew, size=(size, size), mode="bilinear", align_corners=False)
    return renewed(F.pixel_shuffle(state[:, 5:], size // WORK), change, renew)


def renewed(kept: torch.Tensor, new: torch.Tensor, renew: torch.Tensor) -> torch.Tensor:
    """`kept` renewed towards `new` by the share `renew` (1: all new)."""
    return kept + renew * (new - kept)


class Corrected(NamedTuple):
    """What `correct` gives: the working-size frame (B, 3, WORK, WORK), its correction over the
    warp with the irises laid, the displacement field (B, 2, WORK, WORK), the eyes' targets (for
    the full-size iris layer), the steady state for the next frame (B, 5, WORK, WORK) and how
    much of the frame before was renewed."""
    frame: torch.Tensor
    correction: torch.Tensor
    disp: torch.Tensor
    eyes: list[EyeTarget]
    state: torch.Tensor
    renew: torch.Tensor     # (B, 1, WORK, WORK) `renewal` (all ones without a state before)


def frame_points(points: torch.Tensor, size: int) -> torch.Tensor:
    """Control points (B, V, 3) from `KeyGeometry.points` in pixels -> normalised x, y and
    depth on the same scale, as `dense_motion` takes them."""
    return torch.cat([normalised(points[..., :2], size), points[..., 2:] * (2.0 / size)], -1)


def sampling_grid(disp: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Sampling grid (B, H, W, 2): the identity at that size plus the (upsampled) displacement."""
    h, w = identity.shape[:2]
    if disp.shape[-2:] != (h, w):
        disp = F.interpolate(disp, size=(h, w), mode="bilinear", align_corners=False)
    return identity + disp.permute(0, 2, 3, 1)


class KeyPictures(NamedTuple):
    """What `correct` needs of the key frame (1 or B of them): the picture and its iris-free
    copy at the working size (B, 3, WORK, WORK), its landmarks (B, 478, 2), normalised, and
    its eyes' lid and lash colours (B, 2, 2, 3: models.iris_layer.key_lid_colours)."""
    picture: torch.Tensor
    iris_free: torch.Tensor
    landmarks: torch.Tensor
    lid_colours: torch.Tensor


def correct(generator: Generator, key: KeyPictures, features: list[torch.Tensor], mesh: MeshTensors,
            source: torch.Tensor, exact: torch.Tensor, target: torch.Tensor, landmarks: torch.Tensor,
            motion: torch.Tensor, state: torch.Tensor | None = None) -> Corrected:
    """The working-size frame and what goes with it (`Corrected`); all positions normalised.
    `state`: the previous frame's steady state (None: none kept, as in training).  Shared by the per-frame graph and
    training, which runs it on batches of different key frames, so that the generator
    corrects the picture it will correct in use.  The gate opens where the picture moves
    other than the global motion moves it (the face, hair, what a turn uncovers) and where
    the picture samples outside the key frame (what a moving camera brings into view)."""
    disp, _ = dense_motion(mesh, source, target, exact, WORK)
    work_grid = identity_grid(WORK, key.picture.device)
    grid = sampling_grid(disp, work_grid)
    warped = F.grid_sample(key.picture.expand(len(target), -1, -1, -1), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    eyes = eye_targets(key.landmarks, landmarks, work_grid)
    warped = lay_irises(warped, grid, key.picture, key.iris_free, eyes, key.lid_colours, work_grid)
    moved = (disp - global_field(motion, WORK)).norm(dim=1, keepdim=True)
    outside = (grid.abs() - 1.0).clamp(min=0.0).sum(-1)[:, None]
    gate = 1.0 - torch.exp(-(moved + outside) / GATE_SCALE)
    conditions = torch.cat([heat_maps(landmarks, WORK), gate, warped], 1)
    correction = gate * generator.decoder(warp_features(features, grid), conditions)
    renew = torch.ones_like(gate)
    if state is not None:
        renew = renewal(gate, disp, state[:, 3:5])
        correction = renewed(state[:, :3], correction, renew)
    return Corrected((warped + correction).clamp(0.0, 1.0), correction, disp, eyes, torch.cat([correction, disp], 1),
                     renew)


def build_graph(generator: Generator, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray,
                ring_weights: np.ndarray, device: str | torch.device = "cpu", regions: bool = False,
                eyes: EyePatches | None = None) -> SynthGraph:
    """The per-frame graph of one key frame (uint8 H x W x 3) and its reference (`regions`:
    with the regional refiner; `eyes`: its eye reference, models.eye_reference)."""
    geometry = KeyGeometry(KeyConstants.from_model(model, ref_params, ring_weights)).to(device)

    def tensor(picture: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(picture)).to(device).permute(2, 0, 1)[None].float() / 255.0

    params = torch.as_tensor(ref_params, dtype=torch.float32, device=device)
    landmarks = model.landmarks(ref_params)
    colours = torch.from_numpy(key_lid_colours(keyframe, landmarks))[None].to(device)
    return SynthGraph(generator, geometry, tensor(keyframe), params, tensor(iris_free(keyframe, landmarks)),
                      colours, regions, eyes).eval()


def key_buffers(graph: SynthGraph) -> dict[str, torch.Tensor]:
    """The graph's buffers that depend on the key frame (name -> tensor), in the graph's order."""
    return {name: b for name, b in graph.named_buffers() if name not in CONSTANT_BUFFERS}


FrameFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
                         tuple[torch.Tensor, torch.Tensor]]


def frame_function(template: SynthGraph) -> FrameFunction:
    """`template`'s forward with the key frame's buffers as an argument: (params, motion,
    state, key_buffers(graph)) gives what `graph(params, motion, state)` gives, for any graph
    of the template's size and generator.  (`models.export.PerFrame` does the same for the
    ONNX exporter by swapping buffers: its tracer refuses `functional_call`.)"""
    def frames(params: torch.Tensor, motion: torch.Tensor, state: torch.Tensor,
               buffers: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(template, buffers, (params, motion, state))
    return frames


_COMPILED: dict[tuple[int, str, int, bool], FrameFunction] = {}


def compiled_frame_function(graph: SynthGraph) -> FrameFunction:
    """`frame_function` under torch.compile with CUDA graphs ("reduce-overhead"), one per
    process, size, device and generator: the key frame is an input, not a constant, so the
    compile (about a minute) is paid once and every later key frame reuses it, with or
    without an eye reference (the template lays one always: nothing where there is none)."""
    key = (graph.size, str(graph.keyframe.device), id(graph.generator), graph.regions)
    if key not in _COMPILED:
        # a copy as the template: key buffers that alias the template's would be guarded on
        # (one more compile when the next key frame's are not)
        template = copy.deepcopy(graph)
        template.lays_eyes = True
        _COMPILED[key] = torch.compile(frame_function(template), mode="reduce-overhead")
    return _COMPILED[key]


class LearnedSynthesizer:
    """Renders frames of one key frame from decoded parameter vectors (synthesizer v2), each
    from the steady state the one before left; `compiled` runs them through
    `compiled_frame_function` (CUDA)."""

    def __init__(self, keyframe: np.ndarray, model: FaceModel, ref_params: np.ndarray, ring_weights: np.ndarray,
                 device: str = "cpu", generator: Generator | None = None, compiled: bool = False,
                 regions: bool = False, eyes: EyePatches | None = None) -> None:
        self.device = torch.device(device)
        self.graph = build_graph(generator or load_generator(device=self.device), keyframe, model, ref_params,
                                 ring_weights, self.device, regions, eyes)
        self._compiled = compiled_frame_function(self.graph) if compiled else None
        self._buffers = key_buffers(self.graph)
        # made under inference_mode, as every later frame's state and `Synthesis.warm_up`'s: a
        # compiled function guards on the kind (else one more compile)
        with torch.inference_mode():
            self._state = steady_start(1, self.graph.size, self.device)

    def set_eyes(self, eyes: EyePatches) -> None:
        """Lay `eyes` from the next frame on (an eye reference that came after the key frame):
        the graph's eye buffers are overwritten in place, so `--compile` sees them too."""
        with torch.no_grad():
            for name, value in eyes._asdict().items():
                getattr(self.graph, f"eye_{name}").copy_(value)
        self.graph.lays_eyes = True

    @torch.inference_mode()
    def render(self, params: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        p = torch.as_tensor(np.asarray(params, np.float32), device=self.device)[None]
        m = torch.as_tensor(np.zeros(4, np.float32) if motion is None else np.asarray(motion, np.float32),
                            device=self.device)[None]
        if self._compiled is None:
            out, self._state = self.graph(p, m, self._state)
        else:       # a CUDA graph's outputs are overwritten by its next run: keep a copy of the state
            out, state = self._compiled(p, m, self._state, self._buffers)
            self._state = state.clone()
        picture = out[0].permute(1, 2, 0) * 255.0
        return picture.round().to(torch.uint8).cpu().numpy()
