"""Which frozen diffusion class loads a `guidance.model`: the first layout of trainables/registry.py
DIFFUSION_LAYOUTS whose torch-free declaration (below) recognises the resolved folder or file. Torch-free at import.

    SDXL     an SDXL model_index.json (_class_name StableDiffusionXL...) or a text_encoder_2/ folder, or a
             single-file checkpoint (.safetensors / .ckpt: diffusers' from_single_file)
    SD       any other diffusers folder (SD 1.x / 2.x and their fine-tunes): the fallback

    model = load_frozen_diffusion(cfg.guidance, device=..., dtype=..., image_size=..., fast=..., compile=...)
    cls = layout_for(root)                 # the class (the cost model builds it from architecture alone)
    resolve_model_ref(ref)                 # preflight: the folder with every subfolder its layout loads
"""
from __future__ import annotations

import json
from pathlib import Path

from trainables.frozen.refs import resolve_diffusers_ref
from trainables.registry import DIFFUSION_LAYOUTS

SD_SUBFOLDERS = ("unet", "vae", "scheduler")
SDXL_SUBFOLDERS = SD_SUBFOLDERS + ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


def model_index(root: Path) -> dict:
    f = Path(root) / "model_index.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def is_sdxl_folder(root: Path) -> bool:
    """SDXL: model_index.json names an SDXL pipeline, or the folder has a second text encoder."""
    name = str(model_index(root).get("_class_name", ""))
    return name.startswith("StableDiffusionXL") or (Path(root) / "text_encoder_2").is_dir()


class SdLayout:
    """Declaration of layout 'sd' (trainables/frozen/diffusion_model.py FrozenDiffusion)."""

    subfolders = SD_SUBFOLDERS

    @staticmethod
    def recognises(root: Path) -> bool:
        return Path(root).is_dir()


class SdxlLayout:
    """Declaration of layout 'sdxl' (trainables/frozen/sdxl.py FrozenSDXL)."""

    subfolders = SDXL_SUBFOLDERS

    @staticmethod
    def recognises(root: Path) -> bool:
        return Path(root).is_file() or is_sdxl_folder(root)


def _layout_name(root: Path) -> str:
    for name in DIFFUSION_LAYOUTS.names():
        if DIFFUSION_LAYOUTS.declaration(name).recognises(Path(root)):
            return name
    raise ValueError(f"guidance.model: no diffusion-model layout recognises {root} "
                     f"(registered: {', '.join(DIFFUSION_LAYOUTS.names())}); pass a diffusers folder")


def layout_for(root: str | Path) -> type:
    """The registered frozen-diffusion class that recognises a resolved folder (or single file)."""
    return DIFFUSION_LAYOUTS.load(_layout_name(Path(root)))


def resolve_model_ref(ref: str, allow_download: bool | None = None) -> Path:
    """A single-file checkpoint as given, else the diffusers folder of `ref` holding every subfolder its layout
    loads (an SDXL also needs both text encoders and tokenizers); errors name what is missing and the fix."""
    path = Path(str(ref)).expanduser()
    if path.is_file():
        return path
    root = resolve_diffusers_ref(str(ref), subfolders=SD_SUBFOLDERS, allow_download=allow_download)
    needs = DIFFUSION_LAYOUTS.declaration(_layout_name(root)).subfolders
    return resolve_diffusers_ref(str(ref), subfolders=needs, allow_download=allow_download) if needs != SD_SUBFOLDERS \
        else root


def load_frozen_diffusion(guidance_cfg, **load):
    """The frozen critic of `guidance_cfg` (guidance.model and what its layout reads), loaded by its layout."""
    path = Path(str(guidance_cfg.model)).expanduser()
    root = path if path.is_file() else resolve_diffusers_ref(str(guidance_cfg.model), subfolders=SD_SUBFOLDERS)
    return layout_for(root).from_settings(guidance_cfg, **load)
