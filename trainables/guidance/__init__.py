"""Guidance: frozen critics that inject gradients into a generator's output (see docs/engine.md).

    FusionGuidance   Stable Diffusion score distillation + directional / reconstruction / LPIPS regularizers
    NadaGuidance     StyleGAN-NADA's directional CLIP loss
    build_guidance   the critic an AdaptConfig's `method` names (trainables/registry.py, GUIDANCE)

Every guidance class offers `from_config(cfg: AdaptConfig, device)`, `default_lr` (the method's learning rate
when `optim.lr` is unset), `trainable_set` (which generator parameters the method trains, by name of a set the
generator kinds know), `needs_frozen` (whether `backward` reads the frozen render) and the step API
`prepare / sample_timestep / backward / selection_backward`.

Names resolve on first use (PEP 562), so a torch-free submodule (settings, declarations) imports without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from trainables.registry import GUIDANCE

_LAZY = {
    'FusionGuidance': 'trainables.guidance.fusion',
    'inject_gradient': 'trainables.guidance.fusion',
    'NadaGuidance': 'trainables.guidance.nada',
}
__all__ = ['FusionGuidance', 'inject_gradient', 'NadaGuidance', 'build_guidance']


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_guidance(cfg, device="cpu"):
    """The guidance object `cfg.method` names (an AdaptConfig), built from the config; `prepare` is left to the caller."""
    return GUIDANCE.load(cfg.method).from_config(cfg, device)
