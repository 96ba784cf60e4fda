"""`python -m pocket check`: measure the quality bars of the committed models (written to models/build.json).

Bars (docs/pocket.md): judge >= 0.97 per attribute; pocket-CLIP zero-shot >= 0.9 per attribute; pocket-SD
samples at CFG 7.5 carry the prompted attributes (judge) >= 0.8 per single-attribute prompt; pocket-StyleGAN2
samples >= 0.95 in-domain and FID (judge features) to a source set <= 2x the FID between two source sets.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from trainables.generators import load_generator

from . import world as W
from .clip import load, zero_shot
from .common import SD_DIR, STYLEGAN_PATH, record, seed_everything, log
from .judge import accuracy, load_judge
from .metrics import accuracy_of, in_domain, judge_feature_array, judge_fid
from .refs import REF_SEED
from .sd import load_pipeline, sample, vae_quality


def check_judge() -> dict:
    j = load_judge()
    out = {"with_hard_negatives": accuracy(j, hard_negatives=0.25), "clean_world": accuracy(j, hard_negatives=0.0)}
    record("judge", check=out)
    return out


def check_clip() -> dict:
    m, tok = load()
    out = zero_shot(m, tok)
    record("clip", check_zero_shot=out)
    return out


def check_vae() -> dict:
    vae = AutoencoderKL.from_pretrained(SD_DIR, subfolder="vae").eval()
    out = vae_quality(vae, load_judge())
    record("vae", check=out)
    return out


def check_sd(n: int = 32, cfgs=(3.0, 7.5), prompts=None) -> dict:
    pipe = load_pipeline()
    j = load_judge()
    prompts = prompts or [p.text for p in W.CATALOGUE]
    out = {}
    for cfg in cfgs:
        for k, p in enumerate(prompts):
            x = sample(pipe, p, n, cfg=cfg, seed=k)
            acc = accuracy_of(j.predict(x), p)
            out[f"cfg{cfg}|{p}"] = round(acc["pocket/prompt_accuracy"], 3)
            log("check", f"sd cfg {cfg} {p!r}: {acc['pocket/prompt_accuracy']:.3f}")
    record("unet", check_prompt_accuracy=out)
    return out


def check_stylegan(n: int = 2000) -> dict:
    g = load_generator(STYLEGAN_PATH)
    j = load_judge()
    z = torch.randn(n, g.cfg.style_dim, generator=torch.Generator().manual_seed(777))
    fa = judge_feature_array(W.reference_images(None, n, REF_SEED))          # two independent source sets
    fb = judge_feature_array(W.reference_images(None, n, REF_SEED + 1))
    out = {"fid_source_vs_source": round(judge_fid(fb, fa), 4)}
    for psi in (1.0, 0.7):
        x = torch.cat([g(z[i:i + 256], truncation=psi, noise_mode="const") for i in range(0, n, 256)]).clamp(-1, 1)
        pred = j.predict(x)
        target = W.attrs_from_z(z)
        out[f"psi{psi}"] = {
            "in_domain": round(in_domain(pred).float().mean().item(), 4),
            "fid_to_source": round(judge_fid(judge_feature_array((x + 1) / 2), fa), 4),
            "colour_matches_z": round((pred["colour"] == target.colour).float().mean().item(), 4),
            "mse_to_render": round(torch.nn.functional.mse_loss(x, W.to_model(W.render(target))).item(), 5),
        }
    record("stylegan2", check=out)
    return out


def run(parts: list[str] | None = None) -> dict:
    seed_everything(0)
    fns = {"judge": check_judge, "clip": check_clip, "vae": check_vae, "sd": check_sd, "stylegan2": check_stylegan}
    out = {}
    for name in parts or list(fns):
        out[name] = fns[name]()
        log("check", f"{name}: {out[name]}")
    return out
