"""NCSN-style networks: score output wrapped as a denoiser, conditional instance norm++, level conditioning."""

import pytest
import torch

from scorelab.denoiser import score
from scorelab.metrics.modes import mode_statistics
from scorelab.nets import NCSN, ScoreMLP, ScorePrecond, build_denoiser
from scorelab.nets.ncsn import CondInstanceNorm2d
from scorelab.sample import annealed_langevin
from scorelab.schedules import geometric


def test_score_precond_is_the_denoiser_of_its_score():
    torch.manual_seed(0)
    model = ScorePrecond(ScoreMLP(2, width=16, depth=2)).double()
    x, sigma = torch.randn(5, 2, dtype=torch.float64), torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(model(x, sigma), x + sigma[:, None] ** 2 * model.score(x, sigma), rtol=1e-14, atol=0)
    torch.testing.assert_close(score(model, x, sigma), (model(x, sigma) - x) / sigma[:, None] ** 2,
                               rtol=1e-10, atol=1e-12)


def test_conditional_instance_norm_keeps_the_channel_means_that_instance_norm_erases():
    norm = CondInstanceNorm2d(3, cond_dim=4)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    shifted = x + torch.tensor([2.0, -1.0, 0.5])[None, :, None, None]  # per-channel offsets
    cond = torch.zeros(2, 4)
    plain = torch.nn.functional.instance_norm
    torch.testing.assert_close(plain(x), plain(shifted), rtol=0, atol=1e-5)  # instance norm cannot tell them apart
    with torch.no_grad():
        assert float((norm(x, cond) - norm(shifted, cond)).abs().max()) > 0.1
        norm.affine.weight.normal_()
        assert float((norm(x, torch.zeros(2, 4)) - norm(x, torch.ones(2, 4))).abs().max()) > 0.1  # conditioned


def test_level_conditioning_picks_the_nearest_level():
    net = NCSN(1, 8, channels=8, levels=[10.0, 1.0, 0.1])
    c_noise = torch.log(torch.tensor([12.0, 9.0, 1.2, 0.9, 0.11, 0.01])) / 4
    expected = net.embed(torch.tensor([0, 0, 1, 1, 2, 2]))
    torch.testing.assert_close(net.condition(c_noise), expected)
    with pytest.raises(ValueError, match="sides"):
        NCSN(1, 128)


def test_ncsn_mlp_trained_with_the_ncsn_loss_samples_gmm3_with_annealed_langevin(tmp_path):
    from scorelab.data.toy import load
    from scorelab.runs import load_denoiser
    from scorelab.train import TrainConfig, train

    config = TrainConfig(data="gmm3", model="ncsn-mlp", loss="ncsn", levels="geometric:10:0.1:10", steps=600,
                         batch_size=256, lr=2e-3, ema_halflife=100, n_data=20_000, device="cpu")
    train(config, tmp_path / "r", progress=False)
    model, _ = load_denoiser(tmp_path / "r")
    x0 = 10 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    x = annealed_langevin(model, x0, geometric(10, 10.0, 0.1), eps=0.002, steps_per_level=50,
                          generator=torch.Generator().manual_seed(1))
    weights = mode_statistics(x, load("gmm3").params["means"])["mode_weights"]
    assert max(abs(w - t) for w, t in zip(weights, (0.2, 0.6, 0.2))) < 0.07, weights


def test_ncsn_image_network_trains_on_digits():
    from scorelab.data.images import load_digits
    from scorelab.losses import NCSNLoss

    torch.manual_seed(0)
    model = build_denoiser("ncsn", (1, 8, 8), 0.75, {"channels": 16, "levels": "geometric:1:0.01:10"})
    data, loss_fn = load_digits("train"), NCSNLoss(tuple(geometric(10, 1.0, 0.01).tolist()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = loss_fn(model, data[torch.randint(len(data), (64,), generator=g)], g).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10]), (losses[:10], losses[-10:])
