"""Which generator parameters adaptation trains, and layer selection by W+ movement.

Fusion without layer selection trains the repeated styled convs only (`convs.*`); NADA trains conv1,
to_rgb1 and the convs (its "all" phase: everything but the mapping, the constant and the other ToRGBs).
With `freeze_bias` every `*.bias` stays frozen. Layer selection (both methods) unfreezes the top-k
layers of NADA's W+ index map `[conv1, to_rgb1] + convs`, ranked by mean |change| of the W+ entries
after a few SGD steps on W+ driven by the method's selection signal.
"""
from __future__ import annotations

from typing import Callable

import torch

from .generators.groups import fusion_trainable_names, layer_parameter_names, wplus_index_layers


def _drop_biases(names: set[str], freeze_bias: bool) -> set[str]:
    return {n for n in names if not (freeze_bias and n.endswith(".bias"))}


def base_trainable_names(g: torch.nn.Module, method: str, freeze_bias: bool) -> set[str]:
    if method == "fusion":
        return set(fusion_trainable_names(g, freeze_bias=freeze_bias))
    names: set[str] = set()
    for layer in wplus_index_layers(g):
        names.update(layer_parameter_names(g, layer))
    return _drop_biases(names, freeze_bias)


def names_for_layers(g: torch.nn.Module, layer_indices: list[int], freeze_bias: bool) -> set[str]:
    layers = wplus_index_layers(g)
    names: set[str] = set()
    for idx in layer_indices:
        names.update(layer_parameter_names(g, layers[idx]))
    return _drop_biases(names, freeze_bias)


def set_trainable(g: torch.nn.Module, names: set[str]) -> None:
    known = {n for n, _ in g.named_parameters()}
    missing = names - known
    if missing:
        raise KeyError(f"trainable parameter names not in the generator: {sorted(missing)[:5]}")
    for n, p in g.named_parameters():
        p.requires_grad_(n in names)


def rank_wplus_layers(
    wp: torch.Tensor,
    render: Callable[[torch.Tensor], torch.Tensor],
    selection_backward: Callable[[torch.Tensor], object],
    k: int,
    iterations: int,
    lr: float,
) -> tuple[list[int], torch.Tensor]:
    """NADA/Fusion layer selection: SGD on a copy of W+ ([B, n_latent, D]) for `iterations` steps,
    then the top-k W+ indices by mean |change| (mean over batch and channels)."""
    initial = wp.detach()
    codes = initial.clone().requires_grad_(True)
    sgd = torch.optim.SGD([codes], lr=lr)
    for _ in range(iterations):
        sgd.zero_grad(set_to_none=True)
        selection_backward(render(codes))
        sgd.step()
    movement = (codes.detach() - initial).abs().mean(dim=(0, 2))  # [n_latent]
    k = min(k, movement.numel())
    return torch.topk(movement, k).indices.tolist(), movement
