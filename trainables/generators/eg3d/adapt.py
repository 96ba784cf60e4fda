"""What one adaptation step needs from an EG3D generator, in two calls (for `trainables/adaptation/loop.py`).

The paper samples ONE camera per iteration and renders the frozen and the trained generator from it. The
renderer's stratified jitter must be shared too, or the two images differ by sampling noise alone (up to
~0.3 in the fixtures): each render gets a fresh `torch.Generator` seeded with the step's `render_seed`.

    inp = sample_step_inputs(g_frozen, batch, rng, truncation=cfg.train.truncation)   # z, c, ws, render_seed
    with torch.no_grad():
        x_frozen = render_step(g_frozen, inp, noise_mode="const")
    x_train = render_step(g_train, inp, noise_mode="const")     # graph reaches backbone.synthesis + SR
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainables.generators.eg3d.cameras import sample_adaptation_cameras
from trainables.generators.eg3d.networks import EG3DGenerator, NoiseMode


@dataclass
class StepInputs:
    z: torch.Tensor  # [B, z_dim]
    c: torch.Tensor  # [B, 25] camera shared by frozen and trained generator
    ws: torch.Tensor  # [B, num_ws, w_dim] from the FROZEN mapping (the mapping is never trained)
    render_seed: int  # seeds the renderer's jitter, identically for both renders


@torch.no_grad()
def sample_step_inputs(g_frozen: EG3DGenerator, batch: int, rng: torch.Generator, truncation: float = 1.0,
                       device: torch.device | str | None = None) -> StepInputs:
    """Draws, in this order from `rng`: z [B, z_dim], the camera parameter f [B], the render seed."""
    device = g_frozen.device if device is None else torch.device(device)
    z = torch.randn(batch, g_frozen.z_dim, generator=rng)
    c = sample_adaptation_cameras(batch, rng, g_frozen.avg_camera_pivot, g_frozen.avg_camera_radius)
    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    z, c = z.to(device), c.to(device)
    ws = g_frozen.mapping(z, c, truncation_psi=truncation)
    return StepInputs(z=z, c=c, ws=ws, render_seed=seed)


def render_step(g: EG3DGenerator, inp: StepInputs, noise_mode: NoiseMode = "const",
                noise_generator: torch.Generator | None = None) -> torch.Tensor:
    """The final image [B, 3, S, S] of `g` from the step's ws and camera, with the step's renderer jitter."""
    gen = torch.Generator(device=g.device).manual_seed(inp.render_seed)
    return g.synthesis(inp.ws, inp.c, noise_mode=noise_mode, noise_generator=noise_generator, render_generator=gen,
                       return_dict=False)
