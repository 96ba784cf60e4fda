"""pocket-SD: a tiny text-to-image latent diffusion model of the world, in the diffusers SD layout.

Three stages, each a fixed number of steps from a fixed seed:
  vae    AutoencoderKL (32,64,64), 32x32 RGB -> 4x8x8 latents; object-weighted L1 + MSE + 1e-6 KL
  pool   encode a pool of world images once (posterior mean and std), set the VAE's scaling_factor
  unet   UNet2DConditionModel + CLIPTextModel trained jointly on the pool (eps-prediction, SD's
         scaled_linear schedule, 10% empty captions for classifier-free guidance), fresh captions each draw
Saved with `StableDiffusionPipeline.save_pretrained`, so it loads by the code path that loads real SD.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel

from trainables.frozen.tokenizer import build_clip_tokenizer

from . import world as W
from .common import CACHE, SD_DIR, log, optimizer_step, record, seed_everything, timer
from .judge import load_judge

LATENT_RES = 8
POOL_SIZE = 24576
CAPTION_DROPOUT = 0.1
OBJECT_WEIGHT = 4.0      # reconstruction weight of object pixels vs background pixels (see recon_loss)


# ---- configs ---------------------------------------------------------------------------------------------
# GroupNorm with ONE group in the VAE: with few channels per group (groups = channels, or 4 channels per
# group) the encoder's and decoder's last norms divide out per-channel contrast, which is where a small
# object's colour lives: reconstructions came out grey (measured: judge colour accuracy ~0.2 after 600 steps).
def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=W.RES,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=1, act_fn="silu")


def unet_config() -> dict:
    return dict(sample_size=LATENT_RES, in_channels=4, out_channels=4, layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                block_out_channels=(64, 128), cross_attention_dim=64, attention_head_dim=8, norm_num_groups=4)


def text_config():
    return CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                          projection_dim=64, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def scheduler():
    """SD v1's scheduler config (PNDM, scaled_linear betas 0.00085..0.012, 1000 steps, clip_sample false).

    clip_sample must be written out as SD's file does: a DDIM/DDPM scheduler made `from_config` of a config
    without it defaults to clip_sample=True and clips the predicted x0 LATENT to [-1, 1]; pocket latents
    (unit variance, per-image channel means up to ~1 from the background) then decode grey with muddled
    colours (measured: judge accuracy 0.0 on "a red circle" and "... black background" before the fix)."""
    return PNDMScheduler.from_config(dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, clip_sample=False))


def tokenizer(save_dir: Path | None = None):
    return build_clip_tokenizer(save_dir)


def world_vocabulary_ids(tok) -> torch.Tensor:
    """Token ids the world's captions and prompts can produce (other embedding rows stay zero)."""
    words = set()
    for lst in [W.SHAPES, W.COLOURS, W.BACKGROUNDS, W.PATTERNS, W.FILLERS, W.PREFIXES, W.BG_FORMS,
                ["shape", "object", "that is", "a", "an", "background", "backdrop", ","]]:
        words.update(lst)
    for v in list(W.SIZE_WORDS.values()) + list(W.PATTERN_WORDS.values()):
        words.update(v)
    words.update(p.text for p in W.CATALOGUE)
    ids = set()
    for w in words:
        ids.update(tok(w.replace("{}", " ").strip()).input_ids)
    return torch.tensor(sorted(ids))


# ---- stage 1: VAE ----------------------------------------------------------------------------------------
def recon_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE with object pixels weighted OBJECT_WEIGHT x. The object covers ~10-40% of the image and the
    flat background is easy, so an unweighted loss spends the small VAE on the background; object colour,
    corners and stripes are what the judge (and the prompts) read. Background colour = per-image median of
    the border pixels (objects rarely reach the border); object = pixels > 0.1 away from it."""
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)   # [B,3,4R]
    bg = border.median(dim=-1).values[..., None, None]
    weight = 1 + (OBJECT_WEIGHT - 1) * ((x - bg).abs().amax(1, keepdim=True) > 0.1).float()
    d = rec - x
    return (weight * (d.abs() + d.square())).mean()


def train_vae(steps: int = 3000, batch_size: int = 32, seed: int = 2, lr: float = 2e-3, kl_weight: float = 1e-6,
              feat_weight: float = 0.0, out_dir: Path | None = None, logvar_init: float = -6.0,
              config: dict | None = None):
    seed_everything(seed)
    vae = AutoencoderKL(**(config or vae_config()))
    with torch.no_grad():   # start with a narrow posterior: at logvar 0 the sampled latents drown the signal
        vae.quant_conv.bias[vae.config.latent_channels:] = logvar_init
    judge = load_judge()                                    # progress reads (and optional judge-feature loss)
    use_feat = feat_weight > 0     # off: matching judge features by gradient wrecked pixel colours (measured)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    with timer() as t:
        for step in range(steps):
            x = W.to_model(W.render(W.sample_world(batch_size, seed * 1_000_003 + step)))
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            kl = post.kl().mean()
            rec_loss = recon_loss(rec, x)
            feat = F.mse_loss(judge.features(rec), judge.features(x)) if use_feat else torch.zeros(())
            loss = rec_loss + kl_weight * kl + feat_weight * feat
            optimizer_step(loss, opt, sched, clip_params=vae.parameters())
            if step % 100 == 0 or step == steps - 1:
                log("vae", f"step {step} rec {rec_loss.item():.4f} feat {feat.item():.4f} kl {kl.item():.1f}")
            if judge is not None and step % 150 == 149:
                log("vae", f"step {step} {vae_quality(vae, judge, n=128)}")
    vae.eval()
    vae.save_pretrained(out_dir or CACHE / "vae")
    quality = vae_quality(vae, judge, n=512)
    log("vae", f"done in {t['seconds']} s: {quality}")
    record("vae", params=sum(p.numel() for p in vae.parameters()), steps=steps, batch=batch_size,
           seconds=t["seconds"], kl_weight=kl_weight, **quality)
    return vae


@torch.no_grad()
def vae_quality(vae, judge, n: int = 1024, seed: int = 20_000_000) -> dict:
    a = W.sample_world(n, seed)
    x = W.to_model(W.render(a))
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 256]).latent_dist.mode()).sample for i in range(0, n, 256)])
    pred = judge.predict(rec.clamp(-1, 1))
    acc = {f"recon_judge_{k}": round((pred[k] == getattr(a, k)).float().mean().item(), 4)
           for k in ("shape", "colour", "background", "pattern", "size")}
    plain = a.pattern == 0
    acc.update({f"recon_judge_{k}_plain": round((pred[k] == getattr(a, k))[plain].float().mean().item(), 4)
                for k in ("shape", "colour")})
    return {"recon_mse": round(F.mse_loss(rec, x).item(), 5), **acc}


# ---- stage 2: latent pool --------------------------------------------------------------------------------
def encode_pool(n: int = POOL_SIZE, seed: int = 3, vae_dir: Path | None = None, out: Path | None = None) -> Path:
    seed_everything(seed)
    vae = AutoencoderKL.from_pretrained(vae_dir or CACHE / "vae").eval()
    a = W.sample_world(n, seed)
    means, stds = [], []
    with torch.no_grad(), timer() as t:
        for i in range(0, n, 512):
            post = vae.encode(W.to_model(W.render(a.index(slice(i, i + 512))))).latent_dist
            means.append(post.mean)
            stds.append(post.std)
    mean, std = torch.cat(means), torch.cat(stds)
    g = torch.Generator().manual_seed(seed)
    sample = mean + std * torch.randn(mean.shape, generator=g)
    scaling = float(1.0 / sample.std())                         # SD's recipe: unit-variance latents
    path = Path(out or CACHE / "latent_pool.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"mean": mean, "std": std, "attrs": a, "scaling_factor": scaling}, path)
    log("pool", f"{n} latents in {t['seconds']} s, scaling_factor {scaling:.4f}, "
                f"posterior std mean {std.mean().item():.3f}")
    record("pool", size=n, seconds=t["seconds"], scaling_factor=scaling, posterior_std=std.mean().item())
    return path


# ---- stage 3: UNet + text encoder --------------------------------------------------------------------------
def train_unet(steps: int = 4000, batch_size: int = 64, seed: int = 4, lr: float = 1e-3, out_dir: Path = SD_DIR,
               pool_path: Path | None = None, vae_dir: Path | None = None):
    seed_everything(seed)
    pool = torch.load(pool_path or CACHE / "latent_pool.pt", weights_only=False)
    mean, std, attrs, scaling = pool["mean"], pool["std"], pool["attrs"], pool["scaling_factor"]
    tok = tokenizer()
    unet = UNet2DConditionModel(**unet_config())
    text = CLIPTextModel(text_config())
    with torch.no_grad():                                     # rows the world never uses stay zero
        emb = text.get_input_embeddings().weight
        keep = world_vocabulary_ids(tok)
        init = emb[keep].clone()
        emb.zero_()
        emb[keep] = init
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.03,
                                                final_div_factor=20)
    abar = scheduler().alphas_cumprod                         # the saved scheduler's schedule, by construction
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    tok_cache: dict[str, torch.Tensor] = {}

    def ids_of(texts):
        missing = [s for s in set(texts) if s not in tok_cache]
        if missing:
            ids = tok(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            tok_cache.update(zip(missing, ids))
        return torch.stack([tok_cache[s] for s in texts])

    unet.train()
    text.train()
    with timer() as t:
        for step in range(steps):
            idx = torch.randint(0, len(mean), (batch_size,), generator=g)
            z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling
            sub = attrs.index(idx)
            caps = [W.caption(sub, i, rng) if rng.random() >= CAPTION_DROPOUT else "" for i in range(batch_size)]
            tt = torch.randint(0, 1000, (batch_size,), generator=g)
            eps = torch.randn(z0.shape, generator=g)
            a = abar[tt].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
            hidden = text(ids_of(caps))[0]
            pred = unet(zt, tt, encoder_hidden_states=hidden).sample
            loss = F.mse_loss(pred, eps)
            optimizer_step(loss, opt, sched, clip_params=params)
            if step % 100 == 0 or step == steps - 1:
                log("unet", f"step {step} loss {loss.item():.4f} ({t_since(t):.0f} s)")
    unet.eval()
    text.eval()
    vae = AutoencoderKL.from_pretrained(vae_dir or CACHE / "vae")
    vae.register_to_config(scaling_factor=scaling)
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, text_encoder=text, tokenizer=tok, scheduler=scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    log("unet", f"saved {out_dir} ({t['seconds']} s)")
    record("unet", unet_params=sum(p.numel() for p in unet.parameters()),
           text_params=sum(p.numel() for p in text.parameters()), steps=steps, batch=batch_size,
           seconds=t["seconds"], final_loss=loss.item(), lr=lr)
    return pipe


def t_since(t: dict) -> float:
    return time.time() - t["start"]


# ---- loading and sampling --------------------------------------------------------------------------------
def load_pipeline(path: Path = SD_DIR, scheduler_name: str = "ddim"):
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    if scheduler_name == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample(pipe, prompt: str, n: int, cfg: float = 7.5, steps: int = 30, seed: int = 0) -> torch.Tensor:
    """n images [n,3,32,32] in [-1,1] from pocket-SD."""
    g = torch.Generator().manual_seed(seed)
    out = pipe([prompt] * n, num_inference_steps=steps, guidance_scale=cfg, generator=g, output_type="pt",
               height=W.RES, width=W.RES).images
    return out * 2 - 1
