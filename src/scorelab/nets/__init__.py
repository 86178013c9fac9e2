"""Networks: raw F(x, c_noise) models and the EDM preconditioning that makes them denoisers."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from .mlp import MLP
from .ncsn import NCSN, ScoreMLP, ScorePrecond
from .precond import EDMPrecond, GaussianResidual
from .unet import UNet

__all__ = ["MLP", "MODELS", "NCSN", "EDMPrecond", "GaussianResidual", "ScoreMLP", "ScorePrecond", "UNet",
           "build_denoiser"]

MODELS = ("mlp", "unet", "mlp-gaussian", "unet-gaussian", "ncsn-mlp", "ncsn")
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
        net = _network(model[: -len(RESIDUAL)], shape, options)
        placeholder = Gaussian(torch.zeros(shape), U=torch.eye(D)[:, :rank], lam=torch.ones(rank))
        return GaussianResidual(net, placeholder, sigma_data)
    if model in ("ncsn", "ncsn-mlp"):  # networks that output a score (NCSN style)
        if model == "ncsn-mlp":
            if len(shape) != 1:
                raise ValueError(f"model 'ncsn-mlp' needs vector data (N, D); got examples of shape {shape}")
            return ScorePrecond(_construct(ScoreMLP, shape[0], options=options), sigma_data)
        if len(shape) != 3:
            raise ValueError(f"model 'ncsn' needs images (N, C, H, W); got examples of shape {shape}")
        if isinstance(options.get("levels"), str):
            from ..schedules import parse_levels

            options["levels"] = parse_levels(options["levels"]).tolist()
        return ScorePrecond(_construct(NCSN, shape[0], shape[1:], options=options), sigma_data)
    return EDMPrecond(_network(model, shape, options), sigma_data)


def _network(model: str, shape: tuple[int, ...], options: dict[str, Any]) -> nn.Module:
    """The raw network ``F(x, c_noise)`` of ``mlp`` or ``unet``, before its preconditioning."""
    if model == "mlp":
        if len(shape) != 1:
            raise ValueError(f"model 'mlp' needs vector data (N, D); this data has examples of shape {shape} "
                             "(use --model unet for images)")
        return _construct(MLP, shape[0], options=options)
    if model == "unet":
        if len(shape) != 3:
            raise ValueError(f"model 'unet' needs images (N, C, H, W); this data has examples of shape {shape} "
                             "(use --model mlp for vectors)")
        return _construct(UNet, shape[0], shape[1:], options=options)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def _construct(cls: type[nn.Module], *args: Any, options: dict[str, Any]) -> nn.Module:
    """``cls(*args, **options)`` with the options checked first against its signature: an unknown
    option, or a value whose type does not fit the option's default, is a ValueError naming it."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][len(args):]
    known = {p.name: p.default for p in params}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no option {', '.join(unknown)}; its options: {', '.join(known)}")
    for name, value in options.items():
        default = known[name]
        if not _fits(value, default):
            raise ValueError(f"model option {name}={value!r}: {cls.__name__} expects {type(default).__name__} "
                             f"there (default {default!r})")
    try:
        return cls(*args, **options)
    except TypeError as e:  # a value of the right type the network still cannot use
        raise ValueError(f"model options {options} do not fit {cls.__name__}: {e}") from None


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of the option's ``default`` (ints for floats too; any value
    where the default is None or missing)."""
    if default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))
