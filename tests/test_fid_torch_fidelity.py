"""scorelab's FID/KID on torch-fidelity's Inception-v3 against torch-fidelity's own ``calculate_metrics``.

torch-fidelity imports torchvision, which imports only beside a matching torch (a user's usual install,
the GPU machine), so this module is skipped where it does not. The real Inception weights cannot be
downloaded here; the network gets random weights written to a local file, which both sides read: the
check is that the adapter feeds the network as torch-fidelity does and that our statistics, Fréchet
distance and KID give torch-fidelity's numbers from the same features.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

try:
    import torch_fidelity
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception
except (ImportError, RuntimeError, OSError, AttributeError) as e:  # as metrics.fid.inception_extractor
    pytest.skip(f"torch-fidelity does not import here: {type(e).__name__}: {e}", allow_module_level=True)

from scorelab.metrics.fid import ReferenceStats, inception_extractor, metric_from_features, reference_statistics


class Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) images, as torch-fidelity reads a dataset."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 with PyTorch's default random initialisation, its batch-norm statistics
    fitted to random images (else the deep random network maps every image to nearly the same pool3
    vector), saved as the state dict its constructor loads."""
    torch.manual_seed(seed)
    cls = tf_inception.FeatureExtractorInceptionV3
    with pytest.MonkeyPatch.context() as patch:  # construct without loading (or downloading) any weights
        patch.setattr(cls, "load_state_dict", lambda self, state_dict, *args, **kwargs: None)
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        net = cls("inception-v3-compat", ["2048"])
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8))
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.mark.parametrize("feature", ["64", "2048"])
def test_fid_and_kid_match_torch_fidelity(weights: Path, feature: str) -> None:
    g = torch.Generator().manual_seed(1)
    n = 96
    a = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    b = (torch.rand(n, 3, 32, 32, generator=g) ** 2 * 255).to(torch.uint8)  # darker, another distribution
    grey = torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)

    extract = inception_extractor(weights, feature=feature)
    fa, fb = extract(a), extract(b)
    assert fa.shape == (n, int(feature)) and fa.dtype == torch.float64 and bool(fa.std(0).gt(0).any())
    torch.testing.assert_close(extract(grey), extract(grey.expand(-1, 3, -1, -1)))  # grey goes in as 3 channels

    reference = ReferenceStats(*reference_statistics(fb), fb)  # what scorelab eval measures against
    ours_fid = metric_from_features(fa, reference, "fid")
    ours_kid = metric_from_features(fa, reference, "kid", kid_subsets=1, kid_subset_size=n)  # every row: no draw
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(a), input2=Images(b), fid=True, kid=True, kid_subsets=1, kid_subset_size=n,
        feature_extractor="inception-v3-compat", feature_layer_fid=feature, feature_layer_kid=feature,
        feature_extractor_weights_path=str(weights), cuda=False, batch_size=32, cache=False, verbose=False)

    assert ours_fid > 0 and ours_kid > 0
    # Both start from the same float32 features; torch-fidelity keeps its mean and its KID kernels in
    # float32 (ours are float64), which moves the third significant digit at most.
    assert ours_fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours_kid == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
