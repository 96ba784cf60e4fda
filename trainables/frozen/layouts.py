"""Which frozen diffusion class loads a `guidance.model`: the first of trainables/registry.py DIFFUSION_LAYOUTS
whose `recognises(root)` says so (SDXL: an SDXL model_index.json or a text_encoder_2/ folder, or a single file;
SD 1.x/2.x: any other diffusers folder).

    model = load_frozen_diffusion(cfg.guidance, device=..., dtype=..., image_size=..., fast=..., compile=...)
    cls = layout_for(root)                     # the class, e.g. for the cost model's architecture-only build
"""
from __future__ import annotations

from pathlib import Path

from trainables.frozen.refs import resolve_diffusers_ref
from trainables.registry import DIFFUSION_LAYOUTS


def layout_for(root: str | Path) -> type:
    """The registered frozen-diffusion class that recognises a resolved folder (or single file)."""
    for name in DIFFUSION_LAYOUTS.names():
        cls = DIFFUSION_LAYOUTS.load(name)
        if cls.recognises(Path(root)):
            return cls
    raise ValueError(f"no diffusion-model layout recognises {root} (registered: {DIFFUSION_LAYOUTS.names()})")


def resolve_model_root(ref: str) -> Path:
    """A single-file checkpoint as given, else the diffusers folder (unet, vae, scheduler) of `ref`."""
    path = Path(str(ref)).expanduser()
    if path.is_file():
        return path
    return resolve_diffusers_ref(str(ref), subfolders=("unet", "vae", "scheduler"))


def load_frozen_diffusion(guidance_cfg, **load):
    """The frozen critic of `guidance_cfg` (guidance.model and what its layout reads), loaded by its layout."""
    return layout_for(resolve_model_root(guidance_cfg.model)).from_settings(guidance_cfg, **load)
