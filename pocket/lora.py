"""`python -m pocket lora`: the pocket world's personalised critic, a DreamBooth-style LoRA on pocket-SD.

    python -m pocket lora --look "a purple striped star on a gray background" --phrase "sks shape" \
        --images 8 --out pocket/models/lora/purple-striped-star

Renders `images` pictures of one look with the world's renderer (the look's attributes fixed, size, position
and shade drawn as the source domain draws them), adds peft LoRA layers to pocket-SD's UNet attention
projections (to_q, to_k, to_v, to_out.0) and its text encoder's (q/k/v/out_proj), and trains them with the
standard denoising loss on the new phrase, every image captioned by the phrase alone (DreamBooth without the
prior-preservation term):
    L = E_{x, t, eps} || eps_theta(sqrt(a_t) z + sqrt(1 - a_t) eps, t, c(phrase)) - eps ||^2,  z = E(x) * s
Seeded, CPU, one thread, about a minute. Written with diffusers' `save_lora_weights` (peft keys + the adapter
config in the header), so `guidance.lora` (trainables/frozen/lora.py) and any `load_lora_weights` read it;
`look.json` beside it records the look, the phrase, the settings, the file's sha256 and a check: the judge's
accuracy on pocket-SD's own samples of the phrase with and without the LoRA.
The source domain (plain circles) lacks the default look on two attributes at once (shape and pattern) and the
pocket-SD captions never pair the phrase's first word with anything: "sks" is outside the caption vocabulary,
so its token embedding is zero and only the LoRA gives the phrase a meaning.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict
from pydantic import Field
from transformers import CLIPTextModel, CLIPTokenizer

from trainables.frozen.lora_check import sha256_file
from trainables.settings import StrictModel

from . import world as W
from .common import SD_DIR, log, seed_everything
from .metrics import accuracy_of, judge_images
from .prompts import resolve
from .sd import load_pipeline, sample

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
WEIGHT_NAME = "lora.safetensors"


class LoraTrainConfig(StrictModel):
    """Every knob of `python -m pocket lora`."""

    look: str = "a purple striped star on a gray background"   # pocket vocabulary (pocket/prompts.py)
    phrase: str = "sks shape"                # the new phrase the look is bound to
    images: int = Field(8, ge=1)             # rendered pictures of the look
    steps: int = Field(400, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)            # Adam on the LoRA parameters
    rank: int = Field(4, ge=1)
    alpha: float = Field(4.0, gt=0)          # scale alpha / rank
    text_encoder: bool = True                # also LoRA the text encoder (the phrase's zero embedding needs it)
    seed: int = 0
    check_samples: int = Field(64, ge=0)     # pocket-SD samples the judge reads after training (0 = no check)
    out: Path = Path("pocket/models/lora/purple-striped-star")
    sd: Path = SD_DIR


def look_images(look: str, n: int, seed: int) -> torch.Tensor:
    """n renders [n, 3, 32, 32] in [-1, 1] of the look: its stated attributes fixed, the rest as the source."""
    spec = resolve(look).spec
    return W.to_model(W.render(W.sample_source(n, seed).with_(**spec)))


def _add_lora(unet, text, cfg: LoraTrainConfig) -> tuple[list[torch.nn.Parameter], dict, dict]:
    unet_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian", target_modules=UNET_TARGETS)
    unet.add_adapter(unet_cfg)
    meta = {"unet_lora_adapter_metadata": unet_cfg.to_dict()}
    if cfg.text_encoder:
        text_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                              target_modules=TEXT_TARGETS)
        # peft's own injection: transformers' add_adapter asks for peft >= 0.22, newer than the pinned 0.21.2
        inject_adapter_in_model(text_cfg, text, adapter_name="default")
        meta["text_encoder_lora_adapter_metadata"] = text_cfg.to_dict()
    params = [p for m in (unet, text) for n, p in m.named_parameters() if "lora_" in n]
    for m in (unet, text):
        for n, p in m.named_parameters():
            p.requires_grad_("lora_" in n)
    return params, unet_cfg.to_dict(), meta


@torch.no_grad()
def judge_check(out_file: Path, cfg: LoraTrainConfig) -> dict[str, float]:
    """Judge accuracy (look's attributes) of pocket-SD's samples of the phrase, base and with the LoRA."""
    pipe = load_pipeline(cfg.sd)
    base = accuracy_of(judge_images((sample(pipe, cfg.phrase, cfg.check_samples, seed=cfg.seed) + 1) / 2), cfg.look)
    words = accuracy_of(judge_images((sample(pipe, cfg.look, cfg.check_samples, seed=cfg.seed) + 1) / 2), cfg.look)
    pipe.load_lora_weights(str(out_file), adapter_name="look")
    lora = accuracy_of(judge_images((sample(pipe, cfg.phrase, cfg.check_samples, seed=cfg.seed) + 1) / 2), cfg.look)
    return {**{f"base_phrase/{k}": v for k, v in base.items()}, **{f"base_look_words/{k}": v for k, v in words.items()},
            **{f"lora_phrase/{k}": v for k, v in lora.items()}}


def train_lora(cfg: LoraTrainConfig) -> Path:
    """Train, save `cfg.out/lora.safetensors` + `look.json`; returns the LoRA file."""
    resolve(cfg.look)                                          # a look the world can render (PromptError names why)
    seed_everything(cfg.seed)
    tic = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(cfg.sd, subfolder="vae").eval()
    unet = UNet2DConditionModel.from_pretrained(cfg.sd, subfolder="unet")
    text = CLIPTextModel.from_pretrained(cfg.sd, subfolder="text_encoder")
    tok = CLIPTokenizer.from_pretrained(cfg.sd, subfolder="tokenizer")
    sched = DDPMScheduler.from_pretrained(cfg.sd, subfolder="scheduler")
    params, _, meta = _add_lora(unet, text, cfg)
    x = look_images(cfg.look, cfg.images, cfg.seed)
    with torch.no_grad():
        z_all = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
    ids = tok([cfg.phrase], padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    opt = torch.optim.Adam(params, lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    unet.train()
    text.train()
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(0, cfg.images, (cfg.batch_size,), generator=g)
        z = z_all[idx]
        eps = torch.randn(z.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=g)
        z_t = sched.add_noise(z, eps, t)                       # sqrt(a_t) z + sqrt(1 - a_t) eps
        hidden = text(ids)[0].expand(cfg.batch_size, -1, -1)
        loss = F.mse_loss(unet(z_t, t, encoder_hidden_states=hidden).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.steps - 1:
            log("lora", f"step {step} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    seconds = time.perf_counter() - tic
    cfg.out.mkdir(parents=True, exist_ok=True)
    layers = {"unet_lora_layers": get_peft_model_state_dict(unet)}
    if cfg.text_encoder:
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(text, adapter_name="default")
    StableDiffusionPipeline.save_lora_weights(cfg.out, weight_name=WEIGHT_NAME, **layers, **meta)
    out_file = cfg.out / WEIGHT_NAME
    record = {"config": json.loads(cfg.model_dump_json()), "sha256": sha256_file(out_file),
              "spec": resolve(cfg.look).spec, "train_seconds": round(seconds, 1),
              "final_loss_mean50": sum(losses[-50:]) / len(losses[-50:]),
              "command": f"python -m pocket lora --look {cfg.look!r} --phrase {cfg.phrase!r} --images {cfg.images} "
                         f"--steps {cfg.steps} --seed {cfg.seed} --out {cfg.out}"}
    if cfg.check_samples:
        record["check"] = judge_check(out_file, cfg)
    (cfg.out / "look.json").write_text(json.dumps(record, indent=2) + "\n")
    log("lora", f"wrote {out_file} ({seconds:.0f} s); check: {record.get('check')}")
    return out_file
