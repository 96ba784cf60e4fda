"""The cost table of the paper's FFHQ step, regenerated from the cost model (no GPU, no weights; ~3 min on 2 cores).

    python benchmarks/cost_table.py [--gpu H100] > table.md

Rows: engine x precision x regularizer x batch 1/4 on SD 1.x + StyleGAN2-1024 (the paper's setting, t = 250,
image clamp on). Columns: TFLOP per step, the FLOP floor and the ratio to it, peak live tensor memory, the
roofline time on the GPU. The floor is composed from units traced one by one (a UNet row, a VAE encode, a VAE
pull-back into the image, a generator forward and backward, LPIPS), counting what the math needs: 2 UNet rows
per SDS-like term, one encode per image, the VAE pull-backs the clamps require, one generator forward and
backward, and the frozen generator's forward when a regularizer reads it. "reference" is the paper code's pass
structure (`train.recompute_generator: false`); "fast" is the default engine.
"""
from __future__ import annotations

import argparse
import os
import warnings

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode

from trainables.config_io import load_config
from trainables.cost.counter import CostCounter
from trainables.cost.model import SD1_UNET, SD1_VAE, _default_dtype, _VggLpips, estimate
from trainables.generators import StyleGAN2, StyleGAN2Config

BASE = os.path.join(os.path.dirname(__file__), "..", "sweeps", "paper", "base", "ffhq_1024.yaml")
REGS = {"none": [], "directional": ["reg.directional.weight=1"], "reconstruction": ["reg.reconstruction.weight=1"],
        "directional + LPIPS": ["reg.directional.weight=1", "reg.lpips.weight=1"]}
ENGINES = {"reference fp32": ["guidance.engine=reference", "train.recompute_generator=false"],
           "fast fp32": ["guidance.engine=fast", "guidance.precision=fp32"],
           "fast bf16": ["guidance.engine=fast", "guidance.precision=bf16"]}


def _units() -> dict[str, int]:
    """FLOPs of each unit at batch 1 (fp32; FLOPs do not depend on precision)."""
    out = {}
    with warnings.catch_warnings(), FakeTensorMode(allow_non_fake_inputs=True), _default_dtype(torch.float32):
        warnings.simplefilter("ignore")
        unet = UNet2DConditionModel.from_config(SD1_UNET).requires_grad_(False)
        vae = AutoencoderKL.from_config(SD1_VAE).requires_grad_(False)
        g = StyleGAN2(StyleGAN2Config(size=1024))
        lpips = _VggLpips().requires_grad_(False)
        wp = g.broadcast(g.mapping(torch.randn(1, 512))).detach()

        def count(fn) -> int:
            c = CostCounter()
            with c.counting():
                fn()
            return c.total_flops

        out["unet_row"] = count(lambda: unet(torch.randn(1, 4, 64, 64), torch.tensor([250]),
                                            encoder_hidden_states=torch.randn(1, 77, 768)))
        x = torch.randn(1, 3, 512, 512, requires_grad=True)
        out["encode"] = count(lambda: vae.encode(x.detach()).latent_dist.mode())
        z = vae.encode(x).latent_dist.mode()
        out["vae_pullback"] = count(lambda: torch.autograd.grad(z, x, torch.randn_like(z), retain_graph=True))
        out["g_forward"] = count(lambda: g.synthesis(wp))
        out["g_backward"] = count(lambda: g.synthesis(wp).sum().backward()) - out["g_forward"]
        xf = torch.randn(1, 3, 512, 512)
        out["lpips"] = count(lambda: lpips(xf, x).sum().backward())
    return out


def floor(units: dict[str, int], reg: str, batch: int) -> int:
    u = units
    directional, recon, lp = "directional" in reg, reg == "reconstruction", "LPIPS" in reg
    rows = 2 + (4 if directional else 0) + (2 if recon else 0)
    encodes = 1 + (1 if (directional or recon) else 0)
    pullbacks = 1 + (1 if (directional or recon) else 0)     # the image clamp keeps SDS's pull-back apart
    total = rows * u["unet_row"] + encodes * u["encode"] + pullbacks * u["vae_pullback"]
    total += u["g_forward"] + u["g_backward"] + (u["g_forward"] if (directional or recon or lp) else 0)
    total += u["lpips"] if lp else 0
    return batch * total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="H100")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MODELS_DIR", "/nonexistent")          # architectures only
    units = _units()
    print("units (batch 1, TFLOP): " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in units.items()))
    print(f"\n| engine | regularizer | batch | TFLOP / step | floor | ratio | peak GB | {args.gpu} ms (roofline) |")
    print("|---|---|---|---|---|---|---|---|")
    peaks = {}
    for engine, eng_over in ENGINES.items():
        for reg, reg_over in REGS.items():
            for batch in (1, 4):
                cfg = load_config(BASE, [f"train.batch_size={batch}", *eng_over, *reg_over])
                r = estimate(cfg, gpus=(args.gpu,))
                fl = floor(units, reg, batch)
                peaks[(engine, reg, batch)] = r.peak_bytes
                print(f"| {engine} | {reg} | {batch} | {r.step_flops / 1e12:.2f} | {fl / 1e12:.2f} | "
                      f"{r.step_flops / fl:.3f} | {r.peak_bytes / 1e9:.1f} | {r.step_seconds(args.gpu) * 1e3:.0f} |",
                      flush=True)
    print("\nfast bf16 peak / reference fp32 peak: " + ", ".join(
        f"{reg} b{b} {peaks[('fast bf16', reg, b)] / peaks[('reference fp32', reg, b)]:.2f}"
        for reg in REGS for b in (1, 4)))
    run = estimate(load_config(BASE, ["reg.directional.weight=1", *ENGINES["fast bf16"]]), gpus=(args.gpu,))
    print(f"\nFFHQ {run.iterations} iterations, directional, fast bf16 on {args.gpu}: "
          f"{run.run_seconds(args.gpu):.0f} s at the roofline (implied MFU {run.mfu(args.gpu):.0%})")


if __name__ == "__main__":
    main()
