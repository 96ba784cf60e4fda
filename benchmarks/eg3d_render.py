"""Seconds per EG3D ffhq512-128 image (render) and per forward+backward (one adaptation step's generator work).

    .venv/bin/python benchmarks/eg3d_render.py [--depth 48] [--threads 2] [--repeats 1] [--no-cuda] [--no-cpu]

The architecture is the official ffhq512-128 G_ema (tri-plane backbone 256 px x 96 ch, neural rendering 128 px,
48 + 48 samples per ray, SuperresolutionHybrid8XDC to 512 px), built from `ffhq512_128_config()` with random
weights (the same arithmetic as the real checkpoint; no file needed). `--depth N` sets both depth resolutions
(the official value is 48; lower it to get a CPU number quickly, the row says which was used).

"render" = mapping + synthesis of one image under no_grad; "fwd+bwd" = the same with the paper's trainable set
(backbone.synthesis + superresolution, biases frozen) requiring grad, then backward of image.mean(). Prints
Markdown rows with machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainables.generators.eg3d import (EG3DConfig, EG3DGenerator, ffhq512_128_config,  # noqa: E402
                                        sample_adaptation_cameras, set_eg3d_trainable)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=48, help="depth_resolution = depth_resolution_importance")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--no-cpu", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    d = ffhq512_128_config().to_dict()
    d["rendering"] = dict(d["rendering"], depth_resolution=args.depth, depth_resolution_importance=args.depth)
    cfg = EG3DConfig.from_dict(d)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = EG3DGenerator(cfg).eval()
    n_params = sum(p.numel() for p in g.parameters())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu_name = platform.processor() or platform.machine()
    print(f"EG3D ffhq512-128 architecture, random weights, {n_params / 1e6:.2f} M parameters, neural rendering "
          f"{cfg.neural_rendering_resolution} px, depth {args.depth}+{args.depth} (official 48+48), 8XDC SR to 512 px, "
          f"fp32, batch 1, torch {torch.__version__}, host {platform.node()}")
    print("| workload | device | threads | depth | s (median) | min | max | load avg (1 min) | date |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [] if args.no_cpu else [(torch.device("cpu"), f"CPU ({cpu_name}, {os.cpu_count()} cores)", args.threads)]
    if torch.cuda.is_available() and not args.no_cuda:
        runs.append((torch.device("cuda"), torch.cuda.get_device_name(0), "-"))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, cfg.z_dim, generator=gen)
    c = sample_adaptation_cameras(1, gen, g.avg_camera_pivot, g.avg_camera_radius)
    for device, name, threads in runs:
        g.to(device)
        zz, cc = z.to(device), c.to(device)
        rgen = torch.Generator(device=device).manual_seed(0)

        def render():
            with torch.no_grad():
                out = g(zz, cc, truncation_psi=0.7, noise_mode="const", render_generator=rgen)
            assert out["image"].shape == (1, 3, 512, 512) and torch.isfinite(out["image"]).all()

        def fwd_bwd():
            g.zero_grad(set_to_none=True)
            out = g(zz, cc, noise_mode="const", render_generator=rgen)
            out["image"].mean().backward()

        for label, fn in (("render 512px", render), ("fwd+bwd (trainable set)", fwd_bwd)):
            if label.startswith("fwd"):
                set_eg3d_trainable(g, freeze_bias=True)
                g.train()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            load = os.getloadavg()[0]
            times = _time(fn, device, args.warmup, args.repeats)
            mem = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
            print(f"| EG3D {label} | {name}{mem} | {threads} | {args.depth}+{args.depth} | {times[len(times) // 2]:.3f} | "
                  f"{times[0]:.3f} | {times[-1]:.3f} | {load:.1f} | {date} |", flush=True)
        g.requires_grad_(False).eval()


if __name__ == "__main__":
    main()
