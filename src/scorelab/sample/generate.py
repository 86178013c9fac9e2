"""Generate samples from seeds: the shared driver of the CLI, the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .. import distributed
from ..denoiser import Denoiser
from ..schedules import karras
from .common import CountNFE, noise_for_seeds
from .langevin import annealed_langevin
from .mad import mad
from .ode import euler, heun
from .teleport import teleport

SAMPLERS = {"euler": euler, "heun": heun, "mad": mad, "annealed-langevin": annealed_langevin}
STOCHASTIC = ("heun", "annealed-langevin")  # samplers that draw noise from the per-sample generators


@torch.no_grad()
def generate(denoiser: Denoiser, shape: Sequence[int], seeds: Sequence[int], *, sampler: str = "heun",
             steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
             batch_size: int = 1000, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
             progress: bool = False, skip: int = 0, gaussian: Any = None, **options: Any) -> tuple[Tensor, float]:
    """Samples (len(seeds), *shape) on a Karras grid, sample i from seeds[i] alone (so it does not
    depend on the batch size), and the NFE per sample. ``options`` go to the sampler (``S_churn``
    for Heun; ``a``, ``b``, ``p``, ``delta``, ``derivative`` for MAD; ``levels``, ``eps``,
    ``steps_per_level``, ``denoise_last`` for annealed Langevin, which starts from N(0, levels[0]^2)).
    ``skip > 0`` teleports over the first ``skip`` steps with the closed-form flow of ``gaussian``
    (``sample.teleport``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if batch_size < 1 or len(seeds) == 0:
        raise ValueError("need batch_size >= 1 and at least one seed")
    if sampler == "annealed-langevin":  # its grid is the noise levels; options: eps, steps_per_level, denoise_last
        options = dict(options)
        sigmas = torch.as_tensor(options.pop("levels"), dtype=torch.float64)
    else:
        sigmas = karras(steps, sigma_min, sigma_max, rho)
    counted = CountNFE(denoiser)
    out = []
    with full_float32(sampler == "mad" and options.get("derivative", "central") != "exact"):
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start:start + batch_size]
            noise, generators = noise_for_seeds(chunk, shape, dtype=dtype, device=device)
            kwargs = dict(options, generator=generators) if sampler in STOCHASTIC else options
            x = noise * sigmas[0].to(dtype)
            if skip:
                x = teleport(counted, x, sigmas, gaussian=gaussian, skip=skip, sampler=sampler, progress=progress,
                             **kwargs)
            else:
                x = SAMPLERS[sampler](counted, x, sigmas, progress=progress, **kwargs)
            out.append(x.cpu())
    return torch.cat(out), counted.nfe(len(seeds))


def generate_sharded(denoiser: Denoiser, shape: Sequence[int], seeds: Sequence[int], *,
                     device: torch.device | str = "cpu", **settings: Any) -> tuple[Tensor, float]:
    """``generate`` under torchrun: each rank generates a contiguous block of ``seeds`` and every rank
    gets all samples back in seed order. A sample depends on its seed alone, so the result equals one
    process's. Without torchrun this is ``generate``."""
    with distributed.process_group(torch.device(device)):
        parts = distributed.over_blocks(lambda block: generate(denoiser, shape, block, device=device, **settings),
                                        seeds)
    if not parts:
        raise ValueError("need at least one seed")
    return torch.cat([samples for samples, _ in parts]), parts[0][1]


@contextmanager
def full_float32(enabled: bool = True) -> Iterator[None]:
    """Turn off TF32 (10-bit mantissa) in CUDA convolutions and matmuls: MAD's finite differences
    divide a difference of two network outputs by delta ~ 1e-3, which TF32 rounding would swamp."""
    if not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
