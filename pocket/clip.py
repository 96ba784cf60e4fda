"""pocket-CLIP: a tiny open_clip model (custom JSON config, registered with open_clip) of the world.

Trained contrastively on the world's captions (soft targets: identical captions in a batch are all
positives). NADA's directional loss and the CLIP score load it through the same open_clip code path as
real CLIP: `open_clip.add_model_config(CLIP_DIR)`, `create_model("pocket-clip", pretrained=WEIGHTS)`.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from . import world as W
from .common import CLIP_CONFIG, CLIP_DIR, CLIP_NAME, CLIP_WEIGHTS, log, optimizer_step, record, seed_everything, timer
from .judge import augment

CONFIG = {
    "embed_dim": 64,
    "quick_gelu": False,
    # A small ModifiedResNet (open_clip's RN tower): a 4-layer ViT (patch 4, width 128) trained the same way
    # read colour/background/pattern but not shape (zero-shot shape 0.37, measured).
    "vision_cfg": {"image_size": W.RES, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "mlp_ratio": 2.0},
}
CAPTION_P = {"shape": 0.95, "size": 0.7, "filler": 0.3}   # CLIP's captions state shape and size more often
MEAN = (0.48145466, 0.4578275, 0.40821073)       # OpenAI CLIP normalisation (open_clip's default)
STD = (0.26862954, 0.26130258, 0.27577711)


def write_config(path: Path = CLIP_CONFIG) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(CONFIG, indent=2) + "\n")


def create(pretrained: str | None = None):
    """The model through open_clip's own factory (registers the pocket config first)."""
    if not CLIP_CONFIG.exists():
        write_config()
    open_clip.add_model_config(str(CLIP_DIR))
    model = open_clip.create_model(CLIP_NAME, pretrained=pretrained)
    return model, open_clip.get_tokenizer(CLIP_NAME)


def load(weights: Path = CLIP_WEIGHTS):
    model, tok = create(str(weights))
    return model.eval().requires_grad_(False), tok


def normalise(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] images -> CLIP input (32x32 already, so no resize)."""
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (x01 - m) / s


def train(steps: int = 1500, batch_size: int = 64, seed: int = 5, lr: float = 2e-3, out: Path = CLIP_WEIGHTS,
          eval_n: int = 1024):
    from .sd import tokenizer as sd_tokenizer, world_vocabulary_ids  # late: pocket.sd imports diffusers (~5 s)

    seed_everything(seed)
    write_config()
    model, tok = create(None)
    with torch.no_grad():                       # token rows the world never uses stay zero (small, compressible)
        emb = model.token_embedding.weight
        keep = world_vocabulary_ids(sd_tokenizer())
        init = emb[keep].clone()
        emb.zero_()
        emb[keep] = init
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    cache: dict[str, torch.Tensor] = {}
    with timer() as t:
        for step in range(steps):
            a = W.sample_world(batch_size, seed * 1_000_003 + step)
            x01 = W.render(a)
            x01 = (augment(W.to_model(x01), g) + 1) / 2
            caps = [W.caption(a, i, rng, p_keep=CAPTION_P) for i in range(batch_size)]
            for c in set(caps) - cache.keys():
                cache[c] = tok([c])[0]
            ids = torch.stack([cache[c] for c in caps])
            img = F.normalize(model.encode_image(normalise(x01)), dim=-1)
            txt = F.normalize(model.encode_text(ids), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
            same = torch.tensor([[ci == cj for cj in caps] for ci in caps], dtype=torch.float32)
            target = same / same.sum(1, keepdim=True)
            loss = (torch.sum(-target * logits.log_softmax(1), 1).mean()
                    + torch.sum(-target * logits.t().log_softmax(1), 1).mean()) / 2
            optimizer_step(loss, opt, sched)
            if step % 100 == 0 or step == steps - 1:
                log("clip", f"step {step} loss {loss.item():.4f} scale {model.logit_scale.exp().item():.1f}")
    model.eval()
    save(model, out)
    acc = zero_shot(model, tok, n=eval_n)
    log("clip", f"done in {t['seconds']} s, zero-shot {acc}")
    record("clip", params=sum(p.numel() for p in model.parameters()), steps=steps, batch=batch_size,
           seconds=t["seconds"], zero_shot=acc)
    return model


def save(model, path: Path = CLIP_WEIGHTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


ZERO_SHOT = {   # attribute -> prompt template (class word inserted)
    "shape": "a {}",
    "colour": "a {} shape",
    "background": "a shape on a {} background",
    "pattern": "a {} shape",
    "size": "a {} shape",
}


@torch.no_grad()
def zero_shot(model, tok, n: int = 1024, seed: int = 30_000_000) -> dict[str, float]:
    """Per-attribute zero-shot accuracy on fresh world samples: argmax over one prompt per class."""
    a = W.sample_world(n, seed)
    img = F.normalize(model.encode_image(normalise(W.render(a))), dim=-1)
    out = {}
    for attr, template in ZERO_SHOT.items():
        txt = F.normalize(model.encode_text(tok([template.format(v) for v in W.VOCAB[attr]])), dim=-1)
        pred = (img @ txt.t()).argmax(1)
        out[attr] = round((pred == getattr(a, attr)).float().mean().item(), 4)
    return out
