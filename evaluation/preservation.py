"""Source preservation: how much of the frozen source generator's image survives adaptation, pair by pair.

Image i of the adapted samples and image i of the source samples come from the same z (the same fixed latents,
truncation and centre), so each pair measures the change adaptation made to one image:
    lpips    = mean_i LPIPS(src_i, adapted_i)                       (lower = more preserved)
    clip     = mean_i cos(E_img(src_i), E_img(adapted_i)), mean over the CLIP models (higher = more preserved)
    features = mean_i cos(f(src_i), f(adapted_i)) of the FID feature extractor (Inception; an identity-like
               extractor plugged in at fid.feature_extractor, e.g. a face-recognition network, gives identity)
No weights beyond what the other metrics load (the LPIPS backbone, the CLIP models, the FID extractor).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .clip_score import image_embeddings, load_clip
from .diversity import build_lpips
from .sampling import MANIFEST, list_images, load_images, resolve_device


def paired_images(source_dir: Path, samples_dir: Path, num: int | None) -> tuple[list[Path], list[Path]]:
    """The first min(`num`, samples) (source, adapted) image paths, checked to come from the same latents."""
    src, ada = list_images(source_dir), list_images(samples_dir)
    if len(src) != len(ada):
        raise ValueError(f"source samples {source_dir} hold {len(src)} images, adapted samples {samples_dir} "
                         f"{len(ada)}: they must be rendered with the same num_samples")
    n = len(ada) if num is None else min(num, len(ada))
    ms = [json.loads((d / MANIFEST).read_text()) if (d / MANIFEST).is_file() else {} for d in (source_dir, samples_dir)]
    keys = ("latents_sha256", "truncation", "truncation_center")
    if all(keys[0] in m for m in ms) and any(ms[0].get(k) != ms[1].get(k) for k in keys):
        raise ValueError(f"source samples {source_dir} and adapted samples {samples_dir} were not rendered from the "
                         f"same latents / truncation ({', '.join(f'{k}: {ms[0].get(k)} vs {ms[1].get(k)}' for k in keys)})")
    return src[:n], ada[:n]


@torch.no_grad()
def lpips_preservation(src: list[Path], ada: list[Path], cfg, batch: int = 32) -> float:
    """mean_i LPIPS(src_i, adapted_i) with diversity.lpips's network, backbone and resize."""
    lp = cfg.diversity.lpips
    model = build_lpips(lp.net, lp.backbone_path, resolve_device(cfg.device))
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(src), batch):
        a = load_images(src[s : s + batch], size=lp.resize) * 2.0 - 1.0
        b = load_images(ada[s : s + batch], size=lp.resize) * 2.0 - 1.0
        out.append(model(a.to(dev), b.to(dev)).flatten().double().cpu())
    return float(torch.cat(out).mean())


def clip_preservation(src: list[Path], ada: list[Path], cfg) -> float:
    """mean over CLIP models (clip.models) of mean_i cos(E(src_i), E(adapted_i))."""
    per_model = []
    for spec in cfg.clip.models:
        loaded = load_clip(spec.name, spec.pretrained, resolve_device(cfg.device), cfg.clip.precision, spec.quick_gelu)
        a, b = (image_embeddings(paths, loaded, cfg.batch_size).double() for paths in (src, ada))
        a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
        per_model.append(float((a * b).sum(-1).mean()))
    return float(np.mean(per_model))


def feature_preservation(src_feats: np.ndarray, ada_feats: np.ndarray) -> float:
    """mean_i cos(f(src_i), f(adapted_i)) of two [N, D] feature arrays in the same image order."""
    a = np.asarray(src_feats, dtype=np.float64)
    b = np.asarray(ada_feats, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"feature arrays differ in shape: {a.shape} vs {b.shape}")
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).mean())
