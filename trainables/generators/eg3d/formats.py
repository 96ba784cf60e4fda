"""EG3D checkpoints: NVlabs network pickles (`G_ema`), `G_ema.state_dict()` files, and the internal format.

Network pickles are read with the project's `RestrictedUnpickler` (`..formats.nvlabs`), extended only by the
six NON-persistent classes an EG3D pickle references by import path (`OSGDecoder`, `ImportanceRenderer`,
`MipRayMarcher2`, `RaySampler`, torch `Sequential`, `Softplus`). They resolve to inert record classes that
just receive the pickled `__dict__` (nothing is imported, no embedded `module_src` is ever run).

NVlabs -> internal key conversion (see `networks.py` for the internal names):

| NVlabs (TriPlaneGenerator.state_dict) | internal |
|---|---|
| `dataset_label_std`, `backbone.mapping.*`, `decoder.net.{0,2}.*` | unchanged |
| `backbone.synthesis.*` | `backbone.synthesis.<rosinality key>` via `formats.nvlabs.nvlabs_to_rosinality` (96-ch ToRGB) |
| `superresolution.block{b}.conv{i}.weight` [O,I,3,3] | `superresolution.block{b}.conv{i}.conv.weight` [1,O,I,3,3] |
| `....conv{i}.affine.{weight,bias}` | `....conv{i}.conv.modulation.{weight,bias}` |
| `....conv{i}.noise_strength` [] / `.bias` [O] | `....conv{i}.noise.weight` [1] / `....conv{i}.activate.bias` |
| `....conv{i}.noise_const` [r,r] | `superresolution.block{b}.noise_const{i}` [1,1,r,r] |
| `....torgb.weight` / `.bias` [3] / `.affine.*` | `....torgb.conv.weight` / `.bias` [1,3,1,1] / `....torgb.conv.modulation.*` |
| every `resample_filter` | dropped after checking it is the [1,3,3,1] filter (FIR kernels come from the config) |
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainables.generators.formats import read_torch_file
from trainables.generators.formats.errors import CheckpointError
from trainables.generators.formats.nvlabs import (PersistentRecord, RestrictedUnpickler, flatten_record, nvlabs_to_rosinality,
                              pickled_module, read_network_pickle)
from trainables.generators.ops import make_fir_kernel
from trainables.generators.stylegan2 import StyleGAN2Config
from trainables.generators.eg3d.config import FFHQ_RENDERING, SR_CLASSES, EG3DConfig
from trainables.generators.eg3d.networks import EG3DGenerator

INTERNAL_FORMAT = "eg3d-internal-v1"

# ------------------------------------------------------------------------------------------------------------
# Restricted unpickling of EG3D pickles


class PlainObjectRecord:
    """Inert stand-in for a non-persistent class in an EG3D pickle: NEWOBJ makes it, BUILD fills `__dict__`."""

    class_path = "?"


_PLAIN_CLASSES = {
    ("training.triplane", "OSGDecoder"),
    ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
    ("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
    ("training.volumetric_rendering.ray_sampler", "RaySampler"),
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.activation", "Softplus"),
}
_RECORD_TYPES: dict[tuple[str, str], type] = {
    key: type(f"Record_{key[1]}", (PlainObjectRecord,), {"class_path": ".".join(key)}) for key in _PLAIN_CLASSES
}


class EG3DUnpickler(RestrictedUnpickler):
    """RestrictedUnpickler + the six plain classes of an EG3D network pickle (mapped to inert records)."""

    def find_class(self, module: str, name: str) -> Any:
        rec = _RECORD_TYPES.get((module, name))
        if rec is not None:
            return rec
        return super().find_class(module, name)


def read_eg3d_pickle(path: str | Path) -> dict:
    return read_network_pickle(path, unpickler=EG3DUnpickler, what="EG3D")


def _state_of(obj: Any) -> dict | None:
    if isinstance(obj, PersistentRecord):
        return obj.state
    if isinstance(obj, PlainObjectRecord):
        return obj.__dict__
    return None


def flatten_module(obj: Any, path: str | Path | None = None, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """state_dict of a pickled EG3D module tree (persistent NVlabs modules and EG3D's plain modules)."""
    return flatten_record(obj, path, prefix, state_of=_state_of,
                          allowed="persistent NVlabs modules or the EG3D plain modules")


def _child(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        state = _state_of(obj)
        if state is None:
            return None
        obj = (state.get("_modules") or {}).get(part)
    return obj


# ------------------------------------------------------------------------------------------------------------
# Config inference and conversion

_BLOCK_RE = re.compile(r"^backbone\.synthesis\.b(\d+)\.")
_FC_RE = re.compile(r"^backbone\.mapping\.fc(\d+)\.weight$")
_SR_LAYER_RE = re.compile(r"^superresolution\.block(\d)\.(conv0|conv1|torgb)\.(.+)$")


def _shape(sd: Mapping[str, torch.Tensor], key: str, path: str | Path | None) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(path, f"missing EG3D key {key!r}", "an EG3D TriPlaneGenerator state dict")
    return tuple(sd[key].shape)


def infer_eg3d_config(sd: Mapping[str, torch.Tensor], path: str | Path | None = None, *,
                      rendering_kwargs: Mapping[str, Any] | None = None, neural_rendering_resolution: int | None = None,
                      sr_class: str | None = None, mapping_lr: float = 0.01,
                      backbone_conv_clamp: float | None = None, sr_conv_clamp: float | None = 256.0) -> EG3DConfig:
    """EG3DConfig from tensor shapes (+ renderer settings, which shapes cannot tell: FFHQ defaults otherwise).

    SR class: no `superresolution.resample_filter` -> 8XDC (block0 upsamples); otherwise 2X, or 4X at 256 px.
    SR input resolution: block0's resolution (2X/4X) or half of it (8XDC). Neural rendering resolution
    defaults to the SR input resolution (true for ffhq512-128; pass it for e.g. ffhq512-64).
    """
    fc = sorted(int(m.group(1)) for k in sd if (m := _FC_RE.match(k)))
    if not fc or fc != list(range(len(fc))):
        raise CheckpointError(path, f"mapping layers fc{fc}", "backbone.mapping.fc0 .. fc{n-1}")
    w_dim = _shape(sd, f"backbone.mapping.fc{fc[-1]}.weight", path)[0]
    fc0_in = _shape(sd, "backbone.mapping.fc0.weight", path)[1]
    if "backbone.mapping.embed.weight" in sd:
        embed, c_dim = _shape(sd, "backbone.mapping.embed.weight", path)
    else:
        embed, c_dim = 0, 0
    if c_dim not in (0, 25):
        raise CheckpointError(path, f"camera conditioning of width {c_dim}", "c_dim 25 (16 extrinsics + 9 intrinsics)")
    z_dim = fc0_in - embed
    res = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    size = res[-1] if res else 0
    if size < 4 or res != [2**i for i in range(2, size.bit_length())]:
        raise CheckpointError(path, f"backbone blocks at resolutions {res}", "b4, b8, ..., b256")
    channels = {4: _shape(sd, "backbone.synthesis.b4.const", path)[0]}
    for r in res[1:]:
        channels[r] = _shape(sd, f"backbone.synthesis.b{r}.conv0.weight", path)[0]
    planes_out = _shape(sd, "backbone.synthesis.b4.torgb.weight", path)[0]
    if planes_out % 3:
        raise CheckpointError(path, f"backbone output channels {planes_out}", "3 planes x C features (96 in EG3D)")
    hidden, plane_ch = _shape(sd, "decoder.net.0.weight", path)
    dec_out = _shape(sd, "decoder.net.2.weight", path)[0] - 1
    if plane_ch != planes_out // 3:
        raise CheckpointError(path, f"decoder input {plane_ch} features", f"{planes_out // 3} (one plane's features)")
    c0, sr_in = _shape(sd, "superresolution.block0.conv0.weight", path)[:2]
    c1 = _shape(sd, "superresolution.block1.conv0.weight", path)[0]
    if sr_in != dec_out:
        raise CheckpointError(path, f"SR input of {sr_in} channels", f"{dec_out} (decoder output features)")
    r0 = _shape(sd, "superresolution.block0.conv0.noise_const", path)[0]
    r1 = _shape(sd, "superresolution.block1.conv0.noise_const", path)[0]
    if sr_class is None:
        if "superresolution.resample_filter" not in sd:
            sr_class = "SuperresolutionHybrid8XDC"
        else:
            sr_class = "SuperresolutionHybrid4X" if r1 == 256 else "SuperresolutionHybrid2X"
    if sr_class not in SR_CLASSES:
        raise CheckpointError(path, f"superresolution module {sr_class!r}", f"one of {SR_CLASSES}")
    up0 = sr_class == "SuperresolutionHybrid8XDC"
    if r1 != 2 * r0 or (up0 and r0 % 2):
        raise CheckpointError(path, f"SR block resolutions {r0}, {r1}", "block1 = 2 x block0")
    sr_input = r0 // 2 if up0 else r0
    rendering = {k: v for k, v in dict(rendering_kwargs or {}).items() if k in FFHQ_RENDERING}
    return EG3DConfig(z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, img_resolution=r1, mapping_layers=len(fc),
                      mapping_lr=mapping_lr, embed_features=embed, backbone_resolution=size, backbone_channels=channels,
                      backbone_conv_clamp=backbone_conv_clamp, plane_channels=planes_out // 3, decoder_hidden=hidden,
                      decoder_output_dim=dec_out, decoder_lr_mul=float(dict(rendering_kwargs or {}).get("decoder_lr_mul", 1)),
                      sr_class=sr_class, sr_channels=(c0, c1), sr_block_resolutions=(r0, r1), sr_input_resolution=sr_input,
                      sr_conv_clamp=sr_conv_clamp, neural_rendering_resolution=int(neural_rendering_resolution or sr_input),
                      rendering=rendering)


def _check_filter(key: str, t: torch.Tensor, path: str | Path | None) -> None:
    if t.is_meta:
        return
    fir = make_fir_kernel((1, 3, 3, 1))
    if tuple(t.shape) != tuple(fir.shape) or not torch.allclose(t.float(), fir, rtol=1e-6, atol=1e-7):
        raise CheckpointError(path, f"{key!r} is not the [1, 3, 3, 1] FIR filter", "the standard StyleGAN2 filter")


def backbone_stylegan2_config(cfg: EG3DConfig) -> StyleGAN2Config:
    return StyleGAN2Config(size=cfg.backbone_resolution, style_dim=cfg.w_dim, n_mlp=0, channels=cfg.backbone_channels,
                           conv_clamp=cfg.backbone_conv_clamp)


def convert_eg3d_state_dict(sd: Mapping[str, torch.Tensor], cfg: EG3DConfig,
                            path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """NVlabs TriPlaneGenerator state dict -> internal state dict (without FIR kernels)."""
    out: dict[str, torch.Tensor] = {}
    synth: dict[str, torch.Tensor] = {}
    unknown = []
    for k, t in sd.items():
        t = t.detach().to(dtype=torch.float32)
        if k == "dataset_label_std" or k.startswith("backbone.mapping.") or k.startswith("decoder.net."):
            out[k] = t
        elif k.startswith("backbone.synthesis."):
            synth[k[len("backbone."):]] = t
        elif k.endswith("resample_filter") and k.startswith("superresolution."):
            _check_filter(k, t, path)
        elif m := _SR_LAYER_RE.match(k):
            blk, layer, rest = m.groups()
            base = f"superresolution.block{blk}.{layer}"
            if rest == "weight":
                out[f"{base}.conv.weight"] = t.unsqueeze(0)
            elif rest in ("affine.weight", "affine.bias"):
                out[f"{base}.conv.modulation.{rest.split('.')[1]}"] = t
            elif rest == "bias":
                out[f"{base}.bias" if layer == "torgb" else f"{base}.activate.bias"] = (
                    t.reshape(1, -1, 1, 1) if layer == "torgb" else t)
            elif rest == "noise_strength" and layer != "torgb":
                out[f"{base}.noise.weight"] = t.reshape(1)
            elif rest == "noise_const" and layer != "torgb":
                out[f"superresolution.block{blk}.noise_const{layer[-1]}"] = t.reshape(1, 1, *t.shape)
            else:
                unknown.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(path, f"unknown EG3D key(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}",
                              "a TriPlaneGenerator with SuperresolutionHybrid2X/4X/8XDC")
    ros, _ = nvlabs_to_rosinality(synth, backbone_stylegan2_config(cfg), path)
    for k, t in ros.items():
        out[f"backbone.synthesis.{k}"] = t
    return out


def generator_from_eg3d_state_dict(sd: Mapping[str, torch.Tensor], cfg: EG3DConfig | None = None,
                                   path: str | Path | None = None, **infer_kwargs: Any) -> EG3DGenerator:
    """NVlabs `G_ema.state_dict()` -> EG3DGenerator (eval, float32, CPU), strict: every key used, every shape checked."""
    sd = {k: v for k, v in sd.items() if k != "_metadata"}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise CheckpointError(path, f"{k!r} is a {type(v).__name__}", "tensors only in an EG3D state dict")
    if cfg is None:
        cfg = infer_eg3d_config(sd, path, **infer_kwargs)
    state = convert_eg3d_state_dict(sd, cfg, path)
    g = EG3DGenerator(cfg)
    _load_strict(g, state, path, fill_fixed=True)
    return g.eval().requires_grad_(False)


def _load_strict(g: EG3DGenerator, state: Mapping[str, torch.Tensor], path: str | Path | None,
                 fill_fixed: bool) -> None:
    own = g.state_dict()
    merged = dict(state)
    if fill_fixed:  # FIR kernels are fixed by the config; dataset_label_std is optional
        for k, v in own.items():
            if k.endswith(".kernel") or k == "dataset_label_std":
                merged.setdefault(k, v)
    missing = [k for k in own if k not in merged]
    extra = [k for k in merged if k not in own]
    if missing or extra:
        raise CheckpointError(path, f"key mismatch: missing {missing[:5]}, unexpected {extra[:5]}",
                              "exactly the keys of the inferred EG3D configuration")
    bad = [(k, tuple(merged[k].shape), tuple(v.shape)) for k, v in own.items() if tuple(merged[k].shape) != tuple(v.shape)]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(path, f"{k!r} has shape {list(got)}", f"{list(want)} ({len(bad)} mismatched)")
    g.load_state_dict(merged, strict=True)


def load_eg3d_pickle(path: str | Path, key: str = "G_ema") -> EG3DGenerator:
    """EG3D network pickle -> EG3DGenerator from `G_ema` (never `G`, the raw training weights)."""
    rec = pickled_module(read_eg3d_pickle(path), key, "TriPlaneGenerator", "an EG3D TriPlaneGenerator", path)
    st = rec.state
    rk = st.get("rendering_kwargs")
    if not isinstance(rk, dict):
        raise CheckpointError(path, "TriPlaneGenerator without rendering_kwargs", "EG3D's rendering_kwargs dict")
    sr = _child(rec, "superresolution")
    sr_class = sr.class_name if isinstance(sr, PersistentRecord) else None
    fc0 = _child(rec, "backbone.mapping.fc0")
    mapping_lr = float(fc0.state.get("bias_gain", 0.01)) if isinstance(fc0, PersistentRecord) else 0.01
    layer = _child(rec, "backbone.synthesis.b4.conv1")
    clamp = layer.state.get("conv_clamp") if isinstance(layer, PersistentRecord) else None
    sr_layer = _child(rec, "superresolution.block0.conv0")
    sr_clamp = sr_layer.state.get("conv_clamp") if isinstance(sr_layer, PersistentRecord) else 256
    nrr = st.get("neural_rendering_resolution")
    sd = flatten_module(rec, path)
    cfg = infer_eg3d_config(sd, path, rendering_kwargs=rk, neural_rendering_resolution=None if nrr is None else int(nrr),
                            sr_class=sr_class, mapping_lr=mapping_lr,
                            backbone_conv_clamp=None if clamp is None else float(clamp),
                            sr_conv_clamp=None if sr_clamp is None else float(sr_clamp))
    if isinstance(sr, PersistentRecord) and sr.state.get("input_resolution") not in (None, cfg.sr_input_resolution):
        raise CheckpointError(path, f"SR input_resolution {sr.state.get('input_resolution')}",
                              f"{cfg.sr_input_resolution} (from the SR tensor shapes)")
    g = generator_from_eg3d_state_dict(sd, cfg, path)
    g.source_format = "eg3d-pickle"
    return g


# ------------------------------------------------------------------------------------------------------------
# Internal format (weights_only-loadable) and the front door


def save_eg3d(g: EG3DGenerator, path: str | Path) -> Path:
    """{"format": "eg3d-internal-v1", "config": <JSON string>, "state_dict": {...}}; loads with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in g.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": INTERNAL_FORMAT, "config": g.cfg.to_json(), "state_dict": state}, tmp)
    tmp.replace(path)
    return path


def load_eg3d(path: str | Path, **infer_kwargs: Any) -> EG3DGenerator:
    """Any EG3D checkpoint -> EG3DGenerator (eval, float32, CPU, requires_grad False).

    Formats, decided by content: NVlabs network pickle (`G_ema`), NVlabs `G_ema.state_dict()` (a bare dict or
    `{"G_ema": ...}`; pass `rendering_kwargs=` / `neural_rendering_resolution=` for non-FFHQ renderer settings),
    and the internal `save_eg3d` file. Every failure raises CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found", "an existing EG3D checkpoint (.pkl or .pt)")
    if not zipfile.is_zipfile(path):
        if infer_kwargs:
            raise CheckpointError(path, f"options {sorted(infer_kwargs)} given for a network pickle",
                                  "no options (a pickle carries its own rendering_kwargs)")
        return load_eg3d_pickle(path)
    obj = read_torch_file(path)
    if isinstance(obj, dict) and obj.get("format") == INTERNAL_FORMAT:
        try:
            cfg = EG3DConfig.from_dict(json.loads(obj["config"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(path, f"bad embedded config ({e})", "a config written by save_eg3d") from None
        g = EG3DGenerator(cfg)
        _load_strict(g, obj.get("state_dict") or {}, path, fill_fixed=False)
        g.eval().requires_grad_(False)
        g.source_format = INTERNAL_FORMAT
        return g
    if isinstance(obj, dict) and isinstance(obj.get("G_ema"), dict):
        obj = obj["G_ema"]
    if isinstance(obj, dict) and "backbone.synthesis.b4.const" in obj:
        g = generator_from_eg3d_state_dict(obj, None, path, **infer_kwargs)
        g.source_format = "eg3d-state-dict"
        return g
    shown = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(path, f"no EG3D generator found ({shown})",
                          "an EG3D state dict (backbone.synthesis.*), {'G_ema': ...} or a save_eg3d file")
