"""Parameter groups of an EG3DGenerator for adaptation.

Paper (StyleGAN-Fusion, EG3D): train `backbone.synthesis` and `superresolution`, every `*.bias` frozen; the
camera-conditioned mapping and the tri-plane decoder stay frozen.
"""

from __future__ import annotations

from torch import nn

TRAINED_PREFIXES = ("backbone.synthesis.", "superresolution.")


def eg3d_trainable_names(g: nn.Module, freeze_bias: bool = True) -> list[str]:
    """Names (in `named_parameters` order) of the parameters the paper trains on an EG3D generator."""
    names = [n for n, _ in g.named_parameters() if n.startswith(TRAINED_PREFIXES)]
    if freeze_bias:
        names = [n for n in names if not n.endswith(".bias")]
    return names


def set_eg3d_trainable(g: nn.Module, freeze_bias: bool = True) -> list[str]:
    """requires_grad True exactly on `eg3d_trainable_names(g, freeze_bias)`; returns those names."""
    names = set(eg3d_trainable_names(g, freeze_bias))
    for n, p in g.named_parameters():
        p.requires_grad_(n in names)
    return [n for n, _ in g.named_parameters() if n in names]
