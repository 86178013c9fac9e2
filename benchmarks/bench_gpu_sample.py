"""Sampling throughput of the UNet at 18 Heun steps: full float32 against TF32, bf16 autocast,
channels_last and torch.compile, measured in one process (the sampling table of benchmarks/RESULTS.md).

    python benchmarks/bench_gpu_sample.py [--sizes 32,64] [--batches 256,1024] [--steps 18] [--no-compile]

The network is the shipped noisy-shapes UNet (``shapes-noisy``, model_channels 32, 2.4 M
parameters; its weights fit the 32x32 and the 64x64 network), so that the samples are those of a
trained model. Per setting: images/s, the ratio to full float32 at the same size
and batch, and how far the samples move from the full-float32 ones from the same noise (RMS over
pixels, relative to the samples' RMS), so a fast setting that changes the samples shows it.
``--device cpu`` runs the same table on the CPU (for a quick check of the script).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from collections.abc import Iterator

import torch
from torch import Tensor

from scorelab.nets import build_denoiser
from scorelab.pretrained import pretrained_path
from scorelab.runs import load_denoiser
from scorelab.sample import heun
from scorelab.sample.common import full_float32
from scorelab.schedules import karras


@contextlib.contextmanager
def setting(device: torch.device, *, tf32: bool, bf16: bool) -> Iterator[None]:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with full_float32(not tf32), autocast, torch.no_grad():
        yield


def run(denoiser: torch.nn.Module, x: Tensor, sigmas: Tensor, repeats: int, **flags: bool) -> tuple[float, Tensor]:
    """Seconds per batch of Heun (after one warm-up pass) and the samples."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with setting(x.device, **flags):
        out = heun(denoiser, x, sigmas).float()
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            heun(denoiser, x, sigmas)
        sync()
    return (time.perf_counter() - t0) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--batches", default="256,1024")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"# {name}, torch {torch.__version__}, Heun {args.steps} steps "
          f"({2 * args.steps - 1} NFE), UNet model_channels 32")
    variants = {"full float32": {}, "TF32": {"tf32": True}, "bf16 autocast": {"bf16": True},
                "bf16 + channels_last": {"bf16": True, "channels_last": True}}
    if not args.no_compile:
        variants["TF32 + compile"] = {"tf32": True, "compile_": True}
        variants["bf16 + channels_last + compile"] = {"bf16": True, "channels_last": True, "compile_": True}
    sigmas = karras(args.steps, dtype=torch.float32).to(device)
    trained, meta = load_denoiser(pretrained_path("shapes-noisy"))
    for size in (int(s) for s in args.sizes.split(",")):
        model = build_denoiser("unet", (1, size, size), meta["config"]["sigma_data"], {"model_channels": 32})
        model.load_state_dict(trained.state_dict())
        model = model.to(device).eval()
        for batch in (int(b) for b in args.batches.split(",")):
            x = sigmas[0] * torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
            print(f"\n## {size}x{size}, batch {batch}\n| setting | images/s | vs full float32 | "
                  f"relative RMS change of the samples |\n|---|---|---|---|")
            base = reference = None
            for label, flags in variants.items():
                options = {"tf32": False, "bf16": False, "channels_last": False, "compile_": False} | flags
                fmt = torch.channels_last if options.pop("channels_last") else torch.contiguous_format
                net = model.to(memory_format=fmt)
                net = torch.compile(net) if options.pop("compile_") else net
                try:
                    seconds, out = run(net, x.contiguous(memory_format=fmt), sigmas, args.repeats, **options)
                except Exception as e:  # noqa: BLE001 -- a setting that fails here is reported, not hidden
                    print(f"| {label} | failed: {type(e).__name__}: {str(e)[:80]} | | |", flush=True)
                    continue
                speed = batch / seconds
                if base is None:
                    base, reference = speed, out
                change = ((out - reference).square().mean() / reference.square().mean()).sqrt().item()
                print(f"| {label} | {speed:.4g} | {speed / base:.2f}x | {change:.1e} |", flush=True)


if __name__ == "__main__":
    main()
