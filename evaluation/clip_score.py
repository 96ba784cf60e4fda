"""CLIP score: 100 x cos(image embedding, prompt embedding), averaged over the samples, with open_clip.

The paper does not publish its implementation; this is the common definition (no clamping at 0, unlike
torchmetrics' CLIPScore which reports max(100 cos, 0)). Images are the saved PNGs, preprocessed exactly as
NADA's CLIP loss sees generator output (`trainables.guidance.clip_models.preprocess_differentiable`:
resize shorter side, centre crop, normalise). The prompt is tokenised once, without templates. The model
name and pretrained tag are logged with every number (`eval.clip.model`, `eval.clip.pretrained`).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .sampling import list_images, load_images, resolve_device

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def metric_suffix(name: str, pretrained: str) -> str:
    """A metric-name-safe label for one (model, pretrained) pair: 'ViT-B-32-openai'."""
    if pretrained.strip().lower() in ("", "none"):
        pretrained = "random"
    tag = Path(pretrained).stem if ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))) else pretrained
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(name).stem}-{tag}" if tag else Path(name).stem)


def load_clip(name: str, pretrained: str, device: str | torch.device = "cpu", precision: str = "fp32"):
    from trainables.guidance.clip_models import load_open_clip

    return load_open_clip(name, pretrained, device=device, dtype=_DTYPES[precision])


@torch.no_grad()
def clip_score_images(images_01: torch.Tensor, prompt: str, loaded, batch_size: int = 32) -> tuple[float, torch.Tensor]:
    """Mean 100 x cos(image, prompt) for images [N,3,H,W] in [0,1]; returns (mean, per-image scores)."""
    from trainables.guidance.clip_models import preprocess_differentiable

    dev = next(loaded.model.parameters()).device
    text = loaded.model.encode_text(loaded.tokenizer([prompt]).to(dev)).float()
    text = text / text.norm(dim=-1, keepdim=True)
    scores = []
    for start in range(0, len(images_01), batch_size):
        x = images_01[start : start + batch_size].to(dev) * 2.0 - 1.0      # [0,1] -> [-1,1]
        emb = loaded.model.encode_image(preprocess_differentiable(x, loaded)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        scores.append(100.0 * (emb @ text.T).squeeze(-1).cpu())
    per_image = torch.cat(scores)
    return float(per_image.mean()), per_image


def clip_score_folder(folder: str | Path, prompt: str, name: str = "ViT-B-32", pretrained: str = "openai",
                      device: str = "auto", num_images: int | None = None, batch_size: int = 32,
                      precision: str = "fp32", loaded=None) -> float:
    """CLIP score of the PNGs in a folder (the first `num_images` in name order)."""
    dev = resolve_device(device)
    loaded = loaded or load_clip(name, pretrained, dev, precision)
    paths = list_images(folder)[:num_images]
    if not paths:
        raise FileNotFoundError(f"no PNG images in {folder}")
    total, count = 0.0, 0
    for start in range(0, len(paths), 64):   # bounded memory: 64 x 3 x 512 x 512 float32 = 200 MB
        chunk = load_images(paths[start : start + 64])
        mean, _ = clip_score_images(chunk, prompt, loaded, batch_size=batch_size)
        total += mean * len(chunk)
        count += len(chunk)
    return total / count


def clip_scores(folder: str | Path, prompt: str, cfg) -> dict[str, float]:
    """Every configured model: `eval/clip_score` is the first; each also as `eval/clip_score/<model>-<tag>`."""
    out: dict[str, float] = {}
    for i, spec in enumerate(cfg.clip.models):
        score = clip_score_folder(folder, prompt, spec.name, spec.pretrained, cfg.device, cfg.clip.num_images,
                                  cfg.batch_size, cfg.clip.precision)
        if i == 0:
            out["eval/clip_score"] = score
        out[f"eval/clip_score/{metric_suffix(spec.name, spec.pretrained)}"] = score
    return out
