"""Diversity of a generator's samples (higher = more diverse).

LPIPS diversity, the paper's protocol: take the first `num_images` (200) samples of the fixed latents, split
the first `groups * group_size` of them (12 x 16 = 192; the last 8 are unused) into consecutive disjoint groups
of `group_size`, compute the LPIPS distance of every unordered pair i < j inside a group (16 * 15 / 2 = 120
pairs), average per group, and report the mean over groups (the std over groups is returned as well).
LPIPS is the `lpips` package (v0.1 linear heads, shipped inside the package) on a torchvision AlexNet
backbone whose ImageNet weights must be on disk (they cannot be downloaded here).

Feature diversity (no extra weights): see `evaluation.fid.feature_diversity` -- the mean over all pairs
i < j of 1 - cos(f_i, f_j) of the FID features of the generated set.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .sampling import list_images, load_images, resolve_device

# torchvision's ImageNet weights for the LPIPS backbones (file names under torch.hub's checkpoints dir)
BACKBONE_FILES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}


class LpipsWeightsMissingError(FileNotFoundError):
    """The torchvision backbone weights LPIPS needs are not on this machine."""


def backbone_path(net: str, configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net][0]


def check_lpips_backbone(net: str = "alex", weights: str | None = None) -> Path:
    """The local backbone file LPIPS diversity will load; `LpipsWeightsMissingError` (with the fix) when absent.
    Cheap (no model is built): preflight uses it."""
    path = backbone_path(net, weights)
    fname, url = BACKBONE_FILES[net]
    if not path.is_file():
        raise LpipsWeightsMissingError(
            f"LPIPS ({net}) needs torchvision's ImageNet backbone weights, missing at {path}. torchvision cannot "
            f"download them on this machine. Fetch {url} where the internet is reachable and put it at "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / fname} (torch hub's cache; $TORCH_HOME moves it), or set "
            f"`diversity.lpips.backbone_path`; or disable it with `diversity.lpips.enabled: false`."
        )
    return path


def build_lpips(net: str = "alex", weights: str | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """`lpips.LPIPS(net)` with its backbone loaded from a local torchvision state dict (never downloaded)."""
    path = check_lpips_backbone(net, weights)
    import lpips  # late: lpips takes ~1.7 s to import; only LPIPS diversity needs it (validate imports this module)

    with warnings.catch_warnings():   # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # linear heads: package
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.net.state_dict()
    # lpips splits torchvision's `features` into slices: slice{k}.{i}.weight <- features.{i}.weight
    mapped = {k: state["features." + k.split(".", 1)[1]] for k in own}
    model.net.load_state_dict(mapped)
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def lpips_diversity_images(images_m11: torch.Tensor, model: torch.nn.Module, groups: int = 12,
                           group_size: int = 16, pair_batch: int = 60) -> tuple[float, float]:
    """Mean (over groups) of the mean pairwise LPIPS inside each group; images [N,3,H,W] in [-1,1]."""
    need = groups * group_size
    if len(images_m11) < need:
        raise ValueError(f"LPIPS diversity needs {need} images ({groups} x {group_size}), got {len(images_m11)}")
    dev = next(model.parameters()).device
    ii, jj = np.triu_indices(group_size, k=1)
    per_group = []
    for g in range(groups):
        x = images_m11[g * group_size : (g + 1) * group_size].to(dev)
        dists = []
        for s in range(0, len(ii), pair_batch):
            a, b = x[ii[s : s + pair_batch]], x[jj[s : s + pair_batch]]
            dists.append(model(a, b).flatten().float().cpu())
        per_group.append(float(torch.cat(dists).mean()))
    return float(np.mean(per_group)), float(np.std(per_group))


def lpips_diversity_folder(folder: str | Path, cfg, model: torch.nn.Module | None = None) -> tuple[float, float]:
    lp = cfg.diversity.lpips
    paths = list_images(folder)[: lp.num_images]
    if len(paths) < lp.num_images:
        raise ValueError(f"LPIPS diversity wants {lp.num_images} images, {folder} holds {len(paths)} "
                         f"(num_samples must be >= diversity.lpips.num_images)")
    model = model or build_lpips(lp.net, lp.backbone_path, resolve_device(cfg.device))
    paths = paths[: lp.groups * lp.group_size]
    x = load_images(paths, size=lp.resize) * 2.0 - 1.0
    return lpips_diversity_images(x, model, lp.groups, lp.group_size)
