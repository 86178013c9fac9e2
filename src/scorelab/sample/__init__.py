"""Samplers: small pure functions with one signature, tensors in and tensors out, in one registry
(:data:`SAMPLERS`); teleportation, inpainting, sweeps and ``generate`` build on them."""

from .ancestral import euler_ancestral
from .common import CountNFE, Sampler, check_sigmas, generators_for_seeds, noise_for_seeds, randn
from .early_stop import early_stop
from .generate import generate, generate_sharded
from .inpaint import KnownPart, inpaint, read_mask, side_mask, unknown_rmse
from .langevin import annealed_langevin, langevin
from .mad import mad, mad_gamma, mad_heun
from .ode import ddim, dpmpp_2m, euler, heun
from .registry import SAMPLERS, get_sampler
from .sweep import parse_grid, sweep
from .teleport import auto_skip, gaussian_agreement, teleport

__all__ = [
    "SAMPLERS",
    "CountNFE",
    "KnownPart",
    "Sampler",
    "annealed_langevin",
    "auto_skip",
    "check_sigmas",
    "ddim",
    "dpmpp_2m",
    "early_stop",
    "euler",
    "euler_ancestral",
    "gaussian_agreement",
    "generate",
    "generate_sharded",
    "generators_for_seeds",
    "get_sampler",
    "heun",
    "inpaint",
    "langevin",
    "mad",
    "mad_gamma",
    "mad_heun",
    "noise_for_seeds",
    "parse_grid",
    "randn",
    "read_mask",
    "side_mask",
    "sweep",
    "teleport",
    "unknown_rmse",
]
