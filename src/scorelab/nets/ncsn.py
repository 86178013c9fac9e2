"""Noise-conditional score networks in the NCSN style (Song & Ermon 2019; the NCSN reports): the
network outputs a score, and :class:`ScorePrecond` wraps it as a denoiser ``D = x + sigma^2 s``.

- :class:`ScoreMLP`: for 2-D data, ``log sigma`` concatenated to the input, Softplus activations.
- :class:`NCSN`: for images of 8x8 ... 32x32, a small U-Net whose every normalisation is a
  conditional instance normalisation++ (Song & Ermon 2019, App. A), conditioned either on
  ``log sigma`` (continuous) or on the index of the nearest of a fixed set of noise levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..denoiser import append_dims, as_sigma
from .embedding import FourierEmbedding
from .precond import EDMPrecond
from .unet import EmbSequential, image_sides


class ScorePrecond(EDMPrecond):
    """``D(x, sigma) = x + sigma^2 s(x, sigma)`` with ``s = F(c_in x, c_noise) / sigma`` (the 1/sigma
    output scaling of NCSNv2, Song & Ermon 2020, Technique 3); ``c_in`` and ``c_noise`` as for
    :class:`EDMPrecond`, whose network call it shares."""

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        return self.network(x, sigma) / append_dims(sigma, x.ndim)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        return x + append_dims(sigma, x.ndim) ** 2 * self.score(x, sigma)


class ScoreMLP(nn.Module):
    """``F([x, log sigma])`` for ``x`` of shape ``(B, dim)``: Softplus layers of ``width``, as in the
    NCSN reports' toy experiments (``log sigma = 4 c_noise``)."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError("dim, width and depth must be >= 1")
        self.dim = dim
        layers: list[nn.Module] = [nn.Linear(dim + 1, width), nn.Softplus()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.Softplus()]
        layers.append(nn.Linear(width, dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ScoreMLP expects input of shape (B, {self.dim}), got {tuple(x.shape)}")
        return self.layers(torch.cat([x, 4 * c_noise.reshape(-1, 1).to(x.dtype)], dim=1))


class CondInstanceNorm2d(nn.Module):
    """Conditional instance normalisation++ (Song & Ermon 2019, App. A.1): instance-normalised
    features scaled by ``gamma(c)``, shifted by ``beta(c)``, with the per-channel means, normalised
    across channels, added back with weight ``alpha(c)`` (plain instance norm would erase them)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.affine = nn.Linear(cond_dim, 3 * channels)
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():
            self.affine.bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels), torch.ones(channels)]))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        mu = x.mean((2, 3), keepdim=True)
        means = (mu - mu.mean(1, keepdim=True)) / (mu.var(1, keepdim=True) + 1e-5).sqrt()
        h = F.instance_norm(x, eps=1e-5)  # (x - mu) / sqrt(biased var + eps), one fused kernel
        gamma, beta, alpha = self.affine(cond)[:, :, None, None].chunk(3, dim=1)
        return gamma * (h + alpha * means) + beta


class CondResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = CondInstanceNorm2d(c_in, cond_dim), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = CondInstanceNorm2d(c_out, cond_dim), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.elu(self.norm1(x, cond)))
        h = self.conv2(F.elu(self.norm2(h, cond)))
        return self.skip(x) + h


class NCSN(nn.Module):
    """``F(x, c_noise)`` for images ``(B, C, H, W)`` with sides 4 ... 64: per resolution level
    ``num_res_blocks`` conditional residual blocks, average-pool down, nearest-neighbour up with
    skip connections. ``levels`` given (descending sigmas): conditioned on the index of the
    nearest level, one learned embedding per level (NCSN); otherwise on ``log sigma`` through a
    Fourier embedding (continuous conditioning)."""

    log_levels: Tensor | None  # (L,) log sigmas of the levels (a buffer), None for continuous conditioning

    def __init__(self, in_channels: int, image_size: int | Sequence[int], channels: int = 64,
                 channel_mult: Sequence[int] | None = None, num_res_blocks: int = 1,
                 levels: Sequence[float] | None = None) -> None:
        super().__init__()
        h, w = image_sides(image_size, 64, "NCSN")
        if in_channels < 1 or channels < 1 or num_res_blocks < 1:
            raise ValueError("in_channels, channels and num_res_blocks must be >= 1")
        n_levels = max(1, int(math.log2(min(h, w) / 4)) + 1)
        mult = tuple(channel_mult) if channel_mult is not None else (1, 2, 2)[:n_levels]
        cond_dim = 4 * channels
        if levels is not None:
            lv = torch.as_tensor(levels, dtype=torch.float64)
            if lv.ndim != 1 or len(lv) < 1 or not bool((lv > 0).all()):
                raise ValueError("levels must be a non-empty sequence of sigmas > 0")
            self.register_buffer("log_levels", lv.log())
            self.embed: nn.Module = nn.Embedding(len(lv), cond_dim)
        else:
            self.log_levels = None
            self.embed = nn.Sequential(FourierEmbedding(cond_dim), nn.Linear(cond_dim, cond_dim), nn.SiLU())
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        widths, c = [], channels
        for m in mult:
            blocks = EmbSequential()
            for _ in range(num_res_blocks):
                blocks.append(CondResBlock(c, channels * m, cond_dim))
                c = channels * m
            self.down.append(blocks)
            widths.append(c)
        self.mid = CondResBlock(c, c, cond_dim)
        for m, skip in zip(reversed(mult), reversed(widths)):
            self.up.append(CondResBlock(c + skip, channels * m, cond_dim))
            c = channels * m
        self.norm_out = CondInstanceNorm2d(c, cond_dim)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        self.in_channels = in_channels

    def condition(self, c_noise: Tensor) -> Tensor:
        if self.log_levels is None:
            return self.embed(c_noise)
        index = (4 * c_noise.double()[:, None] - self.log_levels[None]).abs().argmin(1)  # nearest level
        return self.embed(index)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"NCSN expects input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        cond = self.condition(c_noise.reshape(-1))
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.down):
            h = blocks(h, cond)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = self.mid(h, cond)
        for block in self.up:
            skip = skips.pop()
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], 1), cond)
        return self.conv_out(F.elu(self.norm_out(h, cond)))


__all__ = ["NCSN", "CondInstanceNorm2d", "ScoreMLP", "ScorePrecond"]
