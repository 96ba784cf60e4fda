"""Layer selection by W+ movement, for any generator kind that offers W+ (its `layer_selection`).

Layer selection (both methods) unfreezes the top-k W+ entries' layers, ranked by mean |change| of the W+ entries
after a few SGD steps on W+ driven by the method's selection signal (SDS alone for Fusion, global CLIP loss for
NADA). Which parameters a W+ entry names, and which a method trains without selection, the generator kind says
(`trainable_names`, `layer_names`, `synthesis_names`; StyleGAN2's in trainables/generators/stylegan2_kind.py).
"""
from __future__ import annotations

from typing import Callable

import torch

from trainables.generators.groups import set_trainable

__all__ = ["rank_wplus_layers", "set_trainable", "topk_indices"]


def rank_wplus_layers(
    wp: torch.Tensor,
    render: Callable[[torch.Tensor], torch.Tensor],
    selection_backward: Callable[[torch.Tensor], object],
    k: int,
    iterations: int,
    lr: float,
    choose: Callable[[torch.Tensor, int], list[int]] | None = None,
) -> tuple[list[int], torch.Tensor]:
    """Layer selection: SGD on a copy of W+ ([B, n_latent, D]) for `iterations` steps, then the top-k W+
    indices by mean |change| (mean over batch and channels); `choose(movement, k)` picks them (topk_indices)."""
    initial = wp.detach()
    codes = initial.clone().requires_grad_(True)
    sgd = torch.optim.SGD([codes], lr=lr)
    for _ in range(iterations):
        sgd.zero_grad(set_to_none=True)
        selection_backward(render(codes))
        sgd.step()
    movement = (codes.detach() - initial).abs().mean(dim=(0, 2))  # [n_latent]
    return (choose or topk_indices)(movement, k), movement


def topk_indices(movement: torch.Tensor, k: int) -> list[int]:
    """The k most moved W+ entries (a host read of the ranking)."""
    return torch.topk(movement, min(k, movement.numel())).indices.tolist()
