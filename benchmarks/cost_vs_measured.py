"""Real steps against the cost model's prediction: step time and peak memory, per engine and regularizer.

    python benchmarks/cost_vs_measured.py --device cuda            # the paper's SD 1.x + StyleGAN2-1024 (random weights)
    python benchmarks/cost_vs_measured.py --device cpu --tiny      # plumbing check on this machine (tiny models)

Builds the real modules from the same architecture configs the cost model traces (random weights: speed and
memory do not depend on the values), runs `trainables.adaptation.step.Trainer.step` (the loop's step) for warm-up + timed
steps, and prints measured ms/step and `torch.cuda.max_memory_allocated` next to `trainables.cost.model.estimate`.
`benchmarks/gpu_check.sh` runs it when a GPU machine is lent.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from trainables.config_io import load_config
from trainables.cost.model import SD1_UNET, SD1_VAE, _default_dtype, estimate
from trainables.generators.kinds import generator_kind
from trainables.generators import StyleGAN2, StyleGAN2Config
from trainables.frozen.diffusion_model import DTYPES, FrozenDiffusion, sd_alphas_cumprod
from trainables.guidance.fusion import FusionGuidance
from trainables.adaptation.step import Trainer
from trainables.testing import tiny_unet_config, tiny_vae_config

BASE = os.path.join(os.path.dirname(__file__), "..", "sweeps", "paper", "base", "ffhq_1024.yaml")
CASES = {"reference fp32": ["guidance.engine=reference", "train.recompute_generator=false"],
         "fast fp32": ["guidance.precision=fp32"], "fast bf16": ["guidance.precision=bf16"]}
REGS = {"none": [], "directional": ["reg.directional.weight=1"]}


def _measure(cfg, device: torch.device, tiny: bool, steps: int) -> tuple[float, float]:
    g = cfg.guidance
    dtype = torch.float32 if g.engine == "reference" else DTYPES[g.precision]
    with _default_dtype(dtype):
        unet = UNet2DConditionModel.from_config(tiny_unet_config() if tiny else SD1_UNET)
        vae = AutoencoderKL.from_config(tiny_vae_config() if tiny else SD1_VAE)
    model = FrozenDiffusion(vae, unet, None, None, sd_alphas_cumprod(), device=device, dtype=dtype,
                            image_size=g.image_size, fast=g.engine == "fast")
    for text in FusionGuidance.texts(g, cfg.prompt, cfg.source_prompt):
        model.set_embedding(text, torch.zeros(1, 77, unet.config.cross_attention_dim, dtype=dtype, device=device))
    guide = FusionGuidance(g, cfg.reg, device, model=model)
    guide.prepare(cfg.prompt, cfg.source_prompt)
    g_frozen = StyleGAN2(StyleGAN2Config(size=cfg.generator.size or 1024)).to(device).eval().requires_grad_(False)
    trainer = Trainer.build(cfg, generator_kind("stylegan2"), g_frozen, guide, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        trainer.step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    sync()
    ms = (time.perf_counter() - tic) / steps * 1e3
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return ms, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpu", default="H100", help="the GPU type whose roofline to print beside the measurement")
    ap.add_argument("--tiny", action="store_true", help="tiny SD and a 32 px generator (a CPU plumbing check)")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MODELS_DIR", "/nonexistent")
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    print(f"| case | regularizer | measured ms/step | roofline {args.gpu} ms | measured peak GB | predicted peak GB |")
    print("|---|---|---|---|---|---|")
    for case, over in CASES.items():
        for reg, reg_over in REGS.items():
            extra = ["generator.size=32", "guidance.image_size=16"] if args.tiny else []
            cfg = load_config(BASE, [*over, *reg_over, *extra, f"train.device={args.device}"])
            ms, peak = _measure(cfg, device, args.tiny, args.steps)
            pred = None if args.tiny else estimate(cfg, gpus=(args.gpu,))
            roof = f"{pred.step_seconds(args.gpu) * 1e3:.0f}" if pred else "-"
            ppeak = f"{pred.peak_bytes / 1e9:.1f}" if pred else "-"
            print(f"| {case} | {reg} | {ms:.0f} | {roof} | {peak:.1f} | {ppeak} |", flush=True)


if __name__ == "__main__":
    main()
