"""Pure-PyTorch StyleGAN2 primitives: FIR filters, upfirdn2d, biased leaky ReLU, pixel norm.

No custom CUDA kernels and no compilation: every op here is a composition of `torch.nn.functional`
calls, so it runs (and differentiates) on any device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2  # leaky ReLU negative slope used everywhere in StyleGAN2
LRELU_GAIN = math.sqrt(2.0)  # "He" gain that keeps activations at unit variance after leaky ReLU
PIXELNORM_EPS = 1e-8  # epsilon of the pixel norm and of the demodulation


def make_fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel K = gain * (k k^T) / sum(k k^T), float32 [len(k), len(k)]."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    if k.ndim != 1 or k.numel() == 0:
        raise ValueError(f"FIR taps must be a non-empty 1-D sequence, got {taps!r}")
    k2 = k[None, :] * k[:, None]  # [kh, kw] outer product
    k2 = k2 / k2.sum()
    return k2 * gain


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the FIR `kernel` (true convolution), downsample.

    y = downsample_d( pad_(p0,p1)( upsample_u(x) ) * K ), applied to every channel independently; the same
    padding is used on both axes. Shapes: x [N, C, H, W] -> [N, C, (H*u + p0 + p1 - kh + 1) // d, ...].
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    out = x
    if up > 1:
        out = out.reshape(n, c, h, 1, w, 1)  # interleave (up - 1) zeros after every sample
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(n, c, h * up, w * up)
    out = F.pad(out, [p0, p1, p0, p1])  # negative pads crop
    # One depthwise conv (groups=C) instead of N*C single-channel convs: same sums, several times faster.
    weight = torch.flip(kernel, [0, 1]).to(dtype=out.dtype, device=out.device).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    out = F.conv2d(out, weight, groups=c)  # conv2d is a correlation: flipping makes it a convolution
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out


def bias_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor,
    slope: float = LRELU_SLOPE,
    gain: float = LRELU_GAIN,
) -> torch.Tensor:
    """y = gain * leaky_relu(x + b, slope), with b broadcast along dim 1 (channels / features)."""
    shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape), negative_slope=slope) * gain


def pixel_norm(x: torch.Tensor, eps: float = PIXELNORM_EPS) -> torch.Tensor:
    """y = x / sqrt(mean_j x_j^2 + eps) over dim 1 (StyleGAN's normalisation of z)."""
    return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + eps)


def truncate_latents(wp: torch.Tensor, psi: float, latent_avg: torch.Tensor,
                     center: torch.Tensor | None = None) -> torch.Tensor:
    """Truncation trick: w_avg + psi * (w - w_avg), for w [N, D] or W+ [N, L, D]; `center` overrides w_avg."""
    if psi == 1:
        return wp
    c = latent_avg if center is None else center.to(device=wp.device, dtype=wp.dtype).reshape(-1)
    return c + psi * (wp - c)
