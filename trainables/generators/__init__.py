"""StyleGAN2 generator (pure PyTorch), its checkpoint formats and parameter groups.

from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality

Names resolve on first use (PEP 562), so a torch-free submodule (settings, declarations) imports without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    'CheckpointError': 'trainables.generators.formats',
    'detect_format': 'trainables.generators.formats',
    'load_generator': 'trainables.generators.formats',
    'save_rosinality': 'trainables.generators.formats',
    'StyleGAN2': 'trainables.generators.stylegan2',
    'StyleGAN2Config': 'trainables.generators.stylegan2',
}
__all__ = ['CheckpointError', 'detect_format', 'load_generator', 'save_rosinality', 'StyleGAN2', 'StyleGAN2Config']


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
