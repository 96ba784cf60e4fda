"""What the adaptation loop and the evaluation need from a generator family, behind one small interface.

    kind = generator_kind(cfg.generator.kind)        # "stylegan2" | "eg3d"
    g = kind.load(path); inputs = kind.step_inputs(g_frozen, batch, rng, truncation, device)
    x = kind.render(g, inputs, noise_mode, noise_rng)  # [B, 3, H, W] in about [-1, 1]

StyleGAN2: inputs are W+ latents from the frozen mapping. EG3D: inputs are (z, camera, ws, render seed); the
frozen and trained generators see the same camera and the same renderer jitter (paper.md, EG3D).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class StyleGAN2Kind:
    name = "stylegan2"
    supports_layer_selection = True

    def load(self, path: str | Path):
        from .generators import load_generator

        return load_generator(path)

    def save(self, g, path: str | Path) -> Path:
        from .generators import save_rosinality

        save_rosinality(g, path)
        return Path(path)

    def trainable_names(self, g, method: str, freeze_bias: bool) -> set[str]:
        from .trainable_set import base_trainable_names

        return base_trainable_names(g, method, freeze_bias)

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


@dataclass
class _EG3DGrid:
    ws: torch.Tensor   # [N, num_ws, w_dim]
    c: torch.Tensor    # [N, 25]


class EG3DKind:
    name = "eg3d"
    supports_layer_selection = False

    def load(self, path: str | Path):
        from .generators.eg3d import load_eg3d

        return load_eg3d(path)

    def save(self, g, path: str | Path) -> Path:
        from .generators.eg3d import save_eg3d

        save_eg3d(g, path)
        return Path(path)

    def trainable_names(self, g, method: str, freeze_bias: bool) -> set[str]:
        from .generators.eg3d import eg3d_trainable_names

        return set(eg3d_trainable_names(g, freeze_bias=freeze_bias))

    def step_inputs(self, g_frozen, batch: int, rng: torch.Generator, truncation: float, device):
        from .generators.eg3d.adapt import sample_step_inputs

        return sample_step_inputs(g_frozen, batch, rng, truncation=truncation, device=device)

    def render(self, g, inputs, noise_mode: str, noise_rng: torch.Generator | None) -> torch.Tensor:
        from .generators.eg3d.adapt import render_step

        return render_step(g, inputs, noise_mode=noise_mode, noise_generator=noise_rng)

    @torch.no_grad()
    def grid_inputs(self, g_frozen, z: torch.Tensor, truncation: float) -> _EG3DGrid:
        """One front view per latent (the comparison figure's views come from `orbit_inputs`)."""
        from .generators.eg3d import front_camera

        c = front_camera(g_frozen.avg_camera_pivot, g_frozen.avg_camera_radius).reshape(1, -1)
        c = c.to(z.device).expand(z.shape[0], -1)
        return _EG3DGrid(ws=g_frozen.mapping(z, c, truncation_psi=truncation), c=c)

    def render_grid(self, g, inputs: _EG3DGrid) -> torch.Tensor:
        gen = torch.Generator(device=inputs.ws.device).manual_seed(0)
        return g.synthesis(inputs.ws, inputs.c, noise_mode="const", render_generator=gen, return_dict=False)

    def z_dim(self, g) -> int:
        return g.z_dim


KINDS: dict[str, Any] = {"stylegan2": StyleGAN2Kind(), "eg3d": EG3DKind()}


def generator_kind(name: str):
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"generator.kind {name!r} is not one of {sorted(KINDS)}") from None
