"""LoRA adapters on the frozen critic (`guidance.lora`), loaded by diffusers' own LoRA loader (peft).

    apply_loras(unet, text_encoder, [("style.safetensors", 0.8), ("face.safetensors", 1.0, ("unet",))])

Each file goes through `StableDiffusionLoraLoaderMixin.load_lora_weights` (the code a diffusers
`StableDiffusionPipeline` runs: key conversion, the file's adapter config, UNet and text encoder), one adapter
name per file; `set_adapters` gives each its scale, then the adapters are fused into the weights
(W' = W + sum_i scale_i * (alpha_i / r_i) B_i A_i) and the peft layers removed, so the frozen critic runs
at the base model's cost and the fast engine / torch.compile see plain modules.
The files are checked first (trainables/frozen/lora_check.py) by the caller, before the base weights load.
"""
from __future__ import annotations

from typing import Sequence

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin


class _LoraHost(StableDiffusionLoraLoaderMixin):
    """Just enough of a pipeline for the LoRA mixin: its two loadable modules, no offloading hooks."""

    hf_device_map = None

    def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module | None):
        self.unet = unet
        self.text_encoder = text_encoder

    @property
    def components(self) -> dict[str, torch.nn.Module | None]:
        return {"unet": self.unet, "text_encoder": self.text_encoder}


def apply_loras(unet: torch.nn.Module, text_encoder: torch.nn.Module | None, loras: Sequence[tuple]) -> None:
    """Load every (path, scale[, components]) with diffusers' loader, weight them with `set_adapters` (a component
    left out gets weight 0: its layers of that file are not applied), fuse, drop the layers."""
    if not loras:
        return
    host = _LoraHost(unet, text_encoder)
    names = [f"guidance_lora_{i}" for i in range(len(loras))]
    weights = []
    for name, (path, scale, *rest) in zip(names, loras):
        host.load_lora_weights(str(path), adapter_name=name)
        on = set(rest[0]) if rest else {"unet", "text_encoder"}
        weights.append({c: float(scale) if c in on else 0.0 for c in ("unet", "text_encoder")})
    host.set_adapters(names, adapter_weights=weights)
    loaded = host.get_list_adapters()                 # {"unet": [...], "text_encoder": [...]}: who got layers
    components = [c for c in ("unet", "text_encoder") if loaded.get(c)]
    host.fuse_lora(components=components, lora_scale=1.0, adapter_names=names)
    host.unload_lora_weights()                        # the fused weights stay; the peft layers go
