"""Frame-quality metrics on uint8 RGB frames: PSNR, SSIM and LPIPS (AlexNet, offline).

All functions take numpy arrays of shape (H, W, 3), dtype uint8, RGB channel order.

- `psnr`: on all three RGB channels, peak 255, capped at `PSNR_MAX` (100 dB), which is
  also the value for identical images.
- `ssim`: the standard SSIM of Wang et al. (2004) on the BT.601 luma channel
  (Y = 0.299 R + 0.587 G + 0.114 B, full range, data range 255), with an 11x11 Gaussian
  window (sigma 1.5), K1 = 0.01, K2 = 0.03, and the mean taken over the "valid" region
  (pixels whose window lies inside the image), as in the reference MATLAB code.
- `LPIPS`: LPIPS v0.1 with the AlexNet backbone, computed without torchvision or any
  download from the weights in shared/eval/lpips (see shared/eval/README.md).  It matches
  the upstream `lpips` package: 0.722 for (ex_ref, ex_p0) and 0.138 for (ex_ref, ex_p1).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

PSNR_MAX = 100.0
"""PSNR in dB reported for identical images; every PSNR is capped at this value."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

EVAL_DIR_ENV = "FACECALL_EVAL_DIR"
"""Environment variable naming the shared eval folder (the one that holds lpips/)."""

# LPIPS v0.1 input scaling layer (applied to RGB in [-1, 1]).
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision alexnet().features indices of the five LPIPS slices (each ends after a ReLU).
_ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_NORM_EPS = 1e-10


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    """Raise ValueError unless a and b are uint8 RGB frames of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB frames, got shape {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {a.dtype} and {b.dtype}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 RGB frames, over all channels, peak 255.

    Identical frames give `PSNR_MAX` (100 dB); any larger value is capped there too.
    """
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_MAX
    return float(min(PSNR_MAX, 10.0 * np.log10(255.0**2 / mse)))


def rgb_to_luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B (full range, float64) of an RGB frame."""
    rgb = frame.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _gaussian_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable Gaussian filtering of a 2-D float image, keeping only the valid region."""
    out = cv2.sepFilter2D(x, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    r = (len(kernel) - 1) // 2
    return out[r : x.shape[0] - r, r : x.shape[1] - r]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) between two uint8 RGB frames on their BT.601 luma.

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255; the SSIM map
    is averaged over the valid region (the frames must be at least 11x11).
    """
    _check_pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"frames must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[:2]}")
    x, y = rgb_to_luma(a), rgb_to_luma(b)
    kernel = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
    c1 = (SSIM_K1 * 255.0) ** 2
    c2 = (SSIM_K2 * 255.0) ** 2
    mu_x, mu_y = _gaussian_valid(x, kernel), _gaussian_valid(y, kernel)
    sxx = _gaussian_valid(x * x, kernel) - mu_x * mu_x
    syy = _gaussian_valid(y * y, kernel) - mu_y * mu_y
    sxy = _gaussian_valid(x * y, kernel) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def default_eval_dir() -> Path:
    """The shared eval folder: $FACECALL_EVAL_DIR, else <repo root>/../shared/eval."""
    env = os.environ.get(EVAL_DIR_ENV)
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root.parent / "shared" / "eval"


def _resolve_lpips_dir(weights_dir: Path | None) -> Path:
    """Folder holding alexnet_features.pth and lin_alex.pth (accepts it or its parent)."""
    base = Path(weights_dir) if weights_dir is not None else default_eval_dir()
    for cand in (base, base / "lpips"):
        if (cand / "alexnet_features.pth").is_file() and (cand / "lin_alex.pth").is_file():
            return cand
    raise FileNotFoundError(
        f"LPIPS weights not found: expected alexnet_features.pth and lin_alex.pth in {base} "
        f"or {base / 'lpips'}. Pass weights_dir, or set {EVAL_DIR_ENV} to the shared eval "
        "folder (the one holding lpips/, see shared/eval/README.md)."
    )


def alexnet_features() -> nn.Sequential:
    """The layers of torchvision's `alexnet().features`, with the same indices."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class _LpipsAlexNet(nn.Module):
    """LPIPS v0.1 network: scaling layer, AlexNet slices, per-layer linear heads."""

    def __init__(self, features: nn.Sequential, lin_weights: list[torch.Tensor]) -> None:
        super().__init__()
        self.slices = nn.ModuleList(nn.Sequential(*features[s:e]) for s, e in _ALEX_SLICES)
        self.lins = nn.ModuleList()
        for ch, w in zip(_ALEX_CHANNELS, lin_weights):
            lin = nn.Conv2d(ch, 1, kernel_size=1, bias=False)
            lin.weight.data.copy_(w.reshape(1, ch, 1, 1))
            self.lins.append(lin)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) activations of the five slices."""
        h = (x - self.shift) / self.scale
        feats = []
        for sl in self.slices:
            h = sl(h)
            norm = torch.sqrt(torch.sum(h * h, dim=1, keepdim=True))
            feats.append(h / (norm + _NORM_EPS))
        return feats

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Distances (N,) between two (N, 3, H, W) RGB batches scaled to [-1, 1]."""
        total = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        for f0, f1, lin in zip(self._features(x0), self._features(x1), self.lins):
            total = total + lin((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total


class LPIPS:
    """LPIPS v0.1 (AlexNet) perceptual distance between uint8 RGB frames, offline.

    `weights_dir` is the folder with alexnet_features.pth and lin_alex.pth, or the shared
    eval folder that contains it as lpips/; by default $FACECALL_EVAL_DIR or
    <repo root>/../shared/eval.  Raises FileNotFoundError if the weights are missing.
    """

    def __init__(self, weights_dir: Path | None = None, device: str | torch.device = "cpu") -> None:
        wdir = _resolve_lpips_dir(weights_dir)
        self.device = torch.device(device)
        features = alexnet_features()
        feat_sd = torch.load(wdir / "alexnet_features.pth", map_location="cpu", weights_only=True)
        features.load_state_dict(feat_sd)
        lin_sd = torch.load(wdir / "lin_alex.pth", map_location="cpu", weights_only=True)
        lin_weights = [lin_sd[f"lin{i}.model.1.weight"] for i in range(len(_ALEX_SLICES))]
        self.net = _LpipsAlexNet(features, lin_weights).to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        log.debug("LPIPS-alex loaded from %s on %s", wdir, self.device)

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [-1, 1] on the device."""
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS distance between two uint8 RGB frames of shape (H, W, 3)."""
        _check_pair(a, b)
        return float(self.batch(a[None], b[None], batch_size=1)[0])

    def batch(self, frames_a: np.ndarray, frames_b: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Per-frame LPIPS distances (N,) float64 for two (N, H, W, 3) uint8 RGB arrays."""
        if frames_a.shape != frames_b.shape:
            raise ValueError(f"shapes differ: {frames_a.shape} vs {frames_b.shape}")
        if frames_a.ndim != 4 or frames_a.shape[3] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB frames, got shape {frames_a.shape}")
        if frames_a.dtype != np.uint8 or frames_b.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frames_a.dtype} and {frames_b.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty(frames_a.shape[0], dtype=np.float64)
        with torch.no_grad():
            for i in range(0, frames_a.shape[0], batch_size):
                x0 = self._to_tensor(frames_a[i : i + batch_size])
                x1 = self._to_tensor(frames_b[i : i + batch_size])
                out[i : i + batch_size] = self.net(x0, x1).double().cpu().numpy()
        return out
