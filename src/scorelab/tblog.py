"""Optional TensorBoard logging of a training run: the ``metrics.jsonl`` scalars, and at every
checkpoint EMA samples from fixed seeds (a grid of images, or a scatter plot of vectors), written to
``RUN/tensorboard``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .errors import TrainingError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GRID_SEEDS = range(64)  # the same seeds at every checkpoint, so the grids show the model changing
SCATTER_SEEDS = range(1000)  # vectors: enough points to show the density's shape
GRID_STEPS = 18


def summary_writer() -> Any:
    """torch's ``SummaryWriter`` class; a clear error when the tensorboard package is missing (checked
    before a run writes anything)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TrainingError(f"--tensorboard needs the tensorboard package: pip install 'scorelab[tensorboard]' "
                            f"({e})") from None
    return SummaryWriter


class TensorBoardLog:
    """A ``SummaryWriter`` (``torch.utils.tensorboard``, needs the ``tensorboard`` package) for one run."""

    def __init__(self, run: Path, data_shape: tuple[int, ...]) -> None:
        self.writer = summary_writer()(str(run / "tensorboard"))
        self.data_shape = data_shape

    def scalars(self, line: dict[str, Any]) -> None:
        """Every number of a metrics line except the step, tagged by its key."""
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, line["step"])
        self.writer.flush()

    @torch.no_grad()
    def samples(self, ema: torch.nn.Module, step: int) -> None:
        """Heun samples (18 steps, EDM's grid) of the EMA model from fixed seeds, tagged ``samples``: for
        image data a grid of seeds 0-63, for vector data a scatter plot of seeds 0-999; else nothing."""
        if len(self.data_shape) not in (1, 3):
            return
        from .sample import generate
        from .schedules import karras

        seeds = list(GRID_SEEDS if len(self.data_shape) == 3 else SCATTER_SEEDS)
        device = next(ema.parameters()).device
        x, _ = generate(ema.eval(), self.data_shape, seeds, sigmas=karras(GRID_STEPS), device=device)
        if len(self.data_shape) == 3:
            self.writer.add_images("samples", unit_images(x), step)
        else:
            self.writer.add_figure("samples", scatter_figure(x.cpu(), step), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def unit_images(x: Tensor) -> Tensor:
    """Images in [-1, 1] as TensorBoard's [0, 1], gray or RGB (other channel counts show channel 0)."""
    images = (x.clamp(-1, 1) + 1) / 2
    return images if images.shape[1] in (1, 3) else images[:, :1]


def scatter_figure(x: Tensor, step: int) -> Figure:
    """Vector samples (N, D) as a scatter plot: the plane itself for D = 2, else its first two coordinates
    (a histogram for D = 1). A ``Figure`` of its own, not pyplot's: no display, no global figure list."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    points = x.double().numpy()
    n, d = points.shape
    if d == 1:
        ax.hist(points[:, 0], bins=50, color="tab:red")
        ax.set(xlabel="x", title=f"step {step}: {n} samples")
        return fig
    ax.scatter(points[:, 0], points[:, 1], s=3, c="tab:red", alpha=0.5, linewidths=0)
    which = "" if d == 2 else f", coordinates 0 and 1 of {d}"
    ax.set(aspect="equal", xlabel="x[0]", ylabel="x[1]", title=f"step {step}: {n} samples{which}")
    return fig
