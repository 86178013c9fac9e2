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


@pytest.mark.parametrize("args,message", [
    (["--data", "nosuch"], "unknown dataset"),
    (["--data", "gmm3", "--model", "transformer"], "unknown model"),
    (["--data", "gmm3", "--model", "unet"], "needs images"),
    (["--data", "gmm3", "--steps", "0"], "steps must be >= 1"),
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
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    step = checkpoints(out)[-1][0]
    assert step >= 20
    assert len(metrics.read_text().splitlines()) == step
    assert run_cli("train", "--out", out, "--resume", "--steps", step + 5) == 0
    assert checkpoints(out)[-1][0] == step + 5
