"""StyleGAN-Fusion guidance against independent computations (tiny random SD, fp32, CPU, offline).

Expected gradients are computed here from the raw diffusers/transformers modules and the paper's formulas
(../shared/paper.md), not from trainables.guidance helpers.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from trainables.config import DiffusionGuidanceConfig, RegularizerConfig
from trainables.guidance.diffusion_model import FrozenDiffusion
from trainables.guidance.fusion import FusionGuidance
from trainables.testing import build_tiny_sd, build_tiny_text_encoder

B, SIZE, IMG = 2, 24, 16          # generator output 24x24 resized to the tiny VAE's 16x16 (latents 8x8)
PROMPT, NEG = "a red square", ""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd", seed=0)


@pytest.fixture(scope="module")
def model(sd_dir):
    """One loaded FrozenDiffusion shared by every guide of this module (both engines use the same nets)."""
    return FrozenDiffusion.from_ref(str(sd_dir), None, image_size=IMG)


@pytest.fixture(scope="module")
def fast_model(sd_dir):
    """The same nets loaded as the fast engine loads them (SDPA processors, channels_last on CUDA)."""
    return FrozenDiffusion.from_ref(str(sd_dir), None, image_size=IMG, fast=True)


@pytest.fixture(scope="module")
def raw(sd_dir):
    """The tiny SD's raw modules, loaded independently of trainables.guidance."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(sd_dir / "tokenizer")
    te = CLIPTextModel.from_pretrained(sd_dir / "text_encoder").eval()

    def emb(p):
        ids = tok([p], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return te(ids)[0]

    return dict(
        vae=AutoencoderKL.from_pretrained(sd_dir / "vae").eval().requires_grad_(False),
        unet=UNet2DConditionModel.from_pretrained(sd_dir / "unet").eval().requires_grad_(False),
        alphas=DDPMScheduler.from_pretrained(sd_dir / "scheduler").alphas_cumprod,
        cond=emb(PROMPT), uncond=emb(NEG),
    )


@pytest.fixture(autouse=True)
def _share_model(request):
    if "sd_dir" in request.fixturenames:
        _MODEL[str(request.getfixturevalue("sd_dir"))] = request.getfixturevalue("model")


def _cfg(sd_dir, **kw):
    base = dict(model=str(sd_dir), text_encoder=None, image_size=IMG, cfg_scale=7.5, t_min=10, t_max=500)
    base.update(kw)
    return DiffusionGuidanceConfig(**base)


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    w_train = torch.randn(B, 3, SIZE, SIZE, generator=g)
    x_frozen = torch.tanh(torch.randn(B, 3, SIZE, SIZE, generator=g))
    return w_train, x_frozen


def _run(guide, w0, x_frozen, t, seed=1, selection=False):
    """A stand-in generator x = 1.1 tanh(W) (values beyond [-1,1] exercise the clamp); returns dL/dW."""
    w = w0.clone().requires_grad_(True)
    x = 1.1 * torch.tanh(w)
    rng = torch.Generator().manual_seed(seed)
    fn = guide.selection_backward if selection else guide.backward
    metrics = {k: float(v) for k, v in fn(x, x_frozen, t=t, rng=rng).items()}   # metrics are device tensors
    return w.grad.clone(), metrics


_MODEL = {}


def _guide(sd_dir, reg=None, lpips=None, model=None, **kw):
    g = FusionGuidance(_cfg(sd_dir, **kw), reg or RegularizerConfig(), "cpu", lpips=lpips,
                       model=model or _MODEL.get(str(sd_dir)))
    g.prepare(PROMPT, "photo")
    return g


# ---- independent pieces -------------------------------------------------------------------------------
def _prep(x):  # generator output -> VAE input (bilinear resize, clamp)
    return F.interpolate(x, size=(IMG, IMG), mode="bilinear", align_corners=False).clamp(-1, 1)


def _enc(raw, x):
    return raw["vae"].encode(x).latent_dist.mode() * 0.18215


def _eps_cfg(raw, z_t, t, s):
    n = z_t.shape[0]
    with torch.no_grad():
        tt = torch.full((n,), t, dtype=torch.long)
        e_u = raw["unet"](z_t, tt, encoder_hidden_states=raw["uncond"].expand(n, -1, -1)).sample
        e_c = raw["unet"](z_t, tt, encoder_hidden_states=raw["cond"].expand(n, -1, -1)).sample
    return e_u + s * (e_c - e_u)


def _close(a, b, rel=1e-4):
    err = float((a - b).abs().max())
    scale = float(b.abs().max())
    assert scale > 0 and err <= rel * scale + 1e-9, f"max |diff| {err:.3g} vs max |ref| {scale:.3g}"


def _resc(v):  # x * sqrt(C*H*W) / ||x||, per sample
    return v * (v[0].numel() ** 0.5) / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _expected_grad(raw, w0, x_frozen, t, s, seed=1, latent_clamp=None, quantile=None, recon_weight=0.0,
                   weighting="sds", rescale=False):
    """dL/dW for SDS (+ optional reconstruction reg) written out from the paper's formulas."""
    w = w0.clone().requires_grad_(True)
    x = _prep(1.1 * torch.tanh(w))
    z = _enc(raw, x)
    rng = torch.Generator().manual_seed(seed)
    eps = torch.randn(z.shape, generator=rng)
    a = raw["alphas"][t]
    z_t = a.sqrt() * z.detach() + (1 - a).sqrt() * eps
    wt = (1 - a) if weighting == "sds" else 1.0
    e_hat = _eps_cfg(raw, z_t, t, s)
    g_z = wt * ((_resc(e_hat) - _resc(eps)) if rescale else (e_hat - eps))
    if latent_clamp is not None:
        g_z = g_z.clamp(-latent_clamp, latent_clamp)
    g_x = torch.autograd.grad(z, x, g_z, retain_graph=True)[0]
    if quantile is not None:
        q = torch.stack([torch.quantile(g.abs().flatten(), quantile) for g in g_x])[:, None, None, None]
        g_x = torch.where(g_x > q, q, torch.where(g_x < -q, -q, g_x))
    if recon_weight:
        z_o = _enc(raw, _prep(x_frozen))
        eps2 = torch.randn(z.shape, generator=rng)
        zt2 = a.sqrt() * z.detach() + (1 - a).sqrt() * eps2
        e = _eps_cfg(raw, zt2, t, s)
        x0 = (zt2 - (1 - a).sqrt() * e) / a.sqrt()
        g_e = 2.0 / x0.numel() * (x0 - z_o) * (-(1 - a).sqrt() / a.sqrt())   # d mean((x0 - z_o)^2) / d e
        g_rec = (1 - a) * (_resc(e) - _resc(g_e)) * recon_weight
        g_x = g_x + torch.autograd.grad(z, x, g_rec, retain_graph=True)[0]
    x.backward(g_x)
    return w.grad.clone()


# ---- tests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_sds_gradient_without_clamps(sd_dir, raw, engine):
    w0, xf = _images()
    guide = _guide(sd_dir, engine=engine, latent_grad_clamp=None, image_clamp_quantile=None)
    got, metrics = _run(guide, w0, xf, t=300)
    _close(got, _expected_grad(raw, w0, xf, 300, 7.5))
    assert metrics["sds/t"] == 300 and metrics["loss/sds_mse"] > 0


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_sds_gradient_with_clamps(sd_dir, raw, engine):
    w0, xf = _images()
    # cfg 100 at t=450 makes |w (eps_hat - eps)| exceed 0.05 often: the latent clamp bites
    guide = _guide(sd_dir, engine=engine, cfg_scale=100.0, latent_grad_clamp=0.05, image_clamp_quantile=0.95)
    got, metrics = _run(guide, w0, xf, t=450)
    assert 0 < metrics["sds/clamp_frac"] < 1
    _close(got, _expected_grad(raw, w0, xf, 450, 100.0, latent_clamp=0.05, quantile=0.95))
    # the clamps matter: the unclamped gradient is different
    assert float((got - _expected_grad(raw, w0, xf, 450, 100.0)).abs().max()) > 1e-3 * float(got.abs().max())


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_sds_rescale_noise(sd_dir, raw, engine):
    w0, xf = _images()
    guide = _guide(sd_dir, engine=engine, rescale_noise=True, latent_grad_clamp=None, image_clamp_quantile=None)
    got, _ = _run(guide, w0, xf, t=300)
    _close(got, _expected_grad(raw, w0, xf, 300, 7.5, rescale=True))


def test_uniform_weighting_and_grad_scale(sd_dir, raw):
    w0, xf = _images()
    guide = _guide(sd_dir, engine="fast", weighting="uniform", grad_scale=0.5, latent_grad_clamp=None,
                   image_clamp_quantile=None)
    got, _ = _run(guide, w0, xf, t=100)
    _close(got, 0.5 * _expected_grad(raw, w0, xf, 100, 7.5, weighting="uniform"))


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_reconstruction_reg_matches_formula(sd_dir, raw, engine):
    w0, xf = _images()
    reg = RegularizerConfig(reconstruction={"weight": 0.7})
    guide = _guide(sd_dir, reg, engine=engine, latent_grad_clamp=None, image_clamp_quantile=0.95)
    got, metrics = _run(guide, w0, xf, t=250)
    _close(got, _expected_grad(raw, w0, xf, 250, 7.5, quantile=0.95, recon_weight=0.7))
    assert metrics["loss/reconstruction_x0_mse"] > 0


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_directional_reg_vanishes_when_train_equals_frozen(sd_dir, engine):
    w0, _ = _images()
    x_same = (1.1 * torch.tanh(w0)).detach()
    on = _guide(sd_dir, RegularizerConfig(directional={"weight": 1.0, "rescale": True}), engine=engine)
    off = _guide(sd_dir, engine=engine)
    g_on, m_on = _run(on, w0, x_same, t=200)
    g_off, _ = _run(off, w0, x_same, t=200)
    assert m_on["reg/directional_grad_norm"] < 1e-5
    _close(g_on, g_off, rel=1e-5)
    # and it is not zero when they differ
    _, m_diff = _run(on, w0, torch.zeros_like(x_same), t=200)
    assert m_diff["reg/directional_grad_norm"] > 1e-3


def test_selection_backward_is_sds_alone(sd_dir):
    w0, xf = _images()
    reg = RegularizerConfig(directional={"weight": 1.0}, reconstruction={"weight": 1.0})
    g_sel, m_sel = _run(_guide(sd_dir, reg), w0, xf, t=120, selection=True)
    g_sds, _ = _run(_guide(sd_dir), w0, xf, t=120)
    _close(g_sel, g_sds, rel=1e-5)
    assert not any(k.startswith(("reg/", "loss/directional", "loss/reconstruction")) for k in m_sel)


@pytest.fixture(scope="module")
def random_lpips():
    from trainables.guidance.lpips_reg import LpipsRegularizer

    torch.manual_seed(0)
    return LpipsRegularizer("vgg", random_backbone=True)   # TEST ONLY: random VGG, real lpips linear layers


@pytest.mark.parametrize("reg", [
    {},
    {"directional": {"weight": 0.5, "rescale": True}, "lpips": {"weight": 0.01}},
    {"reconstruction": {"weight": 1.0}},
], ids=["sds", "directional+lpips", "reconstruction"])
def test_fast_equals_reference(sd_dir, fast_model, random_lpips, reg):
    w0, xf = _images(seed=3)
    reg = RegularizerConfig(**reg)
    g_ref, m_ref = _run(_guide(sd_dir, reg, lpips=random_lpips, engine="reference", cfg_scale=100.0), w0, xf, t=333)
    g_fast, m_fast = _run(_guide(sd_dir, reg, lpips=random_lpips, model=fast_model, engine="fast", cfg_scale=100.0),
                          w0, xf, t=333)
    _close(g_fast, g_ref, rel=1e-4)
    assert m_ref.keys() == m_fast.keys()
    for k in m_ref:
        assert m_fast[k] == pytest.approx(m_ref[k], rel=1e-3, abs=1e-6), k


def test_lpips_term_matches_direct_lpips(sd_dir, random_lpips):
    w0, xf = _images()
    reg = RegularizerConfig(lpips={"weight": 0.3, "scale": 2000.0})
    g_both, m = _run(_guide(sd_dir, reg, lpips=random_lpips, engine="fast"), w0, xf, t=50)
    g_sds, _ = _run(_guide(sd_dir, engine="fast"), w0, xf, t=50)
    w = w0.clone().requires_grad_(True)
    x = _prep(1.1 * torch.tanh(w))
    (random_lpips.lpips(_prep(xf), x, normalize=False).mean() * 2000.0 * 0.3).backward()
    _close(g_both - g_sds, w.grad, rel=1e-4)
    assert m["reg/lpips_scaled"] == pytest.approx(m["loss/lpips"] * 600.0, rel=1e-5)


def test_v_prediction_is_converted_to_epsilon(tmp_path):
    from diffusers import DDPMScheduler

    d = build_tiny_sd(tmp_path / "sd_v", seed=1, prediction_type="v_prediction")
    m = FrozenDiffusion.from_ref(str(d), None, image_size=IMG)
    assert m.prediction_type == "v_prediction"
    sched = DDPMScheduler.from_pretrained(d / "scheduler")
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    tt = torch.tensor([700, 700])
    z_t = sched.add_noise(z0, eps, tt)
    v = sched.get_velocity(z0, eps, tt)            # diffusers' own v target
    torch.testing.assert_close(m.v_to_eps(v, z_t, 700), eps, rtol=1e-4, atol=1e-5)
    # unet_eps applies it to the UNet's raw v output
    emb = m.embed("x").expand(2, -1, -1)
    raw_v = m.unet(z_t, tt, encoder_hidden_states=emb).sample
    a = sched.alphas_cumprod[700]
    torch.testing.assert_close(m.unet_eps(z_t, 700, emb), a.sqrt() * raw_v + (1 - a).sqrt() * z_t)


def test_separate_text_encoder_reference(sd_dir, tmp_path):
    from transformers import CLIPTextModel

    te_dir = build_tiny_text_encoder(tmp_path / "clip-text", seed=5)
    m = FrozenDiffusion.from_ref(str(sd_dir), text_encoder=str(te_dir), image_size=IMG)
    ids = m.tokenizer(["a dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        want = CLIPTextModel.from_pretrained(te_dir)(ids)[0]
    torch.testing.assert_close(m.embed("a dog"), want)
    assert m.embed("a dog") is m.embed("a dog")     # computed once, cached


def test_encode_uses_mode_and_vae_scaling(sd_dir, raw):
    m = FrozenDiffusion.from_ref(str(sd_dir), None, image_size=IMG)
    assert m.scaling_factor == pytest.approx(0.18215)
    x = torch.rand(1, 3, SIZE, SIZE) * 2.4 - 1.2
    with torch.no_grad():
        torch.testing.assert_close(m.encode(m.prepare_images(x)), _enc(raw, _prep(x)))


def test_timesteps_are_inclusive_and_seeded(sd_dir):
    guide = FusionGuidance(_cfg(sd_dir, t_min=3, t_max=5), None, "cpu")
    rng = torch.Generator().manual_seed(0)
    ts = {guide.sample_timestep(rng) for _ in range(200)}
    assert ts == {3, 4, 5}
    r1, r2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [guide.sample_timestep(r1) for _ in range(5)] == [guide.sample_timestep(r2) for _ in range(5)]


def test_missing_model_fails_fast():
    from trainables.refs import ModelNotFoundError

    t0 = time.time()
    with pytest.raises(ModelNotFoundError, match="hf download CompVis/stable-diffusion-v1-4"):
        FusionGuidance(DiffusionGuidanceConfig(), RegularizerConfig(), "cpu")
    assert time.time() - t0 < 5


def test_missing_lpips_weights_fail_clearly(sd_dir, tmp_path):
    from trainables.guidance.lpips_reg import LpipsWeightsNotFoundError

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty_hub"))
    try:
        t0 = time.time()
        with pytest.raises(LpipsWeightsNotFoundError) as err:
            FusionGuidance(_cfg(sd_dir), RegularizerConfig(lpips={"weight": 1.0}), "cpu")
        assert time.time() - t0 < 5
    finally:
        torch.hub.set_dir(old)
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and str(tmp_path / "empty_hub") in msg and "download.pytorch.org" in msg


def test_backward_requires_prepare_and_grad(sd_dir):
    guide = FusionGuidance(_cfg(sd_dir), None, "cpu")
    x = torch.zeros(1, 3, IMG, IMG, requires_grad=True)
    with pytest.raises(RuntimeError, match="prepare"):
        guide.backward(x, x.detach(), t=10)
    guide.prepare(PROMPT)
    with pytest.raises(ValueError, match="require grad"):
        guide.backward(x.detach(), x.detach(), t=10)


def test_fast_bf16_is_close_to_fp32(sd_dir, model):
    w0, xf = _images()
    g32, _ = _run(_guide(sd_dir, engine="fast"), w0, xf, t=200)
    m16 = FrozenDiffusion.from_ref(str(sd_dir), None, image_size=IMG, dtype="bf16", fast=True)
    assert m16.unet.dtype == torch.bfloat16 and not any(p.requires_grad for p in m16.unet.parameters())
    g16, metrics = _run(_guide(sd_dir, engine="fast", precision="bf16", model=m16), w0, xf, t=200)
    assert g16.dtype == torch.float32
    cos = F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
    assert cos > 0.98, float(cos)


def test_schedule_from_pndm_scheduler_dir_equals_sd_betas(tmp_path):
    from trainables.guidance.diffusion_model import sd_alphas_cumprod

    d = build_tiny_sd(tmp_path / "sd_pndm", seed=2, scheduler="pndm")     # the paper code's scheduler
    m = FrozenDiffusion.from_ref(str(d), None, image_size=IMG)
    torch.testing.assert_close(m.alphas_cumprod, sd_alphas_cumprod())
    assert m.prediction_type == "epsilon"
    assert float(m.alpha_bar(10)) == pytest.approx(0.99040, abs=1e-4)   # SD 1.x alpha_bar_10
