"""StyleGAN3 generator configuration (NVlabs `Generator` constructor arguments) and the per-layer schedule it implies.

The schedule is the paper's (Karras et al. 2021, "Alias-Free GAN", Sec. 3 / Appendix F): cutoffs f_c and minimum
stopbands f_t grow geometrically from the first layer to the last `num_layers - num_critical` layer and stay there;
sampling rate s = 2^ceil(log2(min(2 f_t, img_resolution))); transition half-width f_h = max(f_t, s/2) - f_c.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

CONFIG_KINDS = ("t", "r")


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer (index 0..num_layers; the last is ToRGB) as the schedule defines it."""

    name: str               # NVlabs' attribute name L{idx}_{out_size}_{out_channels} (state-dict keys keep it)
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int]  # (low, high) on both axes (square images)


@dataclass
class StyleGAN3Config:
    z_dim: int = 512
    w_dim: int = 512
    img_resolution: int = 1024
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14          # synthesis layers without the Fourier input and ToRGB (num_ws = num_layers + 2)
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3          # R: 1
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False  # R: True
    conv_clamp: float | None = 256.0
    mapping_layers: int = 2
    mapping_lr: float = 0.01

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < 4 or res & (res - 1):
            raise ValueError(f"StyleGAN3Config.img_resolution must be a power of two >= 4, got {res}")
        if self.num_layers <= self.num_critical or self.num_critical < 1:
            raise ValueError(f"StyleGAN3Config.num_layers ({self.num_layers}) must exceed num_critical "
                             f"({self.num_critical}) >= 1")
        if self.z_dim < 1 or self.w_dim < 1 or self.mapping_layers < 1:
            raise ValueError("StyleGAN3Config.z_dim, w_dim and mapping_layers must be >= 1")

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    @property
    def size(self) -> int:
        return self.img_resolution

    @property
    def config_kind(self) -> str:
        return "r" if self.use_radial_filters else "t"

    def layer_specs(self) -> tuple[dict[str, Any], list[LayerSpec]]:
        """(Fourier input settings, the num_layers + 1 layer specs), computed in float64 like NVlabs (numpy)."""
        n, res = self.num_layers, self.img_resolution
        last_cutoff = res / 2                                   # f_{c,N}
        last_stopband = last_cutoff * self.last_stopband_rel    # f_{t,N}
        cut, stop, rate, half, size, chan = [], [], [], [], [], []
        for i in range(n + 1):
            e = min(i / (n - self.num_critical), 1.0)
            fc = self.first_cutoff * (last_cutoff / self.first_cutoff) ** e        # geometric f_c[i]
            ft = self.first_stopband * (last_stopband / self.first_stopband) ** e  # geometric f_t[i]
            s = 2.0 ** math.ceil(math.log2(min(ft * 2, res)))                       # s[i]
            cut.append(fc); stop.append(ft); rate.append(s); half.append(max(ft, s / 2) - fc)
            size.append(s + self.margin_size * 2)
            chan.append(float(round_half_even(min((self.channel_base / 2) / fc, self.channel_max))))
        size[-2:] = [res, res]
        chan[-1] = 3
        specs = []
        for i in range(n + 1):
            p = max(i - 1, 0)
            torgb = i == n
            k = 1 if torgb else self.conv_kernel
            tmp_rate = max(rate[p], rate[i]) * (1 if torgb else self.lrelu_upsampling)
            up, down = int(round(tmp_rate / rate[p])), int(round(tmp_rate / rate[i]))
            up_taps = self.filter_size * up if up > 1 and not torgb else 1
            down_taps = self.filter_size * down if down > 1 and not torgb else 1
            critical = i >= n - self.num_critical
            # Padding so that output sample positions follow the symmetric interpretation (paper Appendix C.3).
            total = (int(size[i]) - 1) * down + 1 - (int(size[p]) + k - 1) * up + up_taps + down_taps - 2
            lo = (total + up) // 2
            specs.append(LayerSpec(
                name=f"L{i}_{int(size[i])}_{int(chan[i])}", is_torgb=torgb, is_critically_sampled=critical,
                in_channels=int(chan[p]), out_channels=int(chan[i]), in_size=int(size[p]), out_size=int(size[i]),
                in_sampling_rate=int(rate[p]), out_sampling_rate=int(rate[i]), in_cutoff=cut[p], out_cutoff=cut[i],
                in_half_width=half[p], out_half_width=half[i], conv_kernel=k, up_factor=up, down_factor=down,
                up_taps=up_taps, down_taps=down_taps, down_radial=self.use_radial_filters and not critical,
                padding=(lo, total - lo)))
        fourier = {"channels": int(chan[0]), "size": int(size[0]), "sampling_rate": rate[0], "bandwidth": cut[0]}
        return fourier, specs

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleGAN3Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown StyleGAN3Config field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def round_half_even(x: float) -> int:
    """numpy.rint: round half to even (the channel counts of NVlabs' schedule)."""
    return int(round(x))  # Python's round() is half-to-even, like np.rint


def ffhq_t_1024() -> StyleGAN3Config:
    """stylegan3-t-ffhq-1024x1024.pkl's layout (train.py --cfg=stylegan3-t: channel_base 32768, max 512, map 2)."""
    return StyleGAN3Config(img_resolution=1024)


def afhqv2_r_512() -> StyleGAN3Config:
    """stylegan3-r-afhqv2-512x512.pkl's layout (--cfg=stylegan3-r: 1x1 convs, radial filters, channels x 2)."""
    return preset("r", 512)


def preset(kind: str, img_resolution: int) -> StyleGAN3Config:
    """The NVlabs T or R layout at a resolution (train.py's --cfg=stylegan3-t / stylegan3-r)."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"StyleGAN3 config {kind!r}: one of {CONFIG_KINDS}")
    if kind == "r":
        return StyleGAN3Config(img_resolution=img_resolution, channel_base=65536, channel_max=1024, conv_kernel=1,
                               use_radial_filters=True)  # train.py: R doubles channel_base and channel_max
    return StyleGAN3Config(img_resolution=img_resolution)
