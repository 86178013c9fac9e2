import json
import threading

import numpy as np
import pytest
import torch

from scorelab.checkpoint import CheckpointError, load_checkpoint
from scorelab.runs import checkpoints, load_denoiser
from scorelab.train import TrainConfig, TrainingError, ema_beta, lr_at, train


def small_config(**kw):
    base = {"data": "gmm3", "model": "mlp", "steps": 30, "batch_size": 64, "n_data": 2000, "warmup": 5,
            "ema_halflife": 10, "log_every": 1, "checkpoint_every": 1000, "model_options": {"width": 32, "depth": 2},
            "device": "cpu"}
    return TrainConfig(**{**base, **kw})


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_tensors(run):
    tensors, meta = load_checkpoint(checkpoints(run)[-1][1])
    return tensors, meta["step"]


def stop_at(step, event):
    def callback(state):
        if state.step == step:
            event.set()
    return callback


def test_resumed_training_matches_uninterrupted_training_step_for_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(small_config(), a, progress=False)
    stop = threading.Event()
    result = train(small_config(), b, progress=False, callbacks=[stop_at(12, stop)], stop=stop)
    assert result.interrupted and result.step == 12
    assert checkpoints(b)[-1][0] == 12  # an interruption leaves a resumable checkpoint
    train(small_config(), b, resume=True, progress=False)
    assert losses(a) == losses(b) and len(losses(a)) == 30
    (ta, sa), (tb, sb) = final_tensors(a), final_tensors(b)
    assert sa == sb == 30
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k  # weights, EMA, Adam moments and RNG state


def test_resume_can_extend_the_number_of_steps(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(small_config(steps=20), a, progress=False)
    train(small_config(steps=8), b, progress=False)
    train(small_config(steps=20), b, resume=True, progress=False)
    assert losses(a) == losses(b)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(state):
        if state.step == 5:
            with torch.no_grad():
                next(state.model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError, match="non-finite loss"):
        train(small_config(checkpoint_every=4), tmp_path / "r", progress=False, callbacks=[poison])
    assert [s for s, _ in checkpoints(tmp_path / "r")] == [4]
    denoiser, meta = load_denoiser(tmp_path / "r", weights="model")
    assert meta["step"] == 4
    assert all(bool(torch.isfinite(p).all()) for p in denoiser.parameters())


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path):
    train(small_config(steps=3), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "config.json").read_text()
    with pytest.raises(TrainingError, match="already holds a run"):
        train(small_config(steps=5, lr=5e-4), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "config.json").read_text() == before


def test_resume_refuses_a_changed_setting(tmp_path):
    train(small_config(steps=3), tmp_path / "r", progress=False)
    with pytest.raises(TrainingError, match="batch_size"):
        train(small_config(steps=5, batch_size=32), tmp_path / "r", resume=True, progress=False)


def test_resume_keeps_the_runs_own_sigma_data(tmp_path):
    """The data std recomputed on resume can differ in its last bits (another thread count sums in
    another order): the run's saved sigma_data and P_mean are used, an explicit change is refused."""
    run = tmp_path / "r"
    train(small_config(steps=3), run, progress=False)
    saved = json.loads((run / "config.json").read_text())
    saved["sigma_data"] *= 1 + 1e-14
    (run / "config.json").write_text(json.dumps(saved))
    train(small_config(steps=5), run, resume=True, progress=False)
    assert json.loads((run / "config.json").read_text())["sigma_data"] == saved["sigma_data"]
    with pytest.raises(TrainingError, match="sigma_data"):
        train(small_config(steps=6, sigma_data=0.5), run, resume=True, progress=False)


def test_only_the_last_checkpoints_are_kept(tmp_path):
    train(small_config(steps=10, checkpoint_every=2, keep_checkpoints=2), tmp_path / "r", progress=False)
    assert [s for s, _ in checkpoints(tmp_path / "r")] == [8, 10]


def test_ema_and_lr_schedules():
    assert lr_at(0, 1e-3, 10) == 0 and lr_at(5, 1e-3, 10) == pytest.approx(5e-4) and lr_at(50, 1e-3, 10) == 1e-3
    assert ema_beta(100, 50, 0.0) == pytest.approx(0.5 ** (1 / 50))
    assert ema_beta(10, 50, 0.1) == pytest.approx(0.5)  # half-life ramped to 1 step


def test_cosine_decay_runs_from_lr_after_the_warm_up_to_zero_at_the_last_step(tmp_path):
    assert lr_at(5, 1e-3, 10, "cosine", 110) == pytest.approx(5e-4)  # still warming up
    assert lr_at(10, 1e-3, 10, "cosine", 110) == pytest.approx(1e-3)
    assert lr_at(60, 1e-3, 10, "cosine", 110) == pytest.approx(5e-4)  # half way: cos(pi / 2) = 0
    assert lr_at(110, 1e-3, 10, "cosine", 110) == pytest.approx(0, abs=1e-18)
    train(small_config(steps=20, warmup=0, lr_decay="cosine", log_every=10), tmp_path / "r", progress=False)
    logged = [json.loads(line)["lr"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_decay"):
        small_config(lr_decay="linear").validate()


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        small_config(batch_size=0).validate()
    with pytest.raises(ValueError, match="unknown loss"):
        small_config(loss="nope").validate()


def test_tensorboard_logs_the_metrics_and_sample_grids(tmp_path):
    """train --tensorboard: the same scalars as metrics.jsonl at the same steps, and a grid of EMA samples at
    every checkpoint (image data)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scorelab.cli import main

    run = tmp_path / "d"
    assert main(["--no-progress", "train", "--data", "digits", "--model", "unet", "--model-option",
                 "model_channels=8", "--steps", "4", "--batch-size", "8", "--log-every", "2", "--checkpoint-every",
                 "2", "--device", "cpu", "--tensorboard", "--out", str(run)]) == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [m["step"] for m in logged] == [2, 4]
    assert [e.value for e in loss] == pytest.approx([m["loss"] for m in logged], rel=1e-6)
    assert [e.step for e in events.Images("samples")] == [2, 4]


def test_tensorboard_logs_a_scatter_plot_of_samples_for_2d_data(tmp_path):
    """train --tensorboard on a 2-D toy: at every checkpoint an image "samples", a scatter plot of 1000 EMA
    samples rendered by matplotlib (RGB, the figure's size in pixels), different as the model changes."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "t"
    train(small_config(steps=6, checkpoint_every=3, log_every=3, tensorboard=True), run, progress=False)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = events.Images("samples")
    assert [e.step for e in images] == [3, 6]
    assert all(e.width >= 300 and e.height >= 300 for e in images)  # a rendered 5x5-inch figure
    assert images[0].encoded_image_string != images[1].encoded_image_string
    assert [e.step for e in events.Scalars("loss")] == [3, 6]


def test_the_samples_scatter_plot_says_which_coordinates_it_shows():
    from scorelab.tblog import scatter_figure

    x = torch.randn(50, 5)
    (ax,) = scatter_figure(x, 7).axes
    assert ax.get_title() == "step 7: 50 samples, coordinates 0 and 1 of 5"
    assert ax.collections[0].get_offsets().tolist() == x[:, :2].double().tolist()
    assert scatter_figure(x[:, :2], 7).axes[0].get_title() == "step 7: 50 samples"


def test_bf16_autocast_trains_close_to_float32(tmp_path):
    """--precision bf16: the forward pass in bfloat16 (8-bit mantissa), so the loss curve follows float32's
    within a few per cent and the checkpoint holds float32 weights."""
    train(small_config(steps=20), tmp_path / "f", progress=False)
    train(small_config(steps=20, precision="bf16"), tmp_path / "b", progress=False)
    f, b = losses(tmp_path / "f"), losses(tmp_path / "b")
    assert b != f and b == pytest.approx(f, rel=0.05)
    tensors, _ = final_tensors(tmp_path / "b")
    assert all(t.dtype == torch.float32 for k, t in tensors.items() if k.startswith(("model.", "ema.")))
    with pytest.raises(ValueError, match="precision"):
        small_config(precision="fp16").validate()


def test_compiled_forward_gives_the_plain_trajectory(tmp_path):
    """--compile: torch.compile of the forward pass changes neither the losses (to float32 rounding of fused
    kernels) nor the checkpoint's keys (no _orig_mod prefix)."""
    train(small_config(steps=5), tmp_path / "p", progress=False)
    train(small_config(steps=5, compile=True), tmp_path / "c", progress=False)
    assert losses(tmp_path / "c") == pytest.approx(losses(tmp_path / "p"), rel=1e-4)
    assert set(final_tensors(tmp_path / "c")[0]) == set(final_tensors(tmp_path / "p")[0])


def test_init_starts_from_another_runs_ema_weights(tmp_path):
    """--init (fine-tuning, EDM's --transfer): model and EMA start from the source's EMA weights, with a fresh
    optimizer and step count; a tiny learning rate then leaves them where they started."""
    train(small_config(), tmp_path / "a", progress=False)
    source = load_denoiser(tmp_path / "a")[0].state_dict()
    tuned = train(small_config(steps=1, lr=1e-9, warmup=0, init=str(tmp_path / "a")), tmp_path / "b", progress=False)
    train(small_config(steps=1, lr=1e-9, warmup=0), tmp_path / "c", progress=False)
    assert tuned.step == 1
    tensors, _ = final_tensors(tmp_path / "b")
    for k, v in source.items():
        assert torch.allclose(tensors[f"model.{k}"], v, atol=1e-6), k
        assert torch.allclose(tensors[f"ema.{k}"], v, atol=1e-6), k
    fresh_tensors, _ = final_tensors(tmp_path / "c")
    assert any(not torch.allclose(fresh_tensors[f"model.{k}"], v, atol=1e-3) for k, v in source.items())
    assert json.loads((tmp_path / "b" / "config.json").read_text())["init"] == str(tmp_path / "a")
    train(small_config(steps=3, lr=1e-9, warmup=0, init=str(tmp_path / "a")), tmp_path / "b", resume=True,
          progress=False)  # the run resumes from its own checkpoint, not from the source again
    assert final_tensors(tmp_path / "b")[1] == 3


def test_init_refuses_another_network_and_resolves_pretrained_names(tmp_path):
    train(small_config(steps=2), tmp_path / "a", progress=False)
    wider = small_config(steps=1, init=str(tmp_path / "a"), model_options={"width": 48, "depth": 2})
    with pytest.raises(CheckpointError, match="--init .* does not fit this model"):
        train(wider, tmp_path / "b", progress=False)
    meta = load_denoiser("pretrained:shapes-noisy")[1]
    assert meta["data_shape"] == [1, 64, 64]
    with pytest.raises(CheckpointError, match="no pretrained model 'nosuch'"):
        load_denoiser("pretrained:nosuch")


def test_resume_finds_data_that_moved(tmp_path, monkeypatch):
    """A relative --data is relative to the folder the run started in: resumed from elsewhere it
    fails with a hint, and --data with the same data's new path continues the run."""
    (tmp_path / "a").mkdir()
    images = torch.randint(0, 256, (64, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "a" / "x.npy", images.numpy())
    tiny = {"model": "unet", "model_options": {"model_channels": 8}, "batch_size": 16, "n_data": 64}
    monkeypatch.chdir(tmp_path / "a")
    run = tmp_path / "r"
    train(small_config(data="x.npy", steps=2, **tiny), run, progress=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="relative to the folder the run was started in"):
        train(small_config(data="x.npy", steps=3, **tiny), run, resume=True, progress=False)
    train(small_config(data="a/x.npy", steps=3, **tiny), run, resume=True, progress=False)
    assert final_tensors(run)[1] == 3
    assert json.loads((run / "config.json").read_text())["data"] == "a/x.npy"
