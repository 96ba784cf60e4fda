"""EG3D against the reference outputs of NVlabs/eg3d (tiny 2X fixture, /work/shared/fixtures/eg3d)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainables.generators.eg3d import load_eg3d
from trainables.generators.eg3d.renderer import sample_rays

FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "eg3d"
pytestmark = [pytest.mark.usefixtures("eg3d_fixtures"), pytest.mark.numeric]   # fails (not skips) without fixtures
TOL = dict(rtol=1e-5, atol=1e-5)  # README: ~1e-5 absolute; the reference's own alternative paths differ by <= 4.6e-6


@pytest.fixture(scope="module")
def model():
    return load_eg3d(FIX / "eg3d_tiny.pkl")


@pytest.fixture(scope="module")
def exp():
    return torch.load(FIX / "eg3d_tiny_expected.pt", weights_only=True)


def test_pickle_config_and_parameter_count(model):
    cfg = model.cfg
    assert cfg.sr_class == "SuperresolutionHybrid2X" and cfg.sr_input_resolution == 16
    assert model.neural_rendering_resolution == 16 and model.num_ws == model.n_latent == 14
    assert cfg.backbone_channels == {4: 32, 8: 32, 16: 32, 32: 16, 64: 8, 128: 4, 256: 2}
    assert cfg.rendering["depth_resolution"] == 8 and cfg.rendering["avg_camera_pivot"] == [0.0, 0.0, 0.2]
    assert sum(p.numel() for p in model.parameters()) == 120_280  # README: the reference model's parameter count
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_pickle_loads_G_ema_not_G(model):
    state = torch.load(FIX / "eg3d_tiny_state.pt", weights_only=True)  # G_ema.state_dict()
    assert torch.equal(model.backbone.mapping.fc0.weight, state["backbone.mapping.fc0.weight"])
    assert torch.equal(model.superresolution.block1.torgb.conv.weight[0], state["superresolution.block1.torgb.weight"])
    g_raw = load_eg3d_key_G()
    assert not torch.equal(g_raw.backbone.mapping.fc0.weight, model.backbone.mapping.fc0.weight)


def load_eg3d_key_G():
    from trainables.generators.eg3d.formats import load_eg3d_pickle
    return load_eg3d_pickle(FIX / "eg3d_tiny.pkl", key="G")


def test_state_dict_file_equals_pickle(model):
    rk = json.loads((FIX / "eg3d_tiny_config.json").read_text())["rendering_kwargs"]
    g = load_eg3d(FIX / "eg3d_tiny_state.pt", rendering_kwargs=rk, neural_rendering_resolution=16)
    assert g.cfg == model.cfg
    a, b = g.state_dict(), model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_mapping(model, exp):
    z, c = exp["z"], exp["c"]
    torch.testing.assert_close(model.mapping(z, c, truncation_psi=1), exp["ws_psi1"], **TOL)
    torch.testing.assert_close(model.mapping(z, c, truncation_psi=0.7), exp["ws_psi07"], **TOL)
    ws = model.mapping(z, exp["c_front"], truncation_psi=0.7, truncation_cutoff=14)
    torch.testing.assert_close(ws, exp["ws_front_psi07"], **TOL)
    assert (ws - exp["ws_psi07"]).abs().max() > 1e-2  # the camera enters the mapping (gen_pose_cond)


def test_rays(exp):
    c = exp["c"]
    o, d = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), 16)
    torch.testing.assert_close(o, exp["ray_origins"], rtol=0, atol=1e-6)
    torch.testing.assert_close(d, exp["ray_directions"], rtol=0, atol=1e-6)


def test_planes(model, exp):
    with torch.no_grad():
        p = model.planes(exp["ws_psi1"], noise_mode="const").reshape(3, 96, 256, 256)
    torch.testing.assert_close(p[:, :, ::16, ::16], exp["planes_psi1_sub16"], **TOL)
    torch.testing.assert_close(p[0, 0:3], exp["planes_psi1_b0_ch0to2_full"], **TOL)


def test_psi1_global_seed_with_intermediates(model, exp):
    rec: dict = {}
    torch.manual_seed(7)
    with torch.no_grad():
        out = model(exp["z"], exp["c"], truncation_psi=1, noise_mode="const", record=rec)
    for k in ("image", "image_raw", "image_depth", "image_raw_rendered"):
        torch.testing.assert_close(out[k], exp[f"{k}_psi1"], **TOL)
    torch.testing.assert_close(rec["feature_image"], exp["feature_image_psi1"], **TOL)
    torch.testing.assert_close(rec["depths_coarse"], exp["depths_coarse_psi1"], **TOL)
    torch.testing.assert_close(rec["depths_fine"], exp["depths_fine_psi1"], **TOL)
    # the reference's in-place quirk: image_raw = rendered rgb + block0's ToRGB (2X, no resize)
    assert (out["image_raw"] - out["image_raw_rendered"]).abs().max() > 0.1


def test_psi07_from_torch_generator(model, exp):
    before = torch.random.get_rng_state()
    with torch.no_grad():
        out = model(exp["z"], exp["c"], truncation_psi=0.7, noise_mode="const",
                    render_generator=torch.Generator().manual_seed(7))
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is not consumed
    for k in ("image", "image_raw", "image_depth", "image_raw_rendered"):
        torch.testing.assert_close(out[k], exp[f"{k}_psi07"], **TOL)


def test_front_with_injected_draws(model, exp):
    torch.manual_seed(123)  # would give other draws: the injected ones must be used
    with torch.no_grad():
        out = model.synthesis(exp["ws_front_psi07"], exp["c"], noise_mode="const",
                              draws=(exp["rand_coarse_psi1"], exp["rand_importance_psi1"]))
    for k in ("image", "image_raw", "image_depth", "image_raw_rendered"):
        torch.testing.assert_close(out[k], exp[f"{k}_front_psi07"], **TOL)
    with torch.no_grad():  # batch items are independent: item 0 alone, with its slice of the draws
        one = model.synthesis(exp["ws_front_psi07"][:1], exp["c"][:1], return_dict=False,
                              draws=(exp["rand_coarse_psi1"][:1], exp["rand_importance_psi1"][:256]))
    torch.testing.assert_close(one, exp["image_front_psi07"][:1], **TOL)
