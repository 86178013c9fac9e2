"""Pieces every sampler shares: sigma-grid checks, per-sample seeded noise, NFE counting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..denoiser import Denoiser

Generators = torch.Generator | Sequence[torch.Generator] | None


def check_sigmas(sigmas: Tensor | Sequence[float], x: Tensor) -> Tensor:
    """The grid as a 1-D tensor in x's dtype/device; it must be finite and strictly decreasing,
    positive except possibly for a trailing 0."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D sequence of at least 2 values, got shape {tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()):
        raise ValueError("sigmas must be finite")
    if not bool((sigmas[:-1] > 0).all()) or float(sigmas[-1]) < 0:
        raise ValueError("sigmas must be positive (only the last may be 0)")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    return sigmas.to(dtype=x.dtype, device=x.device)


def generators_for_seeds(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, so that a sample depends only on its own seed."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generator: Generators = None, *, dtype: torch.dtype = torch.float32,
          device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise of ``shape``. With a list of generators, row ``i`` is drawn from
    ``generator[i]`` alone (drawn on the generator's device, then moved)."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator]
    return torch.stack(rows).to(device)


def noise_for_seeds(seeds: Sequence[int], shape: Sequence[int], *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> tuple[Tensor, list[torch.Generator]]:
    """Initial unit noise (len(seeds), *shape) and the per-sample generators, advanced past it,
    for the sampler's later draws (churn, Langevin)."""
    generators = generators_for_seeds(seeds)
    return randn((len(seeds), *shape), generators, dtype=dtype, device=device), generators


class CountNFE:
    """Wraps a denoiser and counts its evaluations: ``calls`` (batched calls) and ``rows``
    (sample evaluations); ``rows / batch`` is the usual NFE per sample."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.calls = 0
        self.rows = 0

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.denoiser(x, sigma)

    def nfe(self, batch: int) -> float:
        return self.rows / batch
