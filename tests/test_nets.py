import pytest
import torch
from torch import nn

from scorelab.nets import MLP, EDMPrecond, UNet, build_denoiser


@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32), (2, 13)])
def test_unet_keeps_the_input_shape_at_any_size_without_padding(channels, size):
    net = UNet(channels, size, model_channels=16)
    x = torch.randn(2, channels, size, size)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_unet_handles_64x64_rgb():
    net = UNet(3, 64, model_channels=8)
    assert net(torch.randn(1, 3, 64, 64), torch.zeros(1)).shape == (1, 3, 64, 64)


def test_unet_output_depends_on_the_noise_level():
    torch.manual_seed(0)
    net = UNet(1, 8, model_channels=16)
    for p in net.parameters():  # undo the zero init of the output layers
        nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.ones(2)))


def test_networks_reject_wrong_shapes_with_a_clear_message():
    with pytest.raises(ValueError, match="UNet expects"):
        UNet(1, 8)(torch.randn(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="MLP expects"):
        MLP(2)(torch.randn(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="use --model unet"):
        build_denoiser("mlp", (1, 8, 8), 0.5)
    with pytest.raises(ValueError, match="unknown model"):
        build_denoiser("transformer", (2,), 0.5)


class Probe(nn.Module):
    """A 'network' that returns its input and records c_noise, to check the preconditioning."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.c_noise = None

    def forward(self, x, c_noise):
        self.c_noise = c_noise
        return x * self.w


def test_edm_preconditioning_matches_karras_table_1():
    sd = 0.7
    probe = Probe()
    D = EDMPrecond(probe, sigma_data=sd)
    x = torch.randn(3, 4, dtype=torch.float64)
    sigma = torch.tensor([0.01, 1.0, 50.0], dtype=torch.float64)[:, None]
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    expected = c_skip * x + c_out * (c_in * x).float().double()
    out = D(x, sigma[:, 0])
    assert out.dtype == torch.float64  # a float32 network called from float64 returns float64
    assert torch.allclose(out, expected, rtol=1e-6)
    assert torch.allclose(probe.c_noise.double(), sigma[:, 0].log() / 4, rtol=1e-6)


def test_denoiser_rejects_non_positive_sigma():
    D = EDMPrecond(MLP(2, width=8, depth=1))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        D(torch.randn(2, 2), 0.0)


def test_gaussian_residual_starts_as_the_gaussian_and_round_trips_through_a_checkpoint(tmp_path):
    from scorelab.analytic import Gaussian
    from scorelab.data.images import load_digits
    from scorelab.nets import GaussianResidual
    from scorelab.runs import load_denoiser
    from scorelab.train import TrainConfig, build_state, resolve_config, train

    data = load_digits("train")
    config = resolve_config(TrainConfig(data="digits", model="unet-gaussian", steps=3, batch_size=16,
                                        model_options={"model_channels": 8}, device="cpu"), data)
    gaussian = Gaussian.fit(data)
    assert config.model_options["gaussian_rank"] == gaussian.rank
    model = build_state(config, data, torch.device("cpu")).model
    assert isinstance(model, GaussianResidual)
    x = data[:8] + 0.7 * torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the output layer starts at zero: the untrained model is the Gaussian denoiser
        torch.testing.assert_close(model(x, 0.7), gaussian(x, 0.7), rtol=0, atol=1e-6)
        torch.testing.assert_close(model(x.double(), 0.7), gaussian(x, 0.7).double(), rtol=0, atol=1e-6)
    result = train(config, tmp_path / "r", progress=False)
    loaded, meta = load_denoiser(result.run)
    assert isinstance(loaded, GaussianResidual) and meta["config"]["model"] == "unet-gaussian"
    torch.testing.assert_close(loaded.gaussian.lam, gaussian.lam)
    with pytest.raises(ValueError, match="gaussian_rank"):
        build_denoiser("unet-gaussian", (1, 8, 8), 0.5, {})
