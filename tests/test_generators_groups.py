"""Parameter groups on the FFHQ-1024 layout, and gradients through the trainable set."""

from __future__ import annotations

import pytest
import torch

from trainables.generators import StyleGAN2, StyleGAN2Config
from trainables.generators.groups import (
    fusion_trainable_names,
    layer_parameter_names,
    nada_training_layers,
    names_of_layers,
    parameter_groups,
    set_trainable,
    wplus_index_layers,
)


@pytest.fixture(scope="module")
def g1024() -> StyleGAN2:
    with torch.device("meta"):
        return StyleGAN2(StyleGAN2Config(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2))


def _fusion_rule_from_modules(g: StyleGAN2, freeze_bias: bool) -> set[str]:
    """StyleGAN-Fusion's rule restated on the module tree: under `input` and `convs`, every parameter of a
    module that owns a tensor attribute `weight` is trainable; then *.bias is frozen if freeze_bias."""
    names = set()
    for root in ("input", "convs"):
        for mname, m in getattr(g, root).named_modules():
            if isinstance(getattr(m, "weight", None), torch.Tensor):
                prefix = f"{root}.{mname}." if mname else f"{root}."
                names.update(prefix + n for n, _ in m.named_parameters())
    if freeze_bias:
        names = {n for n in names if not n.endswith(".bias")}
    return names


@pytest.mark.parametrize("freeze_bias", [True, False])
def test_fusion_trainable_set(g1024: StyleGAN2, freeze_bias: bool):
    names = fusion_trainable_names(g1024, freeze_bias=freeze_bias)
    assert set(names) == _fusion_rule_from_modules(g1024, freeze_bias)
    assert all(n.startswith("convs.") for n in names)
    assert "convs.3.conv.weight" in names and "convs.3.conv.modulation.weight" in names
    assert "convs.3.noise.weight" in names and "convs.15.noise.weight" in names
    assert "convs.3.activate.bias" not in names  # the activation bias is never trained by Fusion
    assert ("convs.3.conv.modulation.bias" in names) is (not freeze_bias)
    assert len(names) == 16 * (3 if freeze_bias else 4)
    assert not any(n.startswith(("input.", "conv1.", "to_rgb", "style.")) for n in names)


def test_wplus_map_and_layers(g1024: StyleGAN2):
    layers = wplus_index_layers(g1024)
    assert len(layers) == g1024.n_latent == 18
    assert layers[:3] == ["conv1", "to_rgb1", "convs.0"] and layers[-1] == "convs.15"
    assert layer_parameter_names(g1024, "convs.3") == [
        "convs.3.conv.weight", "convs.3.conv.modulation.weight", "convs.3.conv.modulation.bias",
        "convs.3.noise.weight", "convs.3.activate.bias"]
    assert layer_parameter_names(g1024, "to_rgb1") == [
        "to_rgb1.bias", "to_rgb1.conv.weight", "to_rgb1.conv.modulation.weight", "to_rgb1.conv.modulation.bias"]
    with pytest.raises(KeyError):
        layer_parameter_names(g1024, "convs.99")
    # NADA trains chosen layers whole; with freeze_bias the biases drop out
    chosen = names_of_layers(g1024, ["to_rgb1", "convs.0"], freeze_bias=True)
    assert "to_rgb1.conv.weight" in chosen and "convs.0.noise.weight" in chosen
    assert not any(n.endswith(".bias") for n in chosen)


def test_parameter_groups_partition(g1024: StyleGAN2):
    groups = parameter_groups(g1024)
    all_names = [n for n, _ in g1024.named_parameters()]
    parts = groups["mapping"] + groups["const"] + groups["conv1"] + groups["to_rgbs"] + groups["convs"]
    assert sorted(parts) == sorted(all_names)  # the coarse groups partition the parameters
    assert groups["const"] == ["input.input"]
    assert len(groups["mapping"]) == 16 and len(groups["to_rgbs"]) == 4 * 9
    assert sum(len(groups[f"convs.{i}"]) for i in range(16)) == len(groups["convs"])
    assert all(n.endswith(".bias") for n in groups["biases"]) and "to_rgbs.7.bias" in groups["biases"]
    assert len(groups["noise_strengths"]) == 17


def test_nada_phases(g1024: StyleGAN2):
    assert nada_training_layers(g1024) == ["input", "conv1"] + [f"convs.{i}" for i in range(16)]
    assert nada_training_layers(g1024, "shape") == ["input", "conv1", "convs.0", "convs.1"]
    assert nada_training_layers(g1024, "texture")[2:] == [f"convs.{i}" for i in range(2, 10)]
    with pytest.raises(ValueError):
        nada_training_layers(g1024, "everything")


def test_gradients_flow_only_to_trainables():
    torch.manual_seed(0)
    g = StyleGAN2(StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8}))
    names = fusion_trainable_names(g, freeze_bias=True)
    params = set_trainable(g, names)
    assert len(params) == len(names) == 4 * 3
    z = torch.randn(2, 16)
    with torch.no_grad():
        frozen = g(z, noise_mode="const")
    x = g(z, noise_mode="const")
    assert x.requires_grad
    (x - frozen + 0.1 * x).square().mean().backward()
    for n, p in g.named_parameters():
        if n in names:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    # one optimiser step changes exactly the trainable parameters
    before = {n: p.detach().clone() for n, p in g.named_parameters()}
    torch.optim.Adam(params, lr=1e-2).step()
    changed = {n for n, p in g.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(names)
