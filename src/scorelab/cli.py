"""The ``scorelab`` command: train, sample, demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError
from .data import DataError


def _model_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with JSON values (e.g. ``width=128``, ``channel_mult=[1,2]``)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--model-option must look like KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import is_main
    from .runs import read_config
    from .train import TrainConfig, train

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name != "model_options" and getattr(args, f.name, None) is not None}
    if args.model_option:
        given["model_options"] = _model_options(args.model_option)
    if args.track is not None:
        given["track"] = [t.strip() for t in args.track.split(",") if t.strip()]
    if args.track_sigmas is not None:
        given["track_sigmas"] = _floats(args.track_sigmas, "--track-sigmas")
    if args.resume:
        config = TrainConfig.from_dict(read_config(Path(args.out)))
        for key, value in given.items():
            setattr(config, key, value)
    else:
        config = TrainConfig(**given)
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    if is_main():  # under torchrun, rank 0 speaks for all
        print(f"{'stopped' if result.interrupted else 'trained'} {result.run} to step {result.step}; "
              f"checkpoint {result.checkpoint}")
    return 130 if result.interrupted else 0


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} takes comma-separated numbers, got {text!r}") from None


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .distributed import device_for, is_main
    from .runs import load_codec, load_denoiser
    from .sample.generate import generate_sharded
    from .train import resolve_device

    if (args.run is None) == (args.pretrained is None):
        raise ValueError("give either a run directory / checkpoint file or --pretrained NAME")
    if args.pretrained is not None:
        from .pretrained import pretrained_path

        source = pretrained_path(args.pretrained)
        default_root = Path("samples") / args.pretrained
    else:
        source = Path(args.run)
        default_root = source / "samples" if source.is_dir() else source.parent / "samples"
    device = device_for(resolve_device(args.device))  # under torchrun: the local rank's GPU
    denoiser, meta = load_denoiser(source, weights=args.weights, device=device)
    codec = load_codec(source, meta)  # a latent run: sample codes, then decode them (scorelab.latent)
    seeds = list(range(args.seed, args.seed + args.n))
    settings = {"steps": args.steps, "sigma_min": args.sigma_min, "sigma_max": args.sigma_max, "rho": args.rho,
                "batch_size": args.batch_size, "device": device, "progress": not args.no_progress}
    options: dict[str, Any] = {"S_churn": args.churn} if args.sampler == "heun" and args.churn else {}
    if args.sampler == "mad":
        options = {"a": args.a, "b": args.b, "p": args.p, "delta": args.delta, "derivative": args.derivative}
    if args.sampler == "annealed-langevin":
        options = _langevin_settings(args, meta) | {"denoise_last": args.denoise_last}
    if args.teleport is not None:
        settings.update(_teleport_settings(args, source, denoiser, meta, device))
    name = f"{args.sampler}-{args.steps}-seed{args.seed}" + (f"-skip{settings['skip']}" if settings.get("skip") else "")
    out = Path(args.out) if args.out else default_root / name
    if args.grid:
        if args.sampler != "mad":
            raise ValueError("--grid sweeps MAD's parameters: use it with --sampler mad")
        return _sample_grid(denoiser, meta, seeds, settings, options, _parse_grid(args.grid),
                            Path(args.out) if args.out else default_root / f"{name}-grid", codec)
    samples, nfe = generate_sharded(denoiser, meta["data_shape"], seeds, sampler=args.sampler, **settings,
                                    **options)  # under torchrun: seeds split over the ranks, rank 0 writes
    _check_finite(samples)
    if not is_main():
        return 0
    codes = {"codes": samples.numpy()} if codec is not None else {}
    samples = codec.decode(samples) if codec is not None else samples  # not clipped, as in data space
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples.npz", samples=samples.numpy(), seeds=np.array(seeds), nfe=nfe, **codes,
             settings=json.dumps({k: v for k, v in vars(args).items() if k != "func"}))
    figure = _sample_figure(samples, meta["config"]["data"], out / "samples.png")
    print(f"{len(samples)} samples ({args.sampler}, {args.steps} steps, NFE {nfe:g} per sample) -> "
          f"{out / 'samples.npz'}; figure {figure}")
    return 0


def _teleport_settings(args: argparse.Namespace, source: Path, denoiser: Any, meta: dict, device: Any) -> dict:
    """``skip`` and ``gaussian`` for ``generate``: the Gaussian of the run's training data, and for
    ``--teleport auto`` the number of steps from ``sample.auto_skip``, measured once on 64 probe
    seeds and cached in the run directory (``teleport.json``)."""
    import torch

    from .analytic import Gaussian
    from .runs import training_data
    from .sample import auto_skip, noise_for_seeds
    from .schedules import karras

    data = training_data(source, meta)  # codes for a latent run
    gaussian = Gaussian.fit(data).to(device)
    if args.teleport != "auto":
        try:
            return {"skip": int(args.teleport), "gaussian": gaussian}
        except ValueError:
            raise ValueError(f"--teleport takes a number of steps or 'auto', got {args.teleport!r}") from None
    sigmas = karras(args.steps, args.sigma_min, args.sigma_max, args.rho)
    key = (f"{meta.get('step')}:{args.weights}:steps={args.steps}:sigma={args.sigma_min:g}-{args.sigma_max:g}:"
           f"rho={args.rho:g}:threshold={args.teleport_threshold:g}")
    cache = (source if source.is_dir() else source.parent) / "teleport.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        probe, _ = noise_for_seeds(range(1_000_000, 1_000_064), meta["data_shape"], device=device)
        with torch.no_grad():
            known[key] = auto_skip(denoiser, gaussian, probe * sigmas[0], sigmas, args.teleport_threshold)
        from .checkpoint import atomic_write_text

        atomic_write_text(cache, json.dumps(known, indent=2))
    print(f"teleport: skipping {known[key]} of {args.steps} steps (auto, threshold {args.teleport_threshold:g}; "
          f"cached in {cache})")
    return {"skip": int(known[key]), "gaussian": gaussian}


def _parse_grid(spec: str) -> list[dict[str, float]]:
    """``'a=1,2;b=5,10'`` -> every combination, ``[{'a': 1, 'b': 5}, {'a': 1, 'b': 10}, ...]``."""
    import itertools

    axes = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, sep, values = part.partition("=")
        if not sep or key.strip() not in ("a", "b", "p", "delta"):
            raise ValueError(f"--grid parts look like a=1,2 (keys a, b, p, delta), got {part!r}")
        try:
            axes[key.strip()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--grid values must be numbers, got {part!r}") from None
        if not axes[key.strip()]:
            raise ValueError(f"--grid {key.strip()} has no values")
    if not axes:
        raise ValueError(f"--grid is empty: {spec!r}")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _sample_grid(denoiser: Any, meta: dict, seeds: list[int], settings: dict, options: dict,
                 grid: list[dict[str, float]], out: Path, codec: Any = None) -> int:
    """Standard Heun and MAD at every grid point, all from the same seeds; one npz and one figure.
    A latent run's codes are decoded by ``codec``."""
    import numpy as np
    import torch

    from .sample.generate import generate

    shape = meta["data_shape"]
    decode = codec.decode if codec is not None else (lambda z: z)
    rows = {"heun": decode(generate(denoiser, shape, seeds, sampler="heun", **settings)[0])}
    for point in grid:
        samples, _ = generate(denoiser, shape, seeds, sampler="mad", **settings, **(options | point))
        _check_finite(samples)
        rows[", ".join(f"{k}={v:g}" for k, v in point.items())] = decode(samples)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "grid.npz", samples=torch.stack(list(rows.values())).numpy(), labels=np.array(list(rows)),
             seeds=np.array(seeds), settings=json.dumps(options | {"grid": grid}))
    figure = _grid_figure(rows, meta["config"]["data"], out / "grid.png")
    print(f"{len(rows)} sample sets (Heun, then MAD at {len(grid)} parameter points; {len(seeds)} seeds each, "
          f"{settings['steps']} steps) -> {out / 'grid.npz'}; figure {figure}")
    return 0


def _grid_figure(rows: dict[str, Any], data: str, path: Path) -> Path:
    import torch

    from . import viz
    from .data import toy

    first = next(iter(rows.values()))
    if first.ndim == 4:  # one row per sampler setting, one column per seed
        n = min(len(first), 16)
        return viz.image_grid(torch.cat([r[:n] for r in rows.values()]), path, nrow=n,
                              title="rows: " + " | ".join(rows))
    log_prob = toy.load(data).log_prob if data in toy.NAMES else None
    return viz.scatter_panels({k: v[:, :2] for k, v in rows.items()}, path, log_prob=log_prob, title=data)


def _check_finite(samples: Any) -> None:
    import torch

    if not bool(torch.isfinite(samples).all()):
        raise RuntimeError("the sampler produced non-finite values; check the checkpoint and the sigma range")


def _sample_figure(samples: Any, data: str, path: Path) -> Path:
    from . import viz
    from .data import toy

    if samples.ndim == 4:
        return viz.image_grid(samples[:100], path)
    if samples.shape[1] == 2:
        log_prob = toy.load(data).log_prob if data in toy.NAMES else None
        return viz.scatter_2d(samples, path, log_prob=log_prob, title=data)
    return viz.scatter_2d(samples[:, :2], path, title=f"{data} (first two coordinates)")


def _read_mask(spec: str, shape: Sequence[int]) -> Any:
    """The inpainting mask (1 known, 0 unknown) for images of ``shape`` (C, H, W): a side name (the
    unknown half) or a .npy file of 0/1 or a PNG (white = known), of shape (H, W) or (C, H, W)."""
    import numpy as np
    import torch

    from .sample.inpaint import side_mask

    if spec in ("top", "bottom", "left", "right"):
        return side_mask(shape, spec)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--mask takes top, bottom, left, right or a .npy/.png file; {spec!r} is none of these")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(path) as im:
            array = (np.asarray(im.convert("L")) > 127).astype(np.float32)
    mask = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if tuple(mask.shape) not in (tuple(shape[1:]), tuple(shape)):
        raise ValueError(f"{path}: mask of shape {tuple(mask.shape)}; images need {tuple(shape[1:])} or "
                         f"{tuple(shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{path}: the mask must hold only 0 (unknown) and 1 (known)")
    return mask.expand(shape).clone()


def cmd_inpaint(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import viz
    from .data import load_dataset
    from .runs import load_denoiser
    from .sample.common import generators_for_seeds
    from .sample.inpaint import inpaint
    from .schedules import karras
    from .train import resolve_device

    device = resolve_device(args.device)
    denoiser, meta = load_denoiser(args.run, weights=args.weights, device=device)
    if meta["config"].get("latent"):
        raise ValueError(f"{args.run} is a model of PCA codes ({meta['config']['latent']}); inpainting needs a "
                         "model of the pixels")
    spec = args.images or meta["config"]["data"]
    images = load_dataset(spec)[args.first:args.first + args.n]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"{spec}: inpainting needs images (N, C, H, W); got shape {tuple(images.shape)}")
    if tuple(images.shape[1:]) != tuple(meta["data_shape"]):
        raise ValueError(f"{spec}: images of shape {tuple(images.shape[1:])}, the model's are {meta['data_shape']}")
    mask = _read_mask(args.mask, images.shape[1:])
    seeds = list(range(args.seed, args.seed + len(images)))
    if args.sampler == "heun":
        options: dict[str, Any] = {"sigmas": karras(args.steps, args.sigma_min, args.sigma_max, args.rho)}
    else:
        options = _langevin_settings(args, meta) | {"denoise_last": not args.no_denoise_last}
    with torch.no_grad():
        out = inpaint(denoiser, images.to(device), mask.to(device), sampler=args.sampler,
                      generator=generators_for_seeds(seeds, device), **options).cpu()
    _check_finite(out)
    unknown = mask == 0
    rmse = float(((out - images)[:, unknown].pow(2).mean(dim=1).sqrt()).mean())
    run = Path(args.run)
    name = f"{args.sampler}-{Path(args.mask).stem}-seed{args.seed}"
    target = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "inpaint" / name
    target.mkdir(parents=True, exist_ok=True)
    np.savez(target / "inpainted.npz", inpainted=out.numpy(), original=images.numpy(), mask=mask.numpy(),
             seeds=np.array(seeds), rmse_unknown=rmse,
             settings=json.dumps({k: v for k, v in vars(args).items() if k != "func"}))
    shown = min(len(images), 16)
    masked = torch.where(mask.bool(), images, torch.zeros_like(images))
    figure = viz.image_grid(torch.cat([images[:shown], masked[:shown], out[:shown]]), target / "inpainted.png",
                            nrow=shown, title=f"original, known part (mask {args.mask}), {args.sampler}")
    print(f"{len(images)} images of {spec} inpainted ({args.sampler}, mask {args.mask}): RMSE on the unknown "
          f"pixels {rmse:.4f} -> {target / 'inpainted.npz'}; figure {figure}")
    return 0


def cmd_data_shapes(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import viz
    from .checkpoint import atomic_write
    from .data import shapes

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    corruption = {k: getattr(args, k) for k in ("n_bumps", "bump_width", "bump_depth", "noise_std")
                  if getattr(args, k) is not None}
    data = shapes.noisy_shapes(args.n, size=args.size, seed=args.seed, **corruption)
    noisy = np.rint((data.noisy.numpy() + 1) * 127.5).astype(np.uint8)  # the 8-bit levels, exactly

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, images=noisy, clean=data.clean.numpy(), shape_index=data.shape_index.numpy(),
                     angles=data.angles.numpy(), params=json.dumps(data.params))

    atomic_write(out, write)
    figure = viz.image_grid(torch.cat([data.clean[:8], data.noisy[:8]]), out.with_suffix(".png"), nrow=8,
                            title="clean (top) and noisy (bottom)")
    print(f"{args.n} noisy {args.size}x{args.size} shapes -> {out} (train with --data {out}); preview {figure}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .runs import export_weights

    out = export_weights(args.run, args.out, weights=args.weights, dtype=args.dtype)
    print(f"{args.weights} weights of {args.run} as {args.dtype} -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _parse_seeds(text: str | None, n: int) -> list[int]:
    """``--seeds A-B`` (inclusive) as a list, which must hold exactly ``n`` seeds; None means 0 .. n-1."""
    if n < 2:
        raise ValueError(f"--n must be at least 2, got {n}")
    if text is None:
        return list(range(n))
    first, sep, last = text.partition("-")
    if not (sep and first.strip().isdigit() and last.strip().isdigit()):
        raise ValueError(f"--seeds takes an inclusive range A-B of non-negative integers (e.g. 0-49999), got {text!r}")
    a, b = int(first), int(last)
    if b < a:
        raise ValueError(f"--seeds {text}: the range is empty (B < A)")
    if b - a + 1 != n:
        raise ValueError(f"--seeds {text} holds {b - a + 1} seeds but --n is {n}")
    return list(range(a, b + 1))


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_text
    from .data import load_dataset
    from .distributed import device_for, is_main
    from .metrics import fid
    from .runs import load_codec, load_denoiser
    from .train import resolve_device

    seeds = _parse_seeds(args.seeds, args.n)
    weights = fid.resolve_inception_weights(args.inception_weights)  # before any slow work
    device = device_for(resolve_device(args.device))  # under torchrun: the local rank's GPU
    denoiser, meta = load_denoiser(args.run, weights=args.weights, device=device)
    codec = load_codec(args.run, meta)  # a latent run: features of the decoded images
    extractor = fid.inception_extractor(weights, device)
    settings = {"sampler": args.sampler, "steps": args.steps, "sigma_min": args.sigma_min,
                "sigma_max": args.sigma_max, "rho": args.rho, "device": device, "progress": not args.no_progress}
    features = fid.sharded_features(denoiser, meta["data_shape"], seeds, extractor, codec=codec,
                                    batch_size=args.batch_size, **settings)  # under torchrun: seed blocks per rank
    if not is_main():  # rank 0 measures and writes
        return 0
    reference = load_dataset(args.ref)
    n_ref = len(reference) if args.ref_n is None else min(args.ref_n, len(reference))
    key = fid.reference_key(args.ref, n_ref, fid.INCEPTION_NAME + ":2048", weights)
    stats = fid.cached_reference(key, lambda: fid.image_features(reference, extractor, args.batch_size, n_ref))
    value = fid.metric_from_features(features, stats, args.metric)
    seed_text = f"{seeds[0]}-{seeds[-1]}"
    result = {"metric": args.metric, "value": value, "n": len(seeds), "seeds": seed_text, "reference": args.ref,
              "reference_n": n_ref, "weights": args.weights, "sampler": args.sampler, "steps": args.steps}
    run = Path(args.run)
    out = Path(args.out) if args.out else ((run if run.is_dir() else run.parent) / "eval" /
                                           f"{args.metric}-{args.sampler}-{args.steps}-seeds{seed_text}.json")
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"{args.metric.upper()} {value:.6g} ({len(seeds)} samples, seeds {seed_text}, {args.sampler} "
          f"{args.steps} steps; reference {args.ref}, {n_ref} images) -> {out}")
    return 0


def _run_and_data(run: str, device: Any) -> tuple[Any, dict, Any]:
    from .runs import load_denoiser, training_data

    denoiser, meta = load_denoiser(run, device=device)
    data = training_data(run, meta)  # codes for a latent run: the analyses work in the model's space
    return denoiser, meta, data


def _analysis_dir(args: argparse.Namespace, name: str) -> Path:
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "analysis" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_analyze_gaussianity(args: argparse.Namespace) -> int:
    from .analysis import DEFAULT_SIGMAS, plot_unexplained, standard_candidates, unexplained_variance
    from .train import resolve_device

    device = resolve_device(args.device)
    denoiser, _meta, data = _run_and_data(args.run, device)
    ranks = [None if r == "full" else int(r) for r in args.ranks.split(",")]
    candidates = {k: v.to(device) for k, v in
                  standard_candidates(data, n_components=args.components, ranks=ranks).items()}
    sigmas = _floats(args.sigmas, "--sigmas") if args.sigmas else DEFAULT_SIGMAS
    result = unexplained_variance(denoiser, candidates, data, sigmas, n=args.n, device=device)
    out = _analysis_dir(args, "gaussianity")
    result.to_csv(out / "unexplained.csv")
    plot_unexplained(result, out / "unexplained_score.png", title=f"{args.run}: score")
    plot_unexplained(result, out / "unexplained_denoiser.png", measure="denoiser", title=f"{args.run}: denoiser")
    eig = ", ".join(f"{v:.3g}" for v in result.eigenvalues[:5].sqrt().tolist())
    print(f"fraction of the network's score left unexplained (mean of {args.n} points); sqrt top eigenvalues: {eig}")
    for query in result.score:
        print(f"\n{query} queries\n{'sigma':>8} " + " ".join(f"{n:>10}" for n in result.names))
        for i, sigma in enumerate(result.sigmas.tolist()):
            print(f"{sigma:8g} " + " ".join(f"{float(result.mean(n, query)[i]):10.3g}" for n in result.names))
    print(f"-> {out} (unexplained.csv, unexplained_score.png, unexplained_denoiser.png)")
    return 0


def cmd_analyze_trajectories(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import viz
    from .analysis import plot_trajectory_deviation, trajectory_deviation
    from .analysis.dynamics import tracked_candidates
    from .sample import noise_for_seeds
    from .schedules import karras
    from .train import resolve_device

    device = resolve_device(args.device)
    denoiser, meta, data = _run_and_data(args.run, device)
    reference = tracked_candidates(data, [args.reference])[args.reference].to(device)
    sigmas = karras(args.steps, args.sigma_min, args.sigma_max).to(device)
    noise, _ = noise_for_seeds(range(args.seed, args.seed + args.n), meta["data_shape"], device=device)
    result = trajectory_deviation(denoiser, reference, noise * sigmas[0], sigmas)
    out = _analysis_dir(args, f"trajectories-{args.reference}")
    np.savez(out / "trajectories.npz", sigmas=result.sigmas.numpy(), state_distance=result.state_distance.numpy(),
             denoised_distance=result.denoised_distance.numpy())
    print(f"network Heun path against {args.reference} from the same noise ({args.n} seeds): mean distance per step")
    print(f"{'sigma':>9} {'state':>10} {'denoised':>10}")
    for i, sigma in enumerate(result.sigmas.tolist()):
        print(f"{sigma:9.4g} {float(result.state_distance[i].mean()):10.4g} "
              f"{float(result.denoised_distance[i].mean()):10.4g}")
    plot_trajectory_deviation(result, out / "deviation.png", args.reference)
    if len(meta["data_shape"]) == 3:  # images: the final samples of both, seed by seed
        k = min(args.n, 12)
        viz.image_grid(torch.cat([result.states[-1][:k], result.reference_states[-1][:k]]),
                       out / "final_samples.png", nrow=k, title=f"network (top) and {args.reference} (bottom)")
    print(f"-> {out}")
    return 0


def cmd_analyze_field(args: argparse.Namespace) -> int:
    from .analysis.dynamics import tracked_candidates
    from .analysis.field import plot_score_field, score_field_plane
    from .train import resolve_device

    device = resolve_device(args.device)
    denoiser, _, data = _run_and_data(args.run, device)
    try:
        idx = [int(i) for i in args.anchors.split(",")]
    except ValueError:
        raise ValueError(f"--anchors takes three training-image indices, e.g. 0,1,2; got {args.anchors!r}") from None
    if len(idx) != 3 or not all(0 <= i < len(data) for i in idx):
        raise ValueError(f"--anchors takes three indices in [0, {len(data) - 1}], got {args.anchors!r}")
    models = {"network": denoiser} | {k: v.to(device) for k, v in
                                      tracked_candidates(data, args.models.split(",")).items()}
    field = score_field_plane(models, data[idx].to(device), args.sigma, grid=args.grid)
    out = _analysis_dir(args, "field")
    path = plot_score_field(field, out / f"field_{args.anchors.replace(',', '-')}_sigma{args.sigma:g}.png")
    print(f"score on the plane through training images {args.anchors} at sigma {args.sigma:g} -> {path}")
    return 0


def cmd_analyze_dynamics(args: argparse.Namespace) -> int:
    from .analysis.dynamics import plot_dynamics, read_dynamics

    out = _analysis_dir(args, "dynamics")
    for (query, name, sigma), (steps, values) in sorted(read_dynamics(args.run).items()):
        shown = sorted({0, len(steps) // 8, len(steps) // 4, len(steps) // 2, len(steps) - 1})
        print(f"{query:>5} {name:>10} sigma={sigma:<6g} " + " ".join(f"{steps[i]}:{values[i]:.3g}" for i in shown))
    print(f"-> {plot_dynamics(args.run, out / 'dynamics.png', title=str(args.run))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick, progress=not args.no_progress)
    return 0


def _karras_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--steps``, ``--sigma-min``, ``--sigma-max``, ``--rho``: the Karras grid of the ODE samplers (EDM's defaults)."""
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--sigma-min", type=float, default=0.002)
    parser.add_argument("--sigma-max", type=float, default=80.0)
    parser.add_argument("--rho", type=float, default=7.0)


def _langevin_options(group: argparse._ArgumentGroup) -> None:
    """``--levels``, ``--eps``, ``--steps-per-level``: annealed Langevin dynamics (NCSN's defaults)."""
    group.add_argument("--levels", help="noise levels KIND:SIGMA_MAX:SIGMA_MIN:L (default: the run's --levels)")
    group.add_argument("--eps", type=float, default=2e-5, help="step size at the last level (default 2e-5)")
    group.add_argument("--steps-per-level", type=int, default=100, help="Langevin steps per level (default 100)")


def _langevin_settings(args: argparse.Namespace, meta: dict) -> dict[str, Any]:
    """Annealed Langevin's ``levels`` (given, else the run's, else NCSN's), ``eps`` and ``steps_per_level``."""
    from .schedules import parse_levels

    spec = args.levels or meta["config"].get("levels") or "geometric:1:0.01:10"
    return {"levels": parse_levels(spec), "eps": args.eps, "steps_per_level": args.steps_per_level}


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="scorelab", description="Train, sample and dissect score-based "
                                     "diffusion models (EDM denoiser convention).")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a denoiser into a run directory")
    p.add_argument("--data", help=f"toy name, 'digits', a .npy/.npz file or an image folder (default {defaults.data})")
    p.add_argument("--model", help="mlp or unet; mlp-gaussian or unet-gaussian for the network on top of the "
                   f"data's Gaussian denoiser (nets.GaussianResidual) (default {defaults.model})")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    for name, kind in [("steps", int), ("batch_size", int), ("lr", float), ("warmup", int),
                       ("ema_halflife", float), ("seed", int), ("sigma_data", float), ("P_mean", float),
                       ("P_std", float), ("n_data", int), ("checkpoint_every", int), ("keep_checkpoints", int),
                       ("log_every", int), ("track_every", int)]:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                       help=f"default {getattr(defaults, name)}")
    p.add_argument("--loss", help="edm (default), ncsn, ncsn-continuous (over --levels), ssm, ssm-vr, esm "
                   "(sliced, variance-reduced sliced and exact score matching)")
    p.add_argument("--levels", help=f"NCSN noise levels KIND:SIGMA_MAX:SIGMA_MIN:L, KIND geometric, linear or sqrt "
                   f"(default {defaults.levels})")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="network option, e.g. width=128 or channel_mult=[1,2] (repeatable)")
    p.add_argument("--track", metavar="MODELS", help="analytical models to compare the network with every "
                   "--track-every steps, e.g. gaussian,gmm10,delta (metrics fuv/MODEL/SIGMA in metrics.jsonl)")
    p.add_argument("--track-sigmas", metavar="S1,S2,..", help="noise levels for --track (default 0.1,1,10)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="fp32 (default: fastest for the UNets measured, "
                   "benchmarks/RESULTS.md) or bf16 autocast of the forward pass")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training forward pass")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log to RUN/tensorboard: the metrics, and EMA samples at checkpoints (an image grid, or a scatter plot of vectors)")
    p.add_argument("--init", metavar="SOURCE", help="fine-tune: start the model and its EMA from the EMA weights of "
                   "SOURCE (a run directory, a checkpoint or exported weights file, or pretrained:NAME; the same "
                   "network), with a fresh optimizer and step count (EDM's --transfer)")
    p.add_argument("--latent", metavar="SPEC", help="train on PCA codes of the data (scorelab.latent): pca:K "
                   "components, pca:0.95 (explained-variance fraction) or pca:elbow, optionally :whiten; use a "
                   "vector model (mlp, ncsn-mlp); sample decodes to images")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample from a trained run")
    p.add_argument("run", nargs="?", help="run directory or checkpoint file")
    p.add_argument("--pretrained", metavar="NAME", help="a checkpoint shipped with scorelab instead of RUN: "
                   "shapes-noisy (UNet trained on noisy 64x64 shapes; use --sampler mad)")
    p.add_argument("--sampler", default="heun", choices=["heun", "euler", "mad", "annealed-langevin"])
    _karras_options(p)
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=1000,
                   help="number of samples (seeds seed .. seed+n-1); --num-samples under torchrun, whose own "
                   "options swallow --n")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--churn", type=float, default=0.0, help="EDM S_churn (Heun only)")
    ald = p.add_argument_group("annealed Langevin (--sampler annealed-langevin; Song & Ermon 2019, Algorithm 1)")
    _langevin_options(ald)
    ald.add_argument("--denoise-last", action="store_true", help="end with x <- D(x, sigma_L)")
    p.add_argument("--teleport", metavar="K|auto", help="replace the first K steps by the closed-form flow of the "
                   "training data's Gaussian (Gaussian-score paper, Algorithm 1); 'auto' picks K from the model")
    p.add_argument("--teleport-threshold", type=float, default=0.01,
                   help="for --teleport auto: the largest unexplained fraction of the score allowed (default 0.01)")
    mad_group = p.add_argument_group("MAD (--sampler mad): extended-score inference, MAD paper Algorithm 1")
    mad_group.add_argument("--a", type=float, default=1.0, help="sigma_gamma^2 = a sigma^2 + b gamma (default 1)")
    mad_group.add_argument("--b", type=float, default=1.0, help="strength of the extended score (default 1)")
    mad_group.add_argument("--p", type=float, default=1.0, help="gamma = sigma^p speed (default 1)")
    mad_group.add_argument("--delta", type=float, default=1e-3, help="finite-difference step (default 1e-3)")
    mad_group.add_argument("--derivative", default="central", choices=["forward", "central", "exact"])
    mad_group.add_argument("--grid", metavar="a=..;b=..",
                           help="one sample set per parameter combination from the same seeds, e.g. "
                                "'a=1,2;b=5,10,20' (any of a, b, p, delta)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output directory (default RUN/samples/SAMPLER-STEPS-seedSEED, or "
                   "samples/NAME/... for --pretrained)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("inpaint", help="fill in the unknown part of images (Song & Ermon 2019, Sec. 5; the "
                       "known part is re-noised to the current level at every step)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--images", help="images to inpaint, as --data of train (default: the run's training data), "
                   "e.g. digits:test")
    p.add_argument("--first", type=int, default=0, help="index of the first image (default 0)")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--mask", required=True, help="the unknown half: top, bottom, left, right; or a .npy (0/1) or "
                   "PNG (white = known) file of shape (H, W) or (C, H, W)")
    p.add_argument("--sampler", default="annealed-langevin", choices=["annealed-langevin", "heun"])
    p.add_argument("--seed", type=int, default=0, help="image i draws its noise from seed + i")
    ald = p.add_argument_group("annealed Langevin")
    _langevin_options(ald)
    ald.add_argument("--no-denoise-last", action="store_true", help="skip the final x <- D(x, sigma_L)")
    ode = p.add_argument_group("Heun (--sampler heun)")
    _karras_options(ode)
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output directory (default RUN/inpaint/SAMPLER-MASK-seedSEED)")
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("export", help="write a run's weights alone (no optimizer state) to a small file")
    p.add_argument("run", help="run directory (its latest checkpoint) or checkpoint file")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="storage precision (float16 halves the file; loading casts back to float32)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="FID or KID of a run's samples against a dataset (Inception-v3 features "
                       "through torch-fidelity; pip install 'scorelab[fid]')")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--metric", default="fid", choices=["fid", "kid"])
    p.add_argument("--ref", required=True, help="reference images, as --data of train (e.g. cifar-10-batches-py); "
                   "their statistics are cached in $SCORELAB_CACHE or ~/.cache/scorelab")
    p.add_argument("--ref-n", type=int, help="use the first N reference images (default all)")
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=50_000,
                   help="number of samples (default 50000, the usual protocol)")
    p.add_argument("--seeds", metavar="A-B", help="inclusive seed range holding --n seeds (default 0 .. n-1)")
    p.add_argument("--inception-weights", metavar="FILE", help="local torch-fidelity Inception-v3 weights "
                   "(weights-inception-2015-12-05-6726825d.pth; default $SCORELAB_INCEPTION_WEIGHTS); never "
                   "downloaded")
    p.add_argument("--sampler", default="heun", choices=["heun", "euler"])
    _karras_options(p)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="result JSON (default RUN/eval/METRIC-SAMPLER-STEPS-seedsA-B.json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="write a synthetic dataset to a file")
    data_sub = p.add_subparsers(dest="dataset", required=True)
    q = data_sub.add_parser("shapes", help="noisy rotated shapes (MAD paper, Sec. 5.3): 4 shapes, uniform angles, "
                            "blotted boundaries, pixel noise, 8-bit")
    q.add_argument("--n", type=int, default=20_000, help="number of images (default 20000)")
    q.add_argument("--size", type=int, default=32, help="image side in pixels (the paper: 64; default 32)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--n-bumps", type=int, help="bumps subtracted on each shape's boundary (default 50)")
    q.add_argument("--bump-width", type=float, help="bump standard deviation, fraction of the side (default 0.03)")
    q.add_argument("--bump-depth", type=float, help="bump height in [-1, 1] units (default 2)")
    q.add_argument("--noise-std", type=float, help="pixel noise standard deviation (default 1)")
    q.add_argument("--out", required=True, help="output .npz: images (noisy, uint8), clean, shape_index, angles")
    q.set_defaults(func=cmd_data_shapes)

    p = sub.add_parser("analyze", help="compare a trained network with analytical models (Gaussian-score paper)")
    analyze = p.add_subparsers(dest="analysis", required=True)
    q = analyze.add_parser("gaussianity", help="unexplained variance of the score by isotropic, Gaussian, GMM and "
                           "delta-mixture models across noise levels (Figures 6, 9)")
    q.add_argument("run")
    q.add_argument("--sigmas", help="comma-separated noise levels (default 0.01 ... 80, 16 levels)")
    q.add_argument("--n", type=int, default=256, help="query points per level and kind (default 256)")
    q.add_argument("--components", type=int, default=10, help="GMM components (default 10)")
    q.add_argument("--ranks", default="full", help="GMM component ranks, e.g. full,4,16 (default full)")
    q.set_defaults(func=cmd_analyze_gaussianity)
    q = analyze.add_parser("trajectories", help="distance between the network's Heun path and an analytical "
                           "model's from the same noise (Figures 7, 8, 15)")
    q.add_argument("run")
    q.add_argument("--reference", default="gaussian", help="gaussian (closed form), gmmK, delta, isotropic")
    q.add_argument("--n", type=int, default=64)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--steps", type=int, default=18)
    q.add_argument("--sigma-min", type=float, default=0.002)
    q.add_argument("--sigma-max", type=float, default=80.0)
    q.set_defaults(func=cmd_analyze_trajectories)
    q = analyze.add_parser("field", help="the score on the plane through three training images (Figure 11)")
    q.add_argument("run")
    q.add_argument("--anchors", required=True, help="three training-image indices, e.g. 0,1,2")
    q.add_argument("--sigma", type=float, required=True)
    q.add_argument("--grid", type=int, default=25)
    q.add_argument("--models", default="gaussian,gmm10,delta", help="analytical models beside the network")
    q.set_defaults(func=cmd_analyze_field)
    q = analyze.add_parser("dynamics", help="plot the unexplained variance recorded during training (--track)")
    q.add_argument("run")
    q.set_defaults(func=cmd_analyze_dynamics)
    for q in analyze.choices.values():
        q.add_argument("--out", help="output directory (default RUN/analysis/NAME)")
        q.add_argument("--device", default="auto")

    p = sub.add_parser("demo", help="train on gmm3 and digits, sample, measure and draw (under 10 min on CPU)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a few steps only (checks the plumbing, not quality)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, CheckpointError, TrainingError, ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"scorelab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scorelab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
