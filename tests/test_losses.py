"""NCSN denoising score matching and (sliced / exact) score matching against closed forms."""

import pytest
import torch
from torch import nn

from scorelab.analytic import Gaussian
from scorelab.losses import NCSNLoss, ScoreMatching

LAM = torch.tensor([2.0, 0.5, 0.1], dtype=torch.float64)


def _gaussian() -> Gaussian:
    return Gaussian(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), U=torch.eye(3, dtype=torch.float64), lam=LAM)


def _data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return _gaussian().mean + LAM.sqrt() * torch.randn(n, 3, generator=g, dtype=torch.float64)


def test_ncsn_loss_of_the_exact_denoiser_is_the_posterior_variance():
    """For the exact Gaussian denoiser, E |D(x~, sigma) - x|^2 / sigma^2 = sum_k lam_k / (lam_k + sigma^2), the
    posterior variance over sigma^2; averaged over uniformly drawn levels (200 000 examples, 1% tolerance)."""
    levels = (2.0, 1.0, 0.5, 0.1)
    loss = NCSNLoss(levels)(_gaussian(), _data(200_000), torch.Generator().manual_seed(1))
    expected = sum(float((LAM / (LAM + s**2)).sum()) for s in levels) / len(levels)
    assert float(loss.mean()) == pytest.approx(expected, rel=0.01)
    # the continuous variant draws log-uniform sigma in [0.1, 2]: its mean lies between the extremes
    cont = NCSNLoss(levels, continuous=True)(_gaussian(), _data(50_000), torch.Generator().manual_seed(2))
    assert float((LAM / (LAM + 4)).sum()) < float(cont.mean()) < float((LAM / (LAM + 0.01)).sum())


class LinearScore(nn.Module):
    """s(x) = -A (x - mu) as a denoiser D = x + sigma^2 s."""

    def __init__(self, A: torch.Tensor, mu: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.mu = mu

    def forward(self, x, sigma):
        s = -(x - self.mu) @ self.A.T
        return x + sigma[:, None] ** 2 * s


@pytest.mark.parametrize("method", ScoreMatching.METHODS)
def test_score_matching_objectives_agree_with_the_closed_form(method):
    """For data N(mu, Lam) and s(x) = -A (x - mu): E[tr grad s + |s|^2 / 2] = -tr A + tr(A^T A Lam) / 2. The
    sliced forms have the same expectation (v ~ N(0, I)). 100 000 examples; 2% tolerance (the sliced
    forms are noisier)."""
    g = torch.Generator().manual_seed(3)
    A = torch.tensor([[0.7, 0.2, 0.0], [0.1, 1.5, 0.3], [0.0, -0.2, 4.0]], dtype=torch.float64)
    model = LinearScore(A, _gaussian().mean)
    loss = ScoreMatching(method, sigma=0.7)(model, _data(100_000), g)
    expected = float(-A.trace() + (A.T @ A @ torch.diag(LAM)).trace() / 2)
    assert float(loss.mean().detach()) == pytest.approx(expected, rel=0.02)
    # the true score A = Lam^-1 minimises it: its gradient there is Monte Carlo noise (measured 0.008-0.026),
    # against 0.60 at the A above
    truth = LinearScore(torch.diag(1 / LAM), _gaussian().mean)
    grad_truth = torch.autograd.grad(ScoreMatching(method)(truth, _data(100_000, 4), g).mean(), truth.A)[0]
    grad_off = torch.autograd.grad(ScoreMatching(method)(model, _data(100_000, 4), g).mean(), model.A)[0]
    assert float(grad_truth.abs().max()) < 0.1 * float(grad_off.abs().max())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        ScoreMatching("denoising")
    with pytest.raises(ValueError, match="sigma > 0"):
        ScoreMatching("exact", sigma=0)
    with pytest.raises(ValueError, match="levels"):
        NCSNLoss(())
