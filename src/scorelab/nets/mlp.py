"""A residual MLP for low-dimensional data (2-D toys), conditioned on the noise level."""

from __future__ import annotations

from torch import Tensor, nn

from .embedding import FourierEmbedding


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        r = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(nn.functional.silu(r))


class MLP(nn.Module):
    """F(x, c_noise) for x of shape (B, dim); c_noise = ln(sigma)/4 enters through a Fourier
    embedding added in every residual block. Wrap it in ``EDMPrecond`` to get a denoiser."""

    def __init__(self, dim: int = 2, width: int = 256, depth: int = 4) -> None:
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError("dim, width and depth must be >= 1")
        self.dim = dim
        self.embed = FourierEmbedding(width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLP expects input of shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = nn.functional.silu(self.embed(c_noise))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
