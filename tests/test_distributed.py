"""Training under torchrun (DDP, gloo on CPU, 2 processes) follows the single-process trajectory."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from scorelab import distributed
from scorelab.checkpoint import load_checkpoint
from scorelab.runs import checkpoints
from scorelab.train import TrainConfig, train

RTOL = 1e-6  # gloo's all-reduce sums in another order than one process's mean: float32 rounding only


def tiny_config(**kw):
    base = {"data": "gmm3", "model": "mlp", "steps": 12, "batch_size": 64, "n_data": 1000, "warmup": 3,
            "ema_halflife": 5, "log_every": 1, "checkpoint_every": 1000, "model_options": {"width": 16, "depth": 2},
            "device": "cpu"}
    return TrainConfig(**{**base, **kw})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_tensors(run):
    return load_checkpoint(checkpoints(run)[-1][1])[0]


def _join(rank, port):
    """torchrun's environment for rank ``rank`` of 2, in a process started by mp.spawn."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _worker(rank, port, config, out, record):
    _join(rank, port)

    def keep_final_state(state):  # each rank's own parameters, EMA and generator, for the test to compare
        if state.step == config.steps:
            tensors = {f"model.{k}": v.clone() for k, v in state.model.state_dict().items()}
            tensors.update({f"ema.{k}": v.clone() for k, v in state.ema.state_dict().items()})
            tensors["rng"] = state.generator.get_state()
            torch.save(tensors, record / f"rank{rank}.pt")

    train(config, out, progress=False, callbacks=[keep_final_state])


def torchrun(*args):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "scorelab", "--no-progress", *args]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, 12 steps."""
    run = tmp_path_factory.mktemp("single") / "run"
    train(tiny_config(), run, progress=False)
    assert not distributed.active()  # a single process creates no process group
    return run


def assert_two_ranks_follow(one, two, record, loss_abs=0.0):
    """The 2-rank run ``two`` (each rank's final state saved in ``record`` by ``_worker``) kept both ranks
    identical and follows the single-process run ``one``: its losses (to RTOL, or ``loss_abs``), draws and
    weights."""
    r0, r1 = torch.load(record / "rank0.pt"), torch.load(record / "rank1.pt")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps parameters, EMA and generator identical on all ranks
    assert losses(two) == pytest.approx(losses(one), rel=RTOL, abs=loss_abs)  # the loss is the global mean
    ta, tb = final_tensors(one), final_tensors(two)
    assert torch.equal(ta["rng.train"], tb["rng.train"])  # the same draws as one process
    assert set(tb) == set(ta)  # unwrapped model.* keys, not module.*
    for k in ta:
        if k.startswith(("model.", "ema.")):
            torch.testing.assert_close(tb[k], ta[k], rtol=1e-4, atol=1e-5, msg=k)


def test_two_ranks_stay_identical_and_follow_the_single_process_trajectory(tmp_path, single):
    out = tmp_path / "two"
    mp.spawn(_worker, args=(free_port(), tiny_config(), out, tmp_path), nprocs=2, join=True)
    assert_two_ranks_follow(single, out, tmp_path)


@pytest.mark.parametrize("loss", ["ssm", "ssm-vr", "esm"])
def test_score_matching_under_two_ranks_follows_the_single_process_trajectory(tmp_path, loss):
    """ssm, ssm-vr and esm differentiate the score with respect to x. Under DDP the rows of the other ranks come back
    from ``_on_shard`` as detached inputs, so their score is 0 with a constant Jacobian: their losses are
    wrong but dropped, and as the network sees each row alone, the shard's rows get the loss and parameter
    gradient of one process. The loss is a small difference of O(1) terms (Jacobian trace and squared score):
    its float32 rounding is absolute, about 1e-7, not relative."""
    config = tiny_config(loss=loss)
    train(config, tmp_path / "one", progress=False)
    mp.spawn(_worker, args=(free_port(), config, tmp_path / "two", tmp_path), nprocs=2, join=True)
    assert_two_ranks_follow(tmp_path / "one", tmp_path / "two", tmp_path, loss_abs=1e-6)


def _tracking_worker(rank, port, config, out, record):
    """``_worker`` for a run with tracking, counting on each rank the fits and measurements of the
    built-in tracking callback (``analysis.dynamics``)."""
    from scorelab.analysis import dynamics

    _join(rank, port)
    counts = {"fitted": 0, "measured": 0}

    def counted(fn, key):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    dynamics.tracked_candidates = counted(dynamics.tracked_candidates, "fitted")
    dynamics.unexplained_variance = counted(dynamics.unexplained_variance, "measured")
    train(config, out, progress=False)
    (record / f"counts{rank}.json").write_text(json.dumps(counts))


def test_tracking_runs_on_rank_0_only_and_is_logged(tmp_path):
    """--track-every under torchrun: rank 0 fits the tracked models once and measures at steps 1, 4, 8 and 12,
    which metrics.jsonl holds; rank 1 neither fits nor measures."""
    config = tiny_config(track=["gaussian"], track_every=4, log_every=1000)
    mp.spawn(_tracking_worker, args=(free_port(), config, tmp_path / "run", tmp_path), nprocs=2, join=True)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 4, 8, 12]
    tracked = {f"unexplained/{query}/gaussian/{sigma}" for query in ("data", "noise") for sigma in ("0.1", "1", "10")}
    assert all(tracked <= set(m) for m in logged), logged
    counts = [json.loads((tmp_path / f"counts{r}.json").read_text()) for r in (0, 1)]
    assert counts == [{"fitted": 1, "measured": 4}, {"fitted": 0, "measured": 0}]


def test_resume_with_another_process_count_continues_the_trajectory(tmp_path, single):
    run = tmp_path / "run"
    train(tiny_config(steps=6), run, progress=False)  # 1 process for 6 steps, then 2 processes to 12
    cli = ["train", "--out", str(run), "--resume", "--steps", "12"]
    done = torchrun(*cli)
    assert done.returncode == 0, done.stderr[-3000:]
    assert losses(run) == pytest.approx(losses(single), rel=RTOL)
    assert torch.equal(final_tensors(run)["rng.train"], final_tensors(single)["rng.train"])


def test_a_batch_that_does_not_divide_over_the_ranks_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert distributed.shard(64) == slice(0, 32)
    with pytest.raises(ValueError, match="does not divide over 2 processes"):
        distributed.shard(63)


def test_sampling_sharded_over_two_ranks_equals_one_process(tmp_path, single):
    import numpy as np

    from scorelab.cli import main

    common = ["sample", str(single), "--num-samples", "7", "--seed", "3", "--steps", "4", "--batch-size", "2",
              "--device", "cpu"]  # torchrun's argument parser would take --n for an abbreviation of its own
    assert main(["--no-progress", *common, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(*common, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = np.load(tmp_path / "one" / "samples.npz"), np.load(tmp_path / "two" / "samples.npz")
    assert two["seeds"].tolist() == one["seeds"].tolist() == list(range(3, 10))
    # 7 seeds: blocks of 3 and 4, another batch layout than one process's: equal to float32 rounding
    np.testing.assert_allclose(two["samples"], one["samples"], rtol=1e-5, atol=1e-5)


def _pooled(images):
    """A stand-in feature extractor: 2x2 mean-pooled uint8 pixels."""
    return torch.nn.functional.avg_pool2d(images.double(), 2).flatten(1)


def _features(seeds):
    from scorelab.analytic import Gaussian
    from scorelab.data.images import digits
    from scorelab.metrics import fid
    from scorelab.sample import generate_sharded
    from scorelab.schedules import karras

    model = Gaussian.fit(digits("train")[0])
    return generate_sharded(model, (1, 8, 8), seeds, sigmas=karras(4), batch_size=2,
                            transform=lambda x: _pooled(fid.to_uint8(x)))[0]


def _features_worker(rank, port, out):
    _join(rank, port)
    torch.save(_features(list(range(3, 10))), out / f"rank{rank}.pt")


def test_evaluation_features_sharded_over_two_ranks_equal_one_process(tmp_path):
    """scorelab eval's unit under torchrun: each rank computes a block of seeds (3 and 4 of 7) and both get
    every row back in seed order, equal to one process's rows."""
    one = _features(list(range(3, 10)))
    mp.spawn(_features_worker, args=(free_port(), tmp_path), nprocs=2, join=True)
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), one, rtol=1e-6, atol=1e-6)
    assert one.shape == (7, 16)
