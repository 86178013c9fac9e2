"""Image sources: scikit-learn digits, ``.npy``/``.npz`` arrays and folders of PNG/JPEG files;
:func:`load_images` also dispatches to the dataset formats of :mod:`scorelab.data.formats`.

Every loader returns a float32 tensor of shape ``(N, C, H, W)`` with values in ``[-1, 1]``
(DESIGN.md, "Data conventions") and raises :class:`DataError` saying what is wrong with its
input; nothing is clipped, and only the documented value mappings are applied.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from scorelab.data.errors import DataError

DIGITS_SPLIT_SEED = 20240611
DIGITS_N_TRAIN = 1437  # 80 % of the 1797 digits; the other 360 are held out
SPLITS = ("train", "test", "all")
CHANNELS = (1, 3, 4)
MIN_SIZE, MAX_SIZE = 8, 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA")
COLOR_MODES = ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


# ---------------------------------------------------------------- validation


def validate_images(x: Tensor, name: str = "images") -> Tensor:
    """Check that ``x`` is a non-empty ``(N, C, H, W)`` floating tensor, finite, in ``[-1, 1]``.

    Returns ``x`` unchanged so loaders can end with ``return validate_images(x, source)``.
    """
    if not isinstance(x, Tensor):
        raise DataError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise DataError(f"{name}: expected shape (N, C, H, W), got {x.ndim} dims {tuple(x.shape)}")
    if x.numel() == 0:
        raise DataError(f"{name}: no images (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise DataError(f"{name}: expected a floating dtype, got {x.dtype}")
    _check_finite(x, name)
    _check_range(x, -1.0, 1.0, name)
    return x


def _check_finite(x: Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or infinite values, naming how many."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(f"{name}: {bad} non-finite values (NaN or inf) out of {x.numel()}")


def _check_range(x: Tensor, lo: float, hi: float, name: str) -> None:
    """Raise if values of ``x`` lie outside ``[lo, hi]``, naming how many and the observed range."""
    outside = int(((x < lo) | (x > hi)).sum())
    if outside:
        raise DataError(
            f"{name}: {outside} values outside [{lo:g}, {hi:g}] "
            f"(observed min {float(x.min()):g}, max {float(x.max()):g}); "
            "pass value_range=(lo, hi) to map another range linearly onto [-1, 1]"
        )


def _check_size(x: Tensor, name: str) -> None:
    """Raise unless height and width lie within ``[MIN_SIZE, MAX_SIZE]``."""
    h, w = x.shape[-2:]
    if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
        raise DataError(
            f"{name}: image size {h}x{w} is outside the supported {MIN_SIZE}x{MIN_SIZE} "
            f"to {MAX_SIZE}x{MAX_SIZE}"
        )


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
    x = _to_nchw(array, layout, name)
    _check_size(x, name)
    return validate_images(_to_unit_range(x, value_range, name), name)


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


def _to_nchw(array: np.ndarray, layout: str | None, name: str) -> Tensor:
    """Reorder a 3-D or 4-D image array to ``(N, C, H, W)`` following :func:`load_array`'s rule."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        layout = layout or _infer_layout(array.shape, name)
        if layout == "NHWC":
            array = array.transpose(0, 3, 1, 2)
        elif layout != "NCHW":
            raise DataError(f"{name}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    else:
        raise DataError(
            f"{name}: expected a 3-D (N, H, W) or 4-D (N, C, H, W) / (N, H, W, C) array, "
            f"got {array.ndim} dims {array.shape}"
        )
    if array.shape[1] not in CHANNELS:
        raise DataError(f"{name}: {array.shape[1]} channels; expected one of {CHANNELS}")
    if array.shape[0] == 0:
        raise DataError(f"{name}: no images (shape {array.shape})")
    return torch.from_numpy(np.ascontiguousarray(array))


def _infer_layout(shape: tuple[int, ...], name: str) -> str:
    """``"NCHW"`` or ``"NHWC"`` from which of ``shape[1]``, ``shape[3]`` is a channel count."""
    first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    which = "both" if first else "neither"
    raise DataError(
        f"{name}: cannot tell the layout of shape {shape} ({which} of dims 1 and 3 is a channel "
        f"count in {CHANNELS}); pass layout='NCHW' or layout='NHWC'"
    )


def _to_unit_range(x: Tensor, value_range: tuple[float, float] | None, name: str) -> Tensor:
    """Map uint8 or floating values linearly onto [-1, 1] as float32, refusing values outside."""
    if x.dtype == torch.uint8:
        value_range = value_range or (0.0, 255.0)
    elif not x.is_floating_point():
        raise DataError(
            f"{name}: unsupported dtype {x.dtype}; expected uint8 (0..255) or floating "
            "values in [-1, 1] (or floating values with value_range=(lo, hi))"
        )
    if x.is_floating_point():
        _check_finite(x, name)
    if value_range is None:
        _check_range(x, -1.0, 1.0, name)
        return x.to(torch.float32)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise DataError(f"{name}: value_range must have lo < hi, got {value_range}")
    _check_range(x, lo, hi, name)
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return ((x - lo) / (hi - lo) * 2 - 1).to(torch.float32)  # monotone rounding: stays in [-1, 1]


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
    x = _to_nchw(np.stack(arrays), "NHWC" if mode == "RGB" else None, str(path))
    _check_size(x, str(path))
    return validate_images(_to_unit_range(x, None, str(path)), str(path))


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


# ---------------------------------------------------------------- dispatch


def load_images(spec: str) -> Tensor:
    """Images named by ``spec``, a name or a path with an optional ``:OPTION`` suffix:

    - ``digits`` (train split) or ``digits:SPLIT``;
    - a ``.npy``/``.npz`` file (``mmap:FILE.npy`` reads the same images; :func:`load_dataset` maps it);
    - an IDX images file ``*-idx3-ubyte[.gz]`` (MNIST, Fashion-MNIST);
    - an ``.mrc``/``.mrcs`` particle stack, ``:dataset`` (default), ``:per-image``, ``:standardize``
      or ``:none`` choosing the normalisation of :func:`~scorelab.data.formats.load_mrc`;
    - a folder: CIFAR-10's ``cifar-10-batches-py`` (holding ``data_batch_1`` or ``test_batch``) or one
      holding MNIST's ``train-images-idx3-ubyte[.gz]`` / ``t10k-...``, with ``:train`` (default) or
      ``:test``; else a folder of PNG/JPEG files.
    """
    from . import formats

    if spec == "digits" or spec.startswith("digits:"):
        return load_digits(spec.partition(":")[2] or "train")
    if spec.startswith("mmap:"):
        return load_array(spec.removeprefix("mmap:"))
    path, option = split_option(spec)
    if path.is_file() and path.name.endswith(("-idx3-ubyte", "-idx3-ubyte.gz")):
        return formats.load_idx(_no_option(path, option))
    if path.suffix.lower() in (".mrc", ".mrcs"):
        return formats.load_mrc(path, option or "dataset")
    if path.is_dir() and any((path / name).is_file() for name in ("data_batch_1", "test_batch")):
        return formats.load_cifar10(path, option or "train")
    if path.is_dir() and any(path.glob("*-images-idx3-ubyte*")):
        return formats.load_idx(path, option or "train")
    if path.suffix in (".npy", ".npz"):
        return load_array(_no_option(path, option))
    if path.is_dir():
        return load_folder(_no_option(path, option))
    raise DataError(
        f"cannot load images from {spec!r}: it is not 'digits' or 'digits:SPLIT', "
        "not a path ending in .npy or .npz (or mmap:FILE.npy), .mrc or .mrcs, not an IDX file named "
        "*-idx3-ubyte[.gz], and not an existing directory (CIFAR-10 batches, MNIST IDX files or images)"
    )


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
