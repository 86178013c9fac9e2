"""Dissecting a trained model against analytical ones (Gaussian-score paper, Sec. 4-5)."""

from .trajectories import (
    TrajectoryDeviation,
    heun_trajectory,
    plot_trajectory_deviation,
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
    "heun_trajectory",
    "plot_trajectory_deviation",
    "plot_unexplained",
    "standard_candidates",
    "trajectory_deviation",
    "unexplained_variance",
]
