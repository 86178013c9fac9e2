"""Noise-level embedding shared by the networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierEmbedding(nn.Module):
    """Sinusoidal features of the scalar noise input c_noise = ln(sigma)/4 (Vaswani et al. 2017
    positional encoding, as used by DDPM/EDM networks), followed by a two-layer MLP."""

    freqs: Tensor  # (n_freq,), not saved in the state_dict

    def __init__(self, dim: int, n_freq: int = 32, max_period: float = 100.0) -> None:
        super().__init__()
        freqs = torch.exp(-math.log(max_period) * torch.arange(n_freq) / n_freq) * 2 * math.pi
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = c_noise.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))
