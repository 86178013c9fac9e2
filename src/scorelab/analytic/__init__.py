"""Analytical score models: denoisers ``D(x, sigma)`` with closed-form scores and densities."""

from scorelab.analytic.delta_mixture import DeltaMixture
from scorelab.analytic.extended import extended_score, extended_score_limit
from scorelab.analytic.gaussian import Gaussian, Isotropic
from scorelab.analytic.gaussian_flow import (
    amplification,
    denoised_scale,
    gaussian_flow,
    gaussian_flow_denoised,
    gaussian_flow_endpoint,
    gaussian_flow_vp,
    gaussian_flow_vp_denoised,
    rotation_residual,
    state_scale,
)
from scorelab.analytic.gaussian_mixture import GaussianMixture

__all__ = [
    "DeltaMixture",
    "Gaussian",
    "GaussianMixture",
    "Isotropic",
    "amplification",
    "denoised_scale",
    "extended_score",
    "extended_score_limit",
    "gaussian_flow",
    "gaussian_flow_denoised",
    "gaussian_flow_endpoint",
    "gaussian_flow_vp",
    "gaussian_flow_vp_denoised",
    "rotation_residual",
    "state_scale",
]
