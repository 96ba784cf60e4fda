"""Generator kind 'eg3d': how the adaptation loop and the evaluation load, render, train and save an EG3D."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from trainables.adaptation.grids import to_uint8
from trainables.generators.eg3d import (EG3DConfig, EG3DGenerator, eg3d_trainable_names, ffhq512_128_config,
                                        front_camera, load_eg3d, orbit_cameras, render_step, sample_step_inputs,
                                        save_eg3d)
from trainables.generators.eg3d.formats import INTERNAL_FORMAT, read_eg3d_pickle
from trainables.generators.eg3d.info import EG3DInfo
from trainables.generators.formats import CheckpointError

EVAL_VIEWS = 5


def is_eg3d_file(path: str | Path) -> bool:
    """True for this project's EG3D files (torch zip) and EG3D network pickles (G_ema a TriPlaneGenerator)."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):  # torch zip archive
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return False  # let the StyleGAN2 loader produce the precise error
        return isinstance(obj, dict) and (obj.get("format") == INTERNAL_FORMAT or
                                          any(str(k).startswith("backbone.") for k in obj))
    if head[:1] == b"\x80":  # a network pickle
        try:
            g_ema = read_eg3d_pickle(path).get("G_ema")
        except CheckpointError:
            return False  # the StyleGAN2 loader reports the precise problem
        return getattr(g_ema, "class_name", None) == "TriPlaneGenerator"
    return False


@dataclass
class _EG3DGrid:
    ws: torch.Tensor   # [N, num_ws, w_dim]
    c: torch.Tensor    # [N, 25]


class EG3DKind(EG3DInfo):
    """EG3D: inputs are (z, camera, ws, render seed); the frozen and trained generators see the same camera and the
    same renderer jitter (paper.md, EG3D)."""

    @staticmethod
    def recognises(path: Path) -> bool:
        """This project's EG3D files and EG3D network pickles (a TriPlaneGenerator), decided by content."""
        return is_eg3d_file(path)

    @staticmethod
    def owns(g) -> bool:
        return isinstance(g, EG3DGenerator)

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
    def mean_latent(self, g, n: int, generator: torch.Generator) -> torch.Tensor:
        """Mean of the mapped z over n draws, conditioned on the front camera (EG3D's w_avg is tracked that way)."""
        return g.mean_latent(front_camera(g.avg_camera_pivot, g.avg_camera_radius), n, generator)

    def set_truncation_center(self, g, center: torch.Tensor) -> None:
        g.set_latent_avg(center)

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
