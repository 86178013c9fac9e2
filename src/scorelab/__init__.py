"""scorelab: train, sample and dissect score-based diffusion models.

One convention throughout (Karras et al. 2022, "EDM"): a denoiser ``D(x, sigma) -> x0_hat``
in the sigma-parametrisation ``x_sigma = x_0 + sigma * eps``; the score is
``(D(x, sigma) - x) / sigma**2``.
"""

__version__ = "0.1.0"
