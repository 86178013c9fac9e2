import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scorelab.cli import main
from scorelab.runs import checkpoints

TINY = ["--steps", "6", "--batch-size", "32", "--n-data", "500", "--model-option", "width=16",
        "--model-option", "depth=1", "--device", "cpu"]


def run_cli(*args):
    return main(["--no-progress", *map(str, args)])


def test_train_then_sample_writes_samples_and_a_figure(tmp_path, capsys):
    assert run_cli("train", "--data", "gmm3", "--out", tmp_path / "r", *TINY) == 0
    assert run_cli("sample", tmp_path / "r", "--n", 20, "--steps", 4, "--out", tmp_path / "s", "--device", "cpu") == 0
    data = np.load(tmp_path / "s" / "samples.npz")
    assert data["samples"].shape == (20, 2) and list(data["seeds"]) == list(range(20))
    assert float(data["nfe"]) == 7
    assert (tmp_path / "s" / "samples.png").stat().st_size > 1000
    assert "NFE 7" in capsys.readouterr().out


def test_mad_sampler_and_parameter_grid(tmp_path, capsys):
    assert run_cli("train", "--data", "gmm3", "--out", tmp_path / "r", *TINY) == 0
    assert run_cli("sample", tmp_path / "r", "--sampler", "mad", "--a", 2, "--b", 30, "--p", 2, "--derivative",
                   "forward", "--n", 10, "--steps", 4, "--out", tmp_path / "m", "--device", "cpu") == 0
    data = np.load(tmp_path / "m" / "samples.npz")
    assert data["samples"].shape == (10, 2) and float(data["nfe"]) == 8  # one doubled call per step
    assert run_cli("sample", tmp_path / "r", "--sampler", "mad", "--grid", "a=1,2;b=5,10,20", "--n", 6,
                   "--steps", 4, "--out", tmp_path / "g", "--device", "cpu") == 0
    grid = np.load(tmp_path / "g" / "grid.npz")
    assert grid["samples"].shape == (7, 6, 2) and grid["labels"][0] == "heun" and grid["labels"][-1] == "a=2, b=20"
    assert (tmp_path / "g" / "grid.png").stat().st_size > 1000
    # the grid point a=2, b=30 reproduces the single run: every sample depends on its seed alone
    assert run_cli("sample", tmp_path / "r", "--sampler", "mad", "--grid", "a=2;b=30;p=2", "--derivative", "forward",
                   "--n", 10, "--steps", 4, "--out", tmp_path / "g2", "--device", "cpu") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "g2" / "grid.npz")["samples"][1], data["samples"])
    capsys.readouterr()
    for bad, message in (("a=1;c=2", "keys a, b, p, delta"), ("a=x", "numbers"), ("a=0", "a must be")):
        assert run_cli("sample", tmp_path / "r", "--sampler", "mad", "--grid", bad, "--n", 2, "--steps", 2,
                       "--device", "cpu", "--out", tmp_path / "bad") == 2
        assert message in capsys.readouterr().err
    assert run_cli("sample", tmp_path / "r", "--grid", "a=1", "--n", 2, "--device", "cpu") == 2
    assert "--sampler mad" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--data", "nosuch"], "unknown dataset"),
    (["--data", "gmm3", "--model", "transformer"], "unknown model"),
    (["--data", "gmm3", "--model", "unet"], "needs images"),
    (["--data", "gmm3", "--steps", "0"], "steps must be an integer >= 1"),
])
def test_bad_training_input_exits_non_zero_with_one_clear_message(tmp_path, capsys, args, message):
    assert run_cli("train", "--out", tmp_path / "r", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_non_finite_data_is_refused(tmp_path, capsys):
    x = np.random.default_rng(0).uniform(-1, 1, (10, 1, 8, 8)).astype(np.float32)
    x[3, 0, 2, 2] = np.nan
    np.save(tmp_path / "bad.npy", x)
    assert run_cli("train", "--data", tmp_path / "bad.npy", "--model", "unet", "--out", tmp_path / "r", *TINY[:2]) == 2
    assert "non-finite" in capsys.readouterr().err


def test_sampling_a_corrupted_checkpoint_fails_cleanly(tmp_path, capsys):
    assert run_cli("train", "--data", "gmm3", "--out", tmp_path / "r", *TINY) == 0
    ckpt = checkpoints(tmp_path / "r")[-1][1]
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    assert run_cli("sample", tmp_path / "r", "--n", 4, "--out", tmp_path / "s") == 2
    assert "corrupted" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "scorelab", "--no-progress", "train", "--data", "gmm3", "--out", str(out),
           "--steps", "100000", "--log-every", "1", "--batch-size", "32", "--n-data", "500",
           "--model-option", "width=16", "--model-option", "depth=1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 20):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    step = checkpoints(out)[-1][0]
    assert step >= 20
    assert len(metrics.read_text().splitlines()) == step
    assert run_cli("train", "--out", out, "--resume", "--steps", step + 5) == 0
    assert checkpoints(out)[-1][0] == step + 5


def test_data_shapes_writes_a_trainable_file(tmp_path, capsys):
    out = tmp_path / "shapes.npz"
    assert run_cli("data", "shapes", "--n", 12, "--size", 16, "--seed", 3, "--noise-std", 0.5, "--out", out) == 0
    data = np.load(out)
    assert data["images"].shape == (12, 1, 16, 16) and data["images"].dtype == np.uint8
    assert data["clean"].shape == (12, 1, 16, 16) and set(np.unique(data["shape_index"])) <= {0, 1, 2, 3}
    assert out.with_suffix(".png").stat().st_size > 1000
    from scorelab.data import load_dataset
    from scorelab.data.shapes import noisy_shapes

    images = load_dataset(str(out))  # the noisy images, uint8 mapped back to [-1, 1]
    np.testing.assert_allclose(images.numpy(), noisy_shapes(12, size=16, seed=3, noise_std=0.5).noisy.numpy(),
                               atol=1e-6)
    assert run_cli("data", "shapes", "--n", 4, "--size", 4, "--out", out) == 2
    assert "size" in capsys.readouterr().err


def test_export_writes_a_small_loadable_weights_file(tmp_path, capsys):
    import torch

    from scorelab.runs import load_denoiser

    assert run_cli("train", "--data", "gmm3", "--out", tmp_path / "r", *TINY) == 0
    assert run_cli("export", tmp_path / "r", "--out", tmp_path / "w16.safetensors", "--dtype", "float16") == 0
    assert run_cli("export", tmp_path / "r", "--out", tmp_path / "w32.safetensors") == 0
    full, _ = load_denoiser(tmp_path / "r")
    exact, meta = load_denoiser(tmp_path / "w32.safetensors")
    half, _ = load_denoiser(tmp_path / "w16.safetensors")
    assert meta["step"] == 6 and meta["exported"]["weights"] == "ema" and "optimizer" not in meta
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = full(x, 0.5)
        assert torch.equal(exact(x, 0.5), reference)  # float32 export: bit for bit
        assert all(p.dtype == torch.float32 for p in half.parameters())  # cast back on load
        assert (half(x, 0.5) - reference).abs().max() < 1e-2  # float16 weights: ~3 decimal digits
    saved = (tmp_path / "w32.safetensors").stat().st_size - (tmp_path / "w16.safetensors").stat().st_size
    assert abs(saved - 2 * sum(p.numel() for p in full.parameters())) < 100  # 2 bytes fewer per weight
    # an export holds no training state: it samples, but neither resumes nor offers the raw weights
    assert run_cli("sample", tmp_path / "w16.safetensors", "--n", 4, "--steps", 2, "--device", "cpu",
                   "--out", tmp_path / "s") == 0
    capsys.readouterr()
    assert run_cli("sample", tmp_path / "w16.safetensors", "--weights", "model", "--n", 2, "--device", "cpu") == 2
    assert "holds no 'model' weights (it holds: ema)" in capsys.readouterr().err
    assert run_cli("export", tmp_path / "r", "--out", tmp_path / "w.bin") == 2
    assert ".safetensors" in capsys.readouterr().err


def test_pretrained_shapes_model_samples_with_mad(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("sample", "--pretrained", "shapes-noisy", "--sampler", "mad", "--a", 0.05, "--b", 3, "--p", 8,
                   "--n", 2, "--steps", 3, "--device", "cpu") == 0
    data = np.load(tmp_path / "samples" / "shapes-noisy" / "mad-3-seed0" / "samples.npz")
    assert data["samples"].shape == (2, 1, 64, 64) and np.isfinite(data["samples"]).all()
    capsys.readouterr()
    assert run_cli("sample", "--pretrained", "nosuch", "--n", 2) == 2
    assert "no pretrained model 'nosuch'; shipped: shapes-noisy" in capsys.readouterr().err
    assert run_cli("sample", "--n", 2) == 2
    assert "either a run directory" in capsys.readouterr().err


def test_analyze_commands_and_teleport_on_a_tiny_digits_run(tmp_path, capsys):
    import json

    run = tmp_path / "d"
    assert run_cli("train", "--data", "digits", "--model", "unet", "--model-option", "model_channels=8",
                   "--steps", 4, "--batch-size", 16, "--device", "cpu", "--out", run) == 0
    assert run_cli("analyze", "gaussianity", run, "--sigmas", "0.5,5", "--n", 8, "--components", 3,
                   "--ranks", "full,2", "--device", "cpu") == 0
    out = run / "analysis" / "gaussianity"
    # one row per measure x query kind x sigma x model
    assert (out / "unexplained.csv").read_text().count("\n") == 1 + 2 * 2 * 2 * 5
    assert (out / "unexplained_score.png").is_file() and "gmm3-r2" in capsys.readouterr().out
    assert run_cli("analyze", "trajectories", run, "--n", 4, "--steps", 4, "--device", "cpu") == 0
    data = np.load(run / "analysis" / "trajectories-gaussian" / "trajectories.npz")
    assert data["state_distance"].shape == (5, 4) and (run / "analysis" / "trajectories-gaussian" /
                                                       "final_samples.png").is_file()
    assert run_cli("analyze", "field", run, "--anchors", "0,1,2", "--sigma", 1, "--grid", 5,
                   "--models", "gaussian,delta", "--device", "cpu") == 0
    assert (run / "analysis" / "field" / "field_0-1-2_sigma1.png").is_file()
    capsys.readouterr()
    assert run_cli("analyze", "field", run, "--anchors", "0,1", "--sigma", 1, "--device", "cpu") == 2
    assert "three indices" in capsys.readouterr().err
    assert run_cli("analyze", "dynamics", run) == 2
    assert "--track-every" in capsys.readouterr().err
    # teleportation: a fixed number of steps, and 'auto' measured once and cached in the run
    assert run_cli("sample", run, "--teleport", 3, "--steps", 6, "--n", 4, "--device", "cpu",
                   "--out", tmp_path / "t3") == 0
    assert float(np.load(tmp_path / "t3" / "samples.npz")["nfe"]) == 2 * (6 - 3) - 1
    assert run_cli("sample", run, "--teleport", "auto", "--steps", 6, "--n", 4, "--device", "cpu",
                   "--out", tmp_path / "ta") == 0
    cache = json.loads((run / "teleport.json").read_text())
    assert len(cache) == 1 and 0 <= next(iter(cache.values())) <= 5
    assert run_cli("sample", run, "--teleport", "x", "--n", 2, "--device", "cpu") == 2


def test_ncsn_training_and_annealed_langevin_sampling(tmp_path):
    from scorelab.data.toy import load
    from scorelab.metrics.modes import mode_statistics

    assert run_cli("train", "--data", "gmm3", "--loss", "ncsn", "--levels", "geometric:10:0.1:10", "--steps", 300,
                   "--batch-size", 256, "--device", "cpu", "--out", tmp_path / "n") == 0
    assert run_cli("sample", tmp_path / "n", "--sampler", "annealed-langevin", "--eps", 0.002, "--steps-per-level",
                   50, "--n", 1000, "--device", "cpu", "--out", tmp_path / "s") == 0
    data = np.load(tmp_path / "s" / "samples.npz")
    assert float(data["nfe"]) == 10 * 50
    import torch

    weights = mode_statistics(torch.tensor(data["samples"]), load("gmm3").params["means"])["mode_weights"]
    assert max(abs(w - t) for w, t in zip(weights, (0.2, 0.6, 0.2))) < 0.07, weights  # measured 0.19/0.60/0.21
    for loss in ("ncsn-continuous", "ssm", "ssm-vr", "esm"):
        assert run_cli("train", "--data", "gmm3", "--loss", loss, *TINY, "--out", tmp_path / loss) == 0
    assert run_cli("train", "--data", "gmm3", "--loss", "ncsn", "--levels", "cosine:1:0.1:5", *TINY,
                   "--out", tmp_path / "bad") == 2


def test_inpaint_command_keeps_the_known_part_and_is_seeded_per_image(tmp_path, capsys):
    run = tmp_path / "d"
    assert run_cli("train", "--data", "digits", "--model", "ncsn", "--loss", "ncsn", "--levels",
                   "geometric:1:0.1:3", "--model-option", "channels=8", "--steps", 3, "--batch-size", 8,
                   "--device", "cpu", "--out", run) == 0
    ald = ["--eps", 1e-4, "--steps-per-level", 2, "--images", "digits:test", "--device", "cpu"]
    assert run_cli("inpaint", run, "--mask", "bottom", "--n", 3, *ald, "--out", tmp_path / "a") == 0
    a = np.load(tmp_path / "a" / "inpainted.npz")
    assert a["inpainted"].shape == (3, 1, 8, 8) and a["mask"].shape == (1, 8, 8)
    known = a["mask"].astype(bool)
    np.testing.assert_array_equal(a["inpainted"][:, known], a["original"][:, known])
    assert not np.allclose(a["inpainted"][:, ~known], a["original"][:, ~known])
    assert (tmp_path / "a" / "inpainted.png").is_file() and "RMSE on the unknown pixels" in capsys.readouterr().out
    # image i depends on seed + i alone: images 1..2 with seed 1 are rows 1..2 above, to float32 rounding
    # (another batch layout may sum in another order: 1e-7 seen, 100x that allowed)
    assert run_cli("inpaint", run, "--mask", "bottom", "--first", 1, "--n", 2, "--seed", 1, *ald,
                   "--out", tmp_path / "b") == 0
    np.testing.assert_allclose(np.load(tmp_path / "b" / "inpainted.npz")["inpainted"], a["inpainted"][1:],
                               rtol=0, atol=1e-5)
    # a mask file (known: the left 3 columns) and the Heun driver
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[:, :3] = 1
    np.save(tmp_path / "m.npy", mask)
    assert run_cli("inpaint", run, "--mask", tmp_path / "m.npy", "--sampler", "heun", "--steps", 4, "--n", 2,
                   "--images", "digits:test", "--device", "cpu", "--out", tmp_path / "c") == 0
    c = np.load(tmp_path / "c" / "inpainted.npz")
    np.testing.assert_array_equal(c["inpainted"][:, :, :, :3], c["original"][:, :, :, :3])
    np.save(tmp_path / "bad.npy", mask * 0.5)
    for bad, message in [(tmp_path / "bad.npy", "only 0 (unknown) and 1"), ("middle", "is none of these")]:
        assert run_cli("inpaint", run, "--mask", bad, "--n", 1, *ald) == 2
        assert message in capsys.readouterr().err


def test_user_errors_end_in_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    from scorelab.commands import export
    from scorelab.errors import SamplingError

    assert run_cli("sample", "pretrained:shapes-noisy-32", "--device", "nosuch", "--n", 1) == 2
    assert "unknown device 'nosuch'" in capsys.readouterr().err
    if not __import__("torch").cuda.is_available():
        assert run_cli("sample", "pretrained:shapes-noisy-32", "--device", "cuda", "--n", 1) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "no CUDA GPU" in err and "Traceback" not in err

    def failing(error):
        def run(args):
            raise error
        return run

    monkeypatch.setattr(export, "run", failing(SamplingError("the sampler gave up")))
    args = ("export", tmp_path / "r", "--out", tmp_path / "w.safetensors")
    assert run_cli(*args) == 2 and "scorelab export: error: the sampler gave up" in capsys.readouterr().err
    for bug in (RuntimeError("a genuine bug"), TypeError("another one")):
        monkeypatch.setattr(export, "run", failing(bug))
        with pytest.raises(type(bug), match="genuine bug|another one"):
            run_cli(*args)


def test_every_sampler_of_the_registry_is_offered_and_a_shipped_model_is_a_run(tmp_path, capsys, monkeypatch):
    from scorelab.cli import build_parser
    from scorelab.sample import SAMPLERS

    sample = build_parser()._subparsers._group_actions[0].choices["sample"]
    sampler = next(a for a in sample._actions if a.dest == "sampler")
    assert list(sampler.choices) == list(SAMPLERS)
    monkeypatch.chdir(tmp_path)
    assert run_cli("sample", "pretrained:shapes-noisy-32", "--sampler", "euler", "--n", 2, "--steps", 2,
                   "--device", "cpu") == 0
    assert (tmp_path / "samples" / "shapes-noisy-32" / "euler-2-seed0" / "samples.npz").is_file()
