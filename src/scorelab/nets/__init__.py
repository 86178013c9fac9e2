"""Networks: raw F(x, c_noise) models and the EDM preconditioning that makes them denoisers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from .mlp import MLP
from .precond import EDMPrecond, GaussianResidual
from .unet import UNet

__all__ = ["MLP", "MODELS", "EDMPrecond", "GaussianResidual", "UNet", "build_denoiser"]

MODELS = ("mlp", "unet", "mlp-gaussian", "unet-gaussian")
RESIDUAL = "-gaussian"


def build_denoiser(model: str, data_shape: Sequence[int], sigma_data: float,
                   options: dict[str, Any] | None = None) -> EDMPrecond:
    """The preconditioned network named ``model`` for data of shape ``data_shape`` (one example).
    ``mlp-gaussian`` and ``unet-gaussian`` are :class:`GaussianResidual` models; their option
    ``gaussian_rank`` sizes the Gaussian, whose statistics are then loaded or fitted (``train``)."""
    options = dict(options or {})
    shape = tuple(data_shape)
    if model.endswith(RESIDUAL) and model[: -len(RESIDUAL)] in ("mlp", "unet"):
        import torch

        from ..analytic import Gaussian

        rank = options.pop("gaussian_rank", None)
        D = math.prod(shape)
        if not isinstance(rank, int) or not 1 <= rank <= D:
            raise ValueError(f"model {model!r} needs the option gaussian_rank, an integer in [1, {D}]")
        base = build_denoiser(model[: -len(RESIDUAL)], shape, sigma_data, options)
        placeholder = Gaussian(torch.zeros(shape), U=torch.eye(D)[:, :rank], lam=torch.ones(rank))
        return GaussianResidual(base.net, placeholder, sigma_data)
    if model == "mlp":
        if len(shape) != 1:
            raise ValueError(f"model 'mlp' needs vector data (N, D); this data has examples of shape {shape} "
                             "(use --model unet for images)")
        net: nn.Module = MLP(shape[0], **options)
    elif model == "unet":
        if len(shape) != 3:
            raise ValueError(f"model 'unet' needs images (N, C, H, W); this data has examples of shape {shape} "
                             "(use --model mlp for vectors)")
        net = UNet(shape[0], shape[1:], **options)
    else:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return EDMPrecond(net, sigma_data)
