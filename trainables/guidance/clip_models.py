"""open_clip model loading (NADA's critic, the CLIP score) with offline-aware, actionable errors.

`load_open_clip(name, pretrained)`:
    name        open_clip model name ('ViT-B-32'), a JSON model config file, or a directory holding
                `open_clip_config.json` (HF-hub layout: {"model_cfg": ..., "preprocess_cfg": ...}) or
                `<stem>.json`; custom configs are registered with open_clip under their stem.
    pretrained  open_clip tag ('openai' -> QuickGELU is applied by open_clip), a local weights file
                (.pt/.pth/.bin/.safetensors), or None / '' / 'none' (random init; a directory's own
                weights file when present).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_OPENCLIP_DIR_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "model.pt", "weights.pt",
)


from ..refs import ModelNotFoundError


class ClipWeightsNotFoundError(ModelNotFoundError):
    """open_clip weights for a (model, pretrained) pair are neither local nor downloadable here."""


@dataclass
class LoadedClip:
    model: torch.nn.Module               # frozen, eval, requires_grad False
    tokenizer: Any                       # open_clip tokenizer: list[str] -> LongTensor [N, ctx]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_size: int                      # square input side
    name: str                            # open_clip model name as registered
    pretrained: str                      # tag or weights path ('' = random init)
    interpolation: str = "bicubic"       # resize mode used by preprocess_differentiable

    def encode_image(self, images_m11: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> unnormalised image embeddings [B, D] (differentiable)."""
        return self.model.encode_image(preprocess_differentiable(images_m11, self))

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list of N strings -> unnormalised text embeddings [N, D]."""
        dev = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(texts).to(dev))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _register_config(name: str) -> str:
    """Register a JSON config / config directory with open_clip; return the model name to use."""
    import open_clip

    path = Path(name)
    if not (path.suffix == ".json" or path.is_dir()):
        return name
    if path.is_dir():
        cfg_file = path / "open_clip_config.json"
        if not cfg_file.is_file():
            jsons = sorted(path.glob("*.json"))
            if len(jsons) != 1:
                raise FileNotFoundError(f"open_clip model directory {path} has no open_clip_config.json "
                                        f"(and not exactly one *.json config: {[j.name for j in jsons]})")
            cfg_file = jsons[0]
        stem = path.name if cfg_file.name == "open_clip_config.json" else cfg_file.stem
    else:
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config {path} does not exist")
        cfg_file, stem = path, path.stem
    cfg = json.loads(cfg_file.read_text())
    model_cfg = cfg.get("model_cfg", cfg)
    if not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"{cfg_file} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    if open_clip.get_model_config(stem) == model_cfg:
        return stem                                   # already registered with this exact config
    if model_cfg is cfg:
        open_clip.add_model_config(cfg_file)
    else:  # HF-hub layout: register the nested model_cfg under the directory's name
        tmp = Path(tempfile.mkdtemp(prefix="openclip_cfg_")) / f"{stem}.json"
        tmp.write_text(json.dumps(model_cfg))
        open_clip.add_model_config(tmp)
    return stem


def _dir_weights(name: str) -> str | None:
    path = Path(name)
    if not path.is_dir():
        return None
    for fname in _OPENCLIP_DIR_WEIGHTS:
        if (path / fname).is_file():
            return str(path / fname)
    return None


def _missing_weights_error(model_name: str, pretrained: str, cause: BaseException | None) -> ClipWeightsNotFoundError:
    import open_clip

    cfg = open_clip.pretrained.get_pretrained_cfg(model_name, pretrained)
    hub = (cfg or {}).get("hf_hub", "")
    repo, fname = os.path.split(hub) if hub else ("", "")
    fetch = [f"python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{pretrained}')\""]
    if repo:
        fetch.insert(0, f"hf download {repo}" + (f" {fname}" if fname else ""))
    off = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded; " if _offline() else ""
    return ClipWeightsNotFoundError(
        f"open_clip weights for model '{model_name}' with pretrained='{pretrained}' are not available locally. "
        f"{off}looked in the Hugging Face cache ({_hf_cache_dir()}) and open_clip's cache. "
        f"Fetch them on a machine with network access with: {' or '.join(fetch)} "
        f"(then copy the HF cache here), or pass a local weights file as `pretrained`."
        + (f" Cause: {type(cause).__name__}: {cause}" if cause is not None else "")
    )


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _tag_cached(model_name: str, pretrained: str) -> bool | None:
    """True/False when the tag's HF-hub file is (not) in the cache; None when it cannot be told."""
    import open_clip

    cfg = open_clip.pretrained.get_pretrained_cfg(model_name, pretrained)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, fname = os.path.split(hub)
    names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if fname.endswith(".bin"):
        names.insert(0, fname[: -len(".bin")] + ".safetensors")
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


def _resolve(name: str, pretrained: str | None) -> tuple[str, str, bool]:
    """(registered model name, weights tag or file or '', is_file); raises when not loadable here."""
    import open_clip

    model_name = _register_config(name)
    tag = (pretrained or "").strip()
    if tag.lower() == "none":
        tag = ""
    if not tag:
        tag = _dir_weights(name) or ""
    is_file = tag.endswith(_WEIGHT_SUFFIXES) or os.sep in tag
    if is_file and not Path(tag).is_file():
        raise ClipWeightsNotFoundError(f"open_clip weights file '{tag}' for model '{model_name}' does not exist")
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model '{name}': not a built-in name "
                         f"(e.g. ViT-B-32), a JSON config file, or a directory with open_clip_config.json")
    if tag and not is_file:
        if tag not in open_clip.list_pretrained_tags_by_model(model_name):
            raise ValueError(f"open_clip has no pretrained tag '{tag}' for model '{model_name}' "
                             f"(known: {open_clip.list_pretrained_tags_by_model(model_name)})")
        if _offline() and _tag_cached(model_name, tag) is False:
            raise _missing_weights_error(model_name, tag, None)
    return model_name, tag, is_file


def check_open_clip(name: str, pretrained: str | None) -> str:
    """Cheap availability check (no model is built); returns the registered model name."""
    return _resolve(name, pretrained)[0]


def load_open_clip(name: str, pretrained: str | None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> LoadedClip:
    """Build an open_clip model, frozen and in eval mode; see the module docstring for `name`/`pretrained`."""
    import open_clip

    model_name, tag, is_file = _resolve(name, pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=tag or None, device=device,
                                       pretrained_text=False, require_pretrained=bool(tag))
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        if is_file:
            raise
        raise _missing_weights_error(model_name, tag, exc) from exc
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    pcfg = open_clip.get_model_preprocess_cfg(model)
    size = pcfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        image_mean=tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD)),
        image_size=int(size),
        name=model_name,
        pretrained=tag,
        interpolation=pcfg.get("interpolation", "bicubic"),
    )


# NADA's preprocessing: Normalize(-1, 2) ([-1,1] -> [0,1]), CLIP Resize (shorter side), CenterCrop,
# Normalize(mean, std) -- on tensors, so gradients reach the generator.
def preprocess_differentiable(images: torch.Tensor, loaded: LoadedClip, antialias: bool = False) -> torch.Tensor:
    x = (images + 1.0) / 2.0                                        # [B,3,H,W] in [0,1]
    s = loaded.image_size
    h, w = x.shape[-2:]
    if min(h, w) != s:   # shorter side -> s, longer side truncated as torchvision's Resize(int) does
        nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        mode = "bicubic" if loaded.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=(nh, nw), mode=mode, align_corners=False, antialias=antialias)
        h, w = nh, nw
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))  # centre crop (torchvision's rounding)
    x = x[..., top : top + s, left : left + s]
    mean = torch.tensor(loaded.image_mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(loaded.image_std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    dtype = next(loaded.model.parameters()).dtype
    return ((x - mean) / std).to(dtype)
