"""Data sources: 2-D toys with exact scores, image sets, synthetic shapes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .errors import DataError

__all__ = ["DataError", "load_dataset"]


def load_dataset(spec: str, *, n: int = 100_000, seed: int = 0) -> Tensor:
    """A training set by name or path: a toy name (``n`` exact samples drawn with ``seed``),
    ``digits`` (the scikit-learn digits, train split), a ``.npy``/``.npz`` file or an image folder."""
    from . import images, toy

    if spec in toy.NAMES:
        if n < 2:
            raise DataError(f"a toy dataset needs n >= 2 samples, got {n}")
        return toy.load(spec).sample(n, generator=torch.Generator().manual_seed(seed))
    if spec == "digits" or Path(spec).exists():
        return images.load_images(spec)
    raise DataError(f"unknown dataset {spec!r}: not a toy ({', '.join(toy.NAMES)}), not 'digits', "
                    "and no such file or folder")
