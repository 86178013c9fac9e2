"""Faults: training killed with SIGKILL at random points (also between writing a checkpoint's temporary
file and moving it into place) and resumed must end bit for bit where an uninterrupted run ends;
corrupted, truncated and foreign checkpoints are read around or named; commands killed or interrupted
mid-run leave no half-written output."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scorelab.checkpoint import load_checkpoint
from scorelab.cli import main
from scorelab.runs import Run, checkpoints

TRAIN = ["--data", "gmm3", "--steps", "120", "--batch-size", "32", "--n-data", "300", "--checkpoint-every", "10",
         "--keep-checkpoints", "3", "--log-every", "1", "--model-option", "width=16", "--model-option", "depth=1",
         "--device", "cpu"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
# a training process that SIGKILLs itself at its Nth os.replace: after a temporary file is written in
# full, before it is moved into place (a checkpoint, its .json copy, metrics, config)
KILL_AT_REPLACE = """
import os, signal, sys
import scorelab.checkpoint as checkpoint
count, target, replace = [0], int(sys.argv[1]), os.replace
def dying_replace(src, dst):
    count[0] += 1
    if count[0] == target:
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
checkpoint.os.replace = dying_replace
from scorelab.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _train(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scorelab", "--no-progress", "train", *TRAIN, "--out", str(out),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)


def _kill_after_lines(out: Path, lines: int, timeout: float = 120) -> int:
    """Start (or resume) training, SIGKILL it once metrics.jsonl holds ``lines`` lines, and return its
    exit status (``-SIGKILL`` when the kill landed mid-run)."""
    proc = _train(out, *(["--resume"] if (out / "config.json").exists() else []))
    metrics, deadline = out / "metrics.jsonl", time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return proc.returncode


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    step, path = checkpoints(out)[-1]
    assert step == 120
    return load_checkpoint(path)[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("faults") / "reference"
    proc = _train(out)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    return _final_state(out)


def _resumed_run_equals(reference: dict[str, torch.Tensor], out: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "scorelab", "--no-progress", "train", "--out", str(out), "--resume",
                           "--steps", "120"], check=False, capture_output=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    final = _final_state(out)
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in reference), "resumed weights differ"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121)), "metrics.jsonl must hold every step once"
    assert not list(out.rglob("*.tmp")), "an interrupted write left a temporary file"


def _kill_resume(reference, out: Path, kills: int, seed: int, ledger) -> None:
    rng = random.Random(seed)
    for lines in sorted(rng.sample(range(1, 100), kills)):  # each kill later than the last one's checkpoint
        with ledger.case("SIGKILL during training, then resume"):
            assert _kill_after_lines(out, lines) == -signal.SIGKILL, "the run ended before the kill"
    with ledger.case("resumed run equals an uninterrupted one, bit for bit"):
        _resumed_run_equals(reference, out)


def test_training_killed_at_random_steps_resumes_bit_for_bit(uninterrupted, tmp_path, ledger):
    _kill_resume(uninterrupted, tmp_path / "run", kills=3, seed=0, ledger=ledger)


@pytest.mark.parametrize("nth", [1, 2, 5, 8])
def test_training_killed_between_a_write_and_its_rename_resumes_bit_for_bit(uninterrupted, tmp_path, nth, ledger):
    """The Nth os.replace of the run: 1 is config.json, then checkpoints, their .json copies and metrics."""
    out = tmp_path / "run"
    with ledger.case("SIGKILL inside an atomic write, then resume"):
        proc = subprocess.run([sys.executable, "-c", KILL_AT_REPLACE, str(nth), "--no-progress", "train", *TRAIN,
                               "--out", str(out)], check=False, capture_output=True, env=ENV, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        assert list(out.rglob("*.tmp")), "the kill should have left the temporary file behind"
    with ledger.case("resumed run equals an uninterrupted one, bit for bit"):
        if not (out / "config.json").exists():  # killed before the run was written: start it as if new
            proc2 = _train(out)
            assert proc2.wait(timeout=300) == 0
        else:
            _resumed_run_equals(uninterrupted, out)


@pytest.mark.slow
def test_training_killed_twenty_times_resumes_bit_for_bit(uninterrupted, tmp_path, ledger):
    _kill_resume(uninterrupted, tmp_path / "run", kills=20, seed=1, ledger=ledger)


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zeroed header":
        path.write_bytes(b"\0" * 64 + data[64:])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a foreign safetensors file under the checkpoint's name
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))


@pytest.mark.parametrize("how", ["truncated", "zeroed header", "empty", "foreign"])
def test_a_corrupted_newest_checkpoint_is_read_around(tmp_path, capsys, how, ledger):
    out = tmp_path / "run"
    short = [*TRAIN[:2], "--steps", "20", *TRAIN[4:]]
    assert main(["--no-progress", "train", *short, "--out", str(out)]) == 0
    newest = checkpoints(out)[-1][1]
    _corrupt(newest, how)
    with ledger.case("corrupted newest checkpoint: sampling names the intact one"):
        assert main(["--no-progress", "sample", str(out), "--n", "2", "--out", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "newest intact checkpoint is" in err and "step-00000010" in err, err
        assert Run.open(checkpoints(out)[-2][1]).step == 10
    with ledger.case("corrupted newest checkpoint: resume falls back to the intact one"):
        assert main(["--no-progress", "train", "--out", str(out), "--resume", "--steps", "20"]) == 0
        assert newest.with_name(newest.name + ".corrupt").exists() and checkpoints(out)[-1][0] == 20
        assert Run.open(out).step == 20
    with ledger.case("every checkpoint unreadable: one clear error"):
        for _, path in checkpoints(out):
            _corrupt(path, how)
        assert main(["--no-progress", "train", "--out", str(out), "--resume", "--steps", "30"]) == 2
        assert "no checkpoint of" in capsys.readouterr().err


COMMANDS = {
    "sample": lambda run, out: ["sample", str(run), "--n", "200000", "--steps", "200", "--batch-size", "200000",
                                "--out", str(out)],
    "data": lambda run, out: ["data", "shapes", "--n", "20000", "--size", "64", "--out", str(out / "s.npz")],
    "eval": lambda run, out: ["eval", str(run), "--ref", "gmm3", "--n", "100000", "--steps", "200", "--batch-size",
                              "100000", "--inception-weights", str(run / "config.json"), "--out", str(out / "e.json")],
}
# eval with a stand-in feature extractor (the real one needs torch-fidelity and its weights)
FAKE_EXTRACTOR = """
import sys
import scorelab.metrics.fid as fid
fid.inception_extractor = lambda path, device: (lambda x: x.double().flatten(1))
fid.to_uint8 = lambda x: x
from scorelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_command_killed_mid_run_leaves_no_half_written_output(tmp_path, command, how, ledger):
    run = tmp_path / "run"
    assert main(["--no-progress", "train", *TRAIN[:2], "--steps", "2", *TRAIN[4:], "--out", str(run)]) == 0
    out = tmp_path / "out"
    with ledger.case(f"interrupted command: {command}"):
        launcher = ["-c", FAKE_EXTRACTOR] if command == "eval" else ["-m", "scorelab"]
        proc = subprocess.Popen([sys.executable, *launcher, "--no-progress", *COMMANDS[command](run, out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        time.sleep(4.0)  # past start-up, inside the work
        proc.send_signal(how)
        _, err = proc.communicate(timeout=120)
        finished = [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".tmp")] if out.exists() else []
        if proc.returncode == 0:  # it finished before the signal: its outputs are whole
            assert all(p.stat().st_size > 0 for p in finished)
        else:
            assert proc.returncode in (-signal.SIGKILL, 130), err.decode()[-2000:]
            assert not [p for p in finished if p.suffix in (".npz", ".json")], finished
            if how == signal.SIGINT:
                assert b"Traceback" not in err and b"interrupted" in err, err.decode()[-2000:]
        for npz in (p for p in finished if p.suffix == ".npz"):
            assert len(np.load(npz).files) > 0
