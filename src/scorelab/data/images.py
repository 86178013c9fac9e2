"""Image sources: scikit-learn digits, ``.npy``/``.npz`` arrays and folders of PNG/JPEG files.

Every loader returns a float32 tensor of shape ``(N, C, H, W)`` with values in ``[-1, 1]`` (the
conventions of :mod:`scorelab.data.validate`) and raises :class:`DataError` saying what is wrong
with its input; nothing is clipped, and only the documented value mappings are applied.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from scorelab.data.validate import check_size, to_nchw, to_unit_range, validate_images
from scorelab.errors import DataError

DIGITS_SPLIT_SEED = 20240611
DIGITS_N_TRAIN = 1437  # 80 % of the 1797 digits; the other 360 are held out
SPLITS = ("train", "test", "all")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA")
COLOR_MODES = ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


# ---------------------------------------------------------------- digits


@lru_cache(maxsize=1)
def _digits_all() -> tuple[Tensor, Tensor]:
    """All 1797 scikit-learn digits as ``(1797, 1, 8, 8)`` images in [-1, 1] and int64 labels."""
    from sklearn import datasets

    bunch = datasets.load_digits()
    pixels = torch.from_numpy(bunch.images.astype(np.float32))  # integers 0..16
    images = (pixels / 16 * 2 - 1).unsqueeze(1)
    return validate_images(images, "digits"), torch.from_numpy(bunch.target.astype(np.int64))


@lru_cache(maxsize=1)
def digits_split_indices() -> dict[str, Tensor]:
    """The fixed train/test split of the 1797 digits, as sorted index tensors.

    Drawn from NumPy's legacy ``RandomState``, whose stream is frozen by NumPy's compatibility
    policy, so the held-out digits stay the same across library versions.
    """
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(1797)
    train = torch.from_numpy(np.sort(perm[:DIGITS_N_TRAIN]))
    test = torch.from_numpy(np.sort(perm[DIGITS_N_TRAIN:]))
    return {"train": train, "test": test, "all": torch.arange(1797)}


def digits(split: str = "train") -> tuple[Tensor, Tensor]:
    """Digits images ``(N, 1, 8, 8)`` float32 in [-1, 1] (pixel ``x`` -> ``x/16*2-1``) and labels.

    ``split`` is ``"train"`` (1437 images), ``"test"`` (360, never used for training) or ``"all"``.
    """
    if split not in SPLITS:
        raise DataError(f"digits: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    images, labels = _digits_all()
    index = digits_split_indices()[split]
    return images[index].clone(), labels[index].clone()


def load_digits(split: str = "train") -> Tensor:
    """Digits images only; see :func:`digits`."""
    return digits(split)[0]


# ---------------------------------------------------------------- arrays


def load_array(
    path: str | Path,
    value_range: tuple[float, float] | None = None,
    *,
    key: str | None = None,
    layout: str | None = None,
) -> Tensor:
    """Images from a ``.npy`` or ``.npz`` file as float32 ``(N, C, H, W)`` in [-1, 1].

    Shapes: ``(N, H, W)`` becomes ``C = 1``. A 4-D array is channels-first ``(N, C, H, W)`` when
    ``shape[1]`` is in {1, 3, 4} and ``shape[3]`` is not, channels-last ``(N, H, W, C)`` when
    ``shape[3]`` is in {1, 3, 4} and ``shape[1]`` is not; otherwise pass ``layout="NCHW"`` or
    ``"NHWC"``. Values: uint8 maps [0, 255] linearly to [-1, 1]; floating arrays must lie in
    [-1, 1]. ``value_range=(lo, hi)`` instead maps [lo, hi] linearly to [-1, 1] (for either dtype);
    values outside it are an error. For ``.npz``, ``key`` names the array (needed when the file
    holds several and none is named ``images``).
    """
    path = Path(path)
    name = str(path)
    array = _read_array(path, key)
    x = to_nchw(array, layout, name)
    check_size(x, name)
    return validate_images(to_unit_range(x, value_range, name), name)


def _read_array(path: Path, key: str | None) -> np.ndarray:
    """The array stored in a ``.npy`` file, or the one selected by ``key`` in a ``.npz`` file."""
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: expected a .npy or .npz file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read as a NumPy array file ({e})") from e
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        return _select_npz_array(loaded, key, path)


def _select_npz_array(npz: np.lib.npyio.NpzFile, key: str | None, path: Path) -> np.ndarray:
    """Pick the array named ``key``, or the only array, or the one named ``images``, from an open ``.npz`` file."""
    keys = list(npz.files)
    if key is None and len(keys) == 1:
        key = keys[0]
    elif key is None and "images" in keys:
        key = "images"
    if key is None:
        listed = ", ".join(keys) if keys else "none"
        raise DataError(f"{path}: holds {len(keys)} arrays ({listed}); pass key= to choose one")
    if key not in keys:
        raise DataError(f"{path}: no array named {key!r}; arrays in the file: {', '.join(keys)}")
    try:
        return npz[key]
    except ValueError as e:
        raise DataError(f"{path}: cannot read array {key!r} ({e})") from e


# ---------------------------------------------------------------- folders


def load_folder(path: str | Path, mode: str | None = None) -> Tensor:
    """All PNG/JPEG files in a folder (sorted by name) as float32 ``(N, C, H, W)`` in [-1, 1].

    ``mode`` is ``"L"`` (C = 1), ``"RGB"`` (C = 3) or ``None``: ``"L"`` when every file is
    grayscale, else ``"RGB"``. An alpha channel is dropped. All files must share one size.
    Other files and subfolders are ignored.
    """
    path = Path(path)
    if mode not in ("L", "RGB", None):
        raise DataError(f"{path}: mode must be 'L', 'RGB' or None, got {mode!r}")
    files = _image_files(path)
    images = [_open_image(f) for f in files]
    _check_same_size(files, images)
    mode = mode or ("L" if all(im.mode in GRAY_MODES for im in images) else "RGB")
    arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for im in images]
    x = to_nchw(np.stack(arrays), "NHWC" if mode == "RGB" else None, str(path))
    check_size(x, str(path))
    return validate_images(to_unit_range(x, None, str(path)), str(path))


def _image_files(path: Path) -> list[Path]:
    """The PNG/JPEG files directly inside ``path``, sorted by name; an error if there are none."""
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no PNG or JPEG files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def _open_image(file: Path) -> Image.Image:
    """Open and decode one image file, refusing modes that do not hold 8-bit values."""
    try:
        with Image.open(file) as im:
            im.load()
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{file}: cannot read as an image ({e})") from e
    if im.mode not in GRAY_MODES + COLOR_MODES:
        raise DataError(f"{file}: unsupported image mode {im.mode!r} (only 8-bit images are read)")
    return im


def _check_same_size(files: list[Path], images: list[Image.Image]) -> None:
    """Raise naming the first file whose size differs from the first file's."""
    width, height = images[0].size
    for file, im in zip(files, images):
        if im.size != (width, height):
            raise DataError(
                f"{file}: size {im.size[0]}x{im.size[1]} (width x height) differs from "
                f"{width}x{height} of {files[0].name}; all images in a folder must have one size"
            )
