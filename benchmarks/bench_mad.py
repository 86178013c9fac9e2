"""Wall time of MAD against Heun and Euler at equal steps, on the core networks.

    python benchmarks/bench_mad.py [--device cpu|cuda] [--steps 18] [--repeats 3]

Untrained networks of the demo's sizes (the cost does not depend on the weights): the MLP on
2-D points (batch 4096) and the UNet on 8x8 digits (batch 256). Per sampler: seconds per batch,
NFE per sample, and the ratio to Heun measured in the same process. On CUDA every sampler runs in
full float32 (no TF32, as ``generate`` runs MAD) and the 64x64 shapes UNet is added. MAD evaluates its two
sigmas as one call on a doubled batch (forward, central) or by one forward-mode JVP (exact).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from scorelab.nets import build_denoiser
from scorelab.sample import CountNFE, euler, heun, mad
from scorelab.sample.common import full_float32
from scorelab.schedules import karras

CASES = {
    "mlp, 2-D, batch 4096": ("mlp", (2,), 4096, {}),
    "unet, 1x8x8, batch 256": ("unet", (1, 8, 8), 256, {"model_channels": 32}),
}
GPU_CASES = {"unet, 1x64x64, batch 256 (the shapes model)": ("unet", (1, 64, 64), 256, {"model_channels": 32})}
SAMPLERS = {
    "heun": lambda d, x, s: heun(d, x, s),
    "euler": lambda d, x, s: euler(d, x, s),
    "mad forward": lambda d, x, s: mad(d, x, s, a=1, b=1, p=8, derivative="forward"),
    "mad central": lambda d, x, s: mad(d, x, s, a=1, b=1, p=8, derivative="central"),
    "mad exact": lambda d, x, s: mad(d, x, s, a=1, b=1, p=8, derivative="exact"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {device}")
    sigmas = karras(args.steps, dtype=torch.float32).to(device)
    cases = CASES | GPU_CASES if device.type == "cuda" else CASES
    for case, (model, shape, batch, options) in cases.items():
        torch.manual_seed(0)
        denoiser = build_denoiser(model, shape, 0.5, options).to(device).eval()
        x = sigmas[0] * torch.randn(batch, *shape, device=device)
        print(f"\n## {case}, {args.steps} steps")
        print("| sampler | s / batch | NFE / sample | vs heun |")
        print("|---|---|---|---|")
        base = None
        for name, sampler in SAMPLERS.items():
            counted = CountNFE(denoiser)
            with torch.no_grad(), full_float32():
                sampler(counted, x, sigmas)  # warm-up, and the NFE count
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.repeats):
                    sampler(denoiser, x, sigmas)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            seconds = (time.perf_counter() - t0) / args.repeats
            base = base or seconds
            print(f"| {name} | {seconds:.3f} | {counted.nfe(batch):g} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
