"""The perceptual training loss of synthesizer v2: LPIPS v0.1 on SqueezeNet 1.1 features.

Offline weights from ../shared/eval/lpips (squeezenet1_1_features.pth, lin_squeeze.pth;
see its README).  Training uses this network; evaluation uses LPIPS on AlexNet
(benchmarks/metrics.py), so the metric we report is not the one we trained on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

EVAL_DIR = Path(os.environ.get("FACECALL_EVAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "eval"))
_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13))
_CHANNELS = (64, 128, 256, 384, 384, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def squeezenet_features() -> nn.Sequential:
    """torchvision's `squeezenet1_1().features`, with the same indices."""
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    return nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True), pool, Fire(64, 16, 64), Fire(128, 16, 64),
                         pool, Fire(128, 32, 128), Fire(256, 32, 128), pool, Fire(256, 48, 192),
                         Fire(384, 48, 192), Fire(384, 64, 256), Fire(512, 64, 256))


class SqueezeLPIPS(nn.Module):
    """Perceptual distance (B,) between two picture batches (B, 3, H, W) in [0, 1]; frozen."""

    def __init__(self, eval_dir: Path = EVAL_DIR) -> None:
        super().__init__()
        folder = Path(eval_dir) / "lpips"
        try:
            features = squeezenet_features()
            features.load_state_dict(torch.load(folder / "squeezenet1_1_features.pth", map_location="cpu",
                                                weights_only=True))
            lins = torch.load(folder / "lin_squeeze.pth", map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"SqueezeNet LPIPS weights missing ({exc.filename}); see ../shared/eval") from None
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in _SLICES)
        self.lins = nn.ParameterList(nn.Parameter(lins[f"lin{i}.model.1.weight"].view(1, c, 1, 1), requires_grad=False)
                                     for i, c in enumerate(_CHANNELS))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x * 2.0 - 1.0 - self.shift) / self.scale
        out = []
        for s in self.slices:
            h = s(h)
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(a), device=a.device)
        for fa, fb, w in zip(self._features(a), self._features(b), self.lins, strict=True):
            total = total + ((fa - fb) ** 2 * w).sum(1).mean((1, 2))
        return total
