"""Beyond the Gaussian-score paper (its Sec. 8 suggestion): a UNet on top of the data's Gaussian
denoiser (`nets.GaussianResidual`, ``--model unet-gaussian``) against the same UNet with EDM's
usual ``c_skip x`` bypass, on `digits`, with the same budget and seeds.

    python examples/gaussian_residual.py [--steps 1500] [--every 250] [--out examples/figures]

Both runs share every setting except the bypass: seed 0, batch 128, lr 1e-3, EMA half-life 300
steps, UNet model_channels 32. At each checkpoint (EMA weights) we draw 500 samples from seeds
0-499 with 18 Heun steps. Each set is scored by the digits classifier (fraction of confident
samples) and by the Frechet distance of its features to the 360 held-out digits. The training
loss is averaged over each logging window.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scorelab.data.images import load_digits
from scorelab.metrics.digits import digits_quality
from scorelab.runs import checkpoints, load_denoiser
from scorelab.sample.generate import generate
from scorelab.train import TrainConfig, train


def run(model: str, steps: int, every: int, root: Path) -> tuple[Path, float]:
    config = TrainConfig(data="digits", model=model, steps=steps, batch_size=128, lr=1e-3, ema_halflife=300,
                         checkpoint_every=every, keep_checkpoints=steps // every + 1, log_every=50,
                         model_options={"model_channels": 32}, device="cpu")
    out = root / model
    t0 = time.perf_counter()
    if not (out / "config.json").exists():
        train(config, out, progress=False)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--runs", default="runs/gaussian-residual")
    parser.add_argument("--out", default="examples/figures")
    args = parser.parse_args()
    held_out = load_digits("test")
    results: dict = {}
    for model in ("unet", "unet-gaussian"):
        path, seconds = run(model, args.steps, args.every, Path(args.runs))
        losses = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rows = []
        for step, ckpt in checkpoints(path):
            denoiser, _ = load_denoiser(ckpt)
            x, _ = generate(denoiser, (1, 8, 8), list(range(500)))
            q = digits_quality(x.clamp(-1, 1), reference=held_out)
            window = [r["loss"] for r in losses if step - args.every < r["step"] <= step]
            rows.append({"step": step, "loss": sum(window) / len(window), "confident": q["confident_fraction"],
                         "frechet": q["frechet_distance"]})
        results[model] = {"train_seconds": seconds, "rows": rows}
    print(f"digits, UNet model_channels 32, batch 128, {args.steps} steps; 500 samples per checkpoint (18 Heun steps)")
    print("| step | loss (unet) | loss (unet-gaussian) | confident (unet) | confident (unet-gaussian) "
          "| Frechet (unet) | Frechet (unet-gaussian) |")
    print("|---|---|---|---|---|---|---|")
    for a, b in zip(results["unet"]["rows"], results["unet-gaussian"]["rows"]):
        print(f"| {a['step']} | {a['loss']:.4f} | {b['loss']:.4f} | {a['confident']:.3f} | {b['confident']:.3f} | "
              f"{a['frechet']:.2f} | {b['frechet']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gaussian_residual_digits.json").write_text(json.dumps(results, indent=1))
    figure(results, out / "gaussian_residual_digits.png")
    print(f"-> {out}")


def figure(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    for k, (key, label) in enumerate((("loss", "training loss"), ("confident", "confident fraction"),
                                      ("frechet", "Frechet distance to held-out"))):
        ax = fig.add_subplot(1, 3, k + 1)
        for model, res in results.items():
            ax.plot([r["step"] for r in res["rows"]], [r[key] for r in res["rows"]], marker="o", label=model)
        ax.set_xlabel("training step")
        ax.set_title(label)
        ax.legend()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
