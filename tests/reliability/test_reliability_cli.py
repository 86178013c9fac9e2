"""Bad input to every command: each case must end in one ``error:`` line naming the problem and exit
status 2, with no traceback and nothing half-made left where the output would have gone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from scorelab.cli import main

TINY = ["--steps", "2", "--batch-size", "16", "--n-data", "200", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Runs and files the cases point at: a gmm3 MLP run, a digits UNet run, broken checkpoints,
    broken data, masks, a file standing where a folder should be."""
    root = tmp_path_factory.mktemp("reliability-cli")
    assert main(["--no-progress", "train", "--data", "gmm3", "--out", str(root / "gmm3"), *TINY,
                 "--model-option", "width=16", "--model-option", "depth=1"]) == 0
    assert main(["--no-progress", "train", "--data", "digits", "--model", "unet", "--model-option", "model_channels=8",
                 "--out", str(root / "digits"), *TINY]) == 0
    ckpt = next((root / "gmm3" / "checkpoints").glob("step-*.safetensors"))
    (root / "truncated.safetensors").write_bytes(ckpt.read_bytes()[:300])
    (root / "empty.safetensors").write_bytes(b"")
    (root / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    save_file({"w": torch.zeros(3)}, str(root / "foreign.safetensors"))
    (root / "a_file").write_text("not a folder")
    bad = np.random.default_rng(0).uniform(-1, 1, (10, 1, 8, 8)).astype(np.float32)
    bad[0, 0, 0, 0] = np.nan
    np.save(root / "nan.npy", bad)
    np.save(root / "complex.npy", np.zeros((10, 1, 8, 8), np.complex64))
    np.save(root / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    np.save(root / "wide.npy", np.full((10, 1, 8, 8), 3.0, np.float32))
    (root / "pngs").mkdir()
    (root / "pngs" / "broken.png").write_bytes(b"\x89PNG not really")
    np.save(root / "half.npy", np.full((8, 8), 0.5, np.float32))
    np.save(root / "mask_shape.npy", np.ones((4, 4), np.float32))
    (root / "mask.png").write_bytes(b"not a png")
    (root / "weights.pth").write_bytes(b"x")
    (root / "notrack").mkdir()
    return {"root": root, "gmm3": root / "gmm3", "digits": root / "digits"}


# (case id, arguments with {name} placeholders for the files above, a part of the expected message)
CASES = [
    # train
    ("train-unknown-data", "train --data nosuch --out {out}", "unknown dataset"),
    ("train-unknown-model", "train --data gmm3 --model transformer --out {out}", "unknown model"),
    ("train-unet-on-vectors", "train --data gmm3 --model unet --out {out}", "needs images"),
    ("train-steps-0", "train --data gmm3 --steps 0 --out {out}", "steps must be"),
    ("train-batch-0", "train --data gmm3 --batch-size 0 --out {out}", "batch_size must be"),
    ("train-lr-nan", "train --data gmm3 --lr nan --out {out}", "lr must be"),
    ("train-lr-inf", "train --data gmm3 --lr inf --out {out}", "lr must be"),
    ("train-lr-negative", "train --data gmm3 --lr -1 --out {out}", "lr must be"),
    ("train-seed-huge", "train --data gmm3 --seed 99999999999999999999 --out {out}", "seed must be"),
    ("train-seed-negative", "train --data gmm3 --seed -1 --out {out}", "seed must be"),
    ("train-warmup-negative", "train --data gmm3 --warmup -1 --out {out}", "warmup must be"),
    ("train-ema-inf", "train --data gmm3 --ema-halflife inf --out {out}", "ema_halflife must be"),
    ("train-sigma-data-negative", "train --data gmm3 --sigma-data -1 --out {out}", "sigma_data must be"),
    ("train-p-std-0", "train --data gmm3 --P-std 0 --out {out}", "P_std must be"),
    ("train-p-mean-nan", "train --data gmm3 --P-mean nan --out {out}", "P_mean must be"),
    ("train-n-data-1", "train --data gmm3 --n-data 1 --out {out}", "n >= 2"),
    ("train-keep-0", "train --data gmm3 --keep-checkpoints 0 --out {out}", "keep_checkpoints must be"),
    ("train-log-every-0", "train --data gmm3 --log-every 0 --out {out}", "log_every must be"),
    ("train-track-without-models", "train --data gmm3 --track-every 2 --out {out}", "needs at least one model"),
    ("train-track-unknown", "train --data gmm3 --track nosuch --track-every 2 --out {out}", "unknown analytical model"),
    ("train-track-sigma-negative", "train --data gmm3 --track gaussian --track-every 2 --track-sigmas -1 --out {out}",
     "track_sigmas must be"),
    ("train-track-sigma-text", "train --data gmm3 --track gaussian --track-sigmas abc --out {out}", "comma-separated"),
    ("train-option-type", "train --data gmm3 --model-option width=abc --out {out}", "width='abc'"),
    ("train-option-unknown", "train --data gmm3 --model-option foo=3 --out {out}", "no option foo"),
    ("train-option-no-equals", "train --data gmm3 --model-option width --out {out}", "KEY=VALUE"),
    ("train-option-negative", "train --data gmm3 --model-option width=-4 --out {out}", ">= 1"),
    ("train-levels", "train --data gmm3 --loss ncsn --levels geometric:1:2:3 --out {out}", "sigma_min < sigma_max"),
    ("train-levels-kind", "train --data gmm3 --loss ncsn --levels cosine:1:0.1:3 --out {out}", "KIND"),
    ("train-loss", "train --data gmm3 --loss nosuch --out {out}", "unknown loss"),
    ("train-latent", "train --data digits --model mlp --latent pca:abc --out {out}", "pca"),
    ("train-device", "train --data gmm3 --device nosuch --out {out}", "unknown device"),
    ("train-resume-missing", "train --out {out} --resume", "not a scorelab run"),
    ("train-resume-changed", "train --out {gmm3} --resume --lr 0.5", "cannot resume"),
    ("train-data-nan", "train --data {root}/nan.npy --model unet --out {out}", "non-finite"),
    ("train-data-complex", "train --data {root}/complex.npy --model unet --out {out}", "dtype"),
    ("train-data-empty", "train --data {root}/empty.npy --model unet --out {out}", "no images"),
    ("train-data-range", "train --data {root}/wide.npy --model unet --out {out}", "outside [-1, 1]"),
    ("train-data-broken-png", "train --data {root}/pngs --model unet --out {out}", "cannot read as an image"),
    ("train-init-missing", "train --data gmm3 --init {root}/nosuch.safetensors --out {out}", "no checkpoint at"),
    ("train-init-foreign", "train --data gmm3 --init {root}/foreign.safetensors --out {out}", "not a scorelab checkpoint"),
    ("train-init-other-network", "train --data digits --model unet --init {gmm3} --out {out}", "does not fit"),
    ("train-out-under-a-file", "train --data gmm3 --out {root}/a_file/run", "a_file"),
    ("train-mmap-residual", "train --data mmap:{root}/nan.npy --model unet --out {out}", "uint8"),
    # sample
    ("sample-no-model", "sample --n 2", "either a run directory"),
    ("sample-missing-run", "sample {root}/nosuch --n 2", "no checkpoint at"),
    ("sample-truncated", "sample {root}/truncated.safetensors --n 2 --out {out}", "corrupted"),
    ("sample-empty-file", "sample {root}/empty.safetensors --n 2 --out {out}", "corrupted"),
    ("sample-random-bytes", "sample {root}/random.safetensors --n 2 --out {out}", "corrupted"),
    ("sample-foreign", "sample {root}/foreign.safetensors --n 2 --out {out}", "not a scorelab checkpoint"),
    ("sample-run-without-checkpoint", "sample {root}/notrack --n 2 --out {out}", "no checkpoint yet"),
    ("sample-pretrained-unknown", "sample --pretrained nosuch --n 2 --out {out}", "no pretrained model"),
    ("sample-steps-0", "sample {gmm3} --steps 0 --n 2 --out {out}", "integer >= 1"),
    ("sample-n-0", "sample {gmm3} --n 0 --out {out}", "--n must be at least 1"),
    ("sample-seed-negative", "sample {gmm3} --seed -1 --n 2 --out {out}", "seeds must lie"),
    ("sample-seed-huge", "sample {gmm3} --seed 9223372036854775807 --n 2 --out {out}", "seeds must lie"),
    ("sample-sigma-order", "sample {gmm3} --sigma-min 5 --sigma-max 1 --n 2 --out {out}", "sigma_min < sigma_max"),
    ("sample-sigma-zero", "sample {gmm3} --sigma-min 0 --n 2 --out {out}", "sigma_min < sigma_max"),
    ("sample-sigma-inf", "sample {gmm3} --sigma-max inf --n 2 --out {out}", "sigma_max < inf"),
    ("sample-rho-0", "sample {gmm3} --rho 0 --n 2 --out {out}", "rho must be"),
    ("sample-rho-nan", "sample {gmm3} --rho nan --n 2 --out {out}", "rho must be"),
    ("sample-batch-0", "sample {gmm3} --batch-size 0 --n 2 --out {out}", "batch_size >= 1"),
    ("sample-mad-a-0", "sample {gmm3} --sampler mad --a 0 --n 2 --out {out}", "a must be"),
    ("sample-mad-b-nan", "sample {gmm3} --sampler mad --b nan --n 2 --out {out}", "b must be"),
    ("sample-mad-p-inf", "sample {gmm3} --sampler mad --p inf --n 2 --out {out}", "p must be"),
    ("sample-mad-delta-2", "sample {gmm3} --sampler mad --delta 2 --n 2 --out {out}", "delta"),
    ("sample-mad-b-huge", "sample {gmm3} --sampler mad --b 1e300 --n 2 --out {out}", "no gamma solves"),
    ("sample-grid-key", "sample {gmm3} --sampler mad --grid a=1;c=2 --n 2 --out {out}", "keys a, b, p, delta"),
    ("sample-grid-value", "sample {gmm3} --sampler mad --grid a=x --n 2 --out {out}", "numbers"),
    ("sample-grid-empty", "sample {gmm3} --sampler mad --grid ; --n 2 --out {out}", "empty"),
    ("sample-grid-without-mad", "sample {gmm3} --grid a=1 --n 2 --out {out}", "--sampler mad"),
    ("sample-teleport-text", "sample {gmm3} --teleport x --n 2 --out {out}", "number of steps or 'auto'"),
    ("sample-teleport-beyond", "sample {gmm3} --teleport 99 --n 2 --out {out}", "n_skip must be"),
    ("sample-teleport-threshold", "sample {gmm3} --teleport auto --teleport-threshold 2 --n 2 --out {out}",
     "threshold must lie"),
    ("sample-churn-nan", "sample {gmm3} --churn nan --n 2 --out {out}", "S_churn must be"),
    ("sample-churn-negative", "sample {gmm3} --churn -1 --n 2 --out {out}", "S_churn must be"),
    ("sample-eta-2", "sample {gmm3} --sampler euler-ancestral --eta 2 --n 2 --out {out}", "eta must lie"),
    ("sample-levels", "sample {gmm3} --sampler annealed-langevin --levels bad --n 2 --out {out}", "KIND"),
    ("sample-eps-0", "sample {gmm3} --sampler annealed-langevin --eps 0 --n 2 --out {out}", "eps > 0"),
    ("sample-eps-inf", "sample {gmm3} --sampler annealed-langevin --eps inf --n 2 --out {out}", "eps must be"),
    ("sample-steps-per-level-0", "sample {gmm3} --sampler annealed-langevin --steps-per-level 0 --n 2 --out {out}",
     "steps_per_level"),
    ("sample-device", "sample {gmm3} --device nosuch --n 2 --out {out}", "unknown device"),
    ("sample-class", "sample {gmm3} --class 1 --n 2 --out {out}", "not class-conditional"),
    ("sample-schedule-model", "sample {gmm3} --schedule model --n 2 --out {out}", "no noise levels of its own"),
    ("sample-out-under-a-file", "sample {gmm3} --n 2 --out {root}/a_file/s", "a_file"),
    ("sample-diffusers-missing", "sample diffusers:{root}/nosuch --n 2 --out {out}", "no such folder"),
    ("sample-diffusers-not-a-folder", "sample diffusers:{root}/a_file --n 2 --out {out}", "is a file"),
    # inpaint
    ("inpaint-mask-name", "inpaint {digits} --images digits:test --mask middle --n 1 --out {out}", "none of these"),
    ("inpaint-mask-shape", "inpaint {digits} --images digits:test --mask {root}/mask_shape.npy --n 1 --out {out}",
     "images need"),
    ("inpaint-mask-values", "inpaint {digits} --images digits:test --mask {root}/half.npy --n 1 --out {out}",
     "only 0 (unknown) and 1"),
    ("inpaint-mask-png", "inpaint {digits} --images digits:test --mask {root}/mask.png --n 1 --out {out}",
     "cannot read the mask"),
    ("inpaint-images-missing", "inpaint {digits} --images {root}/nosuch.npy --mask top --n 1 --out {out}",
     "unknown dataset"),
    ("inpaint-images-vectors", "inpaint {digits} --images gmm3 --mask top --n 1 --out {out}", "needs images"),
    ("inpaint-images-beyond", "inpaint {digits} --images digits:test --first 5000 --mask top --n 1 --out {out}",
     "from index 5000"),
    ("inpaint-n-0", "inpaint {digits} --images digits:test --mask top --n 0 --out {out}", "--n >= 1"),
    ("inpaint-vector-model", "inpaint {gmm3} --images digits:test --mask top --n 1 --out {out}", "shape"),
    # eval
    ("eval-no-weights", "eval {digits} --ref digits --n 4", "cannot be downloaded"),
    ("eval-seeds-count", "eval {digits} --ref digits --n 5 --seeds 0-9", "holds 10 seeds"),
    ("eval-seeds-text", "eval {digits} --ref digits --n 5 --seeds a-b", "inclusive range"),
    ("eval-seeds-empty", "eval {digits} --ref digits --n 5 --seeds 9-5", "range is empty"),
    ("eval-n-1", "eval {digits} --ref digits --n 1", "at least 2"),
    ("eval-weights-missing", "eval {digits} --ref digits --n 4 --inception-weights {root}/nosuch.pth", "not found"),
    # export
    ("export-suffix", "export {gmm3} --out {root}/w.bin", ".safetensors"),
    ("export-missing", "export {root}/nosuch --out {root}/w.safetensors", "no checkpoint at"),
    ("export-diffusers", "export diffusers:{root}/nosuch --out {root}/w2.safetensors", "diffusers model"),
    # data
    ("data-n-0", "data shapes --n 0 --out {root}/s0.npz", "--n must be at least 1"),
    ("data-size-4", "data shapes --n 4 --size 4 --out {root}/s4.npz", "size must be"),
    ("data-suffix", "data shapes --n 4 --out {root}/s.bin", "must end in .npz"),
    ("data-noise-negative", "data shapes --n 4 --noise-std -1 --out {root}/sn.npz", "noise_std"),
    ("data-bump-width-0", "data shapes --n 4 --bump-width 0 --out {root}/sb.npz", "bump_width"),
    ("data-bumps-negative", "data shapes --n 4 --n-bumps -1 --out {root}/sc.npz", "n_bumps"),
    # analyze
    ("analyze-ranks", "analyze gaussianity {digits} --ranks abc --out {out}", "--ranks"),
    ("analyze-sigmas-text", "analyze gaussianity {digits} --sigmas abc --out {out}", "comma-separated"),
    ("analyze-sigmas-negative", "analyze gaussianity {digits} --sigmas -1 --n 4 --out {out}", "sigma"),
    ("analyze-components-0", "analyze gaussianity {digits} --components 0 --n 4 --out {out}", "component"),
    ("analyze-reference", "analyze trajectories {digits} --reference nosuch --out {out}", "unknown analytical model"),
    ("analyze-paths-0", "analyze trajectories {digits} --n 0 --out {out}", "--n must be at least 1"),
    ("analyze-anchors-two", "analyze field {digits} --anchors 0,1 --sigma 1 --out {out}", "three indices"),
    ("analyze-anchors-text", "analyze field {digits} --anchors a,b,c --sigma 1 --out {out}", "three training-image"),
    ("analyze-anchors-beyond", "analyze field {digits} --anchors 0,1,99999 --sigma 1 --out {out}", "three indices"),
    ("analyze-field-sigma-0", "analyze field {digits} --anchors 0,1,2 --sigma 0 --out {out}", "sigma"),
    ("analyze-dynamics-untracked", "analyze dynamics {gmm3} --out {out}", "--track-every"),
    ("analyze-dynamics-missing", "analyze dynamics {root}/nosuch --out {out}", "nosuch"),
]


if not torch.cuda.is_available():  # a device this machine lacks, in every command that takes one
    CASES += [
        ("train-device-cuda", "train --data gmm3 --device cuda --out {out}", "no CUDA GPU"),
        ("sample-device-cuda", "sample {gmm3} --device cuda --n 2 --out {out}", "no CUDA GPU"),
        ("inpaint-device-cuda", "inpaint {digits} --device cuda --images digits:test --mask top --n 1 --out {out}",
         "no CUDA GPU"),
        ("analyze-device-cuda", "analyze gaussianity {digits} --device cuda --out {out}", "no CUDA GPU"),
    ]


@pytest.mark.parametrize("case,arguments,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_clear_error_line(files, tmp_path, capsys, ledger, case, arguments, message):
    out = tmp_path / "out"
    words = [w.format(out=out, **{k: str(v) for k, v in files.items()}) for w in arguments.split()]
    command = words[0]
    with ledger.case(f"bad CLI input: {command}"):
        before = {p: p.stat().st_mtime_ns for p in files["gmm3"].rglob("*")}
        code = main(["--no-progress", *words])
        err = capsys.readouterr().err
        assert code == 2, (case, code, err)
        assert "Traceback" not in err and err.count("error:") == 1, err
        assert message in err, (case, err)
        assert not out.exists() or not any(out.rglob("*")), f"{case} left {sorted(out.rglob('*'))}"
        assert {p: p.stat().st_mtime_ns for p in files["gmm3"].rglob("*")} == before  # nothing else changed


def test_a_start_that_fails_leaves_no_run_that_blocks_the_corrected_command(tmp_path, capsys, ledger):
    """A run that fails at start-up writes nothing; one killed before its first checkpoint (a config and
    metrics but no checkpoint) is started again by the same command, not refused."""
    out = tmp_path / "run"
    with ledger.case("half-made run: the corrected command runs"):
        assert main(["--no-progress", "train", "--data", "gmm3", "--track", "gaussian", "--track-every", "2",
                     "--track-sigmas", "-1", "--out", str(out), *TINY]) == 2
        assert not out.exists()
        assert main(["--no-progress", "train", "--data", "gmm3", "--out", str(out), *TINY]) == 0
    with ledger.case("half-made run: the corrected command runs"):
        (out / "checkpoints").rename(tmp_path / "moved")  # as if killed before its first checkpoint
        (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n" + '{"step": 2, "lo')
        assert main(["--no-progress", "train", "--data", "gmm3", "--out", str(out), *TINY]) == 0
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), steps  # no step logged twice, no torn line kept
        capsys.readouterr()
