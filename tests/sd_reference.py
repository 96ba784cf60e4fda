"""Independent reference pieces of the SDS arithmetic on the tiny SD of `trainables.testing.build_tiny_sd`,
shared by tests/test_guidance_fusion.py and tests/test_fidelity.py.

They use the raw diffusers modules directly (never `trainables.guidance`), in whatever dtype the caller's `raw`
dict holds them (both test files pass float64 modules): `raw` = {"vae", "unet", "cond", "uncond", ...}.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

IMG = 16            # the tiny VAE's input size (latents 8x8)
SD_LATENT_SCALE = 0.18215   # SD 1.x VAE scaling factor
U32 = 2.0 ** -24            # fp32 unit roundoff


def vae_input(x: torch.Tensor) -> torch.Tensor:
    """Generator output -> VAE input: bilinear resize to IMG, clamp to [-1, 1]."""
    return F.interpolate(x, size=(IMG, IMG), mode="bilinear", align_corners=False).clamp(-1, 1)


def encode(raw: dict, x: torch.Tensor) -> torch.Tensor:
    """z = 0.18215 * the VAE posterior's mode."""
    return raw["vae"].encode(x).latent_dist.mode() * SD_LATENT_SCALE


def eps_cfg(raw: dict, z_t: torch.Tensor, t: int, s: float) -> torch.Tensor:
    """Classifier-free guided noise prediction (eq. 3): e_u + s (e_c - e_u), no grad."""
    n = z_t.shape[0]
    with torch.no_grad():
        tt = torch.full((n,), t, dtype=torch.long)
        e_u = raw["unet"](z_t, tt, encoder_hidden_states=raw["uncond"].expand(n, -1, -1)).sample
        e_c = raw["unet"](z_t, tt, encoder_hidden_states=raw["cond"].expand(n, -1, -1)).sample
    return e_u + s * (e_c - e_u)


def rms_normalize(v: torch.Tensor) -> torch.Tensor:
    """v * sqrt(C*H*W) / ||v||, per sample (unit RMS): the rescaling of the noise residuals (eq. 4, directional)."""
    return v * (v[0].numel() ** 0.5) / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def to_float64(module: torch.nn.Module, rounding: torch.Generator | None = None) -> torch.nn.Module:
    """A float64 copy of `module`; with `rounding`, every leaf-module output also carries an independent relative
    error uniform in [-U32, U32] drawn from it: the standard model of fp32 arithmetic, fl(op(x)) = op(x) (1 + d),
    |d| <= u (Higham, Accuracy and Stability of Numerical Algorithms, eq. 2.4)."""
    def hook(_module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return out * (1 + U32 * (2 * torch.rand(out.shape, generator=rounding, dtype=out.dtype) - 1))

    m = copy.deepcopy(module).double()
    if rounding is not None:
        for sub in m.modules():
            if next(sub.children(), None) is None:
                sub.register_forward_hook(hook)
    return m
