"""Inpainting by replacement (Song & Ermon 2019, Sec. 5 and App. B.3; the denoising score matching
report, Sec. 7): every sampler of the registry fills in the unknown part of an image, its own steps
unchanged, because it sees the denoiser through :class:`KnownPart`, which re-imposes the known part,
noised to the level of each evaluation, before the network looks at the state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..denoiser import Denoiser, append_dims, as_sigma, check_range, score
from .common import Callback, Generators, check_sigmas, randn
from .registry import get_sampler

SIDES = ("top", "bottom", "left", "right")


class KnownPart:
    """The denoiser ``D`` seen through the known pixels of ``image`` (``mask == 1``): an evaluation at
    ``(x, sigma)`` returns ``D(m * (image + sigma z) + (1 - m) * x, sigma)`` with ``z`` fresh standard
    noise from ``generator`` (one, or one per image), so the sampler's state only carries the unknown
    pixels. A batch of ``k`` copies of the images (MAD's doubled batch) shares one ``z`` per image,
    scaled by each row's sigma, so a finite difference in sigma stays a derivative."""

    def __init__(self, denoiser: Denoiser, image: Tensor, mask: Tensor, generator: Generators = None) -> None:
        self.denoiser, self.image, self.generator = denoiser, image, generator
        self.known = check_mask(mask, image).bool()

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        return self.denoiser(self.impose(x, sigma), sigma)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The score at the imposed state (the wrapped model's own closed-form score where it has one)."""
        sigma = as_sigma(sigma, x)
        return score(self.denoiser, self.impose(x, sigma), sigma)

    def impose(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``x`` with its known pixels replaced by ``image + sigma z``, ``z`` drawn once per image."""
        copies, rest = divmod(len(x), len(self.image))
        if rest or copies == 0:
            raise ValueError(f"a batch of {len(x)} does not repeat the {len(self.image)} images being inpainted")
        repeats = (copies,) + (1,) * (x.ndim - 1)
        z = randn(self.image.shape, self.generator, dtype=x.dtype, device=x.device).repeat(repeats)
        known = self.image.repeat(repeats) + append_dims(sigma, x.ndim) * z
        return torch.where(self.known.repeat(repeats), known, x)


def inpaint(denoiser: Denoiser, image: Tensor, mask: Tensor, sigmas: Tensor | Sequence[float], *,
            sampler: str = "annealed-langevin", generator: Generators = None, callback: Callback | None = None,
            progress: bool = False, **params: Any) -> Tensor:
    """Fill in the pixels of ``image`` (B, C, H, W) where ``mask == 0`` with the registered ``sampler`` on
    the grid ``sigmas`` (its ``params`` passed on): the unknown pixels start from ``N(0, sigmas[0]^2)``, the
    sampler runs on :class:`KnownPart`, and the known pixels of the result are exactly ``image``.
    ``mask`` is ``(C, H, W)``, ``(H, W)`` or the images' shape, of 0 (unknown) and 1 (known)."""
    m = check_mask(mask, image)
    check_sigmas(sigmas, image, min_len=1)
    check_range(denoiser, torch.as_tensor(sigmas))
    sigma_max = float(torch.as_tensor(sigmas, dtype=torch.float64)[0])
    x = sigma_max * randn(image.shape, generator, dtype=image.dtype, device=image.device)
    x = get_sampler(sampler)(KnownPart(denoiser, image, m, generator), x, sigmas, generator=generator,
                             callback=callback, progress=progress, **params)
    return torch.where(m.bool(), image, x)


def check_mask(mask: Tensor, image: Tensor) -> Tensor:
    """``mask`` of 0 and 1 broadcast to ``image``'s shape, dtype and device; a clear error otherwise."""
    if mask.shape != image.shape[-mask.ndim:] and mask.shape != image.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(image.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold 0 (unknown) and 1 (known) only")
    return mask.to(dtype=image.dtype, device=image.device).expand_as(image)


def side_mask(shape: Sequence[int], side: str) -> Tensor:
    """A mask ``(C, H, W)`` hiding one half of the image: ``side`` is the *unknown* half, one of
    top, bottom, left, right (the reports' four inpainting experiments)."""
    c, h, w = shape
    mask = torch.ones(c, h, w)
    every = slice(None)
    halves = {"top": (every, slice(0, h // 2), every), "bottom": (every, slice(h // 2, h), every),
              "left": (every, every, slice(0, w // 2)), "right": (every, every, slice(w // 2, w))}
    if side not in halves:
        raise ValueError(f"side must be one of {', '.join(halves)}, got {side!r}")
    mask[halves[side]] = 0
    return mask


def read_mask(spec: str | Path, shape: Sequence[int]) -> Tensor:
    """The mask (1 known, 0 unknown) for images of ``shape`` (C, H, W): a side name (the unknown half,
    :func:`side_mask`), or a ``.npy`` file of 0/1 or an image file (white = known, read as grayscale
    and thresholded at the middle), of shape (H, W) or (C, H, W)."""
    if str(spec) in SIDES:
        return side_mask(shape, str(spec))
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"a mask is one of {', '.join(SIDES)} or a .npy/.png file; {str(spec)!r} is none of these")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                array = (np.asarray(im.convert("L")) > 127).astype(np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: cannot read the mask as an image ({e})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: a mask holds numbers 0 and 1, got an array of {array.dtype}")
    mask = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if tuple(mask.shape) not in (tuple(shape[1:]), tuple(shape)):
        raise ValueError(f"{path}: mask of shape {tuple(mask.shape)}; images need {tuple(shape[1:])} or "
                         f"{tuple(shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{path}: the mask must hold only 0 (unknown) and 1 (known)")
    return mask.expand(tuple(shape)).clone()


def unknown_rmse(inpainted: Tensor, original: Tensor, mask: Tensor) -> float:
    """Root-mean-square error over the unknown pixels (``mask == 0``), per image, averaged over images."""
    unknown = check_mask(mask, original) == 0
    counts = unknown.flatten(1).sum(1)
    if not bool((counts > 0).all()):
        raise ValueError("the mask hides no pixel of some image: there is nothing to measure there")
    squared = torch.where(unknown, (inpainted - original).double() ** 2, 0.0).flatten(1)
    return float((squared.sum(1) / counts).sqrt().mean())


__all__ = ["SIDES", "KnownPart", "check_mask", "inpaint", "read_mask", "side_mask", "unknown_rmse"]
