"""What generator kind 'stylegan2' declares about itself without loading torch (trainables/registry.py)."""
from __future__ import annotations


class StyleGAN2Info:
    name = "stylegan2"
    Settings = None            # no settings beyond generator.checkpoint / generator.size
    config_defaults: dict = {}  # the paper's StyleGAN2 runs use the config's own defaults
    layer_selection = True     # W+ latents: the paper's adaptive layer selection (layers.k) applies
