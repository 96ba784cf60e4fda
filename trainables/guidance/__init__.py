"""Guidance: frozen critics that inject gradients into a generator's output (see docs/engine.md).

    FusionGuidance   Stable Diffusion score distillation + directional / reconstruction / LPIPS regularizers
    NadaGuidance     StyleGAN-NADA's directional CLIP loss
    build_guidance   the object an AdaptConfig asks for (cfg.method)
"""
from .fusion import FusionGuidance, inject_gradient
from .nada import NadaGuidance

__all__ = ["FusionGuidance", "NadaGuidance", "inject_gradient", "build_guidance"]


def build_guidance(cfg, device="cpu"):
    """`FusionGuidance(cfg.guidance, cfg.reg, device)` or `NadaGuidance(cfg.nada, device)` by `cfg.method`
    (an AdaptConfig); `prepare` is left to the caller."""
    if cfg.method == "fusion":
        return FusionGuidance(cfg.guidance, cfg.reg, device)
    if cfg.method == "nada":
        return NadaGuidance(cfg.nada, device)
    raise ValueError(f"unknown method {cfg.method!r} (fusion or nada)")
