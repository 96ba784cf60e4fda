"""EG3D through the same adaptation loop: paper defaults, trainable set, shared camera, outputs."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_adapt_dict
from trainables.config_io import ConfigError, validate_config
from trainables.generators.eg3d import build_pocket_eg3d, load_eg3d, save_eg3d
from trainables.adaptation.loop import adapt


@pytest.fixture(scope="module")
def pocket_eg3d(tmp_path_factory):
    path = tmp_path_factory.mktemp("eg3d") / "pocket_eg3d.pt"
    save_eg3d(build_pocket_eg3d(seed=0), path)
    return path


def _cfg(tiny_models, pocket_eg3d, out, **over):
    data = tiny_adapt_dict(tiny_models, out, **over)
    data["generator"] = {"kind": "eg3d", "checkpoint": str(pocket_eg3d)}
    return data


def test_eg3d_paper_defaults_fill_only_unset_fields(tiny_models, pocket_eg3d, tmp_path):
    cfg = validate_config(_cfg(tiny_models, pocket_eg3d, tmp_path))
    assert cfg.guidance.grad_scale == 0.01 and cfg.guidance.rescale_noise is True
    assert cfg.guidance.image_clamp_quantile is None and cfg.reg.lpips.scale == 2000.0  # x grad_scale: 20 (test_fidelity)
    assert cfg.train.noise_mode == "const"
    explicit = validate_config(_cfg(tiny_models, pocket_eg3d, tmp_path, guidance__grad_scale=0.5))
    assert explicit.guidance.grad_scale == 0.5
    with pytest.raises(ConfigError, match="layer selection"):
        validate_config(_cfg(tiny_models, pocket_eg3d, tmp_path, layers__k=2))


def test_eg3d_adaptation_trains_backbone_synthesis_and_superresolution(tiny_models, pocket_eg3d, tmp_path):
    cfg = validate_config(_cfg(tiny_models, pocket_eg3d, tmp_path / "run", train__iterations=2,
                               guidance__grad_scale=1.0, optim__lr=0.01))
    result = adapt(cfg, progress=False)
    assert result.final_grid_path.is_file()
    before = load_eg3d(pocket_eg3d).state_dict()
    after = load_eg3d(result.generator_path).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("backbone.synthesis.", "superresolution.")) for k in changed), changed
    assert not any(k.endswith(".bias") for k in changed)
    assert any(k.startswith("superresolution.") for k in changed)


def test_eg3d_run_writes_a_multiview_gif(tiny_models, pocket_eg3d, tmp_path):
    from PIL import Image

    cfg = validate_config(_cfg(tiny_models, pocket_eg3d, tmp_path / "gif", train__iterations=1))
    adapt(cfg, progress=False)
    gif = Image.open(tmp_path / "gif" / "samples" / "orbit.gif")
    assert gif.n_frames > 4 and gif.size[0] == 3 * gif.size[1]  # 3 latents side by side, several views


def test_evaluation_samples_eg3d_over_fixed_z_camera_pairs(pocket_eg3d, tmp_path):
    import json

    from evaluation.sampling import sample_checkpoint
    from trainables.generators.kinds import detect_kind

    assert detect_kind(pocket_eg3d) == "eg3d"
    kwargs = dict(num_samples=6, truncation=0.7, cache_dir=tmp_path / "cache", image_size=None, device="cpu",
                  progress=False)
    m1 = sample_checkpoint(pocket_eg3d, tmp_path / "a", reuse=False, **kwargs)
    m2 = sample_checkpoint(pocket_eg3d, tmp_path / "b", reuse=False, **kwargs)
    assert m1["generator_kind"] == "eg3d" and m1["count"] == 6
    assert m1["pixels_sha256"] == m2["pixels_sha256"]  # same (z, camera) pairs -> same pixels
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["checkpoint_sha256"]
