"""MAD beside its alternatives on the noisy-shapes models, and the order of the second-order MAD.

    python examples/mad_baselines.py shapes --model pretrained:shapes-noisy-32 --a 0.01 --b 1.5 --n 256 \
        --stops 0.5,0.75,1,1.5,2,3,4
    python examples/mad_baselines.py orders

``shapes``: on seeds ``0 .. n-1`` (tuning) it samples Heun, the early-stop baseline at every
``--stops`` level (Heun to sigma_stop then D(x, sigma_stop); and Heun to 0 then D(x_0, sigma_stop)),
then the ``--variants``: MAD at the given (a, b), the second-order ``mad-heun`` at the same (a, b)
with ``--steps`` and half as many steps, and MAD with (a, b) chosen by
``scorelab.sample.mad_tuning.auto_parameters`` from the noise variance of the Heun samples
(``--variants none``: Heun and the early stops alone). sigma_stop is chosen on the tuning seeds three
times, by the highest median correlation, the lowest RMSE and the lowest FD clean, for each of the
two early stops; then Heun, the chosen early stops and the variants are measured again on seeds
``n .. 2n-1``. Every set is measured by ``mad_shapes.measure`` (median best correlation, the raw
RMSE to the nearest clean rendering, shape fractions by the classifier, kept-from-Heun) and by
``metrics.shapes.clean_distances`` against a fresh clean draw (pixel-value W1, Frechet distance on
the classifier's features), which a blurred or grey image fails. Beside them: clean data, noisy data
and blurred clean data. Writes ``results.json``, ``table.md`` and, with ``mad`` among the variants,
``side_by_side.png`` (a column of noisy training-like data, then Heun, the early stop chosen by
correlation, MAD and, if run, automatic MAD on the same held-out seeds, one seed per row).

``orders``: ``degenerate5`` and ``anisotropic21`` with their exact denoisers in float64: the error of
the final samples of ``mad`` and ``mad-heun`` at 10, 20, 40, 80 steps against 2000-step references
(first-order, as the paper's algorithm, and second-order), the observed order, and the NFE each
needs for a given error.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from mad_shapes import measure, quantise

from scorelab import viz
from scorelab.data import shapes
from scorelab.data.toy import load
from scorelab.denoiser import Denoiser
from scorelab.metrics.shapes import clean_distances, gaussian_blur
from scorelab.runs import load_denoiser
from scorelab.sample import generate, mad, mad_heun
from scorelab.sample.mad_tuning import auto_parameters, gaussian_response, noise_variance
from scorelab.schedules import karras
from scorelab.train import resolve_device


def full_measure(x: torch.Tensor, reference: torch.Tensor, heun: torch.Tensor | None = None) -> dict:
    return measure(x, heun) | clean_distances(quantise(x), reference)


def denoise_at(denoiser: Denoiser, x: torch.Tensor, sigma: float, batch_size: int, device: torch.device) -> torch.Tensor:
    """D(x, sigma) a batch at a time: ``early-stop --from-end`` on samples already drawn with Heun
    (Heun's whole grid, then one more evaluation), without sampling them again."""
    with torch.no_grad():
        return torch.cat([denoiser(c.to(device), torch.full((len(c),), sigma, device=device)).cpu()
                          for c in x.split(batch_size)])


VARIANTS = ("mad", "mad-heun", "mad-heun-half", "auto")


def variant_list(text: str) -> tuple[str, ...]:
    names = () if text == "none" else tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return names


def row(name: str, s: dict, heun: float | None) -> str:
    fr = " ".join(f"{v:.2f}" for v in s["shape_fraction"].values())
    ratio = f"{s['median_correlation'] / heun:.2f}x" if heun else ""
    nfe = f"{s['nfe']:g}" if "nfe" in s else ""
    return (f"| {name} | {nfe} | {s['median_correlation']:.3f} | {ratio} | {s['median_rmse']:.3f} | "
            f"{s['pixel_w1']:.3f} | {s['frechet_clean']:.0f} | {fr} | {s['confident_fraction']:.2f} |")


HEADER = ("| sample set | NFE | median r | vs Heun | RMSE | pixel W1 | FD clean | L T arrow crescent | sure |\n"
          "|---|---|---|---|---|---|---|---|---|")


def shapes_benchmark(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    denoiser, meta = load_denoiser(args.model, device=device)
    shape = tuple(meta["data_shape"])
    size = shape[-1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sigmas = karras(args.steps)
    half = karras(args.steps // 2)
    mad_set = {"a": args.a, "b": args.b, "p": args.p}
    tuning, held_out = list(range(args.n)), list(range(args.n, 2 * args.n))
    reference = shapes.noisy_shapes(args.n, size=size, seed=54321).clean  # the clean draw all distances use
    data = shapes.noisy_shapes(args.n, size=size, seed=12345)
    settings = {k: v for k, v in vars(args).items() if k != "run"}
    results: dict = {"settings": settings | {"size": size, "device": str(device)}}
    lines = [HEADER]

    def save(*also: Path) -> None:
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
        (out / "table.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {', '.join(str(f) for f in (out / 'results.json', out / 'table.md', *also))}")

    def run(name: str, seeds: list[int], heun: torch.Tensor | None = None, **kw) -> torch.Tensor:
        t0 = time.perf_counter()
        x, nfe = generate(denoiser, shape, seeds, batch_size=args.batch_size, device=device, **kw)
        results[name] = full_measure(x, reference, heun) | {"nfe": nfe, "seconds": time.perf_counter() - t0}
        lines.append(row(name, results[name], results.get("heun" if seeds is tuning else "held-out heun",
                                                           {}).get("median_correlation")))
        print(lines[-1], flush=True)
        return x

    def then_denoise(name: str, x0: torch.Tensor, heun_name: str, sigma: float) -> None:
        x = denoise_at(denoiser, x0, sigma, args.batch_size, device)
        results[name] = full_measure(x, reference, x0) | {"nfe": results[heun_name]["nfe"] + 1}
        lines.append(row(name, results[name], results[heun_name]["median_correlation"]))
        print(lines[-1], flush=True)

    for name, x in (("clean data", data.clean), ("noisy data", data.noisy), ("blurred clean data", gaussian_blur(data.clean))):
        results[name] = full_measure(x, reference)
        lines.append(row(name, results[name], None))
        print(lines[-1], flush=True)

    heun = run("heun", tuning, sampler="heun", sigmas=sigmas)
    noise_var = noise_variance(quantise(heun))
    a_auto, b_auto = auto_parameters(noise_var, sigmas, args.p)
    auto_set = {"a": a_auto, "b": b_auto, "p": args.p}
    results["auto"] = {"noise_variance": noise_var, "a": a_auto, "b": b_auto,
                       "response_at_noise": float(gaussian_response(noise_var, sigmas, a_auto, b_auto, args.p)[0])}
    print(f"auto: noise variance {noise_var:.4g} -> a = {a_auto:.4g}, b = {b_auto:.4g}", flush=True)
    stops = [float(s) for s in args.stops.split(",")]
    names = {"early stop": "early stop {:g}", "heun, then D(x0, S)": "heun, then D(x0, {:g})"}
    for s in stops:
        run(names["early stop"].format(s), tuning, heun, sampler="early-stop", sigmas=sigmas, sigma_stop=s)
        then_denoise(names["heun, then D(x0, S)"].format(s), heun, "heun", s)
    variant_runs = {  # name in the table, generate's keywords, column title in the figure (if shown)
        "mad": (f"mad a={args.a:g} b={args.b:g}", {"sampler": "mad", "sigmas": sigmas} | mad_set, f"MAD a={args.a:g} b={args.b:g}"),
        "mad-heun": (f"mad-heun a={args.a:g} b={args.b:g}", {"sampler": "mad-heun", "sigmas": sigmas} | mad_set, None),
        "mad-heun-half": (f"mad-heun a={args.a:g} b={args.b:g}, {args.steps // 2} steps",
                          {"sampler": "mad-heun", "sigmas": half} | mad_set, None),
        "auto": ("mad auto", {"sampler": "mad", "sigmas": sigmas} | auto_set,
                 f"MAD auto (a={a_auto:.2g}, b={b_auto:.2g})"),
    }
    variants = [v for v in VARIANTS if v in args.variants]
    for v in variants:
        name, kw, _ = variant_runs[v]
        run(name, tuning, heun, **kw)

    # sigma_stop chosen on the tuning seeds by each measure; correlation alone rewards blur
    criteria = {"median_correlation": max, "median_rmse": min, "frechet_clean": min}
    chosen = {variant: {m: pick(stops, key=lambda s, m=m, name=name: results[name.format(s)][m])
                        for m, pick in criteria.items()} for variant, name in names.items()}
    results["chosen sigma_stop"] = chosen
    best_stop = chosen["early stop"]["median_correlation"]
    lines.append(f"| *held-out seeds {held_out[0]}-{held_out[-1]}* | | | | | | | | |")
    heun_h = run("held-out heun", held_out, sampler="heun", sigmas=sigmas)
    stop_h = {}
    for s in sorted(set(chosen["early stop"].values())):
        stop_h[s] = run("held-out " + names["early stop"].format(s), held_out, heun_h, sampler="early-stop",
                        sigmas=sigmas, sigma_stop=s)
    for s in sorted(set(chosen["heun, then D(x0, S)"].values())):
        then_denoise("held-out " + names["heun, then D(x0, S)"].format(s), heun_h, "held-out heun", s)
    columns = [data.noisy[:8], heun_h[:8], stop_h[best_stop][:8]]
    titles = ["noisy data (other draws)", "Heun", f"early stop {best_stop:g}"]
    for v in variants:
        name, kw, title = variant_runs[v]
        x = run(f"held-out {name}", held_out, heun_h, **kw)
        if title is not None:
            columns.append(x[:8])
            titles.append(title)
    if "mad" not in variants:
        return save()
    grid = torch.stack([quantise(c) for c in columns], 1).reshape(-1, *shape)  # one row per seed
    figure = viz.image_grid(grid, out / "side_by_side.png", nrow=len(columns), title=" | ".join(titles))
    results["figure"] = str(figure)
    save(figure)


def orders(args: argparse.Namespace) -> None:
    """Errors of mad and mad-heun against fine references on the paper's two Gaussian toys."""
    cases = {"degenerate5": {"a": 1.0, "b": 1.0, "p": 1.0}, "anisotropic21": {"a": 1.0, "b": 1.1, "p": 1.3}}
    steps = [10, 20, 40, 80]
    report: dict = {}
    for toy_name, params in cases.items():
        toy = load(toy_name, dtype=torch.float64)
        x = 80.0 * torch.randn(args.n_toy, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        kw = params | {"derivative": "exact"}
        fine = karras(2000, 0.002, 80.0).double()
        ref1, ref2 = mad(toy.denoiser, x, fine, **kw), mad_heun(toy.denoiser, x, fine, **kw)
        print(f"\n{toy_name} {params}, exact denoiser and derivative, float64, {args.n_toy} samples; "
              f"first- vs second-order 2000-step references differ by {float((ref1 - ref2).norm(dim=1).mean()):.2e}")
        print("| steps | mad NFE | mad error, mean / median (vs 1st-order ref) | mad-heun NFE | "
              "mad-heun error, mean / median (vs 2nd-order ref) |")
        print("|---|---|---|---|---|")
        rows = []
        for n in steps:
            g = karras(n, 0.002, 80.0).double()
            d1 = (mad(toy.denoiser, x, g, **kw) - ref1).norm(dim=1)
            d2 = (mad_heun(toy.denoiser, x, g, **kw) - ref2).norm(dim=1)
            e1, e2, m1, m2 = float(d1.mean()), float(d2.mean()), float(d1.median()), float(d2.median())
            rows.append({"steps": n, "mad_nfe": n, "mad_error": e1, "mad_median_error": m1, "mad_heun_nfe": 2 * n - 1,
                         "mad_heun_error": e2, "mad_heun_median_error": m2})
            print(f"| {n} | {n} | {e1:.3e} / {m1:.3e} | {2 * n - 1} | {e2:.3e} / {m2:.3e} |")
        o1, o2 = _order(rows, "mad_median_error"), _order(rows, "mad_heun_median_error")
        print(f"observed order of the median error (log2 of its ratio per doubling): mad {o1}, mad-heun {o2}; "
              f"of the mean: mad {_order(rows, 'mad_error')}, mad-heun {_order(rows, 'mad_heun_error')}")
        report[toy_name] = {"params": params, "rows": rows, "order_mad": o1, "order_mad_heun": o2}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "orders.json").write_text(json.dumps(report, indent=1))


def _order(rows: list[dict], key: str) -> list[float]:
    return [round(math.log2(rows[i][key] / rows[i + 1][key]), 2) for i in range(len(rows) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("shapes", help="the baselines on a noisy-shapes model")
    s.add_argument("--model", required=True, help="run directory, checkpoint file or pretrained:NAME")
    s.add_argument("--out", default="runs/mad-baselines")
    s.add_argument("--a", type=float, default=0.01, help="MAD's a (the grid's best point; default %(default)g)")
    s.add_argument("--b", type=float, default=1.5, help="MAD's b (default %(default)g)")
    s.add_argument("--p", type=float, default=8.0, help="MAD's p (default %(default)g)")
    s.add_argument("--stops", default="0.25,0.5,0.75,1,1.5", help="the sigma_stop levels scanned")
    s.add_argument("--variants", type=variant_list, default=VARIANTS,
                   help=f"the MAD sets beside the baselines, comma-separated from {','.join(VARIANTS)}, "
                        "or 'none' (default: all)")
    s.add_argument("--steps", type=int, default=32, help="Karras steps for every sampler (default %(default)s)")
    s.add_argument("--n", type=int, default=128, help="seeds per set, and as many held out (default %(default)s)")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--device", default="auto")
    s.set_defaults(run=shapes_benchmark)
    o = sub.add_parser("orders", help="convergence of mad and mad-heun on the exact toys")
    o.add_argument("--n-toy", type=int, default=500, help="samples per toy (default %(default)s)")
    o.add_argument("--out", default="runs/mad-baselines")
    o.set_defaults(run=orders)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
