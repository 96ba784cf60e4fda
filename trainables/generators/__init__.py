"""StyleGAN2 generator (pure PyTorch), its checkpoint formats and parameter groups.

    from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality
"""

from trainables.generators.formats import CheckpointError, detect_format, load_generator, save_rosinality
from trainables.generators.stylegan2 import StyleGAN2, StyleGAN2Config

__all__ = ["CheckpointError", "StyleGAN2", "StyleGAN2Config", "detect_format", "load_generator", "save_rosinality"]
