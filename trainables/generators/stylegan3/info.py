"""What generator kind 'stylegan3' declares about itself without loading torch (trainables/registry.py)."""
from __future__ import annotations


class StyleGAN3Info:
    name = "stylegan3"
    Settings = None            # no settings beyond generator.checkpoint / generator.size
    config_defaults: dict = {}  # the StyleGAN2 runs' defaults (the paper has no StyleGAN3 run to copy)
    layer_selection = True     # W+ latents (16 entries): the paper's adaptive layer selection (layers.k) applies
