"""Seconds per image of the pure-PyTorch StyleGAN3 (NVlabs stylegan3-t-ffhq-1024x1024 layout, random weights).

    .venv/bin/python benchmarks/stylegan3_render.py [--config t|r] [--size 1024] [--repeats 3] [--threads 2] [--no-cuda]

Prints one Markdown table row per device (CPU always; CUDA when available). No checkpoint is needed: the layout
is built with random weights, which costs the same arithmetic as the real model (filters designed as NVlabs does).
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
from trainables.generators.stylegan3 import StyleGAN3, preset  # noqa: E402


def _time_render(g: StyleGAN3, device: torch.device, batch: int, warmup: int, repeats: int) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            z = torch.randn(batch, g.cfg.z_dim, generator=gen).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            img = g(z, 0.7)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) / batch)
    assert img.shape == (batch, 3, g.cfg.img_resolution, g.cfg.img_resolution) and torch.isfinite(img).all()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["t", "r"], default="t")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cuda-batch", type=int, default=4)
    p.add_argument("--no-cuda", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = StyleGAN3(preset(args.config, args.size)).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in g.parameters())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    cpu_name = platform.processor() or platform.machine()
    print(f"StyleGAN3-{args.config.upper()} {args.size}x{args.size} (NVlabs layout), {n_params / 1e6:.2f} M parameters, "
          f"16 W+ entries, truncation 0.7, fp32, torch {torch.__version__}")
    print("| workload | device | threads | batch | s / image (median) | min | max | load avg (1 min) | date |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [(torch.device("cpu"), args.batch, f"CPU ({cpu_name})", args.threads)]
    if torch.cuda.is_available() and not args.no_cuda:
        runs.append((torch.device("cuda"), args.cuda_batch, torch.cuda.get_device_name(0), "-"))
    for device, batch, name, threads in runs:
        load = os.getloadavg()[0]  # other processes sharing the CPU inflate the CPU numbers; recorded for honesty
        times = sorted(_time_render(g.to(device), device, batch, args.warmup, args.repeats))
        med = times[len(times) // 2]
        print(f"| StyleGAN3-{args.config.upper()} render {args.size}px (fp32) | {name} | {threads} | {batch} | "
              f"{med:.4f} | {times[0]:.4f} | {times[-1]:.4f} | {load:.1f} | {date} |", flush=True)


if __name__ == "__main__":
    main()
