"""The image conventions every loader shares, and their checks: float32 ``(N, C, H, W)`` with C in
:data:`CHANNELS`, sides within ``[MIN_SIZE, MAX_SIZE]``, finite values in ``[-1, 1]``.

A loader reorders its array with :func:`to_nchw`, maps its values with :func:`to_unit_range` and
ends with :func:`validate_images`; each check raises :class:`DataError` saying what is wrong.
Nothing is clipped, and only the documented value mappings are applied.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from scorelab.errors import DataError

CHANNELS = (1, 3, 4)
MIN_SIZE, MAX_SIZE = 8, 256


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
    check_finite(x, name)
    check_range(x, -1.0, 1.0, name)
    return x


def check_finite(x: Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or infinite values, naming how many."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(f"{name}: {bad} non-finite values (NaN or inf) out of {x.numel()}")


def check_range(x: Tensor, lo: float, hi: float, name: str) -> None:
    """Raise if values of ``x`` lie outside ``[lo, hi]``, naming how many and the observed range."""
    outside = int(((x < lo) | (x > hi)).sum())
    if outside:
        raise DataError(
            f"{name}: {outside} values outside [{lo:g}, {hi:g}] "
            f"(observed min {float(x.min()):g}, max {float(x.max()):g}); "
            "pass value_range=(lo, hi) to map another range linearly onto [-1, 1]"
        )


def check_size(x: Tensor, name: str) -> None:
    """Raise unless the height and width of ``x`` (its last two dims) lie within ``[MIN_SIZE, MAX_SIZE]``."""
    h, w = x.shape[-2:]
    if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
        raise DataError(
            f"{name}: image size {h}x{w} is outside the supported {MIN_SIZE}x{MIN_SIZE} "
            f"to {MAX_SIZE}x{MAX_SIZE}"
        )


def infer_layout(shape: tuple[int, ...], name: str) -> str:
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


def to_nchw(array: np.ndarray, layout: str | None, name: str) -> Tensor:
    """A 3-D or 4-D image array as a ``(N, C, H, W)`` tensor (values and dtype kept).

    ``(N, H, W)`` becomes ``C = 1``. A 4-D array is channels-first ``(N, C, H, W)`` when ``shape[1]``
    is in :data:`CHANNELS` and ``shape[3]`` is not, channels-last ``(N, H, W, C)`` when ``shape[3]``
    is and ``shape[1]`` is not (:func:`infer_layout`); otherwise ``layout`` (``"NCHW"`` or
    ``"NHWC"``) must say which.
    """
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        layout = layout or infer_layout(array.shape, name)
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


def to_unit_range(x: Tensor, value_range: tuple[float, float] | None, name: str) -> Tensor:
    """Map values linearly onto [-1, 1] as float32, refusing values outside the source range:
    uint8 from ``[0, 255]``, floating values from ``value_range`` when given, else they must
    already lie in [-1, 1]; ``value_range=(lo, hi)`` also overrides uint8's range."""
    if x.dtype == torch.uint8:
        value_range = value_range or (0.0, 255.0)
    elif not x.is_floating_point():
        raise DataError(
            f"{name}: unsupported dtype {x.dtype}; expected uint8 (0..255) or floating "
            "values in [-1, 1] (or floating values with value_range=(lo, hi))"
        )
    if x.is_floating_point():
        check_finite(x, name)
    if value_range is None:
        check_range(x, -1.0, 1.0, name)
        return x.to(torch.float32)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise DataError(f"{name}: value_range must have lo < hi, got {value_range}")
    check_range(x, lo, hi, name)
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return ((x - lo) / (hi - lo) * 2 - 1).to(torch.float32)  # monotone rounding: stays in [-1, 1]
