"""A pocket-sized EG3D with random weights: the whole 3D path (mapping with camera, tri-planes, renderer,
super-resolution) at 32 x 32 on CPU, for tests and pocket sweeps."""

from __future__ import annotations

import torch

from trainables.generators.eg3d.cameras import front_camera
from trainables.generators.eg3d.config import EG3DConfig
from trainables.generators.eg3d.networks import EG3DGenerator


def pocket_eg3d_config() -> EG3DConfig:
    """z = w = 32, 2 mapping layers, 64 px tri-planes (3 x 8 features), 16 px rendering with 8 + 8 samples,
    2X super-resolution to 32 px."""
    return EG3DConfig(
        z_dim=32, w_dim=32, c_dim=25, img_resolution=32, mapping_layers=2, backbone_resolution=64,
        backbone_channels={4: 32, 8: 32, 16: 32, 32: 16, 64: 16}, plane_channels=8, decoder_hidden=32,
        decoder_output_dim=16, sr_class="SuperresolutionHybrid2X", sr_channels=(32, 16),
        sr_block_resolutions=(16, 32), sr_input_resolution=16, neural_rendering_resolution=16,
        rendering={"depth_resolution": 8, "depth_resolution_importance": 8},
    )


def build_pocket_eg3d(seed: int = 0) -> EG3DGenerator:
    """Random-weight pocket EG3D (eval mode, float32, CPU); the same seed gives bit-identical weights.

    Constructor init, then (as the EG3D fixtures do) biases / noise strengths drawn 0.1 * N(0, 1) so every
    path carries signal, and w_avg = mean w of 1024 z at the frontal camera. The global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = EG3DGenerator(pocket_eg3d_config())
        with torch.no_grad():
            for name, p in g.named_parameters():
                if name.endswith("noise.weight") or (name.endswith(".bias") and "modulation" not in name):
                    p.copy_(0.1 * torch.randn_like(p))
            gen = torch.Generator().manual_seed(seed + 1)
            g.set_latent_avg(g.mean_latent(front_camera(g.avg_camera_pivot, g.avg_camera_radius), 1024, gen))
    return g.eval()
