"""The extended score H_gamma (MAD paper, Sec. 3, App. A) against its closed forms and limits."""

import itertools

import pytest
import torch

from scorelab.analytic import DeltaMixture, Gaussian, GaussianMixture, Isotropic
from scorelab.analytic.extended import extended_score, extended_score_limit
from scorelab.denoiser import score_and_derivative

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rel(a, b):
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def _degenerate_gaussian(D=5, r=2, seed=0):
    g = _gen(seed)
    U = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))[0][:, :r]
    lam = 0.3 + 2 * torch.rand(r, generator=g, dtype=F64)
    return Gaussian(torch.randn(D, generator=g, dtype=F64), U=U, lam=lam)


@pytest.mark.parametrize("gamma", [1e-4, 1e-2, 1.0, 10.0])
def test_single_dirac_gives_minus_x_for_every_gamma(gamma):
    """Sec. 3: H_gamma delta(x) = -x exactly, not only in the limit."""
    x = torch.randn(8, 3, generator=_gen(1), dtype=F64)
    for model in (
        DeltaMixture(torch.zeros(1, 3, dtype=F64)),
        Isotropic(torch.zeros(3, dtype=F64)),
    ):
        torch.testing.assert_close(extended_score(model, x, gamma), -x, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(extended_score_limit(model, x), -x, rtol=0, atol=0)


@pytest.mark.parametrize("gamma", [1e-3, 0.1, 2.0])
def test_degenerate_gaussian_extended_score_has_its_closed_form(gamma):
    """For N(mu, U diag(lam) U^T): S = -U (lam+g)^-1 c - d_perp / g and, differentiating by hand,
    H_gamma = -U [(1+g)/(lam+g) - g/(lam+g)^2] c - d_perp, with c = U^T d, d = x - mu."""
    model = _degenerate_gaussian()
    x = torch.randn(6, 5, generator=_gen(2), dtype=F64)
    d = x - model.mu
    c = d @ model.U
    coef = (1 + gamma) / (model.lam + gamma) - gamma / (model.lam + gamma) ** 2
    expected = -(c * coef) @ model.U.T - (d - c @ model.U.T)
    torch.testing.assert_close(extended_score(model, x, gamma), expected, rtol=1e-10, atol=1e-10)


def test_degenerate_gaussian_converges_to_appendix_a1_limit():
    """App. A.1: H_0 = (-Sigma_1^-1 (x_1 - mu_1), -x_2) in the rotated frame; the error is O(gamma)."""
    model = _degenerate_gaussian()
    x = model.mean + 2 * torch.randn(6, 5, generator=_gen(3), dtype=F64)
    limit = extended_score_limit(model, x)
    errors = [_rel(extended_score(model, x, g), limit) for g in (1e-2, 1e-3, 1e-4, 1e-6)]
    assert all(b < a / 5 for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-5
    # in the frame of U: on the support the clean Gaussian score, across it -x_2
    d = x - model.mu
    torch.testing.assert_close(limit @ model.U, -(d @ model.U) / model.lam, rtol=1e-12, atol=1e-12)
    perp = limit - (limit @ model.U) @ model.U.T
    torch.testing.assert_close(perp, -(d - (d @ model.U) @ model.U.T), rtol=1e-12, atol=1e-12)


def test_dirac_mixture_converges_to_voronoi_limit():
    """Lemma 3.3 away from ties: H_gamma -> -(x - nearest point) as gamma -> 0."""
    g = _gen(4)
    points = torch.randn(30, 4, generator=g, dtype=F64)
    weights = torch.softmax(torch.randn(30, generator=g, dtype=F64), 0)
    model = DeltaMixture(points, weights, chunk_size=8)
    x = 2 * torch.randn(10, 4, generator=g, dtype=F64)
    limit = extended_score_limit(model, x)
    nearest = torch.cdist(x, points).argmin(-1)
    torch.testing.assert_close(limit, points[nearest] - x, rtol=0, atol=1e-12)
    torch.testing.assert_close(extended_score(model, x, 1e-5), limit, rtol=1e-8, atol=1e-8)


def test_dirac_mixture_tie_is_split_by_the_weights():
    """Lemma 3.3 on a Voronoi boundary: z_i = c_i / sum of the tied c_j; H_gamma agrees for every small gamma."""
    points = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 5.0]], dtype=F64)
    model = DeltaMixture(points, torch.tensor([0.2, 0.6, 0.2], dtype=F64))
    x = torch.tensor([[0.0, 1.5], [0.0, -0.7]], dtype=F64)  # equidistant from the first two points
    expected = -(x - (0.25 * points[0] + 0.75 * points[1]))
    torch.testing.assert_close(extended_score_limit(model, x), expected, rtol=0, atol=1e-14)
    for gamma in (1e-2, 1e-4):
        torch.testing.assert_close(extended_score(model, x, gamma), expected, rtol=1e-8, atol=1e-8)


def test_h0_is_the_score_for_a_non_degenerate_density():
    """Lemma 3.2: for a density with full support H_0 = S p, the clean score (autograd of log_prob at sigma 0)."""
    g = _gen(5)
    U = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))[0]
    full = Gaussian(
        torch.randn(3, generator=g, dtype=F64),
        U=U,
        lam=torch.tensor([2.0, 1.0, 0.5], dtype=F64),
    )
    mixture = GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=F64),
        torch.stack([full.mean, -full.mean]),
        torch.stack([U @ torch.diag(full.lam) @ U.T, torch.eye(3, dtype=F64)]),
    )
    x = torch.randn(8, 3, generator=g, dtype=F64).requires_grad_()
    for model in (full, mixture):
        (clean,) = torch.autograd.grad(model.log_prob(x, 0.0).sum(), x)
        assert _rel(extended_score(model, x.detach(), 1e-8), clean) < 1e-6
    torch.testing.assert_close(
        extended_score_limit(full, x.detach()),
        full.score(x.detach(), 1e-12),
        rtol=1e-9,
        atol=0,
    )


def test_forward_mode_derivative_matches_central_differences():
    """dS/dsigma by one forward-mode JVP equals a float64 central difference (h = 1e-5, error O(h^2))."""
    g = _gen(6)
    covs = torch.stack([torch.eye(2, dtype=F64) * v for v in (0.5, 2.0)])
    model = GaussianMixture(
        torch.tensor([0.4, 0.6], dtype=F64),
        torch.randn(2, 2, generator=g, dtype=F64),
        covs,
    )
    x, sigma, h = torch.randn(5, 2, generator=g, dtype=F64), 0.7, 1e-5
    value, derivative = score_and_derivative(model, x, sigma)
    central = (model.score(x, sigma + h) - model.score(x, sigma - h)) / (2 * h)
    torch.testing.assert_close(value, model.score(x, sigma), rtol=0, atol=0)
    torch.testing.assert_close(derivative, central, rtol=1e-7, atol=1e-8)


def test_invalid_input_raises():
    x = torch.randn(2, 3, dtype=F64)
    model = Isotropic(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="sigma"):
        extended_score(model, x, 0.0)
    with pytest.raises(TypeError, match="closed-form"):
        extended_score_limit(
            GaussianMixture([1.0], torch.zeros(1, 3, dtype=F64), torch.eye(3, dtype=F64)[None]),
            x,
        )
    with pytest.raises(TypeError, match="dtype"):
        extended_score_limit(model, x.float())
