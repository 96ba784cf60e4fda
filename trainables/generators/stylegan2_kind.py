"""Generator kind 'stylegan2': how the adaptation loop and the evaluation load, render, train and save a StyleGAN2.

StyleGAN2: inputs are W+ latents from the frozen mapping (`trainables.protocols.GeneratorKind` is the interface).
"""
from __future__ import annotations

from pathlib import Path

import torch

from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality
from trainables.generators.groups import (fusion_trainable_names, nada_training_layers, names_of_layers,
                                          parameter_groups, wplus_index_layers)
from trainables.generators.stylegan2_info import StyleGAN2Info


# The trainable sets a guidance class can ask for by name (its `trainable_set`): Fusion without layer selection
# trains the styled convs' weights (`groups.fusion_trainable_names`); NADA its default layers
# (`groups.nada_training_layers`: the constant, conv1 and every conv). With `freeze_bias` every *.bias stays frozen.
TRAINABLE_SETS = {
    "fusion": lambda g, freeze_bias: fusion_trainable_names(g, freeze_bias=freeze_bias),
    "nada": lambda g, freeze_bias: names_of_layers(g, nada_training_layers(g), freeze_bias=freeze_bias),
}


class StyleGAN2Kind(StyleGAN2Info):
    """StyleGAN2 (rosinality / NVlabs formats): inputs are W+ latents from the frozen mapping."""

    fallback = True   # detect_kind's answer when no other kind recognises a file (its loader names the problem)

    @staticmethod
    def recognises(path: Path) -> bool:
        return False  # the fallback: every file no other kind claims

    @staticmethod
    def owns(g) -> bool:
        return isinstance(g, StyleGAN2)

    def load(self, path: str | Path):
        return load_generator(path)

    def save(self, g, path: str | Path) -> Path:
        save_rosinality(g, path)
        return Path(path)

    def trainable_names(self, g, trainable_set: str, freeze_bias: bool) -> set[str]:
        """The parameters a method trains: `trainable_set` is its guidance class's `trainable_set`."""
        try:
            return set(TRAINABLE_SETS[trainable_set](g, freeze_bias))
        except KeyError:
            raise ValueError(f"unknown trainable set {trainable_set!r}: one of {sorted(TRAINABLE_SETS)}") from None

    def layer_names(self, g, layer_indices: list[int], freeze_bias: bool) -> set[str]:
        """Layer selection: the parameters of the chosen W+ entries' layers (NADA's W+ index map
        `[conv1, to_rgb1] + convs`)."""
        layers = wplus_index_layers(g)
        return set(names_of_layers(g, [layers[i] for i in layer_indices], freeze_bias=freeze_bias))

    def synthesis_names(self, g) -> set[str]:
        """Every parameter outside the mapping network: what the authors' layer selection unfreezes (and so
        leaves with a gradient tensor) before choosing the layers to train."""
        mapping = set(parameter_groups(g)["mapping"])
        return {n for n, _ in g.named_parameters() if n not in mapping}

    def architecture(self, gen_cfg, notes: list[str]) -> StyleGAN2Config:
        """The generator's configuration: from its checkpoint when on disk, else from `generator.size`."""
        if Path(gen_cfg.checkpoint).is_file():
            arch = self.load(gen_cfg.checkpoint).cfg
            if gen_cfg.size is not None and gen_cfg.size != arch.size:
                raise ValueError(f"generator.size {gen_cfg.size} but {gen_cfg.checkpoint} is {arch.size} px; "
                                 f"fix generator.size or remove it")
            return arch
        if gen_cfg.size is None:
            raise ValueError(f"generator.checkpoint {gen_cfg.checkpoint} is not on this machine: set generator.size "
                             f"(e.g. 1024 for FFHQ config-f) to estimate without it")
        notes.append(f"{gen_cfg.checkpoint} not on this machine: StyleGAN2 config-f at {gen_cfg.size} px assumed")
        return StyleGAN2Config(size=gen_cfg.size)

    def build(self, arch: StyleGAN2Config):
        return StyleGAN2(arch)

    @torch.no_grad()
    def step_inputs(self, g_frozen, batch: int, rng: torch.Generator, truncation: float, device) -> torch.Tensor:
        z = torch.randn(batch, g_frozen.cfg.style_dim, generator=rng).to(device)
        return g_frozen.truncate(g_frozen.broadcast(g_frozen.mapping(z)), truncation)

    def render(self, g, inputs: torch.Tensor, noise_mode: str, noise_rng: torch.Generator | None) -> torch.Tensor:
        return g.synthesis(inputs, noise_mode=noise_mode, noise_generator=noise_rng)

    def wplus(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def with_wplus(self, inputs: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
        return wp

    @torch.no_grad()
    def grid_inputs(self, g_frozen, z: torch.Tensor, truncation: float) -> torch.Tensor:
        return g_frozen.truncate(g_frozen.broadcast(g_frozen.mapping(z)), truncation)

    def render_grid(self, g, inputs: torch.Tensor) -> torch.Tensor:
        return g.synthesis(inputs, noise_mode="const")

    def z_dim(self, g) -> int:
        return g.cfg.style_dim

    @torch.no_grad()
    def eval_inputs(self, g, z: torch.Tensor, truncation: float, first_index: int = 0) -> torch.Tensor:
        return self.grid_inputs(g, z, truncation)

    def extra_artifacts(self, g, out_dir: Path, seed: int) -> list[Path]:
        return []

    @torch.no_grad()
    def mean_latent(self, g, n: int, generator: torch.Generator) -> torch.Tensor:
        """The authors' truncation centre: mean of f(z) over n z ~ N(0, I) (rosinality `mean_latent(4096)`)."""
        return g.mean_latent(n, generator)

    def set_truncation_center(self, g, center: torch.Tensor) -> None:
        g.set_latent_avg(center)
