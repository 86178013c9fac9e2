"""Analytical score models: denoisers ``D(x, sigma)`` with closed-form scores and densities."""

from scorelab.analytic.delta_mixture import DeltaMixture
from scorelab.analytic.gaussian import Gaussian, Isotropic
from scorelab.analytic.gaussian_mixture import GaussianMixture

__all__ = ["DeltaMixture", "Gaussian", "GaussianMixture", "Isotropic"]
