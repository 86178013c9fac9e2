"""Unexplained variance of a reference denoiser's score by analytical candidates (eq. 28)."""

import json

import numpy as np
import pytest
import torch

from scorelab.analysis import plot_unexplained, standard_candidates, unexplained_variance
from scorelab.analytic import DeltaMixture, Gaussian, Isotropic
from scorelab.denoiser import score


def _data(n: int = 300, d: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([2.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)[:d]
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scales + 1.0


def test_fractions_match_the_brute_force_definition():
    """Eq. 28 computed from the scores themselves, and 1 - R^2 of the denoiser outputs, at the same
    query points (float64, to 1e-10)."""
    data = _data()
    reference, candidate = DeltaMixture(data), Gaussian.fit(data)
    sigmas = [0.05, 0.5, 3.0]
    result = unexplained_variance(reference, {"g": candidate}, data, sigmas, n=64,
                                  generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the query draws: data, then noise
    for query in ("data", "noise"):
        for i, sigma in enumerate(sigmas):
            noise = sigma * torch.randn(64, 5, generator=g, dtype=torch.float64)
            x = data[torch.randint(len(data), (64,), generator=g)] + noise if query == "data" else noise
            s_ref, s_c = score(reference, x, sigma), score(candidate, x, sigma)
            expected = (s_ref - s_c).pow(2).sum(1) / s_ref.pow(2).sum(1)
            torch.testing.assert_close(result.score[query]["g"][i], expected, rtol=1e-10, atol=0)
            d_ref, d_c = reference(x, sigma), candidate(x, sigma)
            r2 = 1 - (d_ref - d_c).pow(2).sum() / (d_ref - d_ref.mean(0)).pow(2).sum()
            assert float(result.denoiser[query]["g"][i].mean()) == pytest.approx(1 - float(r2), rel=1e-10)


def test_the_gaussian_explains_the_training_set_far_away_and_not_close_by():
    data = _data()
    result = unexplained_variance(DeltaMixture(data), standard_candidates(data, n_components=4, ranks=(None, 2)),
                                  data, n=128)
    assert set(result.names) == {"isotropic", "gaussian", "gmm4", "gmm4-r2", "delta"}
    assert float(result.mean("delta", "data").abs().max()) < 1e-20  # the reference itself
    gauss = result.mean("gaussian", "noise")
    assert float(gauss[-1]) < 1e-4 and float(result.mean("gaussian", "data")[0]) > 0.1
    assert float(result.mean("isotropic", "noise")[-1]) > float(gauss[-1])  # the covariance matters
    assert torch.equal(result.eigenvalues, Gaussian.fit(data).lam)


def test_a_mixture_explains_clustered_data_better_than_one_gaussian():
    g = torch.Generator().manual_seed(1)
    centres = 3 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    data = (centres[:, None] + 0.3 * torch.randn(4, 100, 5, generator=g, dtype=torch.float64)).reshape(400, 5)
    result = unexplained_variance(DeltaMixture(data), standard_candidates(data, n_components=4), data, [0.5, 1.0],
                                  n=128, queries=("data",))
    gmm, gauss = result.mean("gmm4", "data"), result.mean("gaussian", "data")
    assert bool((gmm < 0.2 * gauss).all()), (gmm, gauss)


def test_csv_figure_and_errors(tmp_path):
    data = _data(100).float()
    result = unexplained_variance(Gaussian.fit(data), {"iso": Isotropic.fit(data)}, data, [0.1, 1.0, 10.0], n=16)
    rows = result.rows()
    assert len(rows) == 2 * 2 * 3 and {"mean", "std", "q25", "median", "q75"} <= set(rows[0])
    path = result.to_csv(tmp_path / "uv.csv")
    assert path.read_text().count("\n") == 13
    figure = plot_unexplained(result, tmp_path / "uv.png", title="test")
    assert figure.stat().st_size > 10_000
    with pytest.raises(ValueError, match="queries"):
        unexplained_variance(Gaussian.fit(data), {}, data, queries=("grid",))
    with pytest.raises(ValueError, match="sigmas"):
        unexplained_variance(Gaussian.fit(data), {}, data, [0.0, 1.0])
    with pytest.raises(ValueError, match="training data"):
        unexplained_variance(Gaussian.fit(data), {}, None, shape=(5,))
    noise_only = unexplained_variance(Gaussian.fit(data), {"iso": Isotropic.fit(data)}, None, [1.0], n=8,
                                      queries=("noise",), shape=(5,))
    assert np.isfinite(noise_only.score["noise"]["iso"].numpy()).all() and noise_only.eigenvalues is None


def test_trajectory_deviation_against_the_closed_form_and_against_heun():
    from scorelab.analysis.trajectories import trajectory_deviation
    from scorelab.schedules import karras

    data = _data()
    gaussian = Gaussian.fit(data)
    x = 80 * torch.randn(32, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    coarse = trajectory_deviation(gaussian, gaussian, x, karras(10, dtype=torch.float64))
    fine = trajectory_deviation(gaussian, gaussian, x, karras(400, dtype=torch.float64))
    assert coarse.state_distance.shape == (11, 32) and coarse.denoised_distance.shape == (11, 32)
    assert float(coarse.state_distance[0].max()) < 1e-13  # the same start (the closed form at sigma_T, rounded)
    # a Gaussian network against its own closed form: only Heun's discretisation error, second order
    # (measured: 0.89 with 10 steps, 0.025 with 50, 3.7e-4 with 400)
    middle = trajectory_deviation(gaussian, gaussian, x, karras(50, dtype=torch.float64))
    assert float(fine.state_distance.max()) < 1e-3 and float(coarse.state_distance.max()) > 0.5
    assert float(middle.state_distance.max()) > 30 * float(fine.state_distance.max())  # 8x the steps
    assert float(fine.denoised_distance.max()) < 1e-3
    # another reference is integrated with Heun on the same grid: a model against itself is 0
    mixture = DeltaMixture(data[:20])
    same = trajectory_deviation(mixture, mixture, x, karras(10, dtype=torch.float64))
    assert float(same.state_distance.abs().max()) == 0.0
    apart = trajectory_deviation(mixture, gaussian, x, karras(40, dtype=torch.float64))
    assert float(apart.state_distance[-1].median()) > 0.1  # training points are not Gaussian samples


def test_a_vp_path_against_the_closed_form_with_data_scale():
    """In a VP model's coordinates the reference is gaussian_flow_vp (eqs. 18-20): divided by alpha_t it
    is the sigma-form closed form (eq. 15), and DDIM on the Gaussian itself converges to it."""
    from scorelab.analysis.trajectories import trajectory_deviation
    from scorelab.schedules import karras

    gaussian = Gaussian.fit(_data())
    x = 80 * torch.randn(16, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigmas = karras(20, dtype=torch.float64)
    sigma_form = trajectory_deviation(gaussian, gaussian, x, sigmas, sampler="ddim")
    vp = trajectory_deviation(gaussian, gaussian, x, sigmas, sampler="ddim", vp=True)
    alphas = (1 + sigmas**2).rsqrt().reshape(-1, 1, 1)
    torch.testing.assert_close(vp.reference_states / alphas, sigma_form.reference_states, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(vp.denoised_distance, sigma_form.denoised_distance, rtol=1e-9, atol=1e-9)
    fine = trajectory_deviation(gaussian, gaussian, x, karras(200, dtype=torch.float64), sampler="ddim", vp=True)
    assert float(fine.state_distance.max()) < 0.2 * float(vp.state_distance.max())  # first order: 10x the steps


def test_score_field_on_the_plane_through_three_images(tmp_path):
    from scorelab.analysis.field import plane_basis, plot_score_field, score_field_plane

    data = _data()
    anchors = data[:3]
    origin, basis = plane_basis(anchors)
    torch.testing.assert_close(basis @ basis.T, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)
    models = {"gaussian": Gaussian.fit(data), "delta": DeltaMixture(data)}
    field = score_field_plane(models, anchors, sigma=0.5, grid=9)
    torch.testing.assert_close(origin + field.anchors @ basis, anchors, rtol=0, atol=1e-12)  # in the plane
    # brute force at one lattice point: the score there, projected on the basis
    x = origin + field.u[2] * basis[0] + field.v[7] * basis[1]
    s = score(models["delta"], x[None], 0.5)[0]
    torch.testing.assert_close(field.projected["delta"][7, 2], basis @ s, rtol=1e-10, atol=1e-12)
    assert float(field.norm["delta"][7, 2]) == pytest.approx(float(s.norm()), rel=1e-12)
    assert plot_score_field(field, tmp_path / "field.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="one line"):
        plane_basis(torch.stack([data[0], data[1], 2 * data[1] - data[0]]))
    with pytest.raises(ValueError, match="three images"):
        plane_basis(data[:2])


def test_training_records_the_gaussianity_of_the_network(tmp_path):
    from scorelab.analysis.dynamics import plot_dynamics, read_dynamics, tracked_candidates
    from scorelab.cli import main

    args = ["--no-progress", "train", "--data", "gmm3", "--steps", "6", "--batch-size", "32", "--n-data", "300",
            "--model-option", "width=16", "--model-option", "depth=1", "--device", "cpu", "--out",
            str(tmp_path / "r"), "--track", "gaussian,gmm3,delta", "--track-every", "3", "--track-sigmas", "0.5,5"]
    assert main(args) == 0
    curves = read_dynamics(tmp_path / "r")
    assert set(curves) == {(q, m, s) for q in ("data", "noise") for m in ("gaussian", "gmm3", "delta")
                           for s in (0.5, 5.0)}
    steps, values = curves[("noise", "gaussian", 5.0)]
    assert steps == [1, 3, 6] and all(v > 0 and np.isfinite(v) for v in values)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if line]
    assert "unexplained/noise/gaussian/5" in logged[0] and not any(k.startswith("fuv/") for k in logged[0])
    assert plot_dynamics(tmp_path / "r", tmp_path / "dyn.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="unknown analytical model"):
        tracked_candidates(_data(), ["gaussian", "mystery"])
    with pytest.raises(ValueError, match="gmmK"):
        tracked_candidates(_data(), ["gmmx"])
    assert main(["--no-progress", "train", "--data", "gmm3", "--out", str(tmp_path / "bad"), "--track-every", "5"]) == 2


def test_dynamics_are_read_under_the_current_and_the_former_key_prefix(tmp_path):
    """``unexplained/QUERY/MODEL/SIGMA`` and, from runs written before, ``fuv/QUERY/MODEL/SIGMA``: one curve each,
    other metrics ignored."""
    from scorelab.analysis.dynamics import plot_dynamics, read_dynamics

    rows = [{"step": 1, "loss": 1.0, "fuv/noise/gaussian/0.5": 0.5, "fuv/data/delta/5": 0.25},
            {"step": 2, "unexplained/noise/gaussian/0.5": 0.125, "unexplained/noise/gmm3/0.5": 0.0625}, {}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows if r) + "\n\n")
    curves = read_dynamics(tmp_path)
    assert curves == {("noise", "gaussian", 0.5): ([1, 2], [0.5, 0.125]), ("data", "delta", 5.0): ([1], [0.25]),
                      ("noise", "gmm3", 0.5): ([2], [0.0625])}
    assert read_dynamics(tmp_path / "metrics.jsonl") == curves
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="unexplained/QUERY/MODEL/SIGMA"):
        plot_dynamics(tmp_path / "empty", tmp_path / "none.png")
