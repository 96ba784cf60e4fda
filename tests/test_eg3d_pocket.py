"""Pocket EG3D: the whole 3D path on CPU (rendering randomness, noise modes, gradients, trainable set)."""
from __future__ import annotations

import pytest
import torch

from trainables.generators.eg3d import (build_pocket_eg3d, eg3d_trainable_names, front_camera, orbit_cameras,
                                        sample_adaptation_cameras, set_eg3d_trainable)


@pytest.fixture(scope="module")
def g():
    return build_pocket_eg3d(0)


def _z(n=2, seed=0):
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))


def test_build_is_seeded_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b, c = build_pocket_eg3d(1), build_pocket_eg3d(1), build_pocket_eg3d(2)
    assert torch.equal(before, torch.random.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.backbone.synthesis.conv1.conv.weight, c.backbone.synthesis.conv1.conv.weight)


def test_render_shapes(g):
    c = orbit_cameras(2)       # speed is measured in benchmarks/, not asserted here (machines differ)
    with torch.no_grad():
        out = g(_z(), c, render_generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (2, 3, 32, 32) and out["image_depth"].shape == (2, 1, 16, 16)
    assert out["image_depth"].min() >= 2.25 - 1e-5 and out["image_depth"].max() <= 3.3 + 1e-5  # within ray_start..end
    assert (out["image"][0] - out["image"][1]).abs().max() > 1e-3


def test_render_generator_reproducibility(g):
    z, c = _z(), orbit_cameras(2)
    before = torch.random.get_rng_state()
    with torch.no_grad():
        a = g(z, c, render_generator=torch.Generator().manual_seed(3))["image"]
        b = g(z, c, render_generator=torch.Generator().manual_seed(3))["image"]
        d = g(z, c, render_generator=torch.Generator().manual_seed(4))["image"]
        e = g(z, c, noise_generator=torch.Generator().manual_seed(3))["image"]  # fallback: noise_generator drives rays
    assert torch.equal(before, torch.random.get_rng_state())
    assert torch.equal(a, b) and torch.equal(a, e)
    assert (a - d).abs().max() > 1e-4


def test_noise_modes(g):
    z, c = _z(1), front_camera()
    draws = (torch.rand(1, 256, 8, 1, generator=torch.Generator().manual_seed(0)),
             torch.rand(256, 8, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        const = g(z, c, noise_mode="const", draws=draws)["image"]
        const2 = g(z, c, noise_mode="const", draws=draws)["image"]
        r1 = g(z, c, noise_mode="random", noise_generator=torch.Generator().manual_seed(9), draws=draws)["image"]
        r2 = g(z, c, noise_mode="random", noise_generator=torch.Generator().manual_seed(9), draws=draws)["image"]
        none = g(z, c, noise_mode="none", draws=draws)["image"]
    assert torch.equal(const, const2) and torch.equal(r1, r2)
    assert (const - r1).abs().max() > 1e-4 and (const - none).abs().max() > 1e-4
    with pytest.raises(ValueError):
        g(z, c, noise_mode="loud")


def test_truncation_and_camera_conditioning(g):
    z, c = _z(), orbit_cameras(2)
    ws0 = g.mapping(z, c, truncation_psi=0.0)
    torch.testing.assert_close(ws0, g.latent_avg.expand_as(ws0))
    ws = g.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
    full = g.mapping(z, c)
    torch.testing.assert_close(ws[:, 4:], full[:, 4:])
    assert not torch.allclose(ws[:, :4], full[:, :4])
    assert not torch.allclose(g.mapping(z, c[[1, 0]]), full)  # c enters the mapping (pose-conditioned)


def test_sr_resize_path(g):
    with torch.no_grad():
        out = g(_z(1), front_camera(), neural_rendering_resolution=8, render_generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (1, 3, 32, 32) and out["image_raw"].shape == (1, 3, 8, 8)
    assert torch.equal(out["image_raw"], out["image_raw_rendered"])  # resized input: no in-place aliasing
    assert g.neural_rendering_resolution == 16  # not overwritten (unlike the reference)


def test_trainable_set_and_gradients():
    g = build_pocket_eg3d(0)
    names = eg3d_trainable_names(g, freeze_bias=True)
    assert names and all(n.startswith(("backbone.synthesis.", "superresolution.")) for n in names)
    assert not any(n.endswith(".bias") for n in names)
    assert "backbone.synthesis.convs.0.conv.weight" in names and "superresolution.block1.torgb.conv.weight" in names
    assert "backbone.synthesis.input.input" in names and "backbone.synthesis.to_rgb1.conv.weight" in names
    with_bias = eg3d_trainable_names(g, freeze_bias=False)
    assert "superresolution.block0.conv0.activate.bias" in with_bias and len(with_bias) > len(names)
    assert set_eg3d_trainable(g) == names
    g.train()
    c = sample_adaptation_cameras(1, torch.Generator().manual_seed(0), g.avg_camera_pivot, g.avg_camera_radius)
    out = g(_z(1), c, render_generator=torch.Generator().manual_seed(0))
    (out["image"].square().mean() + out["image_raw"].mean()).backward()
    params = dict(g.named_parameters())
    sr_noise = {n for n in names if n.startswith("superresolution.") and n.endswith(".noise.weight")}
    assert all(params[n].grad is None for n in sr_noise)  # the SR runs with noise_mode 'none', as in EG3D
    for n in set(names) - sr_noise:
        assert params[n].grad is not None and torch.isfinite(params[n].grad).all(), n
    assert params["backbone.synthesis.convs.0.conv.weight"].grad.abs().sum() > 0  # reaches the planes via the renderer
    frozen = [n for n in params if n not in set(names)]
    assert any(n.startswith("decoder.") for n in frozen) and any(n.startswith("backbone.mapping.") for n in frozen)
    assert all(params[n].grad is None for n in frozen)
    # one optimiser step changes the rendering from the same camera/draws
    with torch.no_grad():
        before = g(_z(1), c, render_generator=torch.Generator().manual_seed(0))["image"]
    torch.optim.SGD([params[n] for n in names], lr=0.5).step()
    with torch.no_grad():
        after = g(_z(1), c, render_generator=torch.Generator().manual_seed(0))["image"]
    assert (after - before).abs().max() > 1e-4


def test_step_inputs_share_camera_and_jitter_between_frozen_and_trained():
    import copy

    from trainables.generators.eg3d import render_step, sample_step_inputs

    g_frozen = build_pocket_eg3d(0)
    g_train = copy.deepcopy(g_frozen)
    set_eg3d_trainable(g_train)
    inp = sample_step_inputs(g_frozen, 2, torch.Generator().manual_seed(42), truncation=0.7)
    assert inp.c.shape == (2, 25) and inp.ws.shape == (2, g_frozen.num_ws, 32)
    again = sample_step_inputs(g_frozen, 2, torch.Generator().manual_seed(42), truncation=0.7)
    assert torch.equal(inp.c, again.c) and inp.render_seed == again.render_seed
    with torch.no_grad():
        x_frozen = render_step(g_frozen, inp)
    x_train = render_step(g_train, inp)
    assert x_train.requires_grad and torch.equal(x_frozen, x_train.detach())  # same weights -> identical images
    x_train.mean().backward()
    assert g_train.backbone.synthesis.convs[1].conv.weight.grad is not None
    assert g_train.superresolution.block0.conv0.conv.weight.grad is not None


@pytest.mark.numeric
def test_renderer_gradcheck_float64():
    from trainables.generators.eg3d.networks import OSGDecoder
    from trainables.generators.eg3d.renderer import render, sample_rays
    from trainables.generators.eg3d import lookat_cam2world, intrinsics_matrix

    torch.manual_seed(0)
    dec = OSGDecoder(2, hidden=4, out_dim=3).double()
    planes = (0.5 * torch.randn(1, 3, 2, 4, 4, dtype=torch.float64)).requires_grad_(True)
    cam = lookat_cam2world(1.5, 1.5, [0, 0, 0.2], 2.7).double()
    o, d = sample_rays(cam, intrinsics_matrix().double().unsqueeze(0), 2)
    opts = {"depth_resolution": 4, "depth_resolution_importance": 0, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1.0}
    jitter = torch.rand(1, 4, 4, 1, dtype=torch.float64)
    fn = lambda p: render(p, dec, o, d, opts, draws=(jitter, None))[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (planes,), eps=1e-6, atol=1e-6)
