"""Generator kind 'stylegan3': how the adaptation loop and the evaluation load, render, train and save a StyleGAN3.

Inputs are W+ latents [N, 16, w_dim] from the frozen mapping, exactly as for StyleGAN2; StyleGAN3 has no noise
inputs, so `noise_mode` and the noise generator have no effect.
"""
from __future__ import annotations

from pathlib import Path

import torch

from trainables.generators.stylegan3.config import StyleGAN3Config, preset
from trainables.generators.stylegan3.formats import is_stylegan3_file, load_stylegan3, save_stylegan3
from trainables.generators.stylegan3.groups import (fusion_trainable_names, mapping_names, nada_trainable_names,
                                                    names_of_layers, wplus_index_layers)
from trainables.generators.stylegan3.info import StyleGAN3Info
from trainables.generators.stylegan3.networks import StyleGAN3

TRAINABLE_SETS = {"fusion": fusion_trainable_names, "nada": nada_trainable_names}


class StyleGAN3Kind(StyleGAN3Info):
    """StyleGAN3 T / R (NVlabs pickles, state dicts, save_stylegan3 files): W+ latents from the frozen mapping."""

    @staticmethod
    def recognises(path: Path) -> bool:
        return is_stylegan3_file(path)

    @staticmethod
    def owns(g) -> bool:
        return isinstance(g, StyleGAN3)

    def load(self, path: str | Path):
        return load_stylegan3(path)

    def save(self, g, path: str | Path) -> Path:
        return save_stylegan3(g, path)

    def trainable_names(self, g, trainable_set: str, freeze_bias: bool) -> set[str]:
        try:
            return set(TRAINABLE_SETS[trainable_set](g, freeze_bias))
        except KeyError:
            raise ValueError(f"unknown trainable set {trainable_set!r}: one of {sorted(TRAINABLE_SETS)}") from None

    def layer_names(self, g, layer_indices: list[int], freeze_bias: bool) -> set[str]:
        """Layer selection: the parameters of the chosen W+ entries' modules (groups.wplus_index_layers)."""
        layers = wplus_index_layers(g)
        return set(names_of_layers(g, [layers[i] for i in layer_indices], freeze_bias=freeze_bias))

    def synthesis_names(self, g) -> set[str]:
        mapping = set(mapping_names(g))
        return {n for n, _ in g.named_parameters() if n not in mapping}

    def architecture(self, gen_cfg, notes: list[str]) -> StyleGAN3Config:
        """From the checkpoint when on disk, else NVlabs' T layout at `generator.size` (R when the file name
        says stylegan3-r)."""
        if Path(gen_cfg.checkpoint).is_file():
            arch = self.load(gen_cfg.checkpoint).cfg
            if gen_cfg.size is not None and gen_cfg.size != arch.img_resolution:
                raise ValueError(f"generator.size {gen_cfg.size} but {gen_cfg.checkpoint} is {arch.img_resolution} px; "
                                 f"fix generator.size or remove it")
            return arch
        if gen_cfg.size is None:
            raise ValueError(f"generator.checkpoint {gen_cfg.checkpoint} is not on this machine: set generator.size "
                             f"(e.g. 1024 for stylegan3-t-ffhq-1024x1024) to estimate without it")
        config = "r" if "stylegan3-r" in Path(gen_cfg.checkpoint).name else "t"
        notes.append(f"{gen_cfg.checkpoint} not on this machine: NVlabs stylegan3-{config} at {gen_cfg.size} px assumed")
        return preset(config, gen_cfg.size)

    def build(self, arch: StyleGAN3Config):
        return StyleGAN3(arch)

    @torch.no_grad()
    def step_inputs(self, g_frozen, batch: int, rng: torch.Generator, truncation: float, device) -> torch.Tensor:
        z = torch.randn(batch, g_frozen.cfg.z_dim, generator=rng).to(device)
        return g_frozen.mapping(z, truncation)

    def render(self, g, inputs: torch.Tensor, noise_mode: str, noise_rng: torch.Generator | None) -> torch.Tensor:
        return g.render(inputs, noise_mode)

    def wplus(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def with_wplus(self, inputs: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
        return wp

    @torch.no_grad()
    def grid_inputs(self, g_frozen, z: torch.Tensor, truncation: float) -> torch.Tensor:
        return g_frozen.mapping(z, truncation)

    def render_grid(self, g, inputs: torch.Tensor) -> torch.Tensor:
        return g.render(inputs, "const")

    def z_dim(self, g) -> int:
        return g.cfg.z_dim

    @torch.no_grad()
    def eval_inputs(self, g, z: torch.Tensor, truncation: float, first_index: int = 0) -> torch.Tensor:
        return self.grid_inputs(g, z, truncation)

    def extra_artifacts(self, g, out_dir: Path, seed: int) -> list[Path]:
        return []

    @torch.no_grad()
    def mean_latent(self, g, n: int, generator: torch.Generator) -> torch.Tensor:
        """Mean of the mapped w over n z ~ N(0, I) (the evaluation's fresh truncation centre)."""
        z = torch.randn(n, g.cfg.z_dim, generator=generator).to(g.mapping.w_avg.device)
        return g.mapping(z)[:, 0].mean(0)

    def set_truncation_center(self, g, center: torch.Tensor) -> None:
        g.mapping.w_avg.copy_(center.detach().reshape(-1).to(g.mapping.w_avg))
