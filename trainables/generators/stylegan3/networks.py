"""StyleGAN3 (Alias-Free GAN, T and R configs) generator in pure PyTorch.

Parameter and buffer names follow NVlabs' `Generator.state_dict()` exactly (so NVlabs files load and export
without a key table); the code is written from the paper's equations:

    w = MLP(z / rms(z))                                           mapping (equalized lr, lrelu x sqrt 2)
    x_0 = sin(2 pi (T(w) g . f + phi)) * a(f) @ W / sqrt(C)       Fourier input, T(w): rotation + translation
    x_i = filtered_lrelu(modconv(x_{i-1}, A_i w_i) ; f_u, f_d)    16 W+ entries: input, 14 layers, ToRGB
    img = 0.25 * x_N                                              output_scale
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.generators.stylegan3.config import LayerSpec, StyleGAN3Config
from trainables.generators.stylegan3.filters import filtered_lrelu, lowpass_filter

LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


class EqualLinear(nn.Module):
    """y = x (W * lr / sqrt(in))^T + b * lr (equalized learning rate), optionally gain * lrelu(y)."""

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0, lrelu: bool = False,
                 bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return F.leaky_relu(x.matmul(w.t()) + b, LRELU_SLOPE) * LRELU_GAIN


class MappingNetwork(nn.Module):
    """z -> w (num_ws copies) with the truncation trick w_avg + psi (w - w_avg) on the first `cutoff` entries."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.num_ws, self.num_layers = cfg.num_ws, cfg.mapping_layers
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            self.add_module(f"fc{i}", EqualLinear(dims[i], dims[i + 1], cfg.mapping_lr, lrelu=True))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        x = z.to(self.w_avg.dtype)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # pixel norm of z
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


class SynthesisInput(nn.Module):
    """Fourier features on a `size`^2 grid spanning `size / sampling_rate` units, rotated/translated by T(w)."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size, self.sampling_rate, self.bandwidth = channels, size, sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth  # random directions inside the band
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = EqualLinear(w_dim, 4)
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # identity transform at init
        self.register_buffer("transform", torch.eye(3))  # user inverse transform of the output image
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n, dt = w.shape[0], w.dtype
        t = self.affine(w)                              # (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)      # unit rotation
        zero, one = torch.zeros_like(t[:, 0]), torch.ones_like(t[:, 0])
        m_r = torch.stack([torch.stack([t[:, 0], -t[:, 1], zero], 1), torch.stack([t[:, 1], t[:, 0], zero], 1),
                           torch.stack([zero, zero, one], 1)], 1)
        m_t = torch.stack([torch.stack([one, zero, -t[:, 2]], 1), torch.stack([zero, one, -t[:, 3]], 1),
                           torch.stack([zero, zero, one], 1)], 1)
        transforms = m_r @ m_t @ self.transform.to(dt).unsqueeze(0)  # rotate, translate, then the user transform
        freqs, phases = self.freqs.to(dt).unsqueeze(0), self.phases.to(dt).unsqueeze(0)
        phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        # Amplitude fades linearly to 0 between the bandwidth and Nyquist (suppresses aliasing after rotation).
        amp = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.zeros(1, 2, 3, dtype=dt, device=w.device)
        theta[0, 0, 0] = theta[0, 1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta, [1, 1, self.size, self.size], align_corners=False)  # [1, H, W, 2]
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (2 * math.pi)) * amp.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight.to(dt) / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, padding: int,
                     input_gain: torch.Tensor) -> torch.Tensor:
    """Per-sample conv with W'_{oi} = W_{oi} s_i g_i (/ ||W_o s||, demodulation), as one grouped convolution.

    With demodulation W and s are first divided by their RMS (numerically safer; cancels in the demodulation)."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    w = weight.to(x.dtype)
    if demodulate:
        w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = w.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)                 # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum([2, 3, 4]) + 1e-8).rsqrt().reshape(n, o, 1, 1, 1)
    w = w * input_gain.to(x.dtype).expand(n, i).reshape(n, 1, i, 1, 1)
    y = F.conv2d(x.reshape(1, n * i, *x.shape[2:]), w.reshape(n * o, i, kh, kw), padding=padding, groups=n)
    return y.reshape(n, o, *y.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU (ToRGB: 1x1 conv without demodulation, linear, no filters)."""

    def __init__(self, w_dim: int, spec: LayerSpec, lrelu_upsampling: int, conv_clamp: float | None):
        super().__init__()
        self.spec = spec
        self.conv_clamp = conv_clamp
        k = spec.conv_kernel
        self.affine = EqualLinear(w_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))  # E[x^2] of the input, tracked during training
        tmp_rate = max(spec.in_sampling_rate, spec.out_sampling_rate) * (1 if spec.is_torgb else lrelu_upsampling)
        self.register_buffer("up_filter", lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(spec.down_taps, spec.out_cutoff, spec.out_half_width * 2,
                                                           tmp_rate, radial=spec.down_radial))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.spec
        styles = self.affine(w)
        if s.is_torgb:
            styles = styles * (1 / math.sqrt(s.in_channels * s.conv_kernel ** 2))
        x = modulated_conv2d(x, self.weight, styles, demodulate=not s.is_torgb, padding=s.conv_kernel - 1,
                             input_gain=self.magnitude_ema.rsqrt())
        return filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, s.up_factor, s.down_factor, s.padding,
                              gain=1.0 if s.is_torgb else LRELU_GAIN, slope=1.0 if s.is_torgb else LRELU_SLOPE,
                              clamp=self.conv_clamp)


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        fourier, specs = cfg.layer_specs()
        self.num_ws, self.output_scale, self.img_resolution = cfg.num_ws, cfg.output_scale, cfg.img_resolution
        self.input = SynthesisInput(cfg.w_dim, **fourier)
        self.layer_names = [s.name for s in specs]
        for s in specs:
            self.add_module(s.name, SynthesisLayer(cfg.w_dim, s, cfg.lrelu_upsampling, cfg.conv_clamp))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"StyleGAN3 synthesis takes W+ latents [N, {self.num_ws}, w_dim], got {list(ws.shape)}")
        ws = ws.unbind(1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w)
        return x * self.output_scale if self.output_scale != 1 else x


class StyleGAN3(nn.Module):
    """mapping (z -> W+) and synthesis (W+ -> image [N, 3, R, R] in about [-1, 1]); no noise inputs."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg)

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "const") -> torch.Tensor:
        return self.render(self.mapping(z, truncation_psi, truncation_cutoff), noise_mode)

    def render(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Images from W+; `noise_mode` is accepted for the common interface and has no effect (StyleGAN3 has
        no per-pixel noise)."""
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        return self.synthesis(ws)
