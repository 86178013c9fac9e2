"""EDM preconditioning: turns a raw network F into a denoiser D(x, sigma)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from ..denoiser import append_dims, as_sigma

if TYPE_CHECKING:
    from ..analytic.gaussian import Gaussian


class EDMPrecond(nn.Module):
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with (Karras et al. 2022, Table 1, eq. 7)
    c_skip = sigma_d^2/(sigma^2 + sigma_d^2), c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
    c_in = 1/sqrt(sigma^2 + sigma_d^2), c_noise = ln(sigma)/4.

    The network runs in its own parameter dtype; the result is returned in x's dtype, so a
    float32 network can be called from float64 analysis code."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def network(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``F(c_in x, c_noise)`` in x's dtype, the network run in its own parameter dtype."""
        s = append_dims(sigma, x.ndim)
        c_in = 1 / (s**2 + self.sigma_data**2).sqrt()
        dtype = next(self.net.parameters()).dtype
        return self.net((c_in * x).to(dtype), (sigma.log() / 4).to(dtype)).to(x.dtype)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        s = append_dims(sigma, x.ndim)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        return self.bypass(x, sigma, c_skip) + c_out * self.network(x, sigma)

    def bypass(self, x: Tensor, sigma: Tensor, c_skip: Tensor) -> Tensor:
        """The part of D that bypasses the network: EDM's skip connection ``c_skip x``, with
        ``c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)`` (Karras et al. 2022, eq. 7 and Table 1)."""
        return c_skip * x


class GaussianResidual(EDMPrecond):
    """``D(x, sigma) = D_gauss(x, sigma) + c_out F(c_in x, c_noise)``: the denoiser of the data's
    Gaussian (Gaussian-score paper, eq. 6) plus a learned correction, in place of EDM's
    ``c_skip x`` bypass (the paper's Sec. 8 suggestion). With ``F``'s zero-initialised output layer
    the untrained model is exactly the Gaussian denoiser; the network learns what the Gaussian
    misses, which at high noise is almost nothing."""

    def __init__(self, net: nn.Module, gaussian: Gaussian, sigma_data: float = 0.5) -> None:
        super().__init__(net, sigma_data)
        self.gaussian = gaussian

    def bypass(self, x: Tensor, sigma: Tensor, c_skip: Tensor) -> Tensor:
        """In place of EDM's ``c_skip x`` (Karras et al. 2022, eq. 7; ``c_skip`` is unused here): the
        Gaussian's denoiser ``D_gauss(x, sigma) = mu + U diag(lam / (lam + sigma^2)) U^T (x - mu)``
        (Gaussian-score paper, eq. 6 in the low-rank form of eq. 12), run in the Gaussian's dtype and returned in x's."""
        dtype = self.gaussian.mu.dtype
        return self.gaussian(x.to(dtype), sigma.to(dtype)).to(x.dtype)

