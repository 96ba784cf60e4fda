"""Which generator parameters adaptation trains, and layer selection by W+ movement.

Fusion without layer selection trains the styled convs' weights (`groups.fusion_trainable_names`); NADA
trains its default layers (`groups.nada_training_layers`: the constant, conv1 and every conv). With
`freeze_bias` every `*.bias` stays frozen. Layer selection (both methods) unfreezes the top-k layers of
NADA's W+ index map `[conv1, to_rgb1] + convs`, ranked by mean |change| of the W+ entries after a few SGD
steps on W+ driven by the method's selection signal (SDS alone for Fusion, global CLIP loss for NADA).
"""
from __future__ import annotations

from typing import Callable

import torch

from trainables.generators.groups import (fusion_trainable_names, nada_training_layers, names_of_layers, parameter_groups,
                                set_trainable, wplus_index_layers)

__all__ = ["base_trainable_names", "names_for_layers", "rank_wplus_layers", "set_trainable", "synthesis_names",
           "topk_indices"]


# The trainable sets a guidance class can ask for by name (its `trainable_set`).
TRAINABLE_SETS = {
    "fusion": lambda g, freeze_bias: fusion_trainable_names(g, freeze_bias=freeze_bias),
    "nada": lambda g, freeze_bias: names_of_layers(g, nada_training_layers(g), freeze_bias=freeze_bias),
}


def base_trainable_names(g: torch.nn.Module, trainable_set: str, freeze_bias: bool) -> set[str]:
    """The StyleGAN2 parameters of the named set (without layer selection)."""
    try:
        return set(TRAINABLE_SETS[trainable_set](g, freeze_bias))
    except KeyError:
        raise ValueError(f"unknown trainable set {trainable_set!r}: one of {sorted(TRAINABLE_SETS)}") from None


def synthesis_names(g: torch.nn.Module) -> set[str]:
    """Every parameter outside the mapping network: what the authors' layer selection unfreezes (and so
    leaves with a gradient tensor) before choosing the layers to train."""
    mapping = set(parameter_groups(g)["mapping"])
    return {n for n, _ in g.named_parameters() if n not in mapping}


def names_for_layers(g: torch.nn.Module, layer_indices: list[int], freeze_bias: bool) -> set[str]:
    layers = wplus_index_layers(g)
    return set(names_of_layers(g, [layers[i] for i in layer_indices], freeze_bias=freeze_bias))


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
