"""Data sources: 2-D toys with exact scores, image sets and dataset formats, synthetic shapes."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import DataError
from .formats import MappedImages

__all__ = ["DataError", "MappedImages", "load_dataset"]


def load_dataset(spec: str, *, n: int = 100_000, seed: int = 0) -> Tensor | MappedImages:
    """A training set by name or path: a toy name (``n`` exact samples drawn with ``seed``),
    ``digits`` (the scikit-learn digits, train split; ``digits:test`` the held-out 360), ``mmap:FILE.npy`` (uint8 images read a batch
    at a time, a :class:`~scorelab.data.formats.MappedImages`), or any path :func:`load_images`
    reads: a ``.npy``/``.npz`` file, an IDX file, an ``.mrc``/``.mrcs`` stack or a folder (CIFAR-10,
    MNIST, images), with its optional ``:OPTION`` suffix (``cifar-10-batches-py:test``)."""
    from . import images, toy

    if spec in toy.NAMES:
        if n < 2:
            raise DataError(f"a toy dataset needs n >= 2 samples, got {n}")
        return toy.load(spec).sample(n, generator=torch.Generator().manual_seed(seed))
    if spec.startswith("mmap:"):
        return MappedImages(spec.removeprefix("mmap:"))
    if spec == "digits" or spec.startswith("digits:") or images.split_option(spec)[0].exists():
        return images.load_images(spec)
    raise DataError(f"unknown dataset {spec!r}: not a toy ({', '.join(toy.NAMES)}), not 'digits' or mmap:FILE.npy, "
                    "and no such file or folder")
