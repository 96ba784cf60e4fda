"""CLIP score with open_clip: the CLIPScore convention, plus the raw mean cosine under its own name.

    cos_i      = cos(E_img(preprocess(PNG_i)), E_txt(prompt))           per matched image-prompt pair
    clip_score = mean_i 100 * max(cos_i, 0)     (CLIPScore, Hessel et al. 2021, with w = 100 as in
                                                 torchmetrics' CLIPScore) -> `eval/clip_score`
    raw        = mean_i 100 * cos_i             (no clamp)              -> `eval/clip_score_raw`
The paper does not publish its implementation; the CLIPScore convention is the common one (docs/evaluation.md).
Images: the saved PNGs as PIL images through the model's own evaluation transform (open_clip's
`image_transform(..., is_train=False)`: bicubic antialiased resize, centre crop, normalise), as other
CLIP-score tools do -- not NADA's differentiable training preprocessing. The prompt is tokenised once,
without templates. The model is built with the activation its weights were trained with
(`trainables.frozen.clip_models.resolve_quick_gelu`: QuickGELU for OpenAI's weights). The model name and
pretrained tag are logged with every number (`eval.clip.model`, `eval.clip.pretrained`).
Inside a sweep trial the model comes from the worker's frozen-model cache (`trainables.frozen.model_cache`, on only
there), under the key NADA's critic uses for the same (model, weights, device, dtype): a reused worker, or a
NADA trial that loaded the same CLIP, does not build it again. Outside a sweep every call builds it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from trainables.devices import DTYPES, resolve_device
from trainables.frozen.clip_models import cached_open_clip

from .sampling import list_images


@dataclass(frozen=True)
class ClipScore:
    score: float          # mean 100 * max(cos, 0)   (CLIPScore convention)
    raw: float            # mean 100 * cos           (no clamp)
    num_images: int


def metric_suffix(name: str, pretrained: str) -> str:
    """A metric-name-safe label for one (model, pretrained) pair: 'ViT-B-32-openai'."""
    if pretrained.strip().lower() in ("", "none"):
        pretrained = "random"
    tag = Path(pretrained).stem if ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))) else pretrained
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(name).stem}-{tag}" if tag else Path(name).stem)


def load_clip(name: str, pretrained: str, device: str | torch.device = "cpu", precision: str = "fp32",
              quick_gelu: bool | None = None):
    """The frozen open_clip model (cached per sweep worker, under NADA's key; a plain build outside sweep trials)."""
    return cached_open_clip(name, pretrained, device=device, dtype=DTYPES[precision], quick_gelu=quick_gelu)


def score_from_cosines(cos: torch.Tensor) -> ClipScore:
    """CLIPScore convention 100 * max(cos, 0) averaged, and the raw 100 * cos average, from per-image cosines."""
    cos = cos.double()
    return ClipScore(score=float(100.0 * cos.clamp(min=0).mean()), raw=float(100.0 * cos.mean()),
                     num_images=int(cos.numel()))


@torch.no_grad()
def image_embeddings(paths: list[Path], loaded, batch_size: int = 32) -> torch.Tensor:
    """E_img(eval_transform(PNG)) per image, unnormalised, float32 [N, D], CPU (the CLIP score and preservation)."""
    dev = next(loaded.model.parameters()).device
    dtype = next(loaded.model.parameters()).dtype
    transform = loaded.eval_transform()
    out = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for p in paths[start : start + batch_size]:
            with Image.open(p) as im:
                batch.append(transform(im.convert("RGB")))
        out.append(loaded.model.encode_image(torch.stack(batch).to(dev, dtype)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def clip_cosines(paths: list[Path], prompt: str, loaded, batch_size: int = 32) -> torch.Tensor:
    """cos(E_img(eval_transform(PNG)), E_txt(prompt)) per image, float32 [N], CPU."""
    dev = next(loaded.model.parameters()).device
    text = loaded.model.encode_text(loaded.tokenizer([prompt]).to(dev)).float().cpu()
    text = text / text.norm(dim=-1, keepdim=True)
    emb = image_embeddings(paths, loaded, batch_size)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return (emb @ text.T).squeeze(-1)


def clip_score_folder_stats(folder: str | Path, prompt: str, name: str = "ViT-B-32", pretrained: str = "openai",
                            device: str = "auto", num_images: int | None = None, batch_size: int = 32,
                            precision: str = "fp32", loaded=None, quick_gelu: bool | None = None) -> ClipScore:
    """CLIP score (both conventions) of the PNGs in a folder (the first `num_images` in name order)."""
    dev = resolve_device(device)
    loaded = loaded or load_clip(name, pretrained, dev, precision, quick_gelu)
    paths = list_images(folder)[:num_images]
    if not paths:
        raise FileNotFoundError(f"no PNG images in {folder}")
    return score_from_cosines(clip_cosines(paths, prompt, loaded, batch_size))


def clip_score_folder(folder: str | Path, prompt: str, name: str = "ViT-B-32", pretrained: str = "openai",
                      device: str = "auto", num_images: int | None = None, batch_size: int = 32,
                      precision: str = "fp32", loaded=None, quick_gelu: bool | None = None) -> float:
    """CLIP score, CLIPScore convention (mean 100 * max(cos, 0)), of the PNGs in a folder."""
    return clip_score_folder_stats(folder, prompt, name, pretrained, device, num_images, batch_size, precision,
                                   loaded, quick_gelu).score


def clip_scores(folder: str | Path, prompt: str, cfg) -> dict[str, float]:
    """Every configured model. The first model: `eval/clip_score` (CLIPScore convention) and
    `eval/clip_score_raw` (mean 100 cos); every model also as `eval/clip_score/<model>-<tag>` and
    `eval/clip_score_raw/<model>-<tag>`."""
    out: dict[str, float] = {}
    for i, spec in enumerate(cfg.clip.models):
        s = clip_score_folder_stats(folder, prompt, spec.name, spec.pretrained, cfg.device, cfg.clip.num_images,
                                    cfg.batch_size, cfg.clip.precision, quick_gelu=spec.quick_gelu)
        if i == 0:
            out["eval/clip_score"] = s.score
            out["eval/clip_score_raw"] = s.raw
        suffix = metric_suffix(spec.name, spec.pretrained)
        out[f"eval/clip_score/{suffix}"] = s.score
        out[f"eval/clip_score_raw/{suffix}"] = s.raw
    return out
