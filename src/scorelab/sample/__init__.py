"""Samplers: small pure functions, tensors in and tensors out (DESIGN.md)."""

from .common import CountNFE, check_sigmas, generators_for_seeds, noise_for_seeds, randn
from .ode import euler, heun

__all__ = ["euler", "heun", "CountNFE", "check_sigmas", "generators_for_seeds", "noise_for_seeds", "randn"]
