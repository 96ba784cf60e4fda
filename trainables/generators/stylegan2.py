"""StyleGAN2 generator (config-f architecture, "skip" ToRGB outputs) in plain PyTorch.

The arithmetic is that of rosinality/stylegan2-pytorch's `Generator` (Karras et al. 2020, "Analyzing and
Improving the Image Quality of StyleGAN"), and module / parameter names equal its `state_dict` keys
(`style.1.weight`, `conv1.conv.modulation.weight`, `convs.3.noise.weight`, `to_rgbs.2.bias`,
`noises.noise_5`, ...), so a rosinality `g_ema` state dict loads strictly and name-based parameter groups
(see `groups.py`) work on every loaded checkpoint. NVlabs checkpoints are converted to this layout by
`formats/nvlabs.py`.

Latent spaces: z [N, D] -> mapping -> w [N, D] -> broadcast -> W+ [N, n_latent, D] -> synthesis -> image.
W+ index map: 0 -> conv1, 1 -> to_rgb1 and convs.0, then for block b >= 0: convs.2b uses 2b+1, convs.2b+1 uses
2b+2, to_rgbs.b uses 2b+3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainables.generators.ops import bias_leaky_relu, make_fir_kernel, pixel_norm, truncate_latents, upfirdn2d

NoiseMode = Literal["const", "random", "none"]
DEMOD_EPS = 1e-8  # epsilon inside the demodulation rsqrt


def default_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channel table: 512 up to 32 px, then 256*m at 64, 128*m at 128, ..., 16*m at 1024."""
    table = {}
    res = 4
    while res <= size:
        table[res] = 512 if res <= 32 else min(512, (16384 * channel_multiplier) // res)
        res *= 2
    return table


@dataclass
class StyleGAN2Config:
    size: int = 1024  # output resolution (power of two, >= 4)
    style_dim: int = 512  # dimension of z and w
    n_mlp: int = 8  # mapping network depth
    channel_multiplier: int = 2  # only used to fill `channels` when it is not given
    channels: dict[int, int] = field(default_factory=dict)  # feature maps per resolution {4: 512, ...}
    lr_mlp: float = 0.01  # equalized-lr multiplier of the mapping network
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)  # FIR taps of the up-sampling filters
    conv_clamp: float | None = None  # NVlabs-only activation clamp (None: no clamp, rosinality behaviour)

    def __post_init__(self) -> None:
        log2 = math.log2(self.size) if self.size > 0 else -1
        if self.size < 4 or log2 != int(log2):
            raise ValueError(f"StyleGAN2Config.size must be a power of two >= 4, got {self.size}")
        self.channels = {int(k): int(v) for k, v in dict(self.channels).items()}
        table = default_channels(self.size, self.channel_multiplier)
        for res, ch in table.items():
            self.channels.setdefault(res, ch)
        extra = sorted(set(self.channels) - set(table))
        if extra:
            raise ValueError(f"StyleGAN2Config.channels has resolutions {extra} outside 4..{self.size}")
        self.channels = {res: self.channels[res] for res in sorted(self.channels)}
        self.blur_kernel = tuple(int(t) if float(t).is_integer() else float(t) for t in self.blur_kernel)

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        return self.log_size * 2 - 2  # conv1 + to_rgb1 + 2 per block (rosinality counting)

    @property
    def num_layers(self) -> int:
        return (self.log_size - 2) * 2 + 1  # styled convs = noise buffers

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = {int(k): int(v) for k, v in self.channels.items()}
        d["blur_kernel"] = list(self.blur_kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleGAN2Config":
        d = dict(d)
        if "blur_kernel" in d:
            d["blur_kernel"] = tuple(d["blur_kernel"])
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------
# Building blocks


class EqualLinear(nn.Module):
    """Equalized-lr dense layer: y = x (W * lr/sqrt(fan_in))^T + b * lr, optionally gain*lrelu(.)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)  # stored as W / lr
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


class PixelNorm(nn.Module):
    """z <- z / sqrt(mean(z^2) + eps) (parameter-free; index 0 of the mapping Sequential)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x)


class FirFilter(nn.Module):
    """FIR filter with padding (no resampling). After a stride-f transposed conv it is the blur that completes the
    up-sampling, so its kernel carries the gain f^2 that compensates the inserted zeros."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(taps, gain=upsample_factor**2))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample2x(nn.Module):
    """Skip-branch up-sampling: zero-insert by 2 then FIR filter with gain 4 (keeps the image's scale)."""

    def __init__(self, taps: Sequence[float]):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(taps, gain=4))
        p = len(taps) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Modulated conv (eq. 1-3 of StyleGAN2): w'_oikl = s_i w_oikl / sqrt(fan_in); demod w'' = w' / sqrt(sum w'^2 + eps).

    Executed as one grouped convolution over the batch; `upsample` uses a stride-2 transposed convolution
    followed by the FIR blur.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = FirFilter(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_ch, height, width = x.shape
        k = self.kernel_size
        style = self.modulation(w).reshape(batch, 1, in_ch, 1, 1)  # s_i, [N, 1, I, 1, 1]
        weight = self.scale * self.weight * style  # [N, O, I, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + DEMOD_EPS)  # [N, O]
            weight = weight * demod.reshape(batch, self.out_channel, 1, 1, 1)
        x = x.reshape(1, batch * in_ch, height, width)  # batch folded into groups
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, self.out_channel, k, k)  # [N*I, O, k, k]
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.reshape(batch, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_channel, in_ch, k, k)  # [N*O, I, k, k]
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.reshape(batch, self.out_channel, out.shape[2], out.shape[3])

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, k={self.kernel_size}, upsample={self.upsample}, "
                f"demodulate={self.demodulate}")


class NoiseInjection(nn.Module):
    """x + strength * noise, noise [N or 1, 1, H, W] broadcast over channels (learned scalar strength)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """y = sqrt(2) * leaky_relu(x + b, 0.2), optionally clamped to +-clamp (NVlabs conv_clamp)."""

    def __init__(self, channel: int, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = bias_leaky_relu(x, self.bias)
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        return out


class ConstantInput(nn.Module):
    """Learned constant 4x4 input, repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """One synthesis layer: modulated 3x3 conv -> + noise * strength -> sqrt(2) * lrelu(. + bias)."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel, clamp=conv_clamp)  # NVlabs: clamp after the sqrt(2) gain

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """rgb = modconv_1x1(x, w) (no demodulation) + bias [+ upsample2x(previous rgb)]: the skip output."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample2x(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------------------------------------
# Generator


class StyleGAN2(nn.Module):
    """StyleGAN2 generator. See the module docstring for the latent spaces and the W+ index map.

    `latent_avg` is a NON-persistent buffer (it moves with `.to()` and is deep-copied, but is not part of
    `state_dict()`), so `state_dict()` has exactly rosinality's `g_ema` keys; `save_rosinality` stores it
    beside the state dict, as rosinality's `convert_weight.py` does.
    """

    def __init__(self, cfg: StyleGAN2Config | None = None, **kwargs: Any):
        super().__init__()
        if cfg is None:
            cfg = StyleGAN2Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a StyleGAN2Config or keyword fields, not both")
        self.cfg = cfg
        ch = cfg.channels
        blur = cfg.blur_kernel
        # Mapping network f: z -> w = MLP(PixelNorm(z)); index 0 is the parameter-free PixelNorm.
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activation=True) for _ in range(cfg.n_mlp)],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], cfg.style_dim, blur_kernel=blur, conv_clamp=cfg.conv_clamp)
        self.to_rgb1 = ToRGB(ch[4], cfg.style_dim, upsample=False, conv_clamp=cfg.conv_clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        in_ch = ch[4]
        for log_res in range(3, cfg.log_size + 1):
            out_ch = ch[2**log_res]
            self.convs.append(StyledConv(in_ch, out_ch, cfg.style_dim, upsample=True, blur_kernel=blur,
                                         conv_clamp=cfg.conv_clamp))
            self.convs.append(StyledConv(out_ch, out_ch, cfg.style_dim, blur_kernel=blur, conv_clamp=cfg.conv_clamp))
            self.to_rgbs.append(ToRGB(out_ch, cfg.style_dim, blur_kernel=blur, conv_clamp=cfg.conv_clamp))
            in_ch = out_ch
        for i in range(cfg.num_layers):
            res = 2 ** ((i + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        self.register_buffer("latent_avg", torch.zeros(cfg.style_dim), persistent=False)
        self.n_latent = cfg.n_latent
        self.num_layers = cfg.num_layers

    # -- helpers --------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.input.input.dtype

    @property
    def device(self) -> torch.device:
        return self.input.input.device

    def noise_buffers(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0, 1) noise maps, one [batch, 1, res, res] per styled conv (drawn on the generator's device)."""
        gen_device = generator.device if generator is not None else self.device
        out = []
        for buf in self.noise_buffers():
            n = torch.randn(batch, 1, *buf.shape[2:], generator=generator, device=gen_device, dtype=self.dtype)
            out.append(n.to(self.device))
        return out

    # -- latent spaces --------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """w = f(z): [N, style_dim] -> [N, style_dim]."""
        return self.style(z.to(device=self.device, dtype=self.dtype))

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """W+ = w repeated per synthesis input: [N, D] -> [N, n_latent, D] (W+ input passes through)."""
        if w.ndim == 3:
            return w
        return w.unsqueeze(1).repeat(1, self.n_latent, 1)

    def mix(self, w1: torch.Tensor, w2: torch.Tensor, inject_index: int) -> torch.Tensor:
        """Style mixing: W+ entries [0, inject_index) from w1, [inject_index, n_latent) from w2."""
        if not 0 < inject_index < self.n_latent:
            raise ValueError(f"inject_index must be in 1..{self.n_latent - 1}, got {inject_index}")
        a = w1.unsqueeze(1).repeat(1, inject_index, 1)
        b = w2.unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
        return torch.cat([a, b], 1)

    def truncate(self, wp: torch.Tensor, psi: float, center: torch.Tensor | None = None) -> torch.Tensor:
        """Truncation trick: w_avg + psi * (w - w_avg) (w or W+; center defaults to `latent_avg`)."""
        return truncate_latents(wp, psi, self.latent_avg, center)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of f(z) over n samples z ~ N(0, I) (drawn from `generator` when given): [style_dim]."""
        gen_device = generator.device if generator is not None else self.device
        z = torch.randn(n, self.cfg.style_dim, generator=generator, device=gen_device)
        return self.mapping(z).mean(0)

    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        self.latent_avg.copy_(latent_avg.detach().reshape(-1).to(self.latent_avg))

    # -- synthesis ------------------------------------------------------------------------------------------
    def _resolve_noise(self, batch: int, noise_mode: NoiseMode, noise_generator: torch.Generator | None,
                       noise: Sequence[torch.Tensor] | None) -> list[torch.Tensor | None]:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must hold {self.num_layers} maps, got {len(noise)}")
            return list(noise)
        if noise_mode == "const":
            return self.noise_buffers()
        if noise_mode == "random":
            return self.make_noise(batch, noise_generator)
        if noise_mode == "none":
            return [None] * self.num_layers
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")

    def synthesis(self, wp: torch.Tensor, noise_mode: NoiseMode = "const",
                  noise_generator: torch.Generator | None = None,
                  noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Image from W+ [N, n_latent, D] (a w [N, D] is broadcast): [N, 3, size, size] in the model's dtype."""
        wp = self.broadcast(wp.to(device=self.device, dtype=self.dtype))
        if wp.shape[1] != self.n_latent:
            raise ValueError(f"W+ must have {self.n_latent} entries, got shape {tuple(wp.shape)}")
        batch = wp.shape[0]
        noises = self._resolve_noise(batch, noise_mode, noise_generator, noise)
        x = self.input(batch)
        x = self.conv1(x, wp[:, 0], noises[0])
        img = self.to_rgb1(x, wp[:, 1])
        for b, to_rgb in enumerate(self.to_rgbs):
            i = 2 * b + 1  # W+ index of the block's up-sampling conv
            x = self.convs[2 * b](x, wp[:, i], noises[i])
            x = self.convs[2 * b + 1](x, wp[:, i + 1], noises[i + 1])
            img = to_rgb(x, wp[:, i + 2], img)
        return img

    def forward(self, z: torch.Tensor, z2: torch.Tensor | None = None, *, inject_index: int | None = None,
                truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                input_is_latent: bool = False, noise_mode: NoiseMode = "const",
                noise_generator: torch.Generator | None = None, noise: Sequence[torch.Tensor] | None = None,
                return_latents: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """z [N, D] (or w / W+ with input_is_latent) -> image; z2 + inject_index for style mixing.

        Truncation (psi != 1) pulls every latent towards `latent_avg` (or `truncation_latent`) before mixing,
        as rosinality does. Returns the image, or (image, W+) with return_latents.
        """
        w1 = z.to(device=self.device, dtype=self.dtype) if input_is_latent else self.mapping(z)
        w1 = self.truncate(w1, truncation, truncation_latent)
        if z2 is None:
            wp = self.broadcast(w1)
        else:
            if inject_index is None:
                raise ValueError("style mixing needs an explicit inject_index (1..n_latent-1)")
            w2 = z2.to(device=self.device, dtype=self.dtype) if input_is_latent else self.mapping(z2)
            w2 = self.truncate(w2, truncation, truncation_latent)
            if w1.ndim != 2 or w2.ndim != 2:
                raise ValueError("style mixing takes two w (or z) batches of shape [N, style_dim]")
            wp = self.mix(w1, w2, inject_index)
        img = self.synthesis(wp, noise_mode=noise_mode, noise_generator=noise_generator, noise=noise)
        return (img, wp) if return_latents else img


def without_conv_clamp(g: StyleGAN2) -> StyleGAN2:
    """The same weights and latent_avg without NVlabs' activation clamp (conv_clamp None: rosinality's network,
    what `convert_weight.py` gives the Fusion authors' afhqcat_rosinality.pt)."""
    out = StyleGAN2(dataclasses.replace(g.cfg, conv_clamp=None))
    out.load_state_dict(g.state_dict())
    out.set_latent_avg(g.latent_avg)
    for attr in ("source_format", "latent_avg_source"):
        if hasattr(g, attr):
            setattr(out, attr, getattr(g, attr))
    return out.to(g.latent_avg.device)
