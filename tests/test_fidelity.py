"""The paper's formulas and defaults as they reach the gradient, checked against independent computations.

Every expected value here is written out from the paper's code (sd.py, model/ZSSGAN.py, train.py of
KunpengSong/styleganfusion; docs/fidelity.md cites the lines) with the raw diffusers modules in float64,
never through `trainables.guidance` helpers. The engines run in fp32; tolerances are relative to the largest
reference value and leave room for fp32 arithmetic on any BLAS path.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from conftest import StubGuidance, tiny_adapt_dict
from sd_reference import IMG, encode, eps_cfg, rms_normalize, vae_input
from trainables.config import AdaptConfig, DiffusionGuidanceConfig, RegularizerConfig
from trainables.config_io import validate_config
from trainables.generators import load_generator, save_rosinality
from trainables.frozen.diffusion_model import FrozenDiffusion
from trainables.guidance.fusion import FusionGuidance
from trainables.adaptation.loop import adapt
from sweeps.spec import load_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
B, SIZE = 2, 24     # generator output 24x24; the tiny VAE takes IMG=16 (sd_reference)
PROMPT = "a red square"
REL = 2e-4       # fp32 engine vs float64 reference, relative to max |reference| (measured spread ~1e-6)


@pytest.fixture(scope="module")
def model(sd_dir):
    return FrozenDiffusion.from_ref(str(sd_dir), None, image_size=IMG)


@pytest.fixture(scope="module")
def raw64(sd_dir):
    """The tiny SD's raw modules in float64, loaded without trainables.guidance."""
    tok = CLIPTokenizer.from_pretrained(sd_dir / "tokenizer")
    te = CLIPTextModel.from_pretrained(sd_dir / "text_encoder").eval()

    def emb(p):
        ids = tok([p], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return te(ids)[0].double()

    return dict(
        vae=AutoencoderKL.from_pretrained(sd_dir / "vae").eval().requires_grad_(False).double(),
        unet=UNet2DConditionModel.from_pretrained(sd_dir / "unet").eval().requires_grad_(False).double(),
        alphas=DDPMScheduler.from_pretrained(sd_dir / "scheduler").alphas_cumprod.double(),
        cond=emb(PROMPT), uncond=emb(""),
    )


# ---- independent pieces (float64) ----------------------------------------------------------------------
def _gen(w):          # stand-in generator: values inside (-1, 1), so the VAE-input clamp never bites
    return 0.9 * torch.tanh(w)


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, SIZE, SIZE, generator=g), torch.tanh(torch.randn(B, 3, SIZE, SIZE, generator=g))


def _close(got, ref, rel=REL):
    err, scale = float((got.double() - ref).abs().max()), float(ref.abs().max())
    assert scale > 0 and err <= rel * scale, f"max |diff| {err:.3g} vs max |ref| {scale:.3g}"


def _guide_grad(guide, w0, x_frozen, t, seed=1):
    w = w0.clone().requires_grad_(True)
    metrics = guide.backward(_gen(w), x_frozen, t=t, rng=torch.Generator().manual_seed(seed))
    return w.grad.clone(), {k: float(v) for k, v in metrics.items()}


def _guide(model, cfg: DiffusionGuidanceConfig, reg: RegularizerConfig, lpips=None):
    g = FusionGuidance(cfg, reg, "cpu", model=model, lpips=lpips)
    g.prepare(PROMPT, "photo")
    return g


def _expected(raw, w0, x_frozen, t, s, seed=1, sds_scale=1.0, sds_rescale=False, dir_weight=0.0,
              dir_rescale=False, lpips_factor=0.0, lpips_fn=None):
    """dL/dW in float64 from the paper's formulas: SDS (eq. 4) + directional (eq. 6) + LPIPS (eq. 8), no clamps.
    The random draws follow the engines' order: eps (SDS) first, then eps2 (the regularizer's own)."""
    w = w0.double().clone().requires_grad_(True)
    x = vae_input(_gen(w))
    z = encode(raw, x)
    rng = torch.Generator().manual_seed(seed)
    eps = torch.randn(z.shape, generator=rng).double()
    a = raw["alphas"][t]
    z_t = a.sqrt() * z.detach() + (1 - a).sqrt() * eps
    e_hat = eps_cfg(raw, z_t, t, s)
    diff = (rms_normalize(e_hat) - rms_normalize(eps)) if sds_rescale else (e_hat - eps)
    g_z = (1 - a) * diff * sds_scale
    if dir_weight:
        eps2 = torch.randn(z.shape, generator=rng).double()
        z_o = encode(raw, vae_input(x_frozen.double()))
        e_c = eps_cfg(raw, a.sqrt() * z.detach() + (1 - a).sqrt() * eps2, t, s)
        e_o = eps_cfg(raw, a.sqrt() * z_o + (1 - a).sqrt() * eps2, t, s)
        if dir_rescale:
            e_c, e_o = rms_normalize(e_c), rms_normalize(e_o)
        g_z = g_z + (1 - a) * (e_c - e_o) * dir_weight * sds_scale
    (g_w,) = torch.autograd.grad(z, w, g_z, retain_graph=True)
    if lpips_factor:
        (g_l,) = torch.autograd.grad(lpips_fn(vae_input(x_frozen.double()), x).mean() * lpips_factor, w)
        g_w = g_w + g_l
    return g_w


def _no_clamps(**kw):
    return dict(latent_grad_clamp=None, image_clamp_quantile=None, **kw)


def _gcfg(sd_dir, **kw):
    base = dict(model=str(sd_dir), text_encoder=None, image_size=IMG, cfg_scale=7.5, t_min=10, t_max=500)
    base.update(kw)
    return DiffusionGuidanceConfig(**base)


class _SquaredDistance(torch.nn.Module):
    """A stand-in for LPIPS with a known gradient: per-sample mean squared difference."""

    def forward(self, a, b):
        return (a - b).pow(2).flatten(1).mean(1)


# ---- the directional regularizer's value (eq. 6) -------------------------------------------------------
@pytest.mark.numeric
@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("rescale", [False, True])
def test_directional_regularizer_value(sd_dir, model, raw64, engine, rescale):
    """(1 - alpha_bar_t) (eps_hat(z_t_train) - eps_hat(z_t_frozen)) * weight, same eps and t for both, pulled
    back through the VAE encoder: compared as a whole gradient, so a wrong (1 - alpha_bar) factor, a wrong
    noise or a wrong CFG combination fails (the engines share `directional_latent_grad`, so this is the only
    check of its value)."""
    w0, xf = _images()
    reg = RegularizerConfig(directional={"weight": 0.7, "rescale": rescale})
    got, m = _guide_grad(_guide(model, _gcfg(sd_dir, engine=engine, **_no_clamps()), reg), w0, xf, t=300)
    _close(got, _expected(raw64, w0, xf, 300, 7.5, dir_weight=0.7, dir_rescale=rescale))
    # and the regularizer's share is far above the tolerance, so the comparison above resolves it
    sds_only = _expected(raw64, w0, xf, 300, 7.5)
    assert float((got.double() - sds_only).abs().max()) > 25 * REL * float(sds_only.abs().max())
    assert m["reg/directional_grad_norm"] > 0


# ---- EG3D: the paper's run as the effective product that reaches the gradient -----------------------------
def _eg3d_cfg(sd_dir, **reg):
    cfg = AdaptConfig.model_validate({
        "prompt": PROMPT, "generator": {"kind": "eg3d", "checkpoint": "eg3d.pkl"},
        "guidance": {"model": str(sd_dir), "text_encoder": None, "image_size": IMG, "cfg_scale": 7.5,
                     "t_min": 10, "t_max": 500, "latent_grad_clamp": None},
        "reg": reg,
    })
    return cfg


@pytest.mark.numeric
@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_eg3d_lpips_is_20x_lpips(sd_dir, model, raw64, engine):
    """The authors: lpips * 2000 * w, then / 100 once for EG3D -> 20 x LPIPS (ZSSGAN.get_diffusion_guidance)."""
    cfg = _eg3d_cfg(sd_dir, lpips={"weight": 1.0})
    assert cfg.guidance.grad_scale == 0.01 and cfg.guidance.image_clamp_quantile is None
    lp = _SquaredDistance()
    on = _guide(model, cfg.guidance.model_copy(update={"engine": engine}), cfg.reg, lpips=lp)
    off = _guide(model, cfg.guidance.model_copy(update={"engine": engine}), RegularizerConfig())
    w0, xf = _images(seed=2)
    g_on, m = _guide_grad(on, w0, xf, t=200)
    g_off, _ = _guide_grad(off, w0, xf, t=200)
    w = w0.double().clone().requires_grad_(True)
    (lp(vae_input(xf.double()), vae_input(_gen(w))).mean() * 20.0).backward()
    _close(g_on - g_off, w.grad, rel=1e-4)
    assert m["reg/lpips_scaled"] == pytest.approx(20.0 * m["loss/lpips"], rel=1e-5)


@pytest.mark.numeric
@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_eg3d_sds_and_directional_are_scaled_once(sd_dir, model, raw64, engine):
    """EG3D run: SDS with rescaled noise (rescaleCFG_Noise) / 100, directional 0.5 rescaled (rescale_CFGDirectionNoise)
    / 100, image clamp off (sd.py train_step / train_directionalLoss_step, `if self.args.EG3D: grad = grad/100.0`)."""
    cfg = _eg3d_cfg(sd_dir, directional={"weight": 0.5, "rescale": True})
    assert cfg.guidance.rescale_noise is True
    got, _ = _guide_grad(_guide(model, cfg.guidance.model_copy(update={"engine": engine}), cfg.reg), *_images(3), t=250)
    w0, xf = _images(3)
    _close(got, _expected(raw64, w0, xf, 250, 7.5, sds_scale=0.01, sds_rescale=True, dir_weight=0.5, dir_rescale=True))


# ---- the reference engine does no discarded work --------------------------------------------------------
@pytest.mark.parametrize("engine,calls", [("reference", 3), ("fast", 1)])
def test_unet_calls_with_both_regularizers(sd_dir, model, engine, calls):
    """Directional + reconstruction: SDS [U;C], directional train [U;C], directional frozen [U;C]; the
    reconstruction term reads the train prediction (the same CFG prediction at the same noisy latent)."""
    reg = RegularizerConfig(directional={"weight": 1.0}, reconstruction={"weight": 1.0})
    guide = _guide(model, _gcfg(sd_dir, engine=engine), reg)
    seen = []
    handle = model.unet.register_forward_hook(lambda *a: seen.append(1))
    try:
        _guide_grad(guide, *_images(), t=100)
    finally:
        handle.remove()
    assert len(seen) == calls


# ---- the loop: noise, layer ranking latents, Adam semantics, learning rates -----------------------------
class _Recorder(StubGuidance):
    """A stand-in critic (the loop is under test, not the guidance): records what it is shown and injects
    d mean(x^2)/dx, a gradient with a known sign."""

    needs_frozen = True

    def __init__(self):
        self.train, self.selection = [], []

    def prepare(self, prompt, source_prompt=None):
        pass

    def sample_timestep(self, rng=None):
        return 100

    def backward(self, x_train, x_frozen, t, rng=None):
        self.train.append((x_train.detach().clone(), x_frozen.detach().clone()))
        x_train.square().mean().backward()
        return {"loss/stub": x_train.square().mean().detach()}

    def selection_backward(self, x_train, x_frozen=None, t=0, rng=None):
        self.selection.append(x_train.shape[0])
        x_train.square().mean().backward()
        return {}


def _run_loop(tiny_models, tmp_path, **over):
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, train__sample_every=0, train__batch_size=2, **over))
    rec = _Recorder()
    return adapt(cfg, guidance=rec, progress=False), rec, cfg


@pytest.fixture(scope="module")
def noisy_models(tiny_models, tmp_path_factory):
    """The tiny models with a generator whose noise strengths are 0.5 (a fresh StyleGAN2's are 0, which
    would make every noise test pass vacuously)."""
    g = load_generator(tiny_models["generator"])
    with torch.no_grad():
        for n, p in g.named_parameters():
            if n.endswith(".noise.weight"):
                p.fill_(0.5)
    path = tmp_path_factory.mktemp("noisy") / "noisy.pt"
    save_rosinality(g, path)
    return {**tiny_models, "generator": path}


@pytest.mark.parametrize("mode", ["const", "random"])
def test_frozen_and_trained_render_share_noise(noisy_models, tmp_path, mode):
    """Both generators render step 0 with the same per-layer noise, so they are identical before any update
    (the authors render both with randomize_noise=False; 'random' shares one draw per step)."""
    _, rec, _ = _run_loop(noisy_models, tmp_path, train__iterations=2, train__noise_mode=mode)
    x_train, x_frozen = rec.train[0]
    assert torch.equal(x_train, x_frozen)
    assert not torch.equal(rec.train[1][0], rec.train[1][1])      # after one update they differ


def test_random_noise_differs_from_fixed_buffers(noisy_models, tmp_path):
    _, const, _ = _run_loop(noisy_models, tmp_path / "c", train__iterations=1, train__noise_mode="const")
    _, rand, _ = _run_loop(noisy_models, tmp_path / "r", train__iterations=1, train__noise_mode="random")
    assert float((const.train[0][1] - rand.train[0][1]).abs().max()) > 1e-3


def test_layer_ranking_uses_its_own_batch(tiny_models, tmp_path):
    """layers.batch_size latents are drawn for the ranking (the authors' auto_layer_batch), not the step's."""
    _, rec, _ = _run_loop(tiny_models, tmp_path, train__iterations=2, layers__k=2, layers__batch_size=3)
    assert rec.selection == [3, 3] and all(x.shape[0] == 2 for x, _ in rec.train)


def _train_state(out_dir):
    (ckpt,) = sorted((out_dir / "checkpoints").glob("step_*"))
    return torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=False)


@pytest.mark.parametrize("unselected", ["zero_grad", "no_grad"])
def test_adam_state_of_unselected_layers(tiny_models, tmp_path, unselected):
    """'zero_grad' (the authors' torch-1.x zero_grad): every synthesis parameter is stepped by Adam every
    iteration (step count = iterations, second moment decaying), the mapping never; 'no_grad': only what was
    selected has state. Either way a zero gradient never changes a value."""
    result, _, cfg = _run_loop(tiny_models, tmp_path, train__iterations=4, train__checkpoint_every=3,
                               layers__k=1, layers__unselected=unselected)
    state = _train_state(tmp_path)
    g = dict(load_generator(tiny_models["generator"]).named_parameters())
    names = list(g)                                    # the optimiser's parameter order
    steps = {names[i]: int(s["step"]) for i, s in state["optimizer"]["state"].items()}
    synthesis = [n for n in names if not n.startswith("style.")]
    assert not any(n.startswith("style.") for n in steps)
    if unselected == "zero_grad":
        assert set(steps) == set(synthesis) and set(steps.values()) == {3}
    else:
        assert 0 < len(steps) < len(synthesis) and min(steps.values()) >= 1
    adapted = dict(load_generator(result.generator_path).named_parameters())
    never = [n for n in names if n not in steps or n.endswith(".bias")]
    for n in never:
        assert torch.equal(adapted[n], g[n]), n


@pytest.mark.numeric
@pytest.mark.parametrize("method,lr", [("fusion", 0.002 / 2 * 0.8), ("nada", 0.002 * 0.8)])
def test_default_learning_rate_reaches_the_weights(tiny_models, tmp_path, method, lr):
    """train.py: lr 0.002 (halved for diffusion) x g_reg_ratio 0.8, Adam betas (0, 0.99^0.8). With beta1 = 0
    Adam's first step moves every parameter with a gradient g by lr * |g| / (|g| + eps) = lr."""
    result, _, _ = _run_loop(tiny_models, tmp_path, train__iterations=1, method=method)
    before = dict(load_generator(tiny_models["generator"]).named_parameters())
    after = dict(load_generator(result.generator_path).named_parameters())
    moved = torch.cat([(after[n] - before[n]).detach().abs().flatten() for n in before])
    moved = moved[moved > 0]
    assert moved.numel() > 0 and float(moved.max()) == pytest.approx(lr, rel=1e-3)
    assert float(torch.quantile(moved, 0.5)) == pytest.approx(lr, rel=1e-2)   # most moved by exactly lr


# ---- NADA sees what its profile says -------------------------------------------------------------------
@pytest.mark.numeric
def test_nada_image_size_resizes_and_clamps(tiny_models):
    from trainables.config import NadaConfig
    from trainables.frozen.clip_models import load_open_clip
    from trainables.guidance.nada import NadaGuidance

    clip = load_open_clip(str(tiny_models["clip_config"]), str(tiny_models["clip_weights"]))
    x = 1.3 * torch.tanh(torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)))
    for size in (None, 40):
        guide = NadaGuidance(NadaConfig(clip_models=[{"name": "x", "pretrained": "y"}], image_size=size),
                             models=[(clip, 1.0)])
        got = guide.image_features(clip, x)
        shown = x if size is None else F.interpolate(x, size=(size, size), mode="bilinear",
                                                     align_corners=False).clamp(-1, 1)
        with torch.no_grad():
            ref = clip.encode_image(shown).float()
        torch.testing.assert_close(got.detach(), ref / ref.norm(dim=-1, keepdim=True), rtol=1e-5, atol=1e-6)


# ---- the paper sweep files carry the authors' runs (docs/fidelity.md, table 1) ---------------------------
def _configs(name):
    return [t.config for t in load_sweep(REPO / "sweeps/paper" / name).trials]


def test_paper_sweeps_use_the_authors_runs(monkeypatch):
    monkeypatch.setenv("MODELS_DIR", "/nonexistent-models")   # references are not resolved by load_sweep
    (nada,) = _configs("nada_ffhq_long_prompt.yaml")          # run_face.sh, StyleGAN-NADA
    assert (nada.method, nada.train.iterations, nada.train.batch_size, nada.layers.k) == ("nada", 2001, 1, 0)
    assert not nada.optim.freeze_bias and nada.nada.image_size == 512 and nada.learning_rate == pytest.approx(0.0016)
    assert [m.name for m in nada.nada.clip_models] == ["ViT-B-32", "ViT-B-16"] and nada.nada.templates == "imagenet"
    (readme,) = _configs("nada_readme_ffhq_long_prompt.yaml")  # StyleGAN-NADA README
    assert (readme.train.iterations, readme.train.batch_size, readme.layers.k, readme.layers.batch_size) == (301, 2, 18, 8)
    for cfg in _configs("ffhq_long_prompt.yaml") + _configs("ffhq_layer_selection.yaml"):
        assert cfg.train.noise_mode == "const" and cfg.train.batch_size == 1 and cfg.optim.freeze_bias
        assert cfg.learning_rate == pytest.approx(0.0008) and cfg.guidance.cfg_scale == 100
    for cfg in _configs("ffhq_layer_selection.yaml"):           # --auto_layer_iters 1 --auto_layer_batch 1
        assert (cfg.layers.iterations, cfg.layers.batch_size, cfg.layers.lr) == (1, 1, 0.01)
        assert cfg.layers.noise_mode == "random" and cfg.layers.unselected == "zero_grad"
    (eg3d,) = _configs("eg3d.yaml")                              # run_face.sh, StyleGAN-Fusion (EG3D)
    g = eg3d.guidance
    assert (eg3d.train.iterations, g.grad_scale, g.rescale_noise, g.image_clamp_quantile) == (5001, 0.01, True, None)
    assert (eg3d.reg.directional.weight, eg3d.reg.directional.rescale) == (0.5, True)
    assert eg3d.reg.lpips.scale * eg3d.reg.lpips.weight * g.grad_scale == pytest.approx(20.0)
