"""A U-Net for images of any size from 8x8 to 64x64 and any channel count (DDPM/EDM style:
residual blocks with noise-adaptive group norm, self-attention at low resolution).

Odd sizes need no padding: a stride-2 convolution maps H to ceil(H/2), and upsampling
interpolates to the exact size of the matching skip connection (28 -> 14 -> 7 -> 14 -> 28)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embedding import FourierEmbedding


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN modulated by the noise embedding (scale, shift), SiLU-dropout-conv."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) / math.sqrt(2)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2)


class Downsample(nn.Conv2d):
    """Stride-2 convolution: H -> ceil(H/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return super().forward(x)


class Upsample(nn.Conv2d):
    """Nearest-neighbour interpolation to an exact size, then a 3x3 convolution: :meth:`upsample_to`.
    Called as a module it is the convolution alone (``nn.Conv2d.forward``)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, padding=1)

    def upsample_to(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """``x`` interpolated to ``size`` ``(H, W)`` (nearest neighbour), then convolved."""
        return self(F.interpolate(x, size=tuple(size), mode="nearest"))


class EmbSequential(nn.ModuleList):
    """Layers applied in turn, each given the noise embedding."""

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            h = layer(h, emb)
        return h


def image_sides(image_size: int | Sequence[int], max_side: int, name: str) -> tuple[int, int]:
    """``(H, W)`` from one side or two, refused outside ``4 .. max_side`` pixels."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(h, w) < 4 or max(h, w) > max_side:
        raise ValueError(f"{name} supports image sides from 4 to {max_side} pixels, got {h}x{w}")
    return h, w


def default_channel_mult(size: int) -> tuple[int, ...]:
    """One level per halving while the side stays >= 4, at most 4 levels:
    8 -> (8, 4); 28 -> (28, 14, 7); 32 -> (32, 16, 8, 4); 64 -> (64, 32, 16, 8)."""
    n_levels = max(1, min(4, int(math.log2(size / 4)) + 1))
    return (1, 2, 2, 2)[:n_levels]


class UNet(nn.Module):
    """F(x, c_noise) for images (B, C, H, W). Wrap it in ``EDMPrecond`` to get a denoiser.

    ``channel_mult`` gives the width multiplier per resolution level (default from the image
    size); ``attn_levels`` the levels with self-attention (default: the lowest resolution)."""

    def __init__(self, in_channels: int, image_size: int | Sequence[int], model_channels: int = 64,
                 channel_mult: Sequence[int] | None = None, num_res_blocks: int = 2,
                 attn_levels: Sequence[int] | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        h, w = image_sides(image_size, 256, "UNet")
        if in_channels < 1 or model_channels < 1 or num_res_blocks < 1:
            raise ValueError("in_channels, model_channels and num_res_blocks must be >= 1")
        mult = tuple(channel_mult) if channel_mult is not None else default_channel_mult(min(h, w))
        attn = set(attn_levels) if attn_levels is not None else {len(mult) - 1}
        self.in_channels, self.image_size = in_channels, (h, w)
        emb_dim = 4 * model_channels
        self.embed = FourierEmbedding(emb_dim)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels, c = [model_channels], model_channels
        for level, m in enumerate(mult):
            for _ in range(num_res_blocks):
                self.down.append(self._block(c, model_channels * m, emb_dim, dropout, level in attn))
                c = model_channels * m
                skip_channels.append(c)
            if level < len(mult) - 1:
                self.down.append(Downsample(c))
                skip_channels.append(c)
        self.mid = EmbSequential([ResBlock(c, c, emb_dim, dropout), Attention(c), ResBlock(c, c, emb_dim, dropout)])

        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(c + skip_channels.pop(), model_channels * m, emb_dim, dropout, level in attn))
                c = model_channels * m
            if level > 0:
                self.up.append(Upsample(c))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = _zero(nn.Conv2d(c, in_channels, 3, padding=1))

    @staticmethod
    def _block(c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool) -> EmbSequential:
        layers: list[nn.Module] = [ResBlock(c_in, c_out, emb_dim, dropout)]
        if attention:
            layers.append(Attention(c_out))
        return EmbSequential(layers)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        emb = F.silu(self.embed(c_noise))
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer.upsample_to(h, skips[-1].shape[-2:])
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))
