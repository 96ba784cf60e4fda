"""rosinality/stylegan2-pytorch checkpoints: `{"g_ema": state_dict, "latent_avg": [style_dim], ...}`.

This is the format StyleGAN-NADA and StyleGAN-Fusion load (`checkpoint["g_ema"]`, strict). The internal
`StyleGAN2` uses the same key names and shapes, so reading is: infer the config from the shapes, check every
key and shape, then a strict `load_state_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from trainables.generators.stylegan2 import StyleGAN2, StyleGAN2Config, default_channels
from trainables.generators.formats.errors import CheckpointError

CONFIG_KEY = "config"  # optional extra entry written by save_rosinality (ignored by other readers)
MEAN_LATENT_SAMPLES = 4096  # samples for latent_avg when a checkpoint has none (rosinality's mean_latent(4096))
MEAN_LATENT_SEED = 0  # fixed seed for that estimate, so it is reproducible
_STYLE_RE = re.compile(r"^style\.(\d+)\.weight$")
_TO_RGBS_RE = re.compile(r"^to_rgbs\.(\d+)\.")


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v.shape) if hasattr(v, "shape") else tuple(v)


def infer_config(shapes: Mapping[str, Any], path: str | Path | None = None, lr_mlp: float = 0.01) -> StyleGAN2Config:
    """StyleGAN2Config from a rosinality key -> tensor (or shape) mapping."""
    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(path, f"missing key {key!r}", "a rosinality StyleGAN2 g_ema state dict")
        return _shape(shapes[key])

    style_idx = sorted(int(m.group(1)) for k in shapes if (m := _STYLE_RE.match(k)))
    if style_idx != list(range(1, len(style_idx) + 1)):
        raise CheckpointError(path, f"mapping layers style.N.weight have indices {style_idx}", "1..n_mlp")
    style_dim = need("conv1.conv.modulation.weight")[1]
    n_blocks = len({int(m.group(1)) for k in shapes if (m := _TO_RGBS_RE.match(k))})
    size = 2 ** (n_blocks + 2)
    channels = {4: need("input.input")[1]}
    for b in range(n_blocks):
        channels[2 ** (b + 3)] = need(f"convs.{2 * b}.conv.weight")[1]
    multiplier = next((m for m in (2, 1, 4, 8) if default_channels(size, m) == channels), 2)
    return StyleGAN2Config(size=size, style_dim=style_dim, n_mlp=len(style_idx), channel_multiplier=multiplier,
                           channels=channels, lr_mlp=lr_mlp)


def check_state_dict(g: StyleGAN2, state: Mapping[str, Any], path: str | Path | None = None,
                     source: str = "rosinality g_ema") -> None:
    """Raise CheckpointError on any unknown key, missing key or shape mismatch against `g`."""
    expected = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    unknown = [k for k in state if k not in expected]
    if unknown:
        raise CheckpointError(path, f"unknown {source} key(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}",
                              f"only the keys of a StyleGAN2 of size {g.cfg.size}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(path, f"missing {source} key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}",
                              f"every key of a StyleGAN2 of size {g.cfg.size}")
    for k, shp in expected.items():
        got = _shape(state[k])
        if got != shp:
            raise CheckpointError(path, f"key {k!r} has shape {list(got)}", f"shape {list(shp)}")
        if not torch.is_tensor(state[k]) or not state[k].is_floating_point():
            raise CheckpointError(path, f"key {k!r} is not a floating-point tensor", "float tensors")


def generator_from_state_dict(state: Mapping[str, torch.Tensor], latent_avg: torch.Tensor | None = None,
                              path: str | Path | None = None, config: StyleGAN2Config | None = None,
                              source: str = "rosinality g_ema") -> StyleGAN2:
    """Build a StyleGAN2 (eval, float32, CPU) from a rosinality-layout state dict, strictly."""
    state = {k: v for k, v in state.items() if k != "_metadata"}
    cfg = config if config is not None else infer_config(state, path)
    g = StyleGAN2(cfg)
    check_state_dict(g, state, path, source)
    for k, buf in g.state_dict().items():  # FIR kernels are fixed by the config; refuse any other filter
        if k.endswith(".kernel") and not torch.allclose(state[k].float(), buf, rtol=1e-6, atol=1e-7):
            raise CheckpointError(path, f"{k!r} is not the FIR kernel of blur taps {list(cfg.blur_kernel)}",
                                  "the standard StyleGAN2 [1, 3, 3, 1] filter")
    g.load_state_dict({k: v.detach().to(torch.float32) for k, v in state.items()}, strict=True)
    g.eval()
    if latent_avg is None:
        gen = torch.Generator().manual_seed(MEAN_LATENT_SEED)
        g.set_latent_avg(g.mean_latent(MEAN_LATENT_SAMPLES, generator=gen))
        g.latent_avg_source = f"computed (mean of f(z) over {MEAN_LATENT_SAMPLES} z, seed {MEAN_LATENT_SEED})"
    else:
        if latent_avg.numel() != cfg.style_dim:
            raise CheckpointError(path, f"latent_avg has shape {list(latent_avg.shape)}", f"{cfg.style_dim} values")
        g.set_latent_avg(latent_avg)
        g.latent_avg_source = "checkpoint"
    return g


def from_checkpoint_dict(ckpt: Mapping[str, Any], path: str | Path | None = None) -> StyleGAN2:
    """A rosinality checkpoint dict (`g_ema` + optional `latent_avg` / `config`) -> StyleGAN2."""
    state = ckpt.get("g_ema")
    if not isinstance(state, Mapping):
        raise CheckpointError(path, "no 'g_ema' state dict in the checkpoint", "a rosinality checkpoint {'g_ema': ...}")
    cfg = None
    if isinstance(ckpt.get(CONFIG_KEY), Mapping):
        try:
            cfg = StyleGAN2Config.from_dict(ckpt[CONFIG_KEY])
        except (TypeError, ValueError) as e:
            raise CheckpointError(path, f"invalid '{CONFIG_KEY}' entry: {e}", "StyleGAN2Config fields") from None
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not torch.is_tensor(latent_avg):
        raise CheckpointError(path, f"latent_avg is a {type(latent_avg).__name__}", "a tensor [style_dim]")
    return generator_from_state_dict(state, latent_avg, path, cfg)


def rosinality_checkpoint(g: StyleGAN2) -> dict[str, Any]:
    """The dict `save_rosinality` writes: float32 CPU tensors, 1-D latent_avg, plus the config (plain data)."""
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in g.state_dict().items()}
    return {
        "g_ema": state,
        "latent_avg": g.latent_avg.detach().to("cpu", torch.float32).clone(),
        CONFIG_KEY: g.cfg.to_dict(),
    }


def save_rosinality(g: StyleGAN2, path: str | Path) -> Path:
    """Write `{"g_ema": state_dict, "latent_avg": [style_dim], "config": {...}}` (loads in rosinality/NADA/Fusion)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(rosinality_checkpoint(g), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint under the final name
    return path


def shapes_from_json(layout: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in layout.items()}
