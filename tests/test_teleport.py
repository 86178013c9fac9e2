"""Gaussian teleportation (Gaussian-score paper, Sec. 6, Algorithm 1) and our auto-skip rule."""

import pytest
import torch

from scorelab.analytic import Gaussian, GaussianMixture, gaussian_flow_endpoint
from scorelab.sample import CountNFE, heun
from scorelab.sample.teleport import auto_skip, gaussian_agreement, teleport
from scorelab.schedules import karras

D = 6


def _gaussian() -> Gaussian:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = A @ A.T / D + 0.05 * torch.eye(D, dtype=torch.float64)
    return Gaussian(torch.randn(D, generator=g, dtype=torch.float64), cov)


def _noise(n: int = 256, sigma_max: float = 80.0) -> torch.Tensor:
    return sigma_max * torch.randn(n, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_teleport_lands_closer_to_the_closed_form_end_point_than_plain_heun():
    """With the Gaussian as the denoiser every skipped step is exact, so the error left is only
    that of the Heun steps that remain (float64; the largest plain Heun error here is 0.54, after
    skipping k = 1 .. 11 steps it falls from 0.537 to 2e-5)."""
    model, x = _gaussian(), _noise()
    sigmas = karras(12, dtype=torch.float64)
    truth = gaussian_flow_endpoint(model, x, sigmas[0])
    error = lambda y: float((y - truth).norm(dim=1).max())
    plain = error(heun(model, x, sigmas))
    assert plain > 1e-5
    errors = [error(teleport(model, x, sigmas, gaussian=model, n_skip=k)) for k in range(1, 12)]
    assert all(e < plain for e in errors), (plain, errors)
    assert error(teleport(model, x, sigmas, gaussian=model, n_skip=0)) == pytest.approx(plain, rel=1e-12)
    assert error(teleport(model, x, sigmas, gaussian=model, n_skip=12)) < 1e-12  # k = N: the closed form itself


@pytest.mark.parametrize("n_skip", [0, 1, 5, 11, 12])
def test_nfe_is_two_per_remaining_heun_step_minus_one(n_skip):
    model, x = _gaussian(), _noise(8)
    counted = CountNFE(model)
    teleport(counted, x, karras(12, dtype=torch.float64), gaussian=model, n_skip=n_skip)
    assert counted.nfe(8) == (2 * (12 - n_skip) - 1 if n_skip < 12 else 0)


def test_other_samplers_continue_after_the_jump():
    model, x = _gaussian(), _noise(16)
    sigmas = karras(10, dtype=torch.float64)
    for sampler, options in (("euler", {}), ("mad", {"a": 1.0, "b": 1e-12, "p": 1.0})):
        counted = CountNFE(model)
        y = teleport(counted, x, sigmas, gaussian=model, n_skip=4, sampler=sampler, **options)
        assert y.shape == x.shape and bool(torch.isfinite(y).all())
        assert counted.nfe(16) == (6 if sampler == "euler" else 12)
    seen = []
    teleport(model, x, sigmas, gaussian=model, n_skip=4, callback=lambda i, sigma, x_i, d: seen.append(i))
    assert seen == list(range(4, 10))  # the continuing sampler's steps, numbered on the whole grid
    levels = torch.tensor([10.0, 5.0, 2.0, 1.0], dtype=torch.float64)
    counted = CountNFE(model)
    y = teleport(counted, x, levels, gaussian=model, n_skip=2, sampler="annealed-langevin", eps=1e-3,
                 steps_per_level=3, generator=torch.Generator().manual_seed(0))
    assert counted.nfe(16) == 2 * 3 and bool(torch.isfinite(y).all())  # Langevin on the two levels left


def test_agreement_is_zero_for_the_gaussian_and_grows_as_sigma_falls_for_a_mixture():
    """A two-cluster mixture looks like its Gaussian from far away and not from close by, so the
    unexplained fraction falls from ~1 at small sigma to ~0 at sigma_max; auto_skip stops at the
    last level below the threshold."""
    gaussian, x = _gaussian(), _noise(128)
    sigmas = karras(18, dtype=torch.float64)
    assert float(gaussian_agreement(gaussian, gaussian, x, sigmas).abs().max()) < 1e-20
    assert auto_skip(gaussian, gaussian, x, sigmas) == 17  # every positive level; one Euler step left
    g = torch.Generator().manual_seed(2)
    centres = torch.stack([torch.full((D,), -3.0), torch.full((D,), 3.0)]).double()
    samples = torch.cat([c + 0.3 * torch.randn(4000, D, generator=g, dtype=torch.float64) for c in centres])
    mixture = GaussianMixture.fit(samples, 2, seed=0)
    fitted = Gaussian.fit(samples)
    fractions = gaussian_agreement(mixture, fitted, x, sigmas)
    assert float(fractions[0]) < 1e-3 and float(fractions[-1]) > 0.5
    k = auto_skip(mixture, fitted, x, sigmas, threshold=0.01)
    assert 0 < k < 17
    assert bool((fractions[: k + 1] <= 0.01).all()) and float(fractions[k + 1]) > 0.01


def test_bad_arguments_are_refused():
    model, x = _gaussian(), _noise(4)
    sigmas = karras(5, dtype=torch.float64)
    for n_skip in (-1, 6, 2.5, True, "half"):
        with pytest.raises(ValueError, match="n_skip must be"):
            teleport(model, x, sigmas, gaussian=model, n_skip=n_skip)
    with pytest.raises(ValueError, match="unknown sampler"):
        teleport(model, x, sigmas, gaussian=model, n_skip=1, sampler="rk4")
    with pytest.raises(ValueError, match="threshold"):
        auto_skip(model, model, x, sigmas, threshold=0)
    with pytest.raises(TypeError):
        teleport(model, x.float(), sigmas, gaussian=model, n_skip=2)  # a float64 Gaussian for float32 noise
