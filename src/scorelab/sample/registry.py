"""The one registry of samplers, read by ``generate``, teleportation, inpainting and the command line.

Every entry has the signature of :class:`~scorelab.sample.common.Sampler`; adding a sampler is one
function and one line here."""

from __future__ import annotations

from .ancestral import euler_ancestral
from .common import Sampler
from .early_stop import early_stop
from .langevin import annealed_langevin
from .mad import mad, mad_heun
from .ode import ddim, dpmpp_2m, euler, heun

SAMPLERS: dict[str, Sampler] = {
    "euler": euler,
    "heun": heun,
    "dpmpp-2m": dpmpp_2m,
    "ddim": ddim,
    "euler-ancestral": euler_ancestral,
    "mad": mad,
    "mad-heun": mad_heun,
    "early-stop": early_stop,
    "annealed-langevin": annealed_langevin,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered as ``name``; a clear error naming the registered ones otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def summary(name: str) -> str:
    """The first line of the sampler's docstring (for help texts)."""
    return (get_sampler(name).__doc__ or name).strip().splitlines()[0]


__all__ = ["SAMPLERS", "get_sampler", "summary"]
