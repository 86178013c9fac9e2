"""Generate samples from seeds: the shared driver of the command line, the demo, the evaluation and
the benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import distributed
from ..analytic import Gaussian
from ..denoiser import Denoiser, check_range
from ..schedules import karras
from .common import CountNFE, check_finite_result, noise_for_seeds
from .registry import get_sampler
from .teleport import teleport


@torch.no_grad()
def generate(denoiser: Denoiser, shape: Sequence[int], seeds: Sequence[int], *, sampler: str = "heun",
             sigmas: Tensor | Sequence[float] | None = None, batch_size: int = 1000,
             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", progress: bool = False,
             n_skip: int = 0, gaussian: Gaussian | None = None, transform: Callable[[Tensor], Tensor] | None = None,
             **params: Any) -> tuple[Tensor, float]:
    """Samples (len(seeds), *shape) from the registered ``sampler`` on the grid ``sigmas`` (default:
    EDM's, ``karras(18)``), sample i from ``seeds[i]`` alone (its initial noise and every later draw come
    from its own generator, so it does not depend on the batch it is drawn in), and the NFE per sample.
    ``params`` go to the sampler. ``n_skip > 0`` teleports over the first ``n_skip`` steps with the
    closed-form flow of ``gaussian`` (``sample.teleport``). ``transform``, if given, is applied to each
    batch before it is kept (decode latent codes, extract features), so memory holds only its output.
    Non-finite samples are an error (:class:`~scorelab.errors.SamplingError`), never returned."""
    run = get_sampler(sampler)
    if batch_size < 1 or len(seeds) == 0:
        raise ValueError("need batch_size >= 1 and at least one seed")
    sigmas = karras(18) if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
    check_range(denoiser, sigmas)
    if n_skip:
        if gaussian is None:
            raise ValueError("teleporting (n_skip > 0) needs the data's Gaussian")
        params = dict(params, gaussian=gaussian, n_skip=n_skip, sampler=sampler)
        run = teleport
    counted = CountNFE(denoiser)
    out = []
    for start in range(0, len(seeds), batch_size):
        noise, generators = noise_for_seeds(seeds[start:start + batch_size], shape, dtype=dtype, device=device)
        x = run(counted, noise * sigmas[0].to(dtype), sigmas, generator=generators, progress=progress, **params)
        check_finite_result(x, sampler)
        out.append((x if transform is None else transform(x)).cpu())
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


__all__ = ["generate", "generate_sharded"]
