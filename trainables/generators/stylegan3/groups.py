"""Parameter groups of a StyleGAN3 for adaptation, the StyleGAN2 rules (`generators/groups.py`) carried over.

W+ index map (NVlabs' `ws.unbind(1)` order): entry 0 drives `synthesis.input` (its affine: rotation and
translation of the Fourier features), entry i >= 1 drives layer `synthesis.layer_names[i - 1]` (the last one is
ToRGB). Layer selection trains the chosen entries' modules entirely (NADA's rule).

| set | StyleGAN2 | StyleGAN3 |
|---|---|---|
| fusion | styled convs: conv weight, modulation weight (+ its bias without freeze_bias) | every non-ToRGB layer: `weight`, `affine.weight` (+ `affine.bias`) |
| nada | const, conv1 and every conv | `synthesis.input` and every non-ToRGB layer |

The activation bias (`L*.bias`, like StyleGAN2's `FusedLeakyReLU` bias) is never in the Fusion set; with
`freeze_bias` every `*.bias` leaves every set. Buffers (filters, magnitude_ema, Fourier frequencies) never train.
"""
from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def wplus_index_layers(g: nn.Module) -> list[str]:
    """W+ index -> module name: ['synthesis.input', 'synthesis.L0_...', ..., 'synthesis.L{n}_..._3'] (len num_ws)."""
    layers = ["synthesis.input"] + [f"synthesis.{n}" for n in g.synthesis.layer_names]
    assert len(layers) == g.num_ws, (len(layers), g.num_ws)
    return layers


def names_of_layers(g: nn.Module, layers: Iterable[str], freeze_bias: bool = False) -> list[str]:
    """Parameter names of whole modules, in `named_parameters` order; optionally without *.bias."""
    prefixes = tuple(layer + "." for layer in layers)
    return [n for n, _ in g.named_parameters() if n.startswith(prefixes) and not (freeze_bias and n.endswith(".bias"))]


def fusion_trainable_names(g: nn.Module, freeze_bias: bool = True) -> list[str]:
    keep = (".weight", ".affine.weight") if freeze_bias else (".weight", ".affine.weight", ".affine.bias")
    convs = tuple(f"synthesis.{n}." for n in g.synthesis.layer_names[:-1])
    return [n for n, _ in g.named_parameters() if n.startswith(convs) and n.endswith(keep)]


def nada_trainable_names(g: nn.Module, freeze_bias: bool = True) -> list[str]:
    return names_of_layers(g, wplus_index_layers(g)[:-1], freeze_bias=freeze_bias)


def mapping_names(g: nn.Module) -> list[str]:
    return [n for n, _ in g.named_parameters() if n.startswith("mapping.")]
