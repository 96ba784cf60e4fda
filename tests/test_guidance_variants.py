"""Score-distillation variants (guidance.variant) against independent float64 computations on the tiny SD.

Each variant's gradient dL/dW is written out here from its paper's formula (docs/variants.md) with the raw
diffusers modules in float64, never through trainables.guidance; the fp32 engines must land within the fp32
rounding model's spread of it (the method of tests/test_guidance_fusion.py, FP32_SAFETY x the largest deviation
of float64 copies that round every module output as fp32 would). Then: the regularizers combine with every
variant, DDS's frozen branch and layer selection, and the config refuses what a variant cannot mean.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from pydantic import ValidationError
from transformers import CLIPTextModel, CLIPTokenizer

from conftest import REPO, tiny_adapt_dict
from sd_reference import IMG, encode, to_float64, vae_input
from sweeps.spec import load_sweep
from trainables.config import DiffusionGuidanceConfig, RegularizerConfig
from trainables.config_io import validate_config
from trainables.frozen.diffusion_model import FrozenDiffusion
from trainables.guidance.fusion import FusionGuidance
from trainables.generators import load_generator
from trainables.adaptation.loop import adapt
from trainables.registry import SCORE_VARIANTS

B, SIZE = 2, 24
PROMPT, SOURCE, NEG = "a red square", "a blue circle", "a green triangle"   # NEG: the variants' negative prompt
TEXTS = {"target": PROMPT, "uncond": "", "source": SOURCE, "negative": NEG}
ROUNDING_DRAWS = 2
FP32_SAFETY = 32.0      # as tests/test_guidance_fusion.py (measured ratios there: 2.0-4.9)
VARIANTS = ("sds", "nfsd", "csd", "delta", "dds")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.numeric]


@pytest.fixture(scope="module")
def model(sd_dir):
    return FrozenDiffusion.from_ref(str(sd_dir), None, image_size=IMG)


@pytest.fixture(scope="module")
def raw64(sd_dir):
    """Float64 copies of the raw modules and every prompt's embedding: exact, and ROUNDING_DRAWS rounded."""
    tok = CLIPTokenizer.from_pretrained(sd_dir / "tokenizer")
    vae = AutoencoderKL.from_pretrained(sd_dir / "vae").eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(sd_dir / "unet").eval().requires_grad_(False)
    te = CLIPTextModel.from_pretrained(sd_dir / "text_encoder").eval().requires_grad_(False)
    alphas = DDPMScheduler.from_pretrained(sd_dir / "scheduler").alphas_cumprod.double()

    def build(rounding=None):
        mods = {k: to_float64(m, rounding) for k, m in (("vae", vae), ("unet", unet), ("te", te))}
        with torch.no_grad():
            emb = {k: mods["te"](tok([v], padding="max_length", max_length=77, truncation=True,
                                     return_tensors="pt").input_ids)[0] for k, v in TEXTS.items()}
        return dict(vae=mods["vae"], unet=mods["unet"], alphas=alphas, emb=emb)

    draws = []
    for i in range(ROUNDING_DRAWS):
        gen = torch.Generator().manual_seed(2000 + i)
        draws.append((gen, build(gen)))
    return dict(exact=build(), draws=draws)


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, SIZE, SIZE, generator=g), torch.tanh(torch.randn(B, 3, SIZE, SIZE, generator=g))


def _cfg(sd_dir, variant, **kw):
    base = dict(model=str(sd_dir), text_encoder=None, image_size=IMG, cfg_scale=7.5, t_min=10, t_max=500,
                latent_grad_clamp=None, image_clamp_quantile=None, variant=variant,
                nfsd={"negative_prompt": NEG}, csd={"negative_prompt": NEG, "negative_weight": 0.5})
    base.update(kw)
    return DiffusionGuidanceConfig(**base)


def _run(sd_dir, model, variant, w0, xf, t, reg=None, engine="fast", **kw):
    guide = FusionGuidance(_cfg(sd_dir, variant, engine=engine, **kw), reg or RegularizerConfig(), "cpu", model=model)
    guide.prepare(PROMPT, SOURCE)
    w = w0.clone().requires_grad_(True)
    metrics = guide.backward(1.1 * torch.tanh(w), xf, t=t, rng=torch.Generator().manual_seed(1))
    return w.grad.clone(), {k: float(v) for k, v in metrics.items()}


# ---- the expectation, written out per paper -------------------------------------------------------------------
def _direction(variant, E, z_t, zf_t, eps, t, s):
    """The variant's latent direction d (docs/variants.md), from raw UNet predictions E(latent, prompt key)."""
    u, c = E(z_t, "uncond"), E(z_t, "target")
    if variant == "sds":                       # DreamFusion / StyleGAN-Fusion: eps_cfg - eps
        return u + s * (c - u) - eps
    if variant == "nfsd":                      # Katzir et al.: delta_D + s (e_c - e_u), delta_D switches at t=200
        delta_d = u if t < 200 else u - E(z_t, "negative")
        return delta_d + s * (c - u)
    if variant == "csd":                       # Yu et al.: s [(e_c - e_u) - r (e_neg - e_u)], r = 0.5 here
        return s * ((c - u) - 0.5 * (E(z_t, "negative") - u))
    if variant == "delta":                     # McAllister et al.: s (e(y) - e(y_src)) on the same z_t
        return s * (c - E(z_t, "source"))
    if variant == "dds":                       # Hertz et al.: eps_cfg(z_t; y) - eps_cfg(z~_t; y_src)
        uf = E(zf_t, "uncond")
        return (u + s * (c - u)) - (uf + s * (E(zf_t, "source") - uf))
    raise AssertionError(variant)


def _expected(raw, variant, w0, xf, t, s=7.5, dir_weight=0.0, recon_weight=0.0) -> torch.Tensor:
    dt = raw["alphas"].dtype
    w = w0.to(dt).clone().requires_grad_(True)
    x = vae_input(1.1 * torch.tanh(w))
    z = encode(raw, x)
    z_o = encode(raw, vae_input(xf.to(dt))).detach()
    rng = torch.Generator().manual_seed(1)
    eps = torch.randn(z.shape, generator=rng).to(dt)
    a = raw["alphas"][t]

    def noised(latent, e):
        return a.sqrt() * latent + (1 - a).sqrt() * e

    def E(z_in, key):
        with torch.no_grad():
            tt = torch.full((z_in.shape[0],), t, dtype=torch.long)
            return raw["unet"](z_in, tt, encoder_hidden_states=raw["emb"][key].expand(z_in.shape[0], -1, -1)).sample

    d = _direction(variant, E, noised(z.detach(), eps), noised(z_o, eps), eps, t, s)
    g_z = (1 - a) * d                                                      # w(t) = 1 - alpha_bar (eq. 4)
    if dir_weight or recon_weight:                                        # the paper's regularizers, own eps2
        eps2 = torch.randn(z.shape, generator=rng).to(dt)
        zt2 = noised(z.detach(), eps2)
        e = E(zt2, "uncond") + s * (E(zt2, "target") - E(zt2, "uncond"))
        if dir_weight:                                                     # eq. (6)
            zo2 = noised(z_o, eps2)
            e_o = E(zo2, "uncond") + s * (E(zo2, "target") - E(zo2, "uncond"))
            g_z = g_z + (1 - a) * (e - e_o) * dir_weight
        if recon_weight:                                                   # eq. (7)
            x0 = (zt2 - (1 - a).sqrt() * e) / a.sqrt()
            g_e = 2.0 / x0.numel() * (x0 - z_o) * (-(1 - a).sqrt() / a.sqrt())

            def unit_rms(v):
                return v * (v[0].numel() ** 0.5) / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

            g_z = g_z + (1 - a) * (unit_rms(e) - unit_rms(g_e)) * recon_weight
    z.backward(g_z)
    return w.grad.clone()


def _assert_matches(got, raw64, *args, **kw):
    exact = _expected(raw64["exact"], *args, **kw)
    dev = 0.0
    for i, (gen, rounded) in enumerate(raw64["draws"]):
        gen.manual_seed(2000 + i)
        dev = max(dev, float((_expected(rounded, *args, **kw) - exact).abs().max()))
    assert dev > 0, "the rounding model did not perturb the computation"
    err = float((got.double() - exact).abs().max())
    assert err <= FP32_SAFETY * dev, f"max |fp32 - float64| {err:.3g} > {FP32_SAFETY * dev:.3g}"
    assert float(exact.abs().max()) > 1000 * FP32_SAFETY * dev     # the gradient is far above its tolerance
    return exact


# ---- each variant's gradient --------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_gradient_matches_its_formula(sd_dir, model, raw64, variant, engine):
    w0, xf = _images()
    got, metrics = _run(sd_dir, model, variant, w0, xf, t=300, engine=engine)
    _assert_matches(got, raw64, variant, w0, xf, 300)
    assert metrics["sds/grad_norm"] > 0 and metrics["sds/t"] == 300


def test_nfsd_switches_its_domain_term_at_t_200(sd_dir, model, raw64):
    w0, xf = _images()
    below, _ = _run(sd_dir, model, "nfsd", w0, xf, t=150)
    _assert_matches(below, raw64, "nfsd", w0, xf, 150)             # delta_D = e_u (no negative prompt)
    # the negative prompt is read above the switch only: moving it changes the gradient at t=300, not at t=150
    other = {"negative_prompt": "a yellow star"}
    assert torch.equal(_run(sd_dir, model, "nfsd", w0, xf, t=150, nfsd=other)[0], below)
    above, _ = _run(sd_dir, model, "nfsd", w0, xf, t=300)
    assert not torch.allclose(_run(sd_dir, model, "nfsd", w0, xf, t=300, nfsd=other)[0], above, rtol=1e-3, atol=0)


def test_variants_differ_from_sds_and_from_each_other(sd_dir, model, raw64):
    """Each variant's expectation is its own (the formulas are not accidentally the same computation)."""
    w0, xf = _images()
    grads = {v: _expected(raw64["exact"], v, w0, xf, 300) for v in VARIANTS}
    for i, a in enumerate(VARIANTS):
        for b in VARIANTS[i + 1:]:
            rel = float((grads[a] - grads[b]).norm() / grads[a].norm())
            assert rel > 1e-2, (a, b, rel)


def test_dds_is_zero_when_source_is_target_and_nothing_changed(sd_dir, model):
    """DDS with y_src = y on an unchanged generator (train render = frozen render) has no direction at all,
    unlike SDS; the same relation the paper's directional regularizer has at initialisation."""
    w0, _ = _images()
    x_same = (1.1 * torch.tanh(w0)).detach()
    _, m = _run(sd_dir, model, "dds", w0, x_same, t=300, dds={"source_prompt": PROMPT})
    _, m_sds = _run(sd_dir, model, "sds", w0, x_same, t=300)
    _, m_src = _run(sd_dir, model, "dds", w0, x_same, t=300)          # y_src = "a blue circle": a real direction
    # zero up to fp32 rounding: the train and frozen rows are the same inputs at different positions of one batched
    # UNet call, which some BLAS paths round differently (measured 2.0e-6 x SDS under MKL_CBWR=AVX2 on an AMD EPYC,
    # 0 under COMPATIBLE); a DDS that reads another prompt is three orders of magnitude above the bound (0.21 x SDS)
    assert m["sds/grad_norm"] < 1e-4 * m_sds["sds/grad_norm"]
    assert m_src["sds/grad_norm"] > 1e-2 * m_sds["sds/grad_norm"], (m_src, m_sds)


# ---- the regularizers combine with every variant ----------------------------------------------------------------
@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_regularizers_combine_with_every_variant(sd_dir, model, raw64, variant, engine):
    w0, xf = _images(3)
    kind = "directional" if variant in ("sds", "csd", "dds") else "reconstruction"
    reg = RegularizerConfig(**{kind: {"weight": 0.7}})
    got, metrics = _run(sd_dir, model, variant, w0, xf, t=250, reg=reg, engine=engine)
    weights = {"dir_weight": 0.7} if kind == "directional" else {"recon_weight": 0.7}
    with_reg = _assert_matches(got, raw64, variant, w0, xf, 250, **weights)
    assert metrics[f"reg/{kind}_grad_norm"] > 0
    alone = _expected(raw64["exact"], variant, w0, xf, 250)
    assert float((with_reg - alone).norm() / alone.norm()) > 1e-3      # the regularizer contributed


def test_one_unet_call_per_fast_step_with_dds_and_directional(sd_dir, model):
    """The fast engine batches the variant's rows (DDS: 4) with the regularizer's (directional: 4) in one call."""
    calls = []
    handle = model.unet.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    try:
        w0, xf = _images()
        _run(sd_dir, model, "dds", w0, xf, t=300, reg=RegularizerConfig(directional={"weight": 1.0}))
    finally:
        handle.remove()
    assert calls == [8 * B]


# ---- configuration and training ----------------------------------------------------------------------------
def test_variant_field_is_validated_with_its_choices():
    with pytest.raises(ValidationError, match=r"guidance.variant 'sdss' is not a registered .*'nfsd'"):
        DiffusionGuidanceConfig(variant="sdss")
    assert set(VARIANTS) <= set(SCORE_VARIANTS.names())


def test_rescale_noise_is_refused_outside_sds_with_the_fix():
    with pytest.raises(ValidationError, match="set guidance.rescale_noise: false"):
        DiffusionGuidanceConfig(variant="csd", rescale_noise=True)
    DiffusionGuidanceConfig(variant="csd", rescale_noise=False)


def test_source_variants_need_a_source_prompt(sd_dir, model):
    guide = FusionGuidance(_cfg(sd_dir, "delta"), RegularizerConfig(), "cpu", model=model)
    with pytest.raises(ValueError, match="needs a source prompt"):
        guide.prepare(PROMPT, "")
    own = FusionGuidance(_cfg(sd_dir, "delta", delta={"source_prompt": SOURCE}), RegularizerConfig(), "cpu", model=model)
    own.prepare(PROMPT, "")                                              # the variant's own source prompt
    assert FusionGuidance.texts(own.cfg, PROMPT, "") == [PROMPT, "", SOURCE]


@pytest.mark.parametrize("variant", ["nfsd", "dds"])
def test_variant_trains_with_layer_selection(tiny_models, tmp_path, variant):
    """A short run with layer selection (DDS's selection reads the frozen render) changes the generator."""
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, **{
        "guidance__variant": variant, "layers__k": 2, "layers__iterations": 1, "train__iterations": 2}))
    result = adapt(cfg, progress=False)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    before = load_generator(str(tiny_models["generator"])).state_dict()
    after = load_generator(str(result.generator_path)).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_paper_variant_sweep_runs_each_variant_at_its_papers_settings():
    """sweeps/paper/ffhq_variants.yaml: every registered built-in variant, with and without the directional
    regularizer, at the scale / t range / weighting its paper's public code uses (docs/variants.md)."""
    sweep = load_sweep(REPO / "sweeps/paper/ffhq_variants.yaml")
    seen = {(t.config.guidance.variant, t.config.reg.directional.weight): t.config.guidance for t in sweep.trials}
    assert set(seen) == {(v, w) for v in VARIANTS for w in (0.0, 1.0)}
    settings = {v: (g.cfg_scale, g.t_min, g.t_max, g.weighting) for (v, _), g in seen.items()}
    assert settings == {"sds": (100.0, 10, 500, "sds"), "nfsd": (7.5, 20, 980, "sds"), "csd": (7.5, 20, 500, "sds"),
                        "delta": (40.0, 20, 980, "sds"), "dds": (7.5, 50, 948, "uniform")}
    assert {t.config.source_prompt for t in sweep.trials} == {"photo of a face"}
