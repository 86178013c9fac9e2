"""Loading models trained elsewhere: diffusers' ``UNet2DModel`` with its scheduler, from a local
folder in ``save_pretrained`` layout or a Hub id (``diffusers`` is imported only here, lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .vp import DiscreteVP

DIFFUSERS = "diffusers:"  # prefix of a diffusers model where a run is expected


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` as a VP network ``(x_t, t) -> prediction``; a class-conditional
    one is shown ``class_label`` for every sample."""

    def __init__(self, unet: nn.Module, class_label: int | None = None) -> None:
        super().__init__()
        self.unet, self.class_label = unet, class_label

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        weight = next(self.unet.parameters())
        labels = None
        if self.class_label is not None:
            labels = torch.full((len(x_t),), self.class_label, dtype=torch.long, device=weight.device)
        out = self.unet(x_t.to(weight.dtype), t.to(weight.device, torch.float32), class_labels=labels)
        return out.sample


def load_diffusers(source: str | Path, *, class_label: int | None = None,
                   interpolate: bool = True) -> tuple[DiscreteVP, dict[str, Any]]:
    """The diffusers model at ``source`` as a :class:`~scorelab.external.vp.DiscreteVP` denoiser, and
    metadata in the shape of a checkpoint's (``config``, ``data_shape``). ``source`` is a pipeline
    folder (``unet/`` and ``scheduler/``), a model folder holding ``config.json`` and a scheduler
    config (``scheduler_config.json`` or ``scheduler/``), or a Hub id (downloaded by diffusers'
    ``from_pretrained`` where the machine can). The scheduler gives ``alphas_cumprod`` (from its
    betas, whatever its ``beta_schedule``) and the ``prediction_type``."""
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError as e:
        raise CheckpointError(f"loading {DIFFUSERS}{source} needs the diffusers package: "
                              f"pip install 'scorelab[diffusers]' ({e})") from None
    unet_at, scheduler_at = _layout(str(source))
    try:
        unet = UNet2DModel.from_pretrained(unet_at[0], subfolder=unet_at[1])
        config = DDPMScheduler.load_config(scheduler_at[0], subfolder=scheduler_at[1])
        scheduler = DDPMScheduler.from_config(config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot load the diffusers model {source}: {type(e).__name__}: {e}") from None
    classes = unet.config.get("num_class_embeds")
    if classes and class_label is None:
        raise ValueError(f"{source} is class-conditional ({classes} classes): choose one with --class")
    if class_label is not None and not (classes and 0 <= class_label < classes):
        raise ValueError(f"--class {class_label}: {source} has " + (f"classes 0 .. {classes - 1}" if classes else
                                                                     "no class conditioning"))
    prediction = config.get("prediction_type", "epsilon")
    denoiser = DiscreteVP(DiffusersUNet(unet, class_label), scheduler.alphas_cumprod, prediction,
                          interpolate=interpolate)
    size = unet.config["sample_size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    meta = {"config": {"model": "diffusers", "source": str(source), "prediction_type": prediction,
                       "class_label": class_label, "data": None},
            "data_shape": [unet.config["in_channels"], height, width], "step": None}
    return denoiser.eval().requires_grad_(False), meta


def _layout(source: str) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """Where the UNet and the scheduler config are: ``(location, subfolder)`` each."""
    path = Path(source).expanduser()
    if not path.exists():
        if source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise CheckpointError(f"no diffusers model at {source}: no such folder (a Hub id looks like owner/name)")
        return (source, "unet"), (source, "scheduler")  # a Hub id
    if not path.is_dir():
        raise CheckpointError(f"{source} is a file; a diffusers model is a folder (save_pretrained's layout)")
    if (path / "unet" / "config.json").is_file():
        return (str(path), "unet"), (str(path), "scheduler")
    if (path / "config.json").is_file():
        if (path / "scheduler_config.json").is_file():
            return (str(path), None), (str(path), None)
        if (path / "scheduler").is_dir():
            return (str(path), None), (str(path), "scheduler")
        raise CheckpointError(f"{source} holds a model but no scheduler config (scheduler_config.json or "
                              "scheduler/): its noise levels are unknown")
    raise CheckpointError(f"{source} is not a diffusers folder: no unet/config.json and no config.json")


__all__ = ["DIFFUSERS", "DiffusersUNet", "load_diffusers"]
