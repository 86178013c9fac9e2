"""The Run object: one way to open a run directory, a checkpoint, an exported weights file or a shipped
model, with its config, denoiser, codec, training data and output folders."""

import pytest
import torch

from scorelab.errors import CheckpointError
from scorelab.runs import Run, export_weights, load_denoiser
from scorelab.train import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gmm3"
    config = TrainConfig(data="gmm3", model="mlp", steps=4, batch_size=32, n_data=300, checkpoint_every=2,
                         model_options={"width": 16, "depth": 1}, device="cpu")
    train(config, out, progress=False)
    return out


def test_a_run_directory_a_checkpoint_and_an_export_open_to_the_same_model(run_dir, tmp_path):
    from_dir = Run.open(run_dir)
    checkpoint = from_dir.checkpoint
    from_file = Run.open(checkpoint)
    exported = Run.open(export_weights(run_dir, tmp_path / "w.safetensors"))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = from_dir.denoiser(x, 0.7)
        for other in (from_file, exported):
            assert torch.equal(other.denoiser(x, 0.7), reference)
    assert from_dir.step == from_file.step == exported.step == 4 and checkpoint.name == "step-00000004.safetensors"
    assert from_dir.data_shape == (2,) and from_dir.config["data"] == "gmm3" and from_dir.codec is None
    assert torch.equal(from_dir.decode(x), x)  # a model of the data itself decodes to itself
    # outputs go beside the run, also for one of its checkpoints; beside the file for an export
    assert from_dir.output_dir("samples", "a") == from_file.output_dir("samples", "a") == run_dir / "samples" / "a"
    assert exported.output_dir("eval", "b") == tmp_path / "eval" / "b"
    assert load_denoiser(run_dir)[1] == from_dir.meta


def test_raw_weights_and_the_training_data_as_the_model_saw_it(run_dir):
    raw, ema = Run.open(run_dir, weights="model"), Run.open(run_dir)
    assert any(not torch.equal(a, b) for a, b in zip(raw.denoiser.parameters(), ema.denoiser.parameters()))
    data = ema.training_data()
    assert data.shape == (300, 2)  # n_data toy samples drawn with the run's seed, as in training
    torch.testing.assert_close(ema.gaussian().mean, data.double().mean(0).to(ema.gaussian().mean.dtype))


def test_a_shipped_model_writes_its_outputs_under_the_kind_and_its_name():
    model = Run.open("pretrained:shapes-noisy-32")
    assert model.home is None and model.name == "shapes-noisy-32" and model.data_shape == (1, 32, 32)
    assert str(model.output_dir("samples", "mad")) == "samples/shapes-noisy-32/mad"


def test_bad_sources_give_clear_errors(run_dir, tmp_path):
    with pytest.raises(ValueError, match="weights must be one of ema, model"):
        Run.open(run_dir, weights="best")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        Run.open(tmp_path / "nosuch.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no checkpoint yet"):
        Run.open(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no pretrained model 'nosuch'"):
        Run.open("pretrained:nosuch")
