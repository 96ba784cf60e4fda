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

from trainables.objects import lazy_exports
from trainables.registry import GUIDANCE

_EXPORTS = {
    "trainables.guidance.fusion": ("FusionGuidance", "inject_gradient"),
    "trainables.guidance.nada": ("NadaGuidance",),
}
__all__ = [name for names in _EXPORTS.values() for name in names] + ['build_guidance']

__getattr__ = lazy_exports(__name__, _EXPORTS)


def build_guidance(cfg, device="cpu"):
    """The guidance object `cfg.method` names (an AdaptConfig), built from the config; `prepare` is left to the caller."""
    return GUIDANCE.load(cfg.method).from_config(cfg, device)
