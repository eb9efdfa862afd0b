"""Native motion models of the fomm, fv2v and cfte formats: the key frame warped along a
sampling field that each builds from its own format's values only (docs/formats.md).

Each format turns the key frame's values and a frame's values into K key points in [-1, 1]
crop coordinates, at the key frame (`kp_key`) and in the frame (`kp`), and a local linear
motion per key point (`D`, 2x2, zero for cfte).  The backward field, for every output pixel
centre z, is

    field(z) = z + (sum_k w_k(z) [(kp_key_k - kp_k) + D_k (z - kp_k)] + BACKGROUND g(z))
                   / (sum_k w_k(z) + BACKGROUND)
    w_k(z)   = exp(-|z - kp_k|^2 / (2 sigma^2))
    g(z)     = G^-1(z) - z, the backward displacement of the frame's global picture motion G
               (models/global_motion.py; zero without one)

FOMM's first-order motion kp_key + J_key J^-1 (z - kp) mixed by Gaussian heat maps around
the frame's key points, with an identity background term; there is no learned dense-motion
network (the motion mask is the fixed Gaussian mixture).  D = (J_key - J) J^-1 (fomm),
the top-left 2x2 of (M_key - M) M^-1 with M = s R the 3D pose (fv2v), 0 (cfte): written as
differences, so that the key frame's own values give a field that is exactly the identity
and a picture that is exactly the key frame.  Far from the face every w_k vanishes against
BACKGROUND and the picture moves as the camera did (stays put without global motion).
sigma is a fixed share of the spread of the key frame's key points (so it scales with the face).

Torch, loop-free, no tensor of more than 4 dimensions and a 4-D grid_sample (ONNX-exportable
later); CPU or CUDA.  ifvc keeps the synthesizers of models.synthesizers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from codec_core.format import FEATURE_FORMATS
from models.feature_formats import FV2V_GROUPS, FormatError, FormatGeometry, check_format, load_cfte
from models.motion import euler_yxz, global_field, pixel_centres
from models.reference import Reference

BACKGROUND = 0.02          # weight of the identity (background) term against the Gaussians
SIGMA_SHARE = {"fomm": 0.22, "fv2v": 0.20, "cfte": 0.10}   # sigma / RMS spread of the key frame's key points
MIN_DET = 1e-6             # a fomm Jacobian with a smaller |det| is taken as this (a corrupt or coarse one)
# fomm: the local linear motion (M_key - M) M^-1 of a key point is scaled down to this Frobenius
# norm at most: a shut eye's group is flat, its Jacobian nearly singular, and unbounded, the inverse
# swept colours from far away (flag, shirt) over the eyes in a blink.
MAX_LOCAL = 0.5


class KeypointMotion(torch.nn.Module):
    """Values of one format -> key points, local linear motion."""

    def points(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1, C) values -> key points (1, K, 2) in [-1, 1] and the matrices (1, K, 2, 2) whose
        difference gives the local motion (None: translation only)."""
        raise NotImplementedError

    def local(self, m_key: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(M_key - M) M^-1 of the matrices `points` gives, (1, K, 2, 2)."""
        raise NotImplementedError


class FommMotion(KeypointMotion):
    def points(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return values[:, :20].reshape(1, 10, 2), values[:, 20:].reshape(1, 10, 2, 2)

    def local(self, m_key: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
        det = a * d - b * c
        det = torch.where(det.abs() < MIN_DET, torch.full_like(det, MIN_DET), det)
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]
        local = (m_key - m) @ inv
        norm = torch.sqrt((local * local).sum((-2, -1)) + 1e-12)
        return local * torch.clamp(MAX_LOCAL / norm, max=1.0)[..., None, None]


class Fv2vMotion(KeypointMotion):
    """x = s R (x_c + delta) + t, ifvc's pose convention (models.face_model.pose_to_similarity),
    x_c the group centroids of the key frame's reference shape; [-1, 1] = 2 x / size - 1."""

    def __init__(self, centroids: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.as_tensor(centroids, dtype=torch.float32)[None])  # (1, 15, 3)

    def points(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        R = euler_yxz(values[:, :3])                                   # (1, 3, 3)
        s = torch.exp(values[:, 5])[:, None, None]                      # frame widths per canonical unit
        sR = s * R
        t = torch.cat([values[:, 3:5], torch.zeros_like(values[:, :1])], 1)[:, None]   # (1, 1, 3)
        x = (self.centroids + values[:, 6:].reshape(1, len(FV2V_GROUPS), 3)) @ sR.transpose(1, 2) + t
        kp = 2 * x[..., :2] - 1
        # the pose matrix with its inverse's pieces: (s R, R^T / s), one per key point
        return kp, torch.stack([sR, R.transpose(1, 2) / s], 1)

    def local(self, m_key: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        d = (m_key[:, 0] - m[:, 0]) @ m[:, 1]                           # (M_key - M) M^-1, (1, 3, 3)
        return d[:, None, :2, :2].expand(1, len(FV2V_GROUPS), 2, 2)


class CfteMotion(KeypointMotion):
    """The 68 points rebuilt from the features: mean + P f (never the 478 mesh)."""

    def __init__(self) -> None:
        super().__init__()
        p = load_cfte()
        self.register_buffer("mean", torch.as_tensor(p.mean, dtype=torch.float32)[None])       # (1, 136)
        self.register_buffer("basis_t", torch.as_tensor(p.basis.T, dtype=torch.float32))       # (16, 136)

    def points(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return (self.mean + values @ self.basis_t).reshape(1, -1, 2), None


class WarpField(torch.nn.Module):
    """Key frame values + frame values -> backward sampling grid (1, H, W, 2) (grid_sample's)."""

    def __init__(self, motion: KeypointMotion, key_values: torch.Tensor, size: int, sigma_share: float) -> None:
        super().__init__()
        self.motion = motion
        c = pixel_centres(size, key_values.device)
        self.register_buffer("zx", c.view(1, 1, 1, size).expand(1, 1, size, size).contiguous())
        self.register_buffer("zy", c.view(1, 1, size, 1).expand(1, 1, size, size).contiguous())
        with torch.no_grad():                    # the key frame's side, once per key frame
            kp_key, m_key = motion.points(key_values)
        self.register_buffer("kp_key", kp_key)
        self.register_buffer("m_key", m_key)     # None (cfte: translation only) registers nothing
        spread = float(torch.sqrt(((kp_key - kp_key.mean(1, keepdim=True)) ** 2).sum(-1).mean()))
        self.sigma = sigma_share * spread

    def forward(self, values: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """The grid of (1, C) values and the frame's (1, 4) global motion (None: none)."""
        kp_key, m_key = self.kp_key, self.m_key
        kp, m = self.motion.points(values)
        n = kp.shape[1]
        kx, ky = kp[..., 0].view(1, n, 1, 1), kp[..., 1].view(1, n, 1, 1)
        dx, dy = self.zx - kx, self.zy - ky                                     # (1, K, H, W)
        w = torch.exp((dx * dx + dy * dy) * (-0.5 / self.sigma ** 2))
        mx = (kp_key[..., 0] - kp[..., 0]).view(1, n, 1, 1)
        my = (kp_key[..., 1] - kp[..., 1]).view(1, n, 1, 1)
        if m is not None and m_key is not None:
            d = self.motion.local(m_key, m)
            mx = mx + d[..., 0, 0].view(1, n, 1, 1) * dx + d[..., 0, 1].view(1, n, 1, 1) * dy
            my = my + d[..., 1, 0].view(1, n, 1, 1) * dx + d[..., 1, 1].view(1, n, 1, 1) * dy
        norm = w.sum(1, keepdim=True) + BACKGROUND
        bx = by = 0.0
        if motion is not None:
            g = global_field(motion, self.zx.shape[-1]) * BACKGROUND
            bx, by = g[:, 0:1], g[:, 1:2]
        gx = self.zx + ((w * mx).sum(1, keepdim=True) + bx) / norm
        gy = self.zy + ((w * my).sum(1, keepdim=True) + by) / norm
        return torch.cat([gx, gy], 1).permute(0, 2, 3, 1)


class FormatSynth:
    """The native synthesizer of one format for one key frame."""

    def __init__(self, fmt: str, keyframe: np.ndarray, field: WarpField, device: str) -> None:
        self.fmt = fmt
        self.count = FEATURE_FORMATS[fmt].count
        self.device = torch.device(device)
        self.field_model = field.to(self.device)
        self._image = torch.from_numpy(np.ascontiguousarray(keyframe)).to(self.device).permute(2, 0, 1)[None].float()

    def field(self, values: np.ndarray, motion: np.ndarray | None = None) -> torch.Tensor:
        """The sampling grid (1, H, W, 2) of dequantised `values` (count,) and the frame's global
        motion (4,) (None: none)."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (self.count,):
            raise FormatError(f"{self.fmt} values have shape {v.shape}, not ({self.count},)")
        m = None if motion is None or not np.any(motion) else \
            torch.as_tensor(np.asarray(motion, np.float32), device=self.device)[None]
        with torch.no_grad():
            return self.field_model(torch.as_tensor(v, dtype=torch.float32, device=self.device)[None], m)

    def render(self, values: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB: the key frame warped along the field of `values`, its background
        moved by the global picture motion `motion` (None: still)."""
        grid = self.field(values, motion)
        with torch.no_grad():
            out = F.grid_sample(self._image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def build_format_synth(fmt: str, keyframe: np.ndarray, reference: Reference, device: str = "cpu") -> FormatSynth:
    """The native synthesizer of `fmt` (fomm, fv2v or cfte) for the key frame `keyframe` (H, W, 3)
    uint8 RGB; its values are the key frame's own (models.feature_formats.key_features)."""
    from models.feature_formats import key_features

    check_format(fmt)
    motion: KeypointMotion
    if fmt == "fomm":
        motion = FommMotion()
    elif fmt == "fv2v":
        motion = Fv2vMotion(FormatGeometry.of(reference).fv2v_centroids)
    elif fmt == "cfte":
        motion = CfteMotion()
    else:
        raise FormatError(f"format {fmt!r} has no native motion model here: ifvc uses models.synthesizers")
    size = keyframe.shape[0]
    if keyframe.shape != (reference.size, reference.size, 3):
        raise FormatError(f"key frame of shape {keyframe.shape} does not match the reference's size {reference.size}")
    key = torch.as_tensor(key_features(fmt, reference), dtype=torch.float32)[None]
    field = WarpField(motion, key, size, SIGMA_SHARE[fmt])
    return FormatSynth(fmt, keyframe, field, device)
