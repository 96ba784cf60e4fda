"""Seconds per guidance step and peak memory of the StyleGAN-Fusion engine (reference vs fast).

One step = StyleGAN2 forward of the trainable (with graph) and frozen (no graph) copies + guidance
(VAE encode, UNet, injection) + the backward into the generator. "guidance s" is the same step with a
leaf image instead of a generator. Models are built from config with random weights (timing only):

    tiny   the test models of trainables.testing (UNet (32,64), VAE (32,64), 16 px; StyleGAN2-16)
    full   the paper's: SD-1.x UNet (320,640,1280,1280), cross-attention 768; SD VAE (128,256,512,512) at
           512 px; CLIP ViT-L/14 text encoder config; StyleGAN2-1024 config-f

    python benchmarks/sds_step.py --config tiny --device cpu
    python benchmarks/sds_step.py --config full --device cuda --precisions fp32,bf16

Prints Markdown table rows. CPU memory is the process's peak RSS so far (monotone); CUDA memory is
torch.cuda.max_memory_allocated for that configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from trainables import testing  # noqa: E402
from trainables.config import DiffusionGuidanceConfig, RegularizerConfig  # noqa: E402
from trainables.frozen.diffusion_model import DTYPES, FrozenDiffusion, sd_alphas_cumprod  # noqa: E402
from trainables.guidance.fusion import FusionGuidance  # noqa: E402
from trainables.frozen.tokenizer import build_clip_tokenizer  # noqa: E402

REGS = {
    "none": {},
    "directional": {"directional": {"weight": 1.0}},
    "reconstruction": {"reconstruction": {"weight": 1.0}},
}


def sd_configs(kind: str):
    """(unet kwargs, vae kwargs, text-config kwargs, image_size) for 'tiny' or 'full'."""
    if kind == "tiny":
        return testing.tiny_unet_config(), testing.tiny_vae_config(), testing.tiny_text_config(), 16
    unet = dict(  # CompVis/stable-diffusion-v1-4 unet/config.json
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
    vae = dict(  # its vae/config.json
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, scaling_factor=0.18215)
    text = dict(  # openai/clip-vit-large-patch14 text_config
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    return unet, vae, text, 512


def build_nets(kind: str, device):
    unet_kw, vae_kw, text_kw, size = sd_configs(kind)
    torch.manual_seed(0)
    with torch.device(device):   # random init directly on the device (860 M UNet parameters for 'full')
        nets = dict(unet=UNet2DConditionModel(**unet_kw), vae=AutoencoderKL(**vae_kw),
                    text_encoder=CLIPTextModel(CLIPTextConfig(**text_kw)))
    nets["tokenizer"] = build_clip_tokenizer()
    return nets, size


def build_generator(kind: str, device):
    try:
        from trainables.generators import StyleGAN2, StyleGAN2Config
    except Exception as exc:  # the generator package may not exist yet
        print(f"# no trainables.generators.StyleGAN2 ({exc}); timing guidance only", file=sys.stderr)
        return None
    torch.manual_seed(0)
    if kind == "tiny":
        cfg = StyleGAN2Config(size=16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16})
    else:
        cfg = StyleGAN2Config(size=1024)
    with torch.device(device):
        g = StyleGAN2(cfg)
    return g.to(device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KB -> GB


def time_steps(fn, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def bench_one(kind, nets, size, gen, device, engine, precision, batch, reg, warmup, iters):
    dtype = DTYPES[precision] if engine == "fast" else torch.float32
    model = FrozenDiffusion(nets["vae"], nets["unet"], nets["text_encoder"], nets["tokenizer"],
                            sd_alphas_cumprod(), "epsilon", device=device, dtype=dtype, image_size=size,
                            fast=engine == "fast")
    cfg = DiffusionGuidanceConfig(model="(in memory)", text_encoder=None, image_size=size, engine=engine,
                                  precision=precision if engine == "fast" else "fp32")
    guide = FusionGuidance(cfg, RegularizerConfig(**REGS[reg]), device, model=model)
    guide.prepare("3d human face, closeup cute and adorable, Pixar render", "photo")
    rng = torch.Generator(device="cpu").manual_seed(0)
    out_size = gen.cfg.size if gen is not None else size
    x_leaf = (torch.rand(batch, 3, out_size, out_size, device=device) * 2 - 1).requires_grad_(True)
    x_frozen = torch.rand(batch, 3, out_size, out_size, device=device) * 2 - 1

    def guidance_only():
        x_leaf.grad = None
        guide.backward(x_leaf, x_frozen, t=guide.sample_timestep(rng), rng=rng)

    def full_step():
        z = torch.randn(batch, gen.cfg.style_dim, device=device)
        with torch.no_grad():
            wp = gen.broadcast(gen.mapping(z))
            xf = gen.synthesis(wp, noise_mode="const")
        xt = gen.synthesis(wp, noise_mode="const")
        guide.backward(xt, xf, t=guide.sample_timestep(rng), rng=rng)
        gen.zero_grad(set_to_none=True)

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    g_s = time_steps(guidance_only, device, warmup, iters)
    s_s = time_steps(full_step, device, warmup, iters) if gen is not None else float("nan")
    return dict(config=kind, device=str(device), engine=engine, precision=precision if engine == "fast" else "fp32",
                batch=batch, reg=reg, step_s=s_s, guidance_s=g_s, peak_gb=_peak_gb(device))


def header() -> str:
    return ("| config | device | engine | precision | batch | reg | step s (G+guidance) | guidance s | peak mem GB |\n"
            "|---|---|---|---|---|---|---|---|---|")


def row(r) -> str:
    return (f"| {r['config']} | {r['device']} | {r['engine']} | {r['precision']} | {r['batch']} | {r['reg']} | "
            f"{r['step_s']:.4f} | {r['guidance_s']:.4f} | {r['peak_gb']:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny", choices=["tiny", "full", "both"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--engines", default="reference,fast")
    ap.add_argument("--precisions", default=None, help="fast-engine precisions (default: fp32 on CPU, fp32,bf16 on CUDA)")
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--regs", default="none,directional")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = (args.precisions or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    kinds = ["tiny", "full"] if args.config == "both" else [args.config]
    rows = []
    print(header(), flush=True)
    for kind in kinds:
        nets, size = build_nets(kind, device)
        gen = build_generator(kind, device)
        # fp32 runs first: a half-precision run casts the shared nets in place
        plan = [(e, "fp32") for e in args.engines.split(",")]
        plan += [("fast", p) for p in precisions if p != "fp32" and "fast" in args.engines]
        for engine, precision in plan:
            for reg in args.regs.split(","):
                for b in (int(x) for x in args.batches.split(",")):
                    r = bench_one(kind, nets, size, gen, device, engine, precision, b, reg, args.warmup, args.iters)
                    rows.append(r)
                    print(row(r), flush=True)
        del nets, gen
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
