"""Training throughput of the UNet on a GPU: float32 (TF32 convolutions) against bf16 autocast,
channels_last and torch.compile, measured in one process (the speed table of benchmarks/RESULTS.md).

    python benchmarks/bench_gpu_train.py [--sizes 32,64] [--batch 256] [--steps 40] [--no-compile]

The network is the noisy-shapes UNet (model_channels 32, 2.4 M parameters); one step is the
EDM loss, backward and an Adam update, as in ``scorelab.train``. Images/s and the ratio to the
float32 baseline of the same size are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from scorelab.losses import EDMLoss
from scorelab.nets import build_denoiser


def throughput(size: int, batch: int, steps: int, *, bf16: bool, channels_last: bool, compile_: bool) -> float:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_denoiser("unet", (1, size, size), 0.5, {"model_channels": 32}).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model) if compile_ else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = EDMLoss(0.5, -1.2, 1.2)
    data = torch.randn(4096, 1, size, size, device=device).contiguous(memory_format=fmt)
    generator = torch.Generator(device).manual_seed(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        idx = torch.randint(len(data), (batch,), generator=generator, device=device)
        with autocast:
            loss = loss_fn(net, data[idx], generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # the training loop reads the loss every step

    for _ in range(10 if not compile_ else 20):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, UNet model_channels 32")
    variants = {"float32 (TF32)": {}, "bf16 autocast": {"bf16": True},
                "bf16 + channels_last": {"bf16": True, "channels_last": True}}
    if not args.no_compile:
        variants["float32 (TF32) + compile"] = {"compile_": True}
        variants["bf16 + channels_last + compile"] = {"bf16": True, "channels_last": True, "compile_": True}
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"\n## {size}x{size}\n| setting | images/s | vs float32 |\n|---|---|---|")
        base = None
        for name, flags in variants.items():
            options = {"bf16": False, "channels_last": False, "compile_": False} | flags
            try:
                speed = throughput(size, args.batch, args.steps, **options)
            except Exception as e:  # noqa: BLE001 -- a setting that fails here is reported, not hidden
                print(f"| {name} | failed: {type(e).__name__}: {str(e)[:80]} | |")
                continue
            base = base or speed
            print(f"| {name} | {speed:.0f} | {speed / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
