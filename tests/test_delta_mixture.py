"""DeltaMixture (exact score of a training set) against brute force, in chunks and at the extremes of sigma."""

import pytest
import torch

from scorelab.analytic import DeltaMixture, Gaussian, Isotropic

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _bruteforce(points, weights, x, sigma):
    """Posterior mean and log-density from the full (B, N, D) broadcast, float64."""
    d2 = (x[:, None, :] - points[None]).square().sum(-1)
    s2 = torch.as_tensor(sigma, dtype=F64).reshape(-1, 1) ** 2
    logits = weights.log() - d2 / (2 * s2)
    w = torch.softmax(logits, -1)
    D = points.shape[1]
    log_prob = torch.logsumexp(logits, -1) - 0.5 * D * torch.log(2 * torch.pi * s2[:, 0])
    return w @ points, log_prob


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 30.0, "per_sample"])
def test_denoiser_and_log_prob_equal_bruteforce(sigma):
    g = _gen(1)
    points = torch.randn(50, 6, generator=g, dtype=F64)
    weights = torch.rand(50, generator=g, dtype=F64) + 0.05
    weights = weights / weights.sum()
    x = points[:8] + 0.5 * torch.randn(8, 6, generator=g, dtype=F64)
    if sigma == "per_sample":
        sigma = torch.logspace(-2, 1, 8, dtype=F64)
    model = DeltaMixture(points, weights, chunk_size=9)
    mean, log_prob = _bruteforce(points, weights, x, sigma)
    torch.testing.assert_close(model(x, sigma), mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.log_prob(x, sigma), log_prob, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-4, 0.05, 1.0, 100.0])
def test_chunked_equals_unchunked(sigma):
    """The running log-sum-exp gives the one-chunk answer to 1e-10 for every chunk size."""
    g = _gen(2)
    points = torch.randn(200, 3, 4, generator=g, dtype=F64)
    x = points[:16] + sigma * torch.randn(16, 3, 4, generator=g, dtype=F64)
    whole = DeltaMixture(points, chunk_size=200)
    ref_D, ref_i = whole(x, sigma, return_index=True)
    for chunk_size in (1, 7, 64, 199, 1000):
        model = DeltaMixture(points, chunk_size=chunk_size)
        D, i = model(x, sigma, return_index=True)
        torch.testing.assert_close(D, ref_D, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.score(x, sigma), whole.score(x, sigma), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.log_prob(x, sigma), whole.log_prob(x, sigma), rtol=1e-10, atol=1e-10)
        assert torch.equal(i, ref_i)


def test_tiny_sigma_returns_nearest_training_point():
    g = _gen(3)
    points = torch.randn(500, 10, generator=g, dtype=F64)
    x = torch.randn(32, 10, generator=g, dtype=F64)
    nearest = torch.cdist(x, points).argmin(-1)
    for dtype in (F64, torch.float32):
        model = DeltaMixture(points.to(dtype), chunk_size=64)
        D, index = model(x.to(dtype), 1e-3, return_index=True)
        assert torch.equal(index, nearest)
        torch.testing.assert_close(D, points[nearest].to(dtype), rtol=0, atol=1e-6)


def test_large_sigma_weights_become_the_mixture_weights():
    """At sigma >> data radius the posterior is the prior: D -> sum_i c_i y_i."""
    g = _gen(4)
    points = torch.randn(30, 2, generator=g, dtype=F64)
    weights = torch.softmax(torch.randn(30, generator=g, dtype=F64), 0)
    model = DeltaMixture(points, weights)
    x = torch.randn(4, 2, generator=g, dtype=F64)
    torch.testing.assert_close(model(x, 1e6), (weights @ points).expand(4, 2), rtol=0, atol=1e-5)


def test_far_field_unexplained_variance_falls_like_tr_sigma_over_sigma_squared():
    """Gaussian-score paper, Sec. 4.1 (eqs. 24-27): at sigma >> sqrt(tr Sigma) the score of a point
    cloud is the score of the Gaussian with its mean and covariance. The fraction of unexplained
    variance ||s_delta - s_gauss||^2 / ||s_delta||^2 must fall, and stay below tr(Sigma)/sigma^2,
    while the isotropic model (no covariance) is left with a larger error at every sigma."""
    g = _gen(5)
    A = torch.randn(8, 8, generator=g, dtype=F64) * torch.linspace(1.5, 0.1, 8, dtype=F64)
    points = torch.randn(400, 8, generator=g, dtype=F64) @ A.T + 1.0
    delta = DeltaMixture(points)
    gauss = Gaussian.fit(points)
    iso = Isotropic.fit(points)
    tr = float(gauss.lam.sum())
    fuv_prev = float("inf")
    for ratio in (1, 2, 4, 8, 16, 32):
        sigma = ratio * tr**0.5
        x = points[:200] + sigma * torch.randn(200, 8, generator=g, dtype=F64)
        ref = delta.score(x, sigma)
        norm = ref.square().sum(-1)
        fuv = float(((gauss.score(x, sigma) - ref).square().sum(-1) / norm).mean())
        fuv_iso = float(((iso.score(x, sigma) - ref).square().sum(-1) / norm).mean())
        assert fuv < fuv_prev and fuv < tr / sigma**2 and fuv < fuv_iso, (
            ratio,
            fuv,
            fuv_iso,
        )
        fuv_prev = fuv
    assert fuv_prev < 1e-6


def test_sample_draws_training_points_with_their_weights():
    points = torch.arange(3, dtype=F64)[:, None]
    model = DeltaMixture(points, torch.tensor([0.2, 0.5, 0.3], dtype=F64))
    x = model.sample(60_000, _gen(6))
    freq = torch.bincount(x[:, 0].long(), minlength=3).double() / len(x)
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3], dtype=F64), rtol=0, atol=0.01)
    assert torch.equal(model.sample(5, _gen(7)), model.sample(5, _gen(7)))


def test_invalid_input_raises():
    points = torch.randn(5, 2, dtype=F64)
    with pytest.raises(ValueError, match="chunk_size"):
        DeltaMixture(points, chunk_size=0)
    with pytest.raises(ValueError, match="weights"):
        DeltaMixture(points, torch.full((5,), 0.3, dtype=F64))
    with pytest.raises(ValueError, match="points"):
        DeltaMixture(torch.zeros(0, 2, dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        DeltaMixture(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="sigma"):
        DeltaMixture(points).log_prob(points, 0.0)


def test_state_dict_roundtrip_and_dtype_conversion():
    model = DeltaMixture(torch.randn(10, 3)).double()
    assert set(model.state_dict()) == {"points", "log_c", "half_sq"} and model.points.dtype == F64
    clone = DeltaMixture(torch.zeros(10, 3, dtype=F64))
    clone.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(clone(x, 0.3), model(x, 0.3), rtol=0, atol=0)
