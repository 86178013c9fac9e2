"""Dissecting a trained model against analytical ones (Gaussian-score paper, Sec. 4-5)."""

from .trajectories import TrajectoryDeviation, heun_trajectory, trajectory_deviation
from .unexplained import (
    DEFAULT_SIGMAS,
    QUERIES,
    UnexplainedVariance,
    plot_unexplained,
    standard_candidates,
    unexplained_variance,
)

__all__ = ["DEFAULT_SIGMAS", "QUERIES", "TrajectoryDeviation", "UnexplainedVariance", "heun_trajectory",
           "plot_unexplained", "standard_candidates", "trajectory_deviation", "unexplained_variance"]
