"""Training throughput and sampling time of the core models, against the bare network cost.

    python benchmarks/bench_core.py [--device cpu|cuda] [--steps 200] [--demo]

For each model (the MLP on gmm3, the UNet on digits) it prints:
- training throughput of ``scorelab.train``'s step (examples/s), and the ratio to a bare
  forward+backward+Adam step of the same network on the same batch (the baseline, same process);
- sampling time per 1 000 samples at 18 Heun steps (35 NFE), and the ratio to 35 bare
  network evaluations of a 1 000 batch (the sampler's overhead).

With ``--demo`` the models are ``scorelab demo``'s own (networks, batch sizes, steps), and it also
prints each training phase's bare cost (steps x the bare step) beside the phase the demo would take
at the measured step time: what is left of the demo's time once the network itself is paid for.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from scorelab.data import load_dataset
from scorelab.losses import EDMLoss
from scorelab.sample.generate import generate
from scorelab.train import TrainConfig, _step, build_state, resolve_config, resolve_device

MODELS = {
    "mlp/gmm3": TrainConfig(data="gmm3", model="mlp", batch_size=256, n_data=100_000),
    "unet/digits": TrainConfig(data="digits", model="unet", batch_size=128, model_options={"model_channels": 32}),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def bench(name: str, config: TrainConfig, device: torch.device, steps: int) -> dict[str, float]:
    config.device = str(device)
    data = load_dataset(config.data, n=config.n_data)
    config = resolve_config(config, data)
    data = data.to(device)
    state = build_state(config, data, device)
    loss_fn = EDMLoss(config.sigma_data, config.P_mean, config.P_std)
    t_step = timed(lambda: _step(state, data, loss_fn, config), steps, device)

    x, c_noise = data[: config.batch_size], torch.zeros(config.batch_size, device=device)
    net, opt = state.model.net, torch.optim.Adam(state.model.net.parameters())

    def bare_step() -> None:
        opt.zero_grad()
        net(x, c_noise).square().mean().backward()
        opt.step()

    t_bare = timed(bare_step, steps, device)
    denoiser = state.ema.eval()
    shape = tuple(data.shape[1:])
    n = 1000
    t_sample = timed(lambda: generate(denoiser, shape, list(range(n)), batch_size=n, device=device), 2, device)
    xs, cs = torch.randn(n, *shape, device=device), torch.zeros(n, device=device)
    with torch.no_grad():
        t_eval = timed(lambda: net(xs, cs), 5, device)
    return {"train_ex_s": config.batch_size / t_step, "train_ratio": t_step / t_bare,
            "sample_s_per_1000": t_sample, "sample_ratio": t_sample / (35 * t_eval)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--demo", action="store_true", help="the demo's networks and batch sizes")
    args = parser.parse_args()
    models = MODELS
    if args.demo:
        from dataclasses import replace

        from scorelab.demo import DIGITS, GMM3

        models = {"mlp/gmm3 (demo)": replace(GMM3), "unet/digits (demo)": replace(DIGITS)}
    device = resolve_device(args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device {device} ({machine}), torch {torch.__version__}")
    print(f"{'model':<12} {'train ex/s':>11} {'vs bare step':>13} {'s/1000 samples':>15} {'vs 35 bare evals':>17}")
    for name, config in models.items():
        total = config.steps
        r = bench(name, config, device, args.steps)
        print(f"{name:<12} {r['train_ex_s']:>11.0f} {r['train_ratio']:>12.2f}x {r['sample_s_per_1000']:>15.3f} "
              f"{r['sample_ratio']:>16.2f}x")
        if args.demo:
            step = config.batch_size / r["train_ex_s"]
            print(f"    {total} steps: {total * step / r['train_ratio']:.0f} s of bare steps, "
                  f"{total * step:.0f} s of training steps")


if __name__ == "__main__":
    main()
