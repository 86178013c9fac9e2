"""DeltaMixture (exact score of a training set) against brute force, in chunks and at the extremes of sigma."""

import math

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


# --- the pruned mode, the dense floor and the limits of sigma ------------------------------------

DTYPES = [torch.float32, F64]


def _drop_exponent(n, dtype):
    """The class's stated rule: weights below 2^-T of the largest are dropped, T = log2(8 N / eps)."""
    return math.log2(8 * n / torch.finfo(dtype).eps)


def _sum_tol(n, dtype, scale):
    """Worst-case rounding of a sum of n terms of size <= scale, taken twice (numerator and total)."""
    return 2 * n * torch.finfo(dtype).eps * scale


def _weighted_cloud(n, dim, dtype, seed):
    g = _gen(seed)
    points = torch.randn(n, dim, generator=g, dtype=F64)
    weights = torch.rand(n, generator=g, dtype=F64) + 0.05
    return points.to(dtype), (weights / weights.sum()).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e3, "per_sample"])
def test_pruned_equals_dense_at_every_sigma(dtype, sigma):
    """The pruned mode keeps exactly the terms the dense one keeps (both compute the same base-2
    logits and the same drop test), so they differ only by the order of two sums of N terms."""
    points, weights = _weighted_cloud(600, 8, dtype, seed=10)
    g = _gen(11)
    if sigma == "per_sample":
        sigma = torch.logspace(-3, 3, 24, dtype=dtype)
        spread = sigma[:, None]
    else:
        spread = sigma
    x = points[torch.randint(600, (24,), generator=g)] + spread * torch.randn(24, 8, generator=g, dtype=F64).to(dtype)
    pruned = DeltaMixture(points, weights, chunk_size=64)
    dense = DeltaMixture(points, weights, chunk_size=64, prune=False)
    D_p, i_p = pruned(x, sigma, return_index=True)
    D_d, i_d = dense(x, sigma, return_index=True)
    assert torch.equal(i_p, i_d)  # the argmax is taken on the same logits
    tol = _sum_tol(600, dtype, float(points.abs().max()))
    torch.testing.assert_close(D_p, D_d, rtol=0, atol=tol)
    # log_prob: the same leading term; log(total) differs by the relative rounding of one sum
    torch.testing.assert_close(pruned.log_prob(x, sigma), dense.log_prob(x, sigma), rtol=0, atol=_sum_tol(600, dtype, 1.0))


def test_pruning_switches_itself_on_and_off(monkeypatch):
    """Small sigma: few weights survive, so each chunk does its first product only (the survivors
    go through a sparse product); large sigma: every weight survives and each chunk does both."""
    products = []
    real = torch.Tensor.addmm_

    def counting(self, *args, **kwargs):
        products.append(args[0].shape)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "addmm_", counting)
    points, _ = _weighted_cloud(2000, 16, F64, seed=12)
    x = points[:32] + 0.01 * torch.randn(32, 16, generator=_gen(13), dtype=F64)
    pruned, dense = DeltaMixture(points, chunk_size=256), DeltaMixture(points, chunk_size=256, prune=False)
    n_chunks = len(pruned.chunks())
    for model, sigma, expected in ((pruned, 0.01, 1), (pruned, 1e3, 2), (dense, 0.01, 2), (dense, 1e3, 2)):
        products.clear()
        model(x, sigma)
        assert len(products) == expected * n_chunks, (model.prune, sigma)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prune", [True, False])
def test_dropped_weights_obey_the_stated_bound(dtype, prune):
    """Uniform weights, x = 0, one point at 0 and N - 1 at (1, 1, 1): each of those weighs
    rho = exp(-3 / (2 sigma^2)) relative to the first. rho = 0.9 * 2^-T: all are dropped, D = 0
    exactly, and the error against the exact mean (N - 1) rho / (1 + (N - 1) rho) is below the stated
    N 2^-T = eps / 8; rho = 1.1 * 2^-T: all are kept and D is the exact mean to the rounding of the
    sums. (The logits' rounding, ~eps T, is far below the margin log2(1.1 / 0.9) = 0.29.)"""
    n = 50
    T = _drop_exponent(n, dtype)
    points = torch.cat([torch.zeros(1, 3, dtype=F64), torch.ones(n - 1, 3, dtype=F64)])
    model = DeltaMixture(points.to(dtype), chunk_size=8, prune=prune)
    x = torch.zeros(2, 3, dtype=dtype)
    for factor, dropped in ((0.9, True), (1.1, False)):
        rho = factor * 2.0**-T
        sigma = math.sqrt(1.5 / -math.log(rho))
        D = model(x, sigma).double()
        exact = (n - 1) * rho / (1 + (n - 1) * rho)
        if dropped:
            assert bool((D == 0).all())
            assert exact <= n * 2.0**-T <= torch.finfo(dtype).eps / 8 * (1 + 1e-12)
        else:
            torch.testing.assert_close(D, torch.full_like(D, exact), rtol=_sum_tol(n, dtype, 1.0), atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_chunk_raising_the_maximum_still_equals_bruteforce(dtype):
    """Points sorted from the farthest to the nearest of x: every chunk raises the running maximum
    by far more than the reference may lag, so the accumulators are rescaled at every chunk.
    float64 against brute force; float32 pruned against dense (the same logits: only the order of
    the sums differs) and, at sigma = 1e-3, against the nearest point (the next one is ~5e4 log-units
    behind, far beyond the logits' float32 rounding of ~eps a |x| |y| ~ 1)."""
    g = _gen(14)
    points = torch.randn(300, 5, generator=g, dtype=F64)
    x = torch.randn(1, 5, generator=g, dtype=F64)
    points = points[torch.cdist(x, points)[0].argsort(descending=True)]
    tol = _sum_tol(300, dtype, float(points.abs().max()))
    for sigma in (1e-3, 0.05, 0.3):
        pruned = DeltaMixture(points.to(dtype), chunk_size=7)
        dense = DeltaMixture(points.to(dtype), chunk_size=7, prune=False)
        xd = x.to(dtype)
        torch.testing.assert_close(pruned(xd, sigma), dense(xd, sigma), rtol=0, atol=tol)
        if dtype == F64:
            mean, log_prob = _bruteforce(points, torch.full((300,), 1 / 300, dtype=F64), x, sigma)
            for model in (pruned, dense):
                torch.testing.assert_close(model(x, sigma), mean, rtol=0, atol=tol)
                torch.testing.assert_close(model.log_prob(x, sigma), log_prob, rtol=1e-12, atol=1e-10)
        elif sigma == 1e-3:
            for model in (pruned, dense):
                torch.testing.assert_close(model(xd, sigma), points[-1:].to(dtype), rtol=2 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_sigma_limit_is_the_nearest_point_with_ties_split_by_weight(dtype):
    """Below the sigma where 1 / sigma^2 times the proximities overflows (float32 ~1e-19, float64
    ~1e-154; the old code returned NaN there) D is the nearest point, a tie split by the weights
    (Lemma 3.3 of the MAD paper); the score is 0 at a training point and never NaN."""
    sigmas = (1e-19, 1e-25, 1e-40) if dtype == torch.float32 else (1e-155, 1e-200, 1e-300, 5e-324)
    g = _gen(15)
    points, weights = _weighted_cloud(100, 6, dtype, seed=16)
    x = torch.randn(8, 6, generator=g, dtype=F64).to(dtype)
    x[0] = points[7]  # exactly a training point
    nearest = torch.cdist(x.double(), points.double()).argmin(-1)
    tie_points = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 5.0]], dtype=dtype)
    tie = DeltaMixture(tie_points, torch.tensor([0.2, 0.6, 0.2], dtype=dtype))
    x_tie = torch.tensor([[0.0, 1.5], [0.0, -0.7]], dtype=dtype)  # equidistant from the first two
    for prune in (True, False):
        model = DeltaMixture(points, weights, chunk_size=16, prune=prune)
        for sigma in sigmas:
            D, index = model(x, sigma, return_index=True)
            assert torch.equal(index, nearest)
            # the other weights are exactly 0: D = (w y) / w, two roundings
            torch.testing.assert_close(D, points[nearest], rtol=2 * torch.finfo(dtype).eps, atol=0)
            score = model.score(x, sigma)
            assert not bool(score.isnan().any()) and bool((score[0] == 0).all())
            assert bool((torch.sign(score[1:]) == torch.sign(D[1:] - x[1:])).all())
            log_prob = model.log_prob(x, sigma)
            assert not bool(log_prob.isnan().any())
            # only the nearest Gaussian counts: log c_n - |x - y_n|^2 / (2 sigma^2) - (D/2) log(2 pi sigma^2),
            # in float64 and then rounded (to -inf where float32 overflows); a sum of 6 squares: 10 eps
            d2 = (x.double() - points.double()[nearest]).square().sum(-1)
            # (sigma^2 itself underflows in float64 here: divided twice, and 2 log sigma)
            expected = weights.double()[nearest].log() - d2 / sigma / sigma / 2 - 3 * math.log(2 * math.pi) - 6 * math.log(sigma)
            torch.testing.assert_close(log_prob, expected.to(dtype), rtol=10 * torch.finfo(dtype).eps, atol=0)
            torch.testing.assert_close(
                tie(x_tie, sigma), (0.25 * tie_points[0] + 0.75 * tie_points[1]).expand(2, 2), rtol=0,
                atol=4 * torch.finfo(dtype).eps,
            )


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_sigma_gives_the_prior(dtype):
    """sigma = inf: every weight is c_i, so D = sum_i c_i y_i; the score is 0 and log_prob -inf."""
    points, weights = _weighted_cloud(200, 4, dtype, seed=17)
    x = torch.randn(5, 4, generator=_gen(18), dtype=F64).to(dtype)
    prior_mean = (weights.double() @ points.double()).expand(5, 4)
    for prune in (True, False):
        model = DeltaMixture(points, weights, chunk_size=32, prune=prune)
        D, index = model(x, float("inf"), return_index=True)
        torch.testing.assert_close(D.double(), prior_mean, rtol=0, atol=_sum_tol(200, dtype, float(points.abs().max())))
        assert bool((index == weights.argmax()).all())
        assert bool((model.score(x, float("inf")) == 0).all())
        assert bool((model.log_prob(x, float("inf")) == -math.inf).all())


def test_gradient_path_equals_the_fast_path():
    """Inputs that carry gradients (reverse or forward mode) take an out-of-place path; it keeps the
    same terms, so the two agree to the rounding of the logits, whose reference is placed differently:
    eps a |x.y - |y|^2/2| ~ 2e-13 relative weight at sigma = 0.1 (at 1e-3 the weights are one-hot),
    a few 1e-13 in D, that over sigma^2 in the score."""
    from torch.autograd import forward_ad

    points, weights = _weighted_cloud(300, 5, F64, seed=19)
    model = DeltaMixture(points, weights, chunk_size=32)
    g = _gen(20)
    x = points[:12] + 0.3 * torch.randn(12, 5, generator=g, dtype=F64)
    for sigma in (1e-3, 0.1, 1.0, 30.0):
        fast_D, fast_lp, fast_s = model(x, sigma), model.log_prob(x, sigma), model.score(x, sigma)
        xg = x.clone().requires_grad_()
        torch.testing.assert_close(model(xg, sigma), fast_D, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.log_prob(xg, sigma), fast_lp, rtol=1e-12, atol=1e-10)
        with forward_ad.dual_level():
            s = forward_ad.make_dual(torch.full((12,), sigma, dtype=F64), torch.ones(12, dtype=F64))
            value = forward_ad.unpack_dual(model.score(x, s)).primal
        torch.testing.assert_close(value, fast_s, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_sample_sigma_equals_each_row_on_its_own(dtype):
    """A (B,) sigma (the per-row path) gives each row what its sigma alone gives, tiny and infinite ones included."""
    points, weights = _weighted_cloud(400, 6, dtype, seed=21)
    tiny = 1e-30 if dtype == torch.float32 else 1e-200
    sigma = torch.tensor([tiny, 1e-3, 0.05, 0.5, 2.0, 50.0, 1e6, math.inf], dtype=dtype)
    x = points[:8] + torch.randn(8, 6, generator=_gen(22), dtype=F64).to(dtype)
    model = DeltaMixture(points, weights, chunk_size=50)
    D, lp = model(x, sigma), model.log_prob(x, sigma)
    tol = _sum_tol(400, dtype, float(points.abs().max()))
    for b in range(8):
        s = float(sigma[b])
        torch.testing.assert_close(D[b], model(x[b : b + 1], s)[0], rtol=0, atol=tol)
        torch.testing.assert_close(lp[b], model.log_prob(x[b : b + 1], s)[0], rtol=_sum_tol(400, dtype, 1.0), atol=0)


def test_invalid_options_raise():
    points = torch.randn(5, 2, dtype=F64)
    with pytest.raises(TypeError, match="prune"):
        DeltaMixture(points, prune="yes")
    with pytest.raises(TypeError, match="chunk_size"):
        DeltaMixture(points, chunk_size=2.5)
