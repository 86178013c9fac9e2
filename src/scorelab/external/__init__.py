"""Models trained elsewhere, in the one denoiser convention: variance-preserving wrappers (discrete
DDPM/DDIM and continuous VP, epsilon / v / x0 prediction) and loaders (diffusers folders and Hub
ids; ``diffusers`` is imported only when one is loaded)."""

from .loaders import DIFFUSERS, DiffusersUNet, load_diffusers
from .vp import PREDICTIONS, ContinuousVP, DiscreteVP, VPDenoiser

__all__ = ["DIFFUSERS", "PREDICTIONS", "ContinuousVP", "DiffusersUNet", "DiscreteVP", "VPDenoiser", "load_diffusers"]
