"""A pocket-sized StyleGAN3 (T config) with random weights: every StyleGAN3 path (Fourier input, 14 filtered
layers, 16 W+ entries) at 32 x 32 on CPU, for tests and pocket sweeps."""
from __future__ import annotations

import torch

from trainables.generators.stylegan3.config import StyleGAN3Config
from trainables.generators.stylegan3.networks import StyleGAN3


def pocket_stylegan3_config(kind: str = "t", img_resolution: int = 32) -> StyleGAN3Config:
    """z = w = 32, 2 mapping layers, 32 px, 32 -> 16 channels (channel_base 512, max 32); R: 1x1 convs, radial."""
    if kind == "r":
        return StyleGAN3Config(z_dim=32, w_dim=32, img_resolution=img_resolution, channel_base=1024, channel_max=32,
                               conv_kernel=1, use_radial_filters=True)
    return StyleGAN3Config(z_dim=32, w_dim=32, img_resolution=img_resolution, channel_base=512, channel_max=32)


@torch.no_grad()
def build_pocket_stylegan3(seed: int = 0, kind: str = "t", img_resolution: int = 32) -> StyleGAN3:
    """Random-weight pocket StyleGAN3 (eval, float32, CPU); the same seed gives bit-identical weights.

    Constructor init, then biases 0.1 N(0,1) so every path carries signal, magnitude_ema set to the measured
    E[x^2] of each layer's input (what training tracks; keeps activations near unit scale through 14 layers),
    and w_avg = mean w of 1024 z. The global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = StyleGAN3(pocket_stylegan3_config(kind, img_resolution))
        for name, p in g.named_parameters():
            if name.endswith(".bias") and not name.startswith(("mapping.", "synthesis.input.")) and \
                    not name.endswith("affine.bias"):
                p.copy_(0.1 * torch.randn_like(p))
        z = torch.randn(1024, g.cfg.z_dim, generator=torch.Generator().manual_seed(seed + 1))
        w = g.mapping(z)
        g.mapping.w_avg.copy_(w[:, 0].mean(0))
        x = g.synthesis.input(w[:16, 0])
        for name, wi in zip(g.synthesis.layer_names, w[:16, 1:].unbind(1)):
            layer = getattr(g.synthesis, name)
            layer.magnitude_ema.copy_(x.square().mean())
            x = layer(x, wi)
    return g.eval().requires_grad_(False)
