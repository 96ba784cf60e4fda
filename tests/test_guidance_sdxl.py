"""SDXL as the critic (trainables/frozen/sdxl.py) against the raw diffusers modules in float64, on a tiny SDXL.

The tiny SDXL (trainables.testing.build_tiny_sdxl) is built from config in the StableDiffusionXLPipeline folder
layout, with random weights: it tests the plumbing and arithmetic, never image quality. The expectation is written
out here from diffusers' SDXL pipeline (encode_prompt, _get_add_time_ids, the UNet's added_cond_kwargs) with the
raw modules in float64, never through trainables.guidance or FrozenSDXL; the fp32 engines must land within the
fp32 rounding model's spread of it (tests/test_guidance_variants.py's method: FP32_SAFETY x the largest deviation
of float64 copies that round every module output as fp32 would).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from conftest import tiny_adapt_dict
from sd_reference import IMG, U32, to_float64, vae_input
from test_guidance_variants import _direction      # each variant's direction, written out from its paper
from trainables.adaptation.loop import adapt
from trainables.config import DiffusionGuidanceConfig, RegularizerConfig
from trainables.config_io import validate_config
from trainables.errors import ModelNotFoundError
from trainables.frozen.diffusion_model import FrozenDiffusion
from trainables.frozen.layouts import layout_for, load_frozen_diffusion, resolve_model_ref
from trainables.frozen.sdxl import FrozenSDXL
from trainables.generators import load_generator
from trainables.guidance.fusion import FusionGuidance
from trainables.testing import build_tiny_sdxl, tiny_sdxl_unet_config, tiny_text_config, tiny_vae_config

B, SIZE = 2, 24
PROMPT, SOURCE, NEG = "a red square", "a blue circle", "a green triangle"
TEXTS = {"target": PROMPT, "uncond": "", "source": SOURCE, "negative": NEG}
SDXL_LATENT_SCALE = 0.13025            # SDXL's VAE scaling factor (its published vae/config.json)
TIME_IDS = (IMG, IMG, 0, 0, IMG, IMG)  # the pipeline's defaults for an IMG x IMG image: original + crop + target
ROUNDING_DRAWS = 2
FP32_SAFETY = 32.0                     # as tests/test_guidance_variants.py
F64_BOUND = 1e-9                       # float64 vs float64 with another batching: ~1e-16 x depth, far below
# FrozenDiffusion returns fp32 predictions (its contract) and combines CFG in fp32: each of eps_u, eps_c rounded
# once (<= U32 |.|), then eps_u + s (eps_c - eps_u): <= (1 + 2 s) U32 M from the inputs, + 3 U32 M from its three
# fp32 operations (M = the largest |prediction|); doubled for margin
def fp32_cfg_bound(s: float, m: float) -> float:
    return 2 * (1 + 2 * s + 3) * U32 * m


VARIANTS = ("sds", "nfsd", "csd", "delta", "dds")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.numeric]


@pytest.fixture(scope="module")
def model(sdxl_dir):
    return FrozenSDXL.from_ref(str(sdxl_dir), None, image_size=IMG, time_ids=TIME_IDS)


def _raw_modules(root):
    return dict(vae=AutoencoderKL.from_pretrained(root / "vae"),
                unet=UNet2DConditionModel.from_pretrained(root / "unet"),
                te1=CLIPTextModel.from_pretrained(root / "text_encoder"),
                te2=CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2"))


def _encode_prompt(mods, toks, text: str, zeros_for_empty: bool = True):
    """diffusers' SDXL encode_prompt: concat(hidden_states[-2] of both encoders), pooled = text_encoder_2's
    text_embeds; the empty (absent) negative prompt is zeros when force_zeros_for_empty_prompt."""
    hidden, pooled = [], None
    with torch.no_grad():
        for tok, enc in ((toks[0], mods["te1"]), (toks[1], mods["te2"])):
            ids = tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            out = enc(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if enc is mods["te2"]:
                pooled = out.text_embeds
    ctx = torch.cat(hidden, dim=-1)
    if text == "" and zeros_for_empty:
        ctx, pooled = torch.zeros_like(ctx), torch.zeros_like(pooled)
    return ctx, pooled


@pytest.fixture(scope="module")
def raw64(sdxl_dir):
    """Float64 copies of the raw modules and every prompt's (context, pooled): exact, and ROUNDING_DRAWS rounded."""
    toks = (CLIPTokenizer.from_pretrained(sdxl_dir / "tokenizer"), CLIPTokenizer.from_pretrained(sdxl_dir / "tokenizer_2"))
    base = {k: m.eval().requires_grad_(False) for k, m in _raw_modules(sdxl_dir).items()}
    alphas = EulerDiscreteScheduler.from_pretrained(sdxl_dir / "scheduler").alphas_cumprod.double()

    def build(rounding=None):
        mods = {k: to_float64(m, rounding) for k, m in base.items()}
        emb = {k: _encode_prompt(mods, toks, v) for k, v in TEXTS.items()}
        return dict(vae=mods["vae"], unet=mods["unet"], alphas=alphas, emb=emb, toks=toks, mods=mods)

    draws = []
    for i in range(ROUNDING_DRAWS):
        gen = torch.Generator().manual_seed(3000 + i)
        draws.append((gen, build(gen)))
    return dict(exact=build(), draws=draws)


def _unet64(raw, z_in, t, key, time_ids=TIME_IDS):
    ctx, pooled = raw["emb"][key]
    n = z_in.shape[0]
    ids = torch.tensor([list(time_ids)], dtype=z_in.dtype).expand(n, -1)    # _get_add_time_ids, per sample
    with torch.no_grad():
        return raw["unet"](z_in, torch.full((n,), t, dtype=torch.long), encoder_hidden_states=ctx.expand(n, -1, -1),
                           added_cond_kwargs={"text_embeds": pooled.expand(n, -1), "time_ids": ids}).sample


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, SIZE, SIZE, generator=g), torch.tanh(torch.randn(B, 3, SIZE, SIZE, generator=g))


def _cfg(sdxl_dir, variant, **kw):
    base = dict(model=str(sdxl_dir), text_encoder=None, image_size=IMG, cfg_scale=7.5, t_min=10, t_max=500,
                latent_grad_clamp=None, image_clamp_quantile=None, variant=variant,
                nfsd={"negative_prompt": NEG}, csd={"negative_prompt": NEG, "negative_weight": 0.5})
    base.update(kw)
    return DiffusionGuidanceConfig(**base)


def _run(sdxl_dir, model, variant, w0, xf, t, reg=None, engine="fast", **kw):
    guide = FusionGuidance(_cfg(sdxl_dir, variant, engine=engine, **kw), reg or RegularizerConfig(), "cpu", model=model)
    guide.prepare(PROMPT, SOURCE)
    w = w0.clone().requires_grad_(True)
    metrics = guide.backward(1.1 * torch.tanh(w), xf, t=t, rng=torch.Generator().manual_seed(1))
    return w.grad.clone(), {k: float(v) for k, v in metrics.items()}


def _expected(raw, variant, w0, xf, t, s=7.5, dir_weight=0.0, recon_weight=0.0) -> torch.Tensor:
    """dL/dW of the variant (+ regularizers, eqs. 6-7) through the raw float64 SDXL modules."""
    dt = raw["alphas"].dtype
    w = w0.to(dt).clone().requires_grad_(True)
    z = raw["vae"].encode(vae_input(1.1 * torch.tanh(w))).latent_dist.mode() * SDXL_LATENT_SCALE
    z_o = (raw["vae"].encode(vae_input(xf.to(dt))).latent_dist.mode() * SDXL_LATENT_SCALE).detach()
    rng = torch.Generator().manual_seed(1)
    eps = torch.randn(z.shape, generator=rng).to(dt)
    a = raw["alphas"][t]

    def noised(latent, e):
        return a.sqrt() * latent + (1 - a).sqrt() * e

    def E(z_in, key):
        return _unet64(raw, z_in, t, key)

    d = _direction(variant, E, noised(z.detach(), eps), noised(z_o, eps), eps, t, s)
    g_z = (1 - a) * d                                                      # w(t) = 1 - alpha_bar (eq. 4)
    if dir_weight or recon_weight:
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
        gen.manual_seed(3000 + i)
        dev = max(dev, float((_expected(rounded, *args, **kw) - exact).abs().max()))
    assert dev > 0, "the rounding model did not perturb the computation"
    err = float((got.double() - exact).abs().max())
    assert err <= FP32_SAFETY * dev, f"max |fp32 - float64| {err:.3g} > {FP32_SAFETY * dev:.3g}"
    assert float(exact.abs().max()) > 1000 * FP32_SAFETY * dev     # the gradient is far above its tolerance
    return exact


# ---- loading: the layout, the text embeddings, one noise prediction ------------------------------------------
def test_layouts_pick_sdxl_for_an_sdxl_folder_and_sd_otherwise(sdxl_dir, sd_dir, model):
    assert layout_for(sdxl_dir) is FrozenSDXL and layout_for(sd_dir) is FrozenDiffusion
    assert isinstance(load_frozen_diffusion(_cfg(sdxl_dir, "sds"), image_size=IMG), FrozenSDXL)
    assert type(load_frozen_diffusion(_cfg(sd_dir, "sds"), image_size=IMG)) is FrozenDiffusion
    assert model.scaling_factor == pytest.approx(SDXL_LATENT_SCALE, abs=0)     # read from vae/config.json


def test_text_embeddings_equal_diffusers_sdxl_encoding(sdxl_dir, raw64):
    """context = concat(hidden_states[-2]), pooled = text_embeds of text_encoder_2; "" is zeros."""
    m64 = FrozenSDXL.from_ref(str(sdxl_dir), None, dtype=torch.float64, image_size=IMG)
    for key, text in TEXTS.items():
        ctx, pooled = m64.unpack(m64.embed(text))
        ref_ctx, ref_pooled = raw64["exact"]["emb"][key]
        assert ctx.shape == ref_ctx.shape and pooled.shape == ref_pooled.shape
        assert float((ctx - ref_ctx).abs().max()) <= F64_BOUND * max(1.0, float(ref_ctx.abs().max()))
        assert float((pooled - ref_pooled).abs().max()) <= F64_BOUND * max(1.0, float(ref_pooled.abs().max()))
        assert (float(ref_pooled.abs().max()) == 0) == (text == "")


def test_cfg_noise_prediction_equals_the_raw_unet_in_float64(sdxl_dir, raw64):
    """One batched [uncond; cond] call with added_cond_kwargs = the raw UNet called per prompt (eq. 3)."""
    m64 = FrozenSDXL.from_ref(str(sdxl_dir), None, dtype=torch.float64, image_size=IMG)
    z = torch.randn(B, 4, IMG // 2, IMG // 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = m64.predict_eps(z, 300, m64.embed(PROMPT), m64.embed(""), 7.5)
    u, c = _unet64(raw64["exact"], z, 300, "uncond"), _unet64(raw64["exact"], z, 300, "target")
    want = u + 7.5 * (c - u)
    m = max(float(u.abs().max()), float(c.abs().max()))
    assert float((got.double() - want).abs().max()) <= fp32_cfg_bound(7.5, m)
    assert float((c - u).abs().max()) > 1e-3 * float(u.abs().max())    # the prompt reaches the prediction


def test_time_ids_come_from_guidance_sdxl(sdxl_dir, raw64):
    """guidance.sdxl.original_size / crops / target_size become the UNet's time_ids (diffusers' order)."""
    cfg = _cfg(sdxl_dir, "sds", sdxl={"original_size": [32, 24], "crops_coords_top_left": [4, 2]})
    assert cfg.sdxl.time_ids(IMG) == (32, 24, 4, 2, IMG, IMG)
    assert _cfg(sdxl_dir, "sds").sdxl.time_ids(IMG) == TIME_IDS
    m64 = load_frozen_diffusion(cfg, dtype=torch.float64, image_size=IMG)
    assert m64.time_ids.tolist() == [[32.0, 24.0, 4.0, 2.0, float(IMG), float(IMG)]]
    z = torch.randn(B, 4, IMG // 2, IMG // 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    got = m64.unet_eps(z, 200, m64.embed(PROMPT).expand(B, -1, -1))
    want = _unet64(raw64["exact"], z, 200, "target", time_ids=(32, 24, 4, 2, IMG, IMG))
    default = _unet64(raw64["exact"], z, 200, "target")
    assert float((got.double() - want).abs().max()) <= 2 * U32 * float(want.abs().max())   # one fp32 rounding
    assert float((want - default).abs().max()) > 1e-4 * float(want.abs().max())   # the time ids matter


def test_empty_prompt_follows_force_zeros_for_empty_prompt(tmp_path, raw64):
    """force_zeros_for_empty_prompt false (model_index.json): "" is encoded like any other text."""
    root = build_tiny_sdxl(tmp_path / "sdxl_nozeros", seed=0, force_zeros_for_empty_prompt=False)
    m = FrozenSDXL.from_ref(str(root), None, dtype=torch.float64, image_size=IMG)
    ctx, pooled = m.unpack(m.embed(""))
    ref_ctx, ref_pooled = _encode_prompt(raw64["exact"]["mods"], raw64["exact"]["toks"], "", zeros_for_empty=False)
    assert float(ref_pooled.abs().max()) > 0
    assert float((ctx - ref_ctx).abs().max()) <= F64_BOUND * float(ref_ctx.abs().max())
    assert float((pooled - ref_pooled).abs().max()) <= F64_BOUND * float(ref_pooled.abs().max())


# ---- every variant's gradient, and the regularizers -------------------------------------------------------------
@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sdxl_variant_gradient_matches_float64(sdxl_dir, model, raw64, variant, engine):
    w0, xf = _images()
    got, metrics = _run(sdxl_dir, model, variant, w0, xf, t=300, engine=engine)
    _assert_matches(got, raw64, variant, w0, xf, 300)
    assert metrics["sds/grad_norm"] > 0 and metrics["sds/t"] == 300


@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sdxl_regularizers_combine_with_every_variant(sdxl_dir, model, raw64, variant, engine):
    w0, xf = _images(3)
    kind = "directional" if variant in ("sds", "csd", "dds") else "reconstruction"
    got, metrics = _run(sdxl_dir, model, variant, w0, xf, t=250, reg=RegularizerConfig(**{kind: {"weight": 0.7}}),
                        engine=engine)
    weights = {"dir_weight": 0.7} if kind == "directional" else {"recon_weight": 0.7}
    with_reg = _assert_matches(got, raw64, variant, w0, xf, 250, **weights)
    assert metrics[f"reg/{kind}_grad_norm"] > 0
    alone = _expected(raw64["exact"], variant, w0, xf, 250)
    assert float((with_reg - alone).norm() / alone.norm()) > 1e-3      # the regularizer contributed


# ---- precision, bad input --------------------------------------------------------------------------------------
def _tiny_nets(force_upcast: bool):
    from transformers import CLIPTextConfig

    torch.manual_seed(0)
    vae = AutoencoderKL(**{**tiny_vae_config(), "scaling_factor": SDXL_LATENT_SCALE, "force_upcast": force_upcast})
    return vae, UNet2DConditionModel(**tiny_sdxl_unet_config()), CLIPTextConfig(**tiny_text_config())


@pytest.mark.parametrize("force_upcast", [True, False])
def test_fp16_vae_is_upcast_when_its_config_says_so(force_upcast):
    """SDXL's VAE overflows in fp16: with force_upcast it runs in fp32 (diffusers' upcast); the fp16-fix VAE
    (force_upcast false) stays fp16. Dtypes only: fp16 convolutions need the GPU this machine lacks."""
    vae, unet, _ = _tiny_nets(force_upcast)
    alphas = EulerDiscreteScheduler().alphas_cumprod
    m = FrozenSDXL(vae, unet, None, None, alphas, dtype=torch.float16, image_size=IMG)
    vae_dtype = torch.float32 if force_upcast else torch.float16
    assert m.vae_dtype == vae_dtype and {p.dtype for p in m.vae.parameters()} == {vae_dtype}
    assert {p.dtype for p in m.unet.parameters()} == {torch.float16}
    vae_sd, _, _ = _tiny_nets(True)
    sd = FrozenDiffusion(vae_sd, UNet2DConditionModel(**tiny_sdxl_unet_config()), None, None, alphas,
                         dtype=torch.float16, image_size=IMG)
    assert sd.vae_dtype == torch.float16       # the SD layout never upcasts (its behaviour is unchanged)


def test_preflight_needs_every_sdxl_subfolder(sdxl_dir, tmp_path):
    """An SDXL folder without its second text encoder is caught by the model check, before any training step."""
    import shutil

    assert resolve_model_ref(str(sdxl_dir)) == sdxl_dir
    partial = tmp_path / "partial"
    shutil.copytree(sdxl_dir, partial, ignore=shutil.ignore_patterns("text_encoder_2"))
    with pytest.raises(ModelNotFoundError, match="text_encoder_2"):
        resolve_model_ref(str(partial), allow_download=False)


def test_a_separate_text_encoder_is_refused_with_the_fix(sdxl_dir):
    with pytest.raises(ValueError, match="guidance.text_encoder: null"):
        load_frozen_diffusion(_cfg(sdxl_dir, "sds", text_encoder="openai/clip-vit-large-patch14"), image_size=IMG)


def test_single_file_offline_without_configs_is_a_clear_error(tmp_path, monkeypatch):
    """A single-file SDXL needs the pipeline's configs; offline and uncached: an error saying how to get them."""
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    ckpt = tmp_path / "sdxl.safetensors"
    # the two keys diffusers' single-file loader reads to call a checkpoint an SDXL base (its configs: the hub's)
    save_file({"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(4),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1)}, str(ckpt))
    assert layout_for(ckpt) is FrozenSDXL
    with pytest.raises(ModelNotFoundError, match="stable-diffusion-xl-base-1.0") as err:
        load_frozen_diffusion(_cfg(ckpt, "sds"), image_size=IMG)
    assert "guidance.model" in str(err.value) and str(ckpt) in str(err.value)
    assert "LocalEntryNotFoundError" in str(err.value)          # it failed at the config look-up, not elsewhere


# ---- a pocket-size adaptation run with the tiny SDXL critic (random weights) ---------------------------------------
def test_adaptation_run_with_the_tiny_sdxl_critic(tiny_models, sdxl_dir, tmp_path):
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, **{
        "guidance__model": str(sdxl_dir), "guidance__variant": "sds", "reg__directional__weight": 0.5,
        "train__iterations": 2}))
    result = adapt(cfg, progress=False)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    before = load_generator(str(tiny_models["generator"])).state_dict()
    after = load_generator(str(result.generator_path)).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
