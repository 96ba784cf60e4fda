"""LPIPS diversity protocol (groups of pairs) and the offline-weights error; real `lpips` package."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation import diversity as D  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402
from evaluation.testing import save_random_lpips_backbone  # noqa: E402

pytestmark = pytest.mark.numeric


class AbsDiff(torch.nn.Module):
    """Stand-in distance with a known value: mean |a - b| per pair (shape like LPIPS: [B,1,1,1])."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.pairs = 0

    def forward(self, a, b):
        self.pairs += len(a)
        return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)


def test_protocol_groups_and_pairs():
    # image i is constant v_i; groups of 4 consecutive images; 2 groups of 4 out of 10 images
    v = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.9, -1.0, 1.0])
    x = v.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    model = AbsDiff()
    mean, std = D.lpips_diversity_images(x, model, groups=2, group_size=4, pair_batch=5)
    g1 = np.mean([abs(a - b) for i, a in enumerate([0, .1, .2, .3]) for b in [0, .1, .2, .3][i + 1:]])
    g2 = np.mean([abs(a - b) for i, a in enumerate([.5, .5, .5, .9]) for b in [.5, .5, .5, .9][i + 1:]])
    assert mean == pytest.approx((g1 + g2) / 2, abs=1e-6)
    assert std == pytest.approx(np.std([g1, g2]), abs=1e-6)
    assert model.pairs == 2 * 6                 # unordered pairs i < j only; images 8, 9 unused
    with pytest.raises(ValueError):
        D.lpips_diversity_images(x[:7], model, groups=2, group_size=4)


def test_config_protocol_defaults_and_validation():
    lp = EvalConfig().diversity.lpips
    assert (lp.net, lp.num_images, lp.groups, lp.group_size) == ("alex", 200, 12, 16)
    with pytest.raises(ValueError):
        EvalConfig(diversity=dict(lpips=dict(num_images=100, groups=12, group_size=16)))


def test_missing_backbone_error_names_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(D.LpipsWeightsMissingError) as err:
        D.build_lpips("alex")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "diversity.lpips.backbone_path" in msg and "download.pytorch.org" in msg


def test_real_lpips_with_local_backbone(tmp_path):
    """The real lpips.LPIPS (package linear heads) with a backbone file given by path (random weights here)."""
    path = save_random_lpips_backbone(tmp_path / "alex_features.pth")
    model = D.build_lpips("alex", str(path))
    gen = torch.Generator().manual_seed(0)
    same = torch.rand(1, 3, 64, 64, generator=gen).expand(8, -1, -1, -1) * 2 - 1
    diverse = torch.rand(8, 3, 64, 64, generator=gen) * 2 - 1
    d_same, _ = D.lpips_diversity_images(same, model, groups=2, group_size=4)
    d_div, _ = D.lpips_diversity_images(diverse, model, groups=2, group_size=4)
    assert d_same == pytest.approx(0.0, abs=1e-6) and d_div > 1e-4
    loaded = torch.load(path)
    assert torch.equal(model.net.slice1[0].weight, loaded["features.0.weight"])
