"""The learned translators' networks: one encoder and one decoder per feature format, through a shared latent.

For one key frame, a frame's values `v` of format `f` and the key frame's own values `k`
(models.feature_formats.key_features) are normalised per value,

    a = ((v - k) - delta_mean_f) / delta_std_f,    b = (k - key_mean_f) / key_std_f,

and format f's encoder (an MLP, 2 hidden layers, SiLU) maps (a, b) to a latent z of
`latent` numbers shared by all formats.  Format g's decoder maps (z, b_g), b_g the key
frame's own values of g normalised the same way, to o, and the frame's values in g are
`k_g + delta_mean_g + delta_std_g * o`.  Any ordered pair (f, g) is encoder f then
decoder g; f == g is a plain auto-encoder (the decoders never use it: same-format streams
are not translated).  Trained by models.train_translators; the shipped weights are one
file, `models/assets/translators_v2.pt`, with VERSION inside.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

ASSET_DIR = Path(__file__).resolve().parent / "assets"
TRANSLATORS_ASSET = ASSET_DIR / "translators_v2.pt"
VERSION = "translators_v2"


class TranslatorWeightsError(ValueError):
    """The learned translators' weights are missing, of another version or of other formats (one line)."""


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, outputs))


class TranslatorNets(nn.Module):
    """All formats' encoders and decoders, with each format's normalisation as buffers."""

    def __init__(self, counts: dict[str, int], latent: int = 48, hidden: int = 128) -> None:
        super().__init__()
        self.counts, self.latent, self.hidden = dict(counts), latent, hidden
        self.encoders = nn.ModuleDict({f: mlp(2 * n, hidden, latent) for f, n in counts.items()})
        self.decoders = nn.ModuleDict({f: mlp(latent + n, hidden, n) for f, n in counts.items()})
        for f, n in counts.items():
            for name in ("delta_mean", "key_mean"):
                self.register_buffer(f"{f}_{name}", torch.zeros(n))
            for name in ("delta_std", "key_std"):
                self.register_buffer(f"{f}_{name}", torch.ones(n))

    def stat(self, fmt: str, name: str) -> torch.Tensor:
        return getattr(self, f"{fmt}_{name}")

    def set_normalisation(self, fmt: str, deltas: torch.Tensor, keys: torch.Tensor) -> None:
        """Per-value mean and spread of a format's (values - key) and key values (training data)."""
        for name, x in (("delta", deltas), ("key", keys)):
            self.stat(fmt, f"{name}_mean").copy_(x.mean(0))
            self.stat(fmt, f"{name}_std").copy_(x.std(0).clamp_min(1e-6))

    def key_input(self, fmt: str, key: torch.Tensor) -> torch.Tensor:
        return (key - self.stat(fmt, "key_mean")) / self.stat(fmt, "key_std")

    def target(self, fmt: str, values: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """What decoder `fmt` should output for these values: the normalised delta."""
        return (values - key - self.stat(fmt, "delta_mean")) / self.stat(fmt, "delta_std")

    def encode(self, fmt: str, values: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(B, n_f) values and key values -> (B, latent)."""
        return self.encoders[fmt](torch.cat([self.target(fmt, values, key), self.key_input(fmt, key)], -1))

    def decode_normalised(self, fmt: str, z: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return self.decoders[fmt](torch.cat([z, self.key_input(fmt, key)], -1))

    def decode(self, fmt: str, z: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(B, latent) and the key frame's values of `fmt` -> (B, n_f) values of `fmt`."""
        out = self.decode_normalised(fmt, z, key)
        return key + self.stat(fmt, "delta_mean") + self.stat(fmt, "delta_std") * out

    def translate(self, src: str, dst: str, values: torch.Tensor, key_src: torch.Tensor,
                  key_dst: torch.Tensor) -> torch.Tensor:
        return self.decode(dst, self.encode(src, values, key_src), key_dst)

    # -- the shipped file ------------------------------------------------------------------

    def save(self, path: Path, trained: dict | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"version": VERSION, "counts": self.counts, "latent": self.latent, "hidden": self.hidden,
                    "state": {k: v.detach().clone() for k, v in self.state_dict().items()},
                    "trained": trained or {}}, tmp)
        tmp.replace(path)


def load_nets(path: Path | None = None, counts: dict[str, int] | None = None) -> TranslatorNets:
    """The trained networks (eval mode, shared read-only by every translator) from `path` (None:
    the shipped TRANSLATORS_ASSET); TranslatorWeightsError when the file is missing, of another
    version, or made for formats of other sizes than `counts`."""
    path = TRANSLATORS_ASSET if path is None else path
    nets = _load(str(path))
    if counts is not None and any(nets.counts.get(f) != n for f, n in counts.items()):
        raise TranslatorWeightsError(f"learned translators {path} were trained for other formats "
                                     f"({nets.counts}); retrain with `python -m models.train_translators --install`")
    return nets


@lru_cache(maxsize=4)
def _load(path: str) -> TranslatorNets:
    if not Path(path).exists():
        raise TranslatorWeightsError(f"no learned translators at {path}: train them with "
                                     "`python -m models.train_translators --install`")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TranslatorWeightsError(f"cannot read learned translators {path}: {type(exc).__name__}") from None
    found = saved.get("version") if isinstance(saved, dict) else None
    if found != VERSION:
        raise TranslatorWeightsError(f"{path} holds learned translators {found!r}, this code needs {VERSION!r}")
    nets = TranslatorNets(dict(saved["counts"]), int(saved["latent"]), int(saved["hidden"]))
    nets.load_state_dict(saved["state"])
    nets.eval()
    for p in nets.parameters():
        p.requires_grad_(False)
    return nets
