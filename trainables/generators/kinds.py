"""What the adaptation loop and the evaluation need from a generator family, behind one small interface.

    kind = generator_kind(cfg.generator.kind)        # "stylegan2" | "eg3d" (trainables/registry.py)
    g = kind.load(path); inputs = kind.step_inputs(g_frozen, batch, rng, truncation, device)
    x = kind.render(g, inputs, noise_mode, noise_rng)  # [B, 3, H, W] in about [-1, 1]

StyleGAN2: inputs are W+ latents from the frozen mapping. EG3D: inputs are (z, camera, ws, render seed); the
frozen and trained generators see the same camera and the same renderer jitter (paper.md, EG3D).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality
from trainables.generators.eg3d import (EG3DConfig, EG3DGenerator, eg3d_trainable_names, ffhq512_128_config, front_camera,
                              load_eg3d, orbit_cameras, render_step, sample_step_inputs, save_eg3d)
from trainables.generators.eg3d.formats import INTERNAL_FORMAT, read_eg3d_pickle
from trainables.generators.formats import CheckpointError
from trainables.adaptation.grids import to_uint8
from trainables.registry import GENERATOR_KINDS
from trainables.adaptation.trainable_set import base_trainable_names


class StyleGAN2Kind:
    name = "stylegan2"

    def load(self, path: str | Path):
        return load_generator(path)

    def save(self, g, path: str | Path) -> Path:
        save_rosinality(g, path)
        return Path(path)

    def trainable_names(self, g, trainable_set: str, freeze_bias: bool) -> set[str]:
        """The parameters a method trains: `trainable_set` is its guidance class's `trainable_set`."""
        return base_trainable_names(g, trainable_set, freeze_bias)

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


@dataclass
class _EG3DGrid:
    ws: torch.Tensor   # [N, num_ws, w_dim]
    c: torch.Tensor    # [N, 25]


class EG3DKind:
    name = "eg3d"

    def load(self, path: str | Path):
        return load_eg3d(path)

    def save(self, g, path: str | Path) -> Path:
        save_eg3d(g, path)
        return Path(path)

    def trainable_names(self, g, trainable_set: str, freeze_bias: bool) -> set[str]:
        """Every method trains the backbone's synthesis and the super-resolution (the authors' EG3D run)."""
        return set(eg3d_trainable_names(g, freeze_bias=freeze_bias))

    def architecture(self, gen_cfg, notes: list[str]) -> EG3DConfig:
        """From the checkpoint when on disk, else the public FFHQ 512-128 model's configuration."""
        if Path(gen_cfg.checkpoint).is_file():
            return self.load(gen_cfg.checkpoint).cfg
        notes.append(f"{gen_cfg.checkpoint} not on this machine: EG3D ffhq512-128 assumed")
        return ffhq512_128_config()

    def build(self, arch: EG3DConfig):
        return EG3DGenerator(arch)

    def step_inputs(self, g_frozen, batch: int, rng: torch.Generator, truncation: float, device):
        return sample_step_inputs(g_frozen, batch, rng, truncation=truncation, device=device)

    def render(self, g, inputs, noise_mode: str, noise_rng: torch.Generator | None) -> torch.Tensor:
        return render_step(g, inputs, noise_mode=noise_mode, noise_generator=noise_rng)

    @torch.no_grad()
    def grid_inputs(self, g_frozen, z: torch.Tensor, truncation: float) -> _EG3DGrid:
        """One front view per latent (the comparison figure's views come from `orbit_inputs`)."""
        c = front_camera(g_frozen.avg_camera_pivot, g_frozen.avg_camera_radius).reshape(1, -1)
        c = c.to(z.device).expand(z.shape[0], -1)
        return _EG3DGrid(ws=g_frozen.mapping(z, c, truncation_psi=truncation), c=c)

    def render_grid(self, g, inputs: _EG3DGrid) -> torch.Tensor:
        gen = torch.Generator(device=inputs.ws.device).manual_seed(0)
        return g.synthesis(inputs.ws, inputs.c, noise_mode="const", render_generator=gen, return_dict=False)

    def z_dim(self, g) -> int:
        return g.z_dim

    @torch.no_grad()
    def eval_inputs(self, g, z: torch.Tensor, truncation: float, first_index: int = 0) -> _EG3DGrid:
        """Fixed (z, camera) pairs: sample i is seen from orbit view i mod EVAL_VIEWS."""
        views = orbit_cameras(EVAL_VIEWS, g.avg_camera_pivot, g.avg_camera_radius).to(z.device)
        c = views[(torch.arange(z.shape[0]) + first_index) % EVAL_VIEWS]
        return _EG3DGrid(ws=g.mapping(z, c, truncation_psi=truncation), c=c)

    @torch.no_grad()
    def extra_artifacts(self, g, out_dir: Path, seed: int, n_latents: int = 3, n_views: int = 9) -> list[Path]:
        """A multi-view GIF: `n_latents` fixed latents side by side, sweeping the orbit views."""
        z = torch.randn(n_latents, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(g.device)
        views = orbit_cameras(n_views, g.avg_camera_pivot, g.avg_camera_radius).to(g.device)
        frames = []
        for c in list(views) + list(views.flip(0))[1:-1]:
            grid = self.render_grid(g, _EG3DGrid(ws=g.mapping(z, c.expand(n_latents, -1), truncation_psi=0.7),
                                                 c=c.expand(n_latents, -1)))
            row = torch.cat(list(to_uint8(grid)), dim=1)  # [H, n*W, 3]
            frames.append(Image.fromarray(row.numpy()))
        path = Path(out_dir) / "samples" / "orbit.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=120, loop=0)
        return [path]


EVAL_VIEWS = 5


def detect_kind(path: str | Path) -> str:
    """'eg3d' for this project's EG3D files and EG3D network pickles, else 'stylegan2' (decided by content)."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):  # torch zip archive
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return "stylegan2"  # let the StyleGAN2 loader produce the precise error
        is_eg3d = isinstance(obj, dict) and (obj.get("format") == INTERNAL_FORMAT or
                                             any(str(k).startswith("backbone.") for k in obj))
        return "eg3d" if is_eg3d else "stylegan2"
    if head[:1] == b"\x80":  # a network pickle: EG3D's name a TriPlaneGenerator
        try:
            g_ema = read_eg3d_pickle(path).get("G_ema")
        except CheckpointError:
            return "stylegan2"  # the StyleGAN2 loader reports the precise problem
        return "eg3d" if getattr(g_ema, "class_name", None) == "TriPlaneGenerator" else "stylegan2"
    return "stylegan2"


def load_any(path: str | Path):
    """(kind, generator) for any supported checkpoint."""
    kind = generator_kind(detect_kind(path))
    return kind, kind.load(path)


def generator_kind(name: str):
    """The generator family `name` names (trainables/registry.py, GENERATOR_KINDS), instantiated."""
    return GENERATOR_KINDS.load(name)()
