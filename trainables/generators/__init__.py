"""StyleGAN2 generator (pure PyTorch), its checkpoint formats and parameter groups.

from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality

Names resolve on first use (PEP 562), so a torch-free submodule (settings, declarations) imports without torch.
"""
from __future__ import annotations

from trainables.objects import lazy_exports

_EXPORTS = {
    "trainables.generators.formats": ("CheckpointError", "detect_format", "load_generator", "save_rosinality"),
    "trainables.generators.stylegan2": ("StyleGAN2", "StyleGAN2Config"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]

__getattr__ = lazy_exports(__name__, _EXPORTS)
