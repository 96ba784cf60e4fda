"""The cost model on SDXL at 1024 without weights: the bundled published configs (trainables/cost/architectures/)
and the traced UNet work against the SDXL UNet counted directly with torch's FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode

from conftest import tiny_adapt_dict
from test_cost import _count
from trainables.config_io import validate_config
from trainables.cost.model import ARCHITECTURES, estimate

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_DIR = ARCHITECTURES / SDXL.replace("/", "--")
SDXL_UNET_PARAMS = 2_567_463_684     # the published SDXL base UNet (2.6 B)
SDXL_VAE_PARAMS = 83_653_863         # SD's / SDXL's AutoencoderKL (83.7 M)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fake_sdxl():
    with FakeTensorMode():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_DIR, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SDXL_DIR, subfolder="vae"))
    return unet, vae


def test_bundled_sdxl_configs_have_the_published_sizes():
    unet, vae = _fake_sdxl()
    assert sum(p.numel() for p in unet.parameters()) == SDXL_UNET_PARAMS
    assert sum(p.numel() for p in vae.parameters()) == SDXL_VAE_PARAMS
    assert vae.config.scaling_factor == 0.13025 and vae.config.force_upcast


def test_sdxl_cost_at_1024_traces_the_sdxl_unet(tiny_models, tmp_path, monkeypatch):
    """guidance.model = the SDXL hub id, not on this machine: the step's UNet work equals the SDXL UNet on its two
    CFG rows (128x128 latents, 77 x 2048 context, pooled 1280 + 6 time ids) counted directly; fp16 weights with
    the VAE upcast to fp32 (force_upcast)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))     # never a cached snapshot
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__model=SDXL, guidance__image_size=1024,
                                          guidance__precision="fp16", guidance__image_clamp_quantile=None))
    report = estimate(cfg, gpus=("H100",))
    assert any("published UNet/VAE configs" in note for note in report.assumptions)
    unet, _ = _fake_sdxl()
    with FakeTensorMode(allow_non_fake_inputs=True):
        unet_flops = _count(lambda: unet(torch.zeros(2, 4, 128, 128), torch.full((2,), 250),
                                         encoder_hidden_states=torch.zeros(2, 77, 2048),
                                         added_cond_kwargs={"text_embeds": torch.zeros(2, 1280),
                                                            "time_ids": torch.zeros(2, 6)}))
    assert report.by_component["unet.forward"] == unet_flops
    frozen = 2 * SDXL_UNET_PARAMS + 4 * SDXL_VAE_PARAMS                 # fp16 UNet, fp32 (upcast) VAE
    assert frozen <= report.weight_bytes < frozen + 2 * SDXL_VAE_PARAMS   # the tiny generators: far less than that


def test_paper_sdxl_sweep_names_the_sdxl_critic_at_1024():
    """sweeps/paper/ffhq_sdxl.yaml: SDXL base at its native 1024, its own text encoders, fp16, with and without
    the directional regularizer (its cost: `python -m sweeps validate sweeps/paper/ffhq_sdxl.yaml`)."""
    from conftest import REPO
    from sweeps.spec import load_sweep

    sweep = load_sweep(REPO / "sweeps/paper/ffhq_sdxl.yaml")
    settings = {(t.config.guidance.model, t.config.guidance.image_size, t.config.guidance.text_encoder,
                 t.config.guidance.precision) for t in sweep.trials}
    assert settings == {(SDXL, 1024, None, "fp16")}
    assert sorted(t.config.reg.directional.weight for t in sweep.trials) == [0.0, 1.0]
    assert {t.config.guidance.sdxl.time_ids(1024) for t in sweep.trials} == {(1024, 1024, 0, 0, 1024, 1024)}
