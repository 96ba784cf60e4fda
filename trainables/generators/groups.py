"""Named parameter groups of a StyleGAN2 (rosinality names), as the adaptation methods use them.

Facts taken from the public code (behaviour, not copied):
- StyleGAN-Fusion (KunpengSong/styleganfusion, model/ZSSGAN.py, `args.diffusion`): freeze everything, then
  unfreeze every parameter of the sub-modules of `input` and `convs` that own a tensor attribute `weight`.
  `ConstantInput` has no `weight` (its tensor is `input`), so the constant stays frozen; inside each styled
  conv the modules with `weight` are the modulated conv (its weight plus, recursively, the modulation's
  weight and bias), the modulation itself and the noise injection; `FusedLeakyReLU` has only a bias and stays
  frozen. With `freeze_bias` every parameter whose name ends in `.bias` is then frozen again.
- StyleGAN-NADA (rinongal/StyleGAN-nada, ZSSGAN/model/ZSSGAN.py): `get_training_layers(phase)` picks whole
  modules from `generator.children()`; adaptive layer selection maps W+ index i to
  `[conv1, to_rgb1] + list(convs)` (so len == n_latent) and trains the chosen modules entirely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from trainables.generators.stylegan2 import StyleGAN2

_FUSION_WEIGHT_SUFFIXES = (".conv.weight", ".conv.modulation.weight", ".noise.weight")
NADA_PHASES = (None, "texture", "shape", "no_fine", "shape_expanded", "all")


def _names(g: nn.Module) -> list[str]:
    return [n for n, _ in g.named_parameters()]


def layer_parameter_names(g: StyleGAN2, layer_name: str) -> list[str]:
    """Every parameter name under module `layer_name` ('conv1', 'to_rgb1', 'convs.3', 'to_rgbs.0', 'style', 'input')."""
    names = [n for n in _names(g) if n == layer_name or n.startswith(layer_name + ".")]
    if not names:
        raise KeyError(f"no parameters under {layer_name!r}; layers are {sorted(parameter_groups(g))}")
    return names


def parameter_groups(g: StyleGAN2) -> dict[str, list[str]]:
    """Group name -> parameter names. Groups: mapping, const, conv1, to_rgb1, to_rgbs (all ToRGB incl. to_rgb1),
    convs (all repeated styled convs), convs.{i}, to_rgbs.{i}, biases (every *.bias), noise_strengths."""
    names = _names(g)
    groups: dict[str, list[str]] = {
        "mapping": [n for n in names if n.startswith("style.")],
        "const": [n for n in names if n.startswith("input.")],
        "conv1": [n for n in names if n.startswith("conv1.")],
        "to_rgb1": [n for n in names if n.startswith("to_rgb1.")],
        "to_rgbs": [n for n in names if n.startswith("to_rgb1.") or n.startswith("to_rgbs.")],
        "convs": [n for n in names if n.startswith("convs.")],
        "biases": [n for n in names if n.endswith(".bias")],
        "noise_strengths": [n for n in names if n.endswith(".noise.weight")],
    }
    for i in range(len(g.convs)):
        groups[f"convs.{i}"] = [n for n in names if n.startswith(f"convs.{i}.")]
    for i in range(len(g.to_rgbs)):
        groups[f"to_rgbs.{i}"] = [n for n in names if n.startswith(f"to_rgbs.{i}.")]
    return groups


def fusion_trainable_names(g: StyleGAN2, freeze_bias: bool = True) -> list[str]:
    """StyleGAN-Fusion's default trainable set: in every `convs.*` the conv weight, modulation weight and noise
    strength; without freeze_bias also the modulation bias (the activation bias is never trained)."""
    keep = _FUSION_WEIGHT_SUFFIXES if freeze_bias else _FUSION_WEIGHT_SUFFIXES + (".conv.modulation.bias",)
    return [n for n in _names(g) if n.startswith("convs.") and n.endswith(keep)]


def wplus_index_layers(g: StyleGAN2) -> list[str]:
    """StyleGAN-NADA's W+ index -> layer map: ['conv1', 'to_rgb1', 'convs.0', ..., 'convs.{2L-1}'] (len n_latent)."""
    layers = ["conv1", "to_rgb1"] + [f"convs.{i}" for i in range(len(g.convs))]
    assert len(layers) == g.n_latent, (len(layers), g.n_latent)
    return layers


def nada_training_layers(g: StyleGAN2, phase: str | None = None) -> list[str]:
    """Module names StyleGAN-NADA's `get_training_layers(phase)` returns (default: const, conv1 and all convs)."""
    convs = [f"convs.{i}" for i in range(len(g.convs))]
    head = ["input", "conv1"]
    table = {
        "texture": head + convs[2:10],
        "shape": head + convs[0:2],
        "no_fine": head + convs[:10],
        "shape_expanded": head + convs[0:3],
        "all": ["style", "input", "conv1", "to_rgb1", "convs", "to_rgbs"],
    }
    if phase is not None and phase not in table:
        raise ValueError(f"unknown NADA phase {phase!r}; one of {NADA_PHASES}")
    return table.get(phase, head + convs) if phase is not None else head + convs


def names_of_layers(g: StyleGAN2, layers: Iterable[str], freeze_bias: bool = False) -> list[str]:
    """Parameter names of whole layers (NADA trains chosen modules entirely); optionally without *.bias."""
    wanted: set[str] = set()
    for layer in layers:
        wanted.update(layer_parameter_names(g, layer))
    return [n for n in _names(g) if n in wanted and not (freeze_bias and n.endswith(".bias"))]


def set_trainable(g: nn.Module, names: Iterable[str]) -> list[nn.Parameter]:
    """requires_grad = True exactly for `names` (every other parameter frozen); returns those parameters."""
    names = set(names)
    params = dict(g.named_parameters())
    unknown = sorted(names - set(params))
    if unknown:
        raise KeyError(f"unknown parameter names {unknown[:5]}")
    out = []
    for n, p in params.items():
        p.requires_grad_(n in names)
        if n in names:
            out.append(p)
    return out


_CONVS_RE = re.compile(r"^convs\.(\d+)\.")


def conv_index(name: str) -> int | None:
    """Index i of a `convs.{i}.*` parameter name, else None."""
    m = _CONVS_RE.match(name)
    return int(m.group(1)) if m else None
