"""guidance.lora: LoRA adapters on the critic, loaded by diffusers' own LoRA loader, checked before any step.

The LoRA files are made here with peft on the committed pocket SD (pocket/models/sd): UNet attention
projections at rank 4 (alpha 8, so alpha / r = 2 is exercised) and text-encoder projections at rank 2, with
random non-zero B matrices (peft initialises B to zero), saved by diffusers' `save_lora_weights`.
The reference is a diffusers `StableDiffusionPipeline` built from the same folder + `load_lora_weights` +
`set_adapters(..., scale)` (unfused peft layers); the critic fuses the adapters into its weights, so the two
agree up to float32 rounding of the fused sum W + s (alpha/r) B A, amplified by CFG 7.5: the bound below is
2e-5 of the predictions' magnitude (measured on this CPU: 1.4e-6 (scale 0.8) and 7.8e-7 (scale -0.5) relative
to the largest |eps|, 3.6e-7-4.5e-7 for the prompt embedding; the LoRA itself moves eps by 24-54% and the
embedding by 2.8-4.5% of their magnitude, over 100x the bound).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from trainables.config import AdaptConfig
from trainables.errors import ConfigError
from trainables.frozen import model_cache
from trainables.frozen.lora_check import check_loras, lora_problems
from trainables.guidance.fusion import FusionGuidance
from trainables.guidance.fusion_settings import Fusion
from trainables.preflight import model_problems

REPO = Path(__file__).resolve().parents[1]
SD = REPO / "pocket" / "models" / "sd"
GENERATOR = REPO / "pocket" / "models" / "stylegan2" / "pocket-circles-32.pt"
PROMPT = "a purple striped star on a gray background"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
REL_TOL = 2e-5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_lora(out: Path, unet: UNet2DConditionModel | None = None, seed: int = 0, text: bool = True,
              rank: int = 4) -> Path:
    """A LoRA file for `unet` (default: the pocket SD's) and the pocket text encoder, B ~ N(0, 0.05^2)."""
    torch.manual_seed(seed)
    unet = unet if unet is not None else UNet2DConditionModel.from_pretrained(SD, subfolder="unet")
    unet_cfg = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights="gaussian", target_modules=UNET_TARGETS)
    unet.add_adapter(unet_cfg)
    layers = {"unet_lora_layers": None, "unet_lora_adapter_metadata": unet_cfg.to_dict()}
    modules = [unet]
    if text:
        te = CLIPTextModel.from_pretrained(SD, subfolder="text_encoder")
        te_cfg = LoraConfig(r=2, lora_alpha=2, target_modules=TEXT_TARGETS)
        inject_adapter_in_model(te_cfg, te, adapter_name="default")   # (transformers' add_adapter wants peft>=0.22)
        modules.append(te)
        layers["text_encoder_lora_adapter_metadata"] = te_cfg.to_dict()
    with torch.no_grad():
        for module in modules:
            for name, p in module.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
    layers["unet_lora_layers"] = get_peft_model_state_dict(unet)
    if text:
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(modules[1], adapter_name="default")
    StableDiffusionPipeline.save_lora_weights(out, weight_name="lora.safetensors", **layers)
    return out / "lora.safetensors"


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora"))


def config(loras: list[dict]) -> AdaptConfig:
    return AdaptConfig.model_validate(dict(
        method="fusion", prompt=PROMPT, generator=dict(checkpoint=str(GENERATOR)),
        guidance=dict(model=str(SD), text_encoder=None, image_size=32, cfg_scale=7.5, lora=loras)))


def pipeline_eps(lora: Path | None, scale, z_t: torch.Tensor, t: int, cfg_scale: float):
    """diffusers' own path: pipeline + load_lora_weights + set_adapters(scale: a float or {component: weight});
    CFG eps and the prompt embedding."""
    pipe = StableDiffusionPipeline.from_pretrained(SD, safety_checker=None, requires_safety_checker=False)
    if lora is not None:
        pipe.load_lora_weights(str(lora), adapter_name="ref")
        pipe.set_adapters(["ref"], adapter_weights=[scale])
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
        n = z_t.shape[0]
        emb = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        e_u, e_c = pipe.unet(torch.cat([z_t, z_t]), t, encoder_hidden_states=emb).sample.chunk(2)
    return e_u + cfg_scale * (e_c - e_u), cond


def critic_eps(cfg: AdaptConfig, z_t: torch.Tensor, t: int):
    guide = FusionGuidance(cfg.guidance, cfg.reg, "cpu")
    emb = guide.model.text_embeddings(PROMPT, cfg.guidance.negative_prompt)
    return guide.model.predict_eps(z_t, t, emb.cond, emb.uncond, cfg.guidance.cfg_scale), emb.cond


@pytest.mark.numeric
@pytest.mark.parametrize("scale", [0.8, -0.5])
def test_lora_critic_predicts_what_the_diffusers_pipeline_predicts(lora_file, scale):
    z_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = 300
    ours, our_cond = critic_eps(config([{"path": str(lora_file), "scale": scale}]), z_t, t)
    ref, ref_cond = pipeline_eps(lora_file, scale, z_t, t, 7.5)
    base, base_cond = pipeline_eps(None, 1.0, z_t, t, 7.5)
    bound = REL_TOL * ref.abs().max().item()
    assert (ours - ref).abs().max().item() <= bound
    assert (our_cond - ref_cond).abs().max().item() <= REL_TOL * ref_cond.abs().max().item()
    # the adapters did something, on both networks: far above the bound
    assert (ref - base).abs().max().item() > 100 * bound
    assert (ref_cond - base_cond).abs().max().item() > 100 * REL_TOL * ref_cond.abs().max().item()


@pytest.mark.numeric
def test_components_unet_only_matches_the_pipelines_per_component_weights(lora_file):
    z_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    ours, our_cond = critic_eps(config([{"path": str(lora_file), "scale": 0.8, "components": ["unet"]}]), z_t, 250)
    ref, ref_cond = pipeline_eps(lora_file, {"unet": 0.8, "text_encoder": 0.0}, z_t, 250, 7.5)
    _, base_cond = pipeline_eps(None, 1.0, z_t, 250, 7.5)
    both, _ = pipeline_eps(lora_file, 0.8, z_t, 250, 7.5)
    bound = REL_TOL * ref.abs().max().item()
    assert (ours - ref).abs().max().item() <= bound
    assert (our_cond - base_cond).abs().max().item() <= REL_TOL * base_cond.abs().max().item()   # text untouched
    assert (ref_cond - base_cond).abs().max().item() <= REL_TOL * base_cond.abs().max().item()
    assert (both - ref).abs().max().item() > 100 * bound      # the text encoder's layers would have mattered


@pytest.mark.numeric
def test_scale_zero_is_the_base_critic(lora_file):
    z_t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    ours, _ = critic_eps(config([{"path": str(lora_file), "scale": 0.0}]), z_t, 200)
    base, _ = critic_eps(config([]), z_t, 200)
    assert (ours - base).abs().max().item() <= REL_TOL * base.abs().max().item()


def test_hash_logged_and_cache_keyed_by_content_and_scale(lora_file, tmp_path):
    cfg = config([{"path": str(lora_file), "scale": 0.8}])
    digest = hashlib.sha256(lora_file.read_bytes()).hexdigest()
    assert Fusion.run_params(cfg) == {"guidance.lora.0.sha256": digest}
    assert Fusion.models_label(cfg) == f"{SD} + lora lora.safetensors x0.8"
    unet_only = config([{"path": str(lora_file), "scale": 0.8, "components": ["unet"]}])
    assert Fusion.models_label(unet_only) == f"{SD} + lora lora.safetensors x0.8 (unet)"
    model_cache.enable(4)
    try:
        first = FusionGuidance(cfg.guidance, cfg.reg, "cpu").model
        assert FusionGuidance(cfg.guidance, cfg.reg, "cpu").model is first               # same key: a hit
        other_scale = config([{"path": str(lora_file), "scale": 0.4}])
        assert FusionGuidance(other_scale.guidance, other_scale.reg, "cpu").model is not first
        assert FusionGuidance(config([]).guidance, cfg.reg, "cpu").model is not first   # base critic: a miss
        assert FusionGuidance(unet_only.guidance, cfg.reg, "cpu").model is not first     # other components: a miss
        assert model_cache.stats().misses == 4 and model_cache.stats().hits == 1
    finally:
        model_cache.disable()


# ------------------------------------------------------------------ refusals before any step
def rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of a LoRA file with its tensors edited (header metadata kept)."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    edit(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def refuse(path: Path, reason: str, monkeypatch) -> None:
    """The reason appears from the header check, the preflight and the critic's loader, and the loader refuses
    before any base weight is read (from_pretrained is replaced by a trap: loading must never get there)."""
    problems = lora_problems(path, SD / "unet", SD / "text_encoder")
    assert problems and any(reason in p for p in problems), problems
    cfg = config([{"path": str(path), "scale": 1.0}])
    assert any(p.startswith("guidance.lora[0]: ") and reason in p for p in model_problems(cfg))

    def trap(*args, **kwargs):
        raise AssertionError("base weights were loaded before the LoRA check")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", trap)
    with pytest.raises(ConfigError, match=re.escape(reason)):
        FusionGuidance(cfg.guidance, cfg.reg, "cpu")


def test_refuses_mismatched_rank_between_halves(lora_file, tmp_path, monkeypatch):
    bad = rewrite(lora_file, tmp_path / "bad.safetensors",
                  lambda sd: sd.__setitem__(f"{Q}.lora_A.weight", sd[f"{Q}.lora_A.weight"][:3].contiguous()))
    refuse(bad, "wrong rank: lora_A [3, 64] has rank 3 but lora_B [64, 4] has rank 4", monkeypatch)


def test_refuses_rank_other_than_its_adapter_config(lora_file, tmp_path, monkeypatch):
    def halve(sd):
        for k in list(sd):
            if k.startswith("unet."):
                sd[k] = (sd[k][:2] if ".lora_A." in k else sd[k][:, :2]).contiguous()
    bad = rewrite(lora_file, tmp_path / "bad.safetensors", halve)
    refuse(bad, "wrong rank: its weights have rank 2 but the file's adapter config (lora_adapter_metadata) "
                "declares r=4", monkeypatch)


def test_refuses_missing_keys(lora_file, tmp_path, monkeypatch):
    bad = rewrite(lora_file, tmp_path / "bad.safetensors", lambda sd: sd.pop(f"{Q}.lora_B.weight"))
    refuse(bad, f"missing key {Q}.lora_B.weight", monkeypatch)


def test_refuses_unknown_keys(lora_file, tmp_path, monkeypatch):
    bad = rewrite(lora_file, tmp_path / "bad.safetensors",
                  lambda sd: sd.__setitem__("lora_unet_down_blocks_0_attentions_0_proj_in.alpha", torch.tensor(4.0)))
    refuse(bad, "1 unknown key(s)", monkeypatch)


def test_refuses_a_lora_for_a_unet_with_other_dims(tmp_path, monkeypatch):
    cfg = json.loads((SD / "unet" / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    other = UNet2DConditionModel(**{**cfg, "block_out_channels": [32, 64]})     # another base: narrower
    bad = make_lora(tmp_path, unet=other, text=False)
    refuse(bad, f"{Q.removeprefix('unet.')}: made for another base: it maps 32 -> 32 features, the base "
                f"module's weight is [64, 64]", monkeypatch)


def test_refuses_a_lora_for_a_unet_with_other_modules(tmp_path, monkeypatch):
    cfg = json.loads((SD / "unet" / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    deeper = UNet2DConditionModel(**{**cfg, "block_out_channels": [64, 128, 128],
                                     "down_block_types": ["CrossAttnDownBlock2D"] * 3,
                                     "up_block_types": ["CrossAttnUpBlock2D"] * 3})
    bad = make_lora(tmp_path, unet=deeper, text=False)
    refuse(bad, "made for another base: the base unet", monkeypatch)


def test_refuses_a_missing_or_non_safetensors_file(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"(?s)guidance.lora.0.path.*not a .safetensors file"):
        config([{"path": str(tmp_path / "x.bin"), "scale": 1.0}])
    refuse(tmp_path / "absent.safetensors", "file not found", monkeypatch)


def test_check_loras_lists_every_file(lora_file, tmp_path):
    bad = rewrite(lora_file, tmp_path / "bad.safetensors", lambda sd: sd.pop(f"{Q}.lora_B.weight"))
    with pytest.raises(ConfigError, match=r"guidance.lora\[1\]: bad.safetensors: unet.* missing key") as err:
        check_loras([lora_file, bad], SD / "unet", SD / "text_encoder")
    assert "guidance.lora[0]" not in str(err.value)


def test_a_lora_on_an_sdxl_critic_is_refused_before_any_weight_loads(lora_file, tmp_path):
    """SDXL critics load through FrozenSDXL, whose adapter loading is not tested: preflight and the loader say so."""
    from trainables.frozen.layouts import load_frozen_diffusion
    from trainables.testing import build_tiny_sdxl

    sdxl = build_tiny_sdxl(tmp_path / "sdxl")
    cfg = AdaptConfig.model_validate(dict(
        method="fusion", prompt=PROMPT, generator=dict(checkpoint=str(GENERATOR)),
        guidance=dict(model=str(sdxl), text_encoder=None, image_size=32, lora=[{"path": str(lora_file)}])))
    assert any(p.startswith("guidance.lora[0]: ") and "is an SDXL model" in p for p in model_problems(cfg))
    with pytest.raises(ValueError, match="guidance.lora: LoRA adapters are supported on SD 1.x/2.x critics"):
        load_frozen_diffusion(cfg.guidance)
