"""Dissecting a trained model against analytical ones (Gaussian-score paper, Sec. 4-5)."""

from .trajectories import (
    TrajectoryDeviation,
    plot_trajectory_deviation,
    sampler_trajectory,
    trajectory_deviation,
)
from .unexplained import (
    DEFAULT_SIGMAS,
    QUERIES,
    UnexplainedVariance,
    plot_unexplained,
    standard_candidates,
    unexplained_variance,
)

__all__ = [
    "DEFAULT_SIGMAS",
    "QUERIES",
    "TrajectoryDeviation",
    "UnexplainedVariance",
    "plot_trajectory_deviation",
    "plot_unexplained",
    "sampler_trajectory",
    "standard_candidates",
    "trajectory_deviation",
    "unexplained_variance",
]
