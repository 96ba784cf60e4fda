"""A few dozen adaptation steps measurably move a tiny generator toward what the guidance wants.

Fusion: the UNet of a tiny SD is made an oracle whose only non-zero weight is conv_out.bias = b, so it
predicts eps_hat = b for every input and prompt. The SDS gradient is then w(t) (b - eps), whose
expectation is w(t) b: descending it must lower the mean of latent channel 0 of E(G(z)) (b = [3,0,0,0]).
Measure: mean channel-0 VAE latent (posterior mode) of 8 fixed latents, before vs after 20 steps.
"""
from __future__ import annotations

import shutil

import torch

from conftest import tiny_adapt_dict
from trainables.config_io import validate_config
from trainables.generators import load_generator
from trainables.loop import adapt


def _oracle_sd(src, dst, bias):
    from diffusers import UNet2DConditionModel

    shutil.copytree(src, dst)
    unet = UNet2DConditionModel.from_pretrained(dst / "unet")
    with torch.no_grad():
        for p in unet.parameters():
            p.zero_()
        unet.conv_out.bias.copy_(torch.tensor(bias))
    unet.save_pretrained(dst / "unet")
    return dst


@torch.no_grad()
def _latent_channel_mean(generator_path, vae_dir, channel=0):
    from diffusers import AutoencoderKL

    g = load_generator(generator_path)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    z = torch.randn(8, g.cfg.style_dim, generator=torch.Generator().manual_seed(123))
    x = g.synthesis(g.broadcast(g.mapping(z)), noise_mode="const").clamp(-1, 1)
    return vae.encode(x).latent_dist.mode()[:, channel].mean().item()


def test_fusion_moves_latents_along_the_oracle_score(tiny_models, tmp_path):
    sd = _oracle_sd(tiny_models["sd"], tmp_path / "oracle_sd", [3.0, 0.0, 0.0, 0.0])
    cfg = validate_config(tiny_adapt_dict(
        {**tiny_models, "sd": sd}, tmp_path / "run",
        train__iterations=20, train__sample_every=0, optim__lr=0.03))
    before = _latent_channel_mean(tiny_models["generator"], sd / "vae")
    result = adapt(cfg, progress=False)
    after = _latent_channel_mean(result.generator_path, sd / "vae")
    assert after < before - 0.03, (before, after)
    # The opposite oracle moves the other way: the direction comes from the guidance, not the loop.
    sd_neg = _oracle_sd(tiny_models["sd"], tmp_path / "oracle_sd_neg", [-3.0, 0.0, 0.0, 0.0])
    cfg_neg = validate_config(tiny_adapt_dict(
        {**tiny_models, "sd": sd_neg}, tmp_path / "run_neg",
        train__iterations=20, train__sample_every=0, optim__lr=0.03))
    after_neg = _latent_channel_mean(adapt(cfg_neg, progress=False).generator_path, sd_neg / "vae")
    assert after_neg > before and after_neg - after > 0.03, (before, after, after_neg)
