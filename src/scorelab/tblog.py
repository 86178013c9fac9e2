"""Optional TensorBoard logging of a training run (issue 7): the ``metrics.jsonl`` scalars, and at every
checkpoint a grid of EMA samples from fixed seeds, written to ``RUN/tensorboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

GRID_SEEDS = range(64)  # the same seeds at every checkpoint, so the grids show the model changing
GRID_STEPS = 18


class TensorBoardLog:
    """A ``SummaryWriter`` (``torch.utils.tensorboard``, needs the ``tensorboard`` package) for one run."""

    def __init__(self, run: Path, data_shape: tuple[int, ...]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("--tensorboard needs the tensorboard package: pip install 'scorelab[tensorboard]'") from e
        self.writer = SummaryWriter(str(run / "tensorboard"))
        self.data_shape = data_shape

    def scalars(self, line: dict[str, Any]) -> None:
        """Every number of a metrics line except the step, tagged by its key."""
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, line["step"])
        self.writer.flush()

    @torch.no_grad()
    def samples(self, ema: torch.nn.Module, step: int) -> None:
        """Heun samples (18 steps, EDM's grid) of the EMA model from seeds 0-63, for image data."""
        if len(self.data_shape) != 3:
            return
        from .sample.generate import generate

        device = next(ema.parameters()).device
        x, _ = generate(ema.eval(), self.data_shape, list(GRID_SEEDS), steps=GRID_STEPS, device=device)
        images = ((x.clamp(-1, 1) + 1) / 2)
        if images.shape[1] not in (1, 3):
            images = images[:, :1]
        self.writer.add_images("samples", images, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
