"""Samplers: small pure functions, tensors in and tensors out (DESIGN.md)."""

from .common import CountNFE, check_sigmas, generators_for_seeds, noise_for_seeds, randn
from .inpaint import inpaint, inpaint_heun, inpaint_langevin, side_mask
from .langevin import annealed_langevin, langevin
from .mad import mad, mad_gamma
from .ode import euler, heun
from .teleport import auto_skip, gaussian_agreement, teleport

__all__ = [
    "CountNFE",
    "annealed_langevin",
    "auto_skip",
    "check_sigmas",
    "euler",
    "gaussian_agreement",
    "generators_for_seeds",
    "heun",
    "inpaint",
    "inpaint_heun",
    "inpaint_langevin",
    "langevin",
    "mad",
    "mad_gamma",
    "noise_for_seeds",
    "randn",
    "side_mask",
    "teleport",
]
