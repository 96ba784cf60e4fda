"""Cheap stand-ins for tests and smoke runs (no weights, no downloads).

`random_conv_features` is a clean-fid custom feature extractor: a FIXED random conv net (seeded weights,
never trained) mapping float32 [B,3,H,W] in [0,255] to 16-d features. It is no perceptual metric: it makes
FID/KID/feature diversity computable offline so their plumbing and arithmetic can be tested.
Use it as `fid.feature_extractor: evaluation.testing:random_conv_features`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .sampling import list_images, load_images

CALLS = {"count": 0}   # batches seen by every extractor built here (tests count feature passes)


def random_conv_features(device: torch.device | str = "cpu", seed: int = 0, dim: int = 16):
    gen = torch.Generator("cpu").manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
                        nn.Conv2d(8, dim, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    net = net.to(device).eval()

    @torch.no_grad()
    def extract(x: torch.Tensor) -> torch.Tensor:
        CALLS["count"] += 1
        return net(x.to(device) / 127.5 - 1.0).flatten(1)

    extract.cache_id = f"random_conv_features(seed={seed},dim={dim})"
    return extract


def brightness_plugin(ctx) -> dict[str, float]:
    """An `extra_metrics` plugin for tests: mean brightness of the samples and, when the run's source
    generator is known, the mean absolute pixel change from the source sampled with the same latents."""
    x = load_images(list_images(ctx.samples_dir))
    out = {"test/brightness": float(x.mean())}
    if ctx.source_generator_path is not None:
        src = load_images(list_images(ctx.source_samples_dir()))
        out["test/source_change"] = float((x - src).abs().mean())
    return out


def save_random_lpips_backbone(path, net: str = "alex", seed: int = 0):
    """A torchvision-layout backbone state dict ("features.*") with RANDOM weights, for plumbing tests only."""
    import torchvision  # late: ~1.4 s to import; trials load this module for brightness_plugin

    torch.manual_seed(seed)
    ctor = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16,
            "squeeze": torchvision.models.squeezenet1_1}[net]
    features = ctor(weights=None).features
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path
