"""Synthesizer v2's eye reference: the caller's own shut eyes, sent once, laid where an eye shuts.

A key frame shows the eyes open.  What this person's shut eye looks like (lid skin, the lash
line, the crease) is nowhere in it, and neither the generator nor the regional refiner can
know it: on the validation people, whom they never saw, their shut eyes stayed within 10 %
of v1's painted lids in LPIPS (docs/synthesizer.md).  So the encoder sends it: once per key
frame, each eye's patch as it looked when that eye's decoded openness was lowest
(`codec_core.bitstream.EyeReference`, one small VVC picture of both patches, a few hundred
bytes), cut on the regional refiner's frame of that eye (models/regions.py: aligned with the
eye's corners, the left eye mirrored).  The synthesizer lays it on the same frame of the
target eye, through the refiner's fading window, coming in as the eye's openness falls from
`START` of the key frame's (where the iris layer's lid skin starts) to the reference's own.

    encoder: codec.eye_reference.EyePicker.see(crop, openness, landmarks) per frame, cut_eye
             -> EyePicker.record(key_id)
    decoder: codec.eye_reference.decode_eye_reference(record, side) -> EyePatches -> the graph's buffers
    per frame: lay_eye_references(picture, landmarks, openness, ...)   (tensor code, ONNX)

An eye that never shut in the clip has no patch (`present` 0): nothing is laid there.  The
key frame's own parameters lay nothing (openness at the key frame's), so the key frame comes
back exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from codec_core.format import I_EYE_L, I_EYE_R, eye_reference_size
from models.motion import normalised
from models.regions import EYES, cut, lay_back, patch_frame, window

OPENNESS = (I_EYE_R, I_EYE_L)   # each eye's openness in a parameter vector, in the order of regions.EYES
START = 0.6                     # openness share of the key frame's where the reference starts to come in
MIN_SPAN = 0.05                 # of that share: the ramp is never steeper than this


def openness_of(params: np.ndarray) -> np.ndarray:
    """(2,) the eyes' openness values (right, left) of an ifvc parameter vector."""
    return np.asarray(params, np.float64)[list(OPENNESS)]


def picture_tensor(picture: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] of an H x W x 3 uint8 picture."""
    return torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None].float() / 255.0


def picture_array(picture: torch.Tensor) -> np.ndarray:
    """H x W x 3 uint8 of a (1, 3, H, W) picture in [0, 1] (`picture_tensor`'s inverse)."""
    return (picture[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def landmark_tensor(landmarks: np.ndarray, side: int) -> torch.Tensor:
    """(1, 478, 2) normalised picture coordinates of `landmarks` (478 x 2+, pixels of a `side` picture)."""
    return normalised(torch.as_tensor(np.asarray(landmarks)[None, :, :2], dtype=torch.float32), side)


def cut_eye(picture: np.ndarray, landmarks: np.ndarray, eye: int) -> np.ndarray:
    """Eye `eye`'s (0 right, 1 left) reference patch (n x n x 3 uint8) of `picture` (S x S x 3
    uint8), on the refiner's frame of that eye along `landmarks` (478 x 2+, pixels)."""
    side = picture.shape[0]
    n = eye_reference_size(side)[1]
    with torch.no_grad():
        patch = cut(picture_tensor(picture), *patch_frame(EYES[eye], landmark_tensor(landmarks, side)), n)
    return picture_array(patch)


class EyePatches(NamedTuple):
    """A decoded eye reference as the synthesizer's graph takes it: the patches (1, 3, n, 3n) in
    [0, 1] (right eye, left eye, the mouth's strips: models/mouth_reference.py), each eye's
    openness when its patch was cut (1, 2) and whether each of the three is there (1, 3)."""
    patches: torch.Tensor
    openness: torch.Tensor
    present: torch.Tensor


def no_eye_patches(side: int, device: torch.device | str = "cpu") -> EyePatches:
    """The buffers of a key frame without an eye reference: nothing is laid."""
    width, n = eye_reference_size(side)
    return EyePatches(torch.zeros(1, 3, n, width, device=device), torch.zeros(1, 2, device=device),
                      torch.zeros(1, 3, device=device))


def eye_shares(openness: torch.Tensor, key_openness: torch.Tensor, eyes: EyePatches) -> torch.Tensor:
    """(B, 2) how much of each eye's reference to lay: 0 down to `START` of the key frame's
    openness, rising to 1 at the reference's own (target `openness` (B, 2), key's (1, 2))."""
    key = key_openness.clamp(min=1e-6)
    share, reference = openness / key, eyes.openness / key
    ramp = (START - share) / (START - reference).clamp(min=MIN_SPAN)
    return ramp.clamp(0.0, 1.0) * eyes.present[:, :2] * (key_openness > 0)


def lay_eye_references(picture: torch.Tensor, landmarks: torch.Tensor, openness: torch.Tensor,
                       key_openness: torch.Tensor, eyes: EyePatches) -> torch.Tensor:
    """`picture` (B, 3, S, S) with each eye's reference laid over it on the target eye's frame
    (normalised `landmarks` (B, 478, 2)) by `eye_shares`, through the refiner's fading
    window, on the pixels of the square around the eye (`regions.lay_back`)."""
    batch, size, n = len(picture), int(picture.shape[-1]), eyes.patches.shape[-2]     # static: constants when traced
    fade = window(n, picture.device)[None, None]
    shares = eye_shares(openness, key_openness, eyes)
    flat = picture.reshape(batch, 3, size * size)
    for eye, region in enumerate(EYES):
        patch = torch.cat([eyes.patches[..., eye * n:(eye + 1) * n] * fade, fade], 1).expand(batch, -1, -1, -1)
        laid, index = lay_back(patch, patch_frame(region, landmarks), size)
        index, share = index[:, :3], shares[:, eye].view(-1, 1, 1)
        here = flat.gather(2, index)
        flat = flat.scatter(2, index, here * (1.0 - share * laid[:, 3:]) + share * laid[:, :3])
    return flat.view(batch, 3, size, size)
