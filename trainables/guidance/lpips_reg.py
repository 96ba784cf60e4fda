"""LPIPS regularizer: LPIPS(G_frozen(w), G_train(w)) * scale * weight, backpropagated directly.

LPIPS = a torchvision backbone (VGG16 by default, as in the paper; AlexNet; SqueezeNet) with ImageNet
weights + the lpips package's linear calibration layers (shipped inside the package). The backbone
weights come from torch hub's cache (`<torch.hub.get_dir()>/checkpoints/<file>`); they cannot be
downloaded offline, so a missing file is a clear error, raised before anything touches the network.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from trainables.errors import ModelNotFoundError

# torchvision ImageNet weights the lpips package loads for each backbone.
BACKBONE_WEIGHTS = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "vgg16"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "alexnet"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth", "squeezenet1_1"),
}


class LpipsWeightsNotFoundError(ModelNotFoundError):
    """LPIPS backbone (or linear-layer) weights are not available locally."""


def backbone_weights_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_WEIGHTS[net][0]


def _linear_weights_path(net: str) -> Path:
    import lpips  # late: lpips takes ~1.7 s to import; only the LPIPS regularizer needs it

    return Path(os.path.dirname(lpips.__file__)) / "weights" / "v0.1" / f"{net}.pth"


def check_lpips_weights(net: str) -> None:
    if net not in BACKBONE_WEIGHTS:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_WEIGHTS)}, got {net!r}")
    fname, url, ctor = BACKBONE_WEIGHTS[net]
    path = backbone_weights_path(net)
    if not path.is_file():
        raise LpipsWeightsNotFoundError(
            f"LPIPS ({net}) needs torchvision's ImageNet {ctor} weights, which are not in the torch hub cache: "
            f"missing {path}. They cannot be downloaded offline. Provide them by copying {fname} there "
            f"(or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints/{fname} exists); to fetch on a machine "
            f"with network access: curl -L -o {fname} {url}   or   "
            f"python -c \"import torchvision; torchvision.models.{ctor}(weights='IMAGENET1K_V1')\" "
            f"(then copy ~/.cache/torch/hub/checkpoints/{fname})."
        )
    lin = _linear_weights_path(net)
    if not lin.is_file():
        raise LpipsWeightsNotFoundError(f"the lpips package's linear layers are missing: {lin} (reinstall lpips)")


class LpipsRegularizer(torch.nn.Module):
    """Frozen LPIPS distance; `forward(a, b)` -> per-sample distances [B] for inputs in [-1, 1]."""

    def __init__(self, net: str = "vgg", device: str | torch.device = "cpu", *, random_backbone: bool = False):
        """`random_backbone=True` is for TESTS ONLY: a randomly initialised backbone (no ImageNet weights;
        the lpips linear layers are still the real ones), so the regularizer's arithmetic can be tested
        offline. Distances from it are not perceptual distances."""
        super().__init__()
        import lpips  # late: lpips takes ~1.7 s to import; only the LPIPS regularizer needs it

        if not random_backbone:
            check_lpips_weights(net)
        elif net not in BACKBONE_WEIGHTS:
            raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_WEIGHTS)}, got {net!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # torchvision's deprecated `pretrained=` inside lpips
            self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
        self.net = net
        self.random_backbone = random_backbone
        self.lpips.eval().requires_grad_(False)
        self.to(device)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.lpips(a, b, normalize=False).flatten()
