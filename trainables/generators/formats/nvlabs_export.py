"""Export to NVlabs' `Generator` (stylegan2-ada-pytorch `training/networks.py`, stylegan3
`training/networks_stylegan2.py`): a plain `torch.save` file, never a pickle of code.

    {"G_ema": OrderedDict[NVlabs key -> float32 tensor],       # exactly G_ema.state_dict(): keys, order, shapes
     "init_kwargs": {"z_dim", "c_dim": 0, "w_dim", "img_resolution", "img_channels": 3,
                     "mapping_kwargs": {"num_layers", "lr_multiplier"},
                     "synthesis_kwargs": {"channel_base", "channel_max", "num_fp16_res": 0, "conv_clamp"}}}

Keys and reshapes come from `nvlabs.nvlabs_key_map` / `nvlabs.TO_NVLABS` (the importer's table, inverted);
values are copied unchanged. Both codes store weights the same way: mapping weights as W / lr_multiplier
(gain lr/sqrt(fan_in) applied at run time), affine / ToRGB weights raw (gain 1/sqrt(fan_in) at run time), and
the demodulated conv weights raw: NVlabs skips their 1/sqrt(fan_in) gain because demodulation cancels it
(w'' = w' / ||w'||), so the exported model computes the same image. `resample_filter` buffers are rebuilt
from the config (the unit-sum [1,3,3,1] outer product of `upfirdn2d.setup_filter`), `mapping.w_avg` is
`g.latent_avg`. NVlabs derives its channel table as `min(channel_base // res, channel_max)`;
`nvlabs_channel_kwargs` finds those two numbers, and a table that formula cannot produce is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainables.generators.ops import make_fir_kernel
from trainables.generators.stylegan2 import StyleGAN2, StyleGAN2Config
from trainables.generators.formats.errors import CheckpointError
from trainables.generators.formats.nvlabs import TO_NVLABS, generator_from_nvlabs_state_dict, layout_change, nvlabs_key_map

STATE_KEY = "G_ema"  # the name of the generator in an NVlabs network pickle
INIT_KWARGS_KEY = "init_kwargs"  # the Generator's constructor arguments (NVlabs' own `_init_kwargs`), plain data
NVLABS_FIR_TAPS = (1, 3, 3, 1)  # the resample filter every NVlabs StyleGAN2 block is built with


def nvlabs_channel_kwargs(channels: Mapping[int, int], path: str | Path | None = None) -> tuple[int, int]:
    """(channel_base, channel_max) with min(channel_base // res, channel_max) == channels[res] for every res.

    channel_max = the widest layer; a narrower res pins channel_base to [ch * res, (ch + 1) * res); a res at
    the maximum needs channel_base >= max * res. The smallest base in the intersection is returned (32768 for
    the official 1024 px table, as train.py uses)."""
    cmax = max(channels.values())
    lo, hi = 0, None
    for res, ch in channels.items():
        if ch == cmax:
            lo = max(lo, cmax * res)
        else:
            lo = max(lo, ch * res)
            hi = (ch + 1) * res if hi is None else min(hi, (ch + 1) * res)
    if hi is not None and lo >= hi:
        raise CheckpointError(path, f"channel table {dict(channels)} cannot be built by NVlabs' SynthesisNetwork",
                              "channels[res] = min(channel_base // res, channel_max) for one channel_base and "
                              "channel_max (e.g. rosinality channel_multiplier=2); export this generator with "
                              "--to rosinality instead")
    return lo, cmax


def nvlabs_init_kwargs(cfg: StyleGAN2Config, path: str | Path | None = None) -> dict[str, Any]:
    """The arguments of NVlabs' `Generator(...)` that builds this generator's layout and arithmetic."""
    if tuple(cfg.blur_kernel) != NVLABS_FIR_TAPS:
        raise CheckpointError(path, f"blur_kernel {list(cfg.blur_kernel)} has no NVlabs equivalent here",
                              f"the standard filter {list(NVLABS_FIR_TAPS)}")
    if cfg.n_mlp < 1:
        raise CheckpointError(path, f"n_mlp = {cfg.n_mlp}", "at least one mapping layer (NVlabs MappingNetwork)")
    base, cmax = nvlabs_channel_kwargs(cfg.channels, path)
    return {
        "z_dim": cfg.style_dim,
        "c_dim": 0,
        "w_dim": cfg.style_dim,
        "img_resolution": cfg.size,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": cfg.n_mlp, "lr_multiplier": float(cfg.lr_mlp)},
        "synthesis_kwargs": {
            "channel_base": base,
            "channel_max": cmax,
            "num_fp16_res": 0,  # float32 everywhere: the numbers this project computes (stylegan3's default is 4)
            # explicit even when None: stylegan3's SynthesisBlock defaults to conv_clamp=256
            "conv_clamp": None if cfg.conv_clamp is None else float(cfg.conv_clamp),
        },
    }


def nvlabs_state_dict(g: StyleGAN2) -> "OrderedDict[str, torch.Tensor]":
    """g as NVlabs `G_ema.state_dict()`: every key in NVlabs order, NVlabs shapes, g's device and dtype."""
    own = g.state_dict()
    ref = g.input.input
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for nv, ros in nvlabs_key_map(g.cfg).items():
        if ros is None:  # resample_filter: NVlabs setup_filter([1,3,3,1]) = outer product / sum
            out[nv] = make_fir_kernel(g.cfg.blur_kernel).to(device=ref.device, dtype=ref.dtype)
        elif ros == "latent_avg":
            out[nv] = g.latent_avg.detach().clone()
        else:
            out[nv] = TO_NVLABS[layout_change(ros)](own[ros].detach()).clone()
    return out


def nvlabs_checkpoint(g: StyleGAN2, path: str | Path | None = None) -> dict[str, Any]:
    """The dict `save_nvlabs_state_dict` writes: float32 CPU tensors plus the constructor arguments."""
    kwargs = nvlabs_init_kwargs(g.cfg, path)
    state = OrderedDict((k, v.to("cpu", torch.float32).contiguous()) for k, v in nvlabs_state_dict(g).items())
    return {STATE_KEY: state, INIT_KWARGS_KEY: kwargs}


def save_nvlabs_state_dict(g: StyleGAN2, path: str | Path) -> Path:
    """Write `{"G_ema": NVlabs state dict, "init_kwargs": {...}}` with torch.save (atomic rename).

    Load it in stylegan2-ada-pytorch with
        ckpt = torch.load(path, weights_only=True)
        G = training.networks.Generator(**ckpt["init_kwargs"]).eval().requires_grad_(False)
        G.load_state_dict(ckpt["G_ema"])
    (stylegan3's networks_stylegan2.Generator takes the synthesis arguments unpacked: see docs/generators.md)."""
    path = Path(path)
    ckpt = nvlabs_checkpoint(g, path)  # raises before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # a crash never leaves a half-written file under the final name
    return path


def _kwarg(kwargs: Mapping[str, Any], group: str, name: str, default: Any, path: str | Path | None) -> Any:
    sub = kwargs.get(group, {})
    if not isinstance(sub, Mapping):
        raise CheckpointError(path, f"'{INIT_KWARGS_KEY}.{group}' is a {type(sub).__name__}", "a dict")
    return sub.get(name, default)


def generator_from_g_ema_dict(obj: Mapping[str, Any], path: str | Path | None = None) -> StyleGAN2:
    """`{"G_ema": NVlabs state dict[, "init_kwargs": {...}]}` (what `save_nvlabs_state_dict` writes) -> StyleGAN2.

    The mapping's lr multiplier and conv_clamp are read from `init_kwargs` (they are not in the tensors);
    the layout it describes must be the one the tensors have."""
    sd = obj[STATE_KEY]
    if not isinstance(sd, Mapping):
        raise CheckpointError(path, f"'{STATE_KEY}' is a {type(sd).__name__}", "an NVlabs G_ema state dict")
    kwargs = obj.get(INIT_KWARGS_KEY)
    if kwargs is None:
        return generator_from_nvlabs_state_dict(sd, path)
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(path, f"'{INIT_KWARGS_KEY}' is a {type(kwargs).__name__}",
                              "a dict of Generator arguments")
    lr_mlp = _kwarg(kwargs, "mapping_kwargs", "lr_multiplier", 0.01, path)
    clamp = _kwarg(kwargs, "synthesis_kwargs", "conv_clamp", None, path)
    if not isinstance(lr_mlp, (int, float)) or not (clamp is None or isinstance(clamp, (int, float))):
        raise CheckpointError(path, f"lr_multiplier {lr_mlp!r} / conv_clamp {clamp!r}",
                              "numbers (conv_clamp may be None)")
    g = generator_from_nvlabs_state_dict(sd, path, lr_mlp=float(lr_mlp),
                                         conv_clamp=None if clamp is None else float(clamp))
    expected = {"z_dim": g.cfg.style_dim, "w_dim": g.cfg.style_dim, "img_resolution": g.cfg.size, "c_dim": 0,
                "img_channels": 3}
    for name in ("z_dim", "w_dim", "img_resolution", "c_dim", "img_channels"):
        if name in kwargs and kwargs[name] != expected[name]:
            raise CheckpointError(path, f"'{INIT_KWARGS_KEY}.{name}' is {kwargs[name]!r} but the tensors have "
                                  f"{expected[name]!r}", "init_kwargs describing the saved tensors")
    return g
