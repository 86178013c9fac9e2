"""The one dispatcher from a data spec (``--data`` on the command line) to the data it names."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from scorelab.data.formats import MRC_NORMALIZE, MappedImages, load_cifar10, load_idx, load_mrc
from scorelab.data.images import load_array, load_digits, load_folder
from scorelab.data.toy import NAMES as TOYS
from scorelab.data.toy import load as load_toy
from scorelab.errors import DataError

IDX_IMAGE_SUFFIXES = ("-idx3-ubyte", "-idx3-ubyte.gz")
CIFAR10_MARKERS = ("data_batch_1", "test_batch")  # a folder holding either is CIFAR-10's batches folder


def load_dataset(spec: str, *, n: int = 100_000, seed: int = 0) -> Tensor | MappedImages:
    """The data named by ``spec``, a name or a path with an optional ``:OPTION`` suffix:

    - a toy name (:data:`scorelab.data.toy.NAMES`): ``n`` exact samples ``(n, 2)`` drawn with ``seed``;
    - ``digits`` (the scikit-learn digits, train split) or ``digits:SPLIT`` (``test``: the held-out 360; ``all``);
    - ``mmap:FILE.npy``: uint8 images read a batch at a time, a :class:`~scorelab.data.formats.MappedImages`
      (``data[:]`` reads them all into a tensor);
    - a ``.npy``/``.npz`` file (:func:`~scorelab.data.images.load_array`);
    - an IDX images file ``*-idx3-ubyte[.gz]`` (MNIST, Fashion-MNIST);
    - an ``.mrc``/``.mrcs`` particle stack, ``:dataset`` (default), ``:per-image``, ``:standardize``
      or ``:none`` choosing the normalisation of :func:`~scorelab.data.formats.load_mrc`;
    - a folder: CIFAR-10's ``cifar-10-batches-py`` (holding ``data_batch_1`` or ``test_batch``) or one
      holding MNIST's ``train-images-idx3-ubyte[.gz]`` / ``t10k-...``, with ``:train`` (default) or
      ``:test``; else a folder of PNG/JPEG files (:func:`~scorelab.data.images.load_folder`).

    Images come as float32 ``(N, C, H, W)`` in [-1, 1].
    """
    if spec in TOYS:
        if n < 2:
            raise DataError(f"a toy dataset needs n >= 2 samples, got {n}")
        return load_toy(spec).sample(n, generator=torch.Generator().manual_seed(seed))
    if spec == "digits" or spec.startswith("digits:"):
        return load_digits(spec.partition(":")[2] or "train")
    if spec.startswith("mmap:"):
        return MappedImages(spec.removeprefix("mmap:"))
    path, option = split_option(spec)
    if not path.exists():
        raise _unknown(spec, "no such file or folder")
    if path.is_file() and path.name.endswith(IDX_IMAGE_SUFFIXES):
        return load_idx(_no_option(path, option))
    if path.suffix.lower() in (".mrc", ".mrcs"):
        return load_mrc(path, option or "dataset")
    if path.is_dir() and any((path / name).is_file() for name in CIFAR10_MARKERS):
        return load_cifar10(path, option or "train")
    if path.is_dir() and any(path.glob("*-images-idx3-ubyte*")):
        return load_idx(path, option or "train")
    if path.suffix in (".npy", ".npz"):
        return load_array(_no_option(path, option))
    if path.is_dir():
        return load_folder(_no_option(path, option))
    raise _unknown(spec, "a file of no known format")


def split_option(spec: str) -> tuple[Path, str | None]:
    """``(path, option)`` from ``"PATH:OPTION"`` when ``PATH`` exists and ``spec`` itself does not;
    else ``(Path(spec), None)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and not Path(spec).exists() and Path(head).exists():
        return Path(head), tail
    return Path(spec), None


def _no_option(path: Path, option: str | None) -> Path:
    if option is not None:
        raise DataError(f"{path}: takes no ':{option}' suffix (splits are for MNIST and CIFAR-10 folders, "
                        "normalisations for MRC files)")
    return path


def _unknown(spec: str, reason: str) -> DataError:
    """The error for a spec that names no data, listing every accepted form."""
    normalize = ", ".join(f":{name}" for name in MRC_NORMALIZE)
    return DataError(
        f"unknown dataset {spec!r} ({reason}): it is not a toy ({', '.join(TOYS)}), not 'digits' or "
        "'digits:SPLIT', not mmap:FILE.npy, not a path ending in .npy or .npz, not one ending in .mrc or .mrcs "
        f"(optionally {normalize}), not an IDX file named *-idx3-ubyte[.gz], and not an existing directory "
        "(CIFAR-10 batches or MNIST IDX files, optionally :train or :test, or PNG/JPEG images)"
    )
