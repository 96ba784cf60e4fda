"""StyleGAN3 checkpoints: NVlabs network pickles (`G_ema`), `G.state_dict()` files, and the NVlabs-layout save file.

Network pickles are read by the StyleGAN2 reader's `RestrictedUnpickler` (`..formats.nvlabs`): a StyleGAN3 pickle
references no global beyond it (every StyleGAN3 class is an NVlabs *persistent* class, rebuilt as an inert
`PersistentRecord`; its embedded `module_src` is never executed). On top, every record in `G_ema`'s module tree
must be one of StyleGAN3's six classes. Keys need no conversion: `networks.py` uses NVlabs' names.

| source | configuration from |
|---|---|
| network pickle | the Generator's pickled `_init_kwargs` (checked against the tensor shapes and stored filters) |
| `G.state_dict()` (bare or `{"G_ema": ...}`) | the tensor shapes + the T/R defaults (checked against the stored filters) |
| `save_stylegan3` file `{"format", "G_ema", "init_kwargs"}` | `init_kwargs` (the same as NVlabs' Generator arguments) |

`save_stylegan3` is also `convert --to nvlabs`: `Generator(**init_kwargs).load_state_dict(G_ema)` in NVlabs'
code rebuilds the generator (num_fp16_res 0: float32 everywhere, as here).
"""
from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainables.generators.formats import read_torch_file
from trainables.generators.formats.errors import CheckpointError
from trainables.generators.formats.nvlabs import PersistentRecord, flatten_record, pickled_module, read_network_pickle
from trainables.generators.stylegan3.config import StyleGAN3Config
from trainables.generators.stylegan3.networks import StyleGAN3

FORMAT = "stylegan3-nvlabs-v1"
SG3_CLASSES = ("Generator", "MappingNetwork", "FullyConnectedLayer", "SynthesisNetwork", "SynthesisInput",
               "SynthesisLayer")
_FC_RE = re.compile(r"^mapping\.fc(\d+)\.weight$")
_LAYER_RE = re.compile(r"^synthesis\.L(\d+)_(\d+)_(\d+)\.weight$")
# NVlabs Generator / SynthesisNetwork / SynthesisLayer arguments -> StyleGAN3Config fields.
_SYNTH_ARGS = ("channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
               "last_stopband_rel", "margin_size", "output_scale", "conv_kernel", "filter_size", "lrelu_upsampling",
               "use_radial_filters", "conv_clamp")
_IGNORED_ARGS = ("num_fp16_res", "magnitude_ema_beta")  # float16 on CUDA / training statistics: no effect here


def is_stylegan3_state_dict(sd: Any) -> bool:
    return isinstance(sd, Mapping) and "synthesis.input.freqs" in sd


def config_from_init_kwargs(kw: Mapping[str, Any], path: str | Path | None = None) -> StyleGAN3Config:
    """StyleGAN3Config from NVlabs `Generator(**kwargs)` arguments; c_dim must be 0 and img_channels 3."""
    kw = dict(kw)
    if int(kw.get("c_dim", 0) or 0) != 0:
        raise CheckpointError(path, f"conditional generator (c_dim = {kw['c_dim']})", "an unconditional StyleGAN3 (c_dim = 0)")
    if int(kw.get("img_channels", 3)) != 3:
        raise CheckpointError(path, f"img_channels = {kw['img_channels']}", "3 (RGB)")
    mk = dict(kw.get("mapping_kwargs") or {})
    unknown = sorted(set(mk) - {"num_layers", "lr_multiplier", "w_avg_beta"})
    unknown += sorted(set(kw) - {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                                 *_SYNTH_ARGS, *_IGNORED_ARGS})
    if unknown:
        raise CheckpointError(path, f"unknown StyleGAN3 Generator argument(s) {unknown}",
                              "the arguments of NVlabs stylegan3 training/networks_stylegan3.py Generator")
    fields: dict[str, Any] = {k: kw[k] for k in _SYNTH_ARGS if k in kw}
    fields.update(z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]), img_resolution=int(kw["img_resolution"]))
    if "num_layers" in mk:
        fields["mapping_layers"] = int(mk["num_layers"])
    if "lr_multiplier" in mk:
        fields["mapping_lr"] = float(mk["lr_multiplier"])
    for k in ("channel_base", "channel_max", "num_layers", "num_critical", "margin_size", "conv_kernel",
              "filter_size", "lrelu_upsampling"):
        if k in fields:
            fields[k] = int(fields[k])
    for k in ("first_cutoff", "first_stopband", "last_stopband_rel", "output_scale"):
        if k in fields:
            fields[k] = float(fields[k])
    if fields.get("conv_clamp") is not None:
        fields["conv_clamp"] = float(fields["conv_clamp"])
    if "use_radial_filters" in fields:
        fields["use_radial_filters"] = bool(fields["use_radial_filters"])
    try:
        return StyleGAN3Config(**fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"bad StyleGAN3 arguments ({e})", "a valid NVlabs StyleGAN3 Generator") from None


def init_kwargs(cfg: StyleGAN3Config) -> dict[str, Any]:
    """NVlabs `Generator(**init_kwargs)` arguments that build the same network (float32: num_fp16_res 0)."""
    kw: dict[str, Any] = {"z_dim": cfg.z_dim, "c_dim": 0, "w_dim": cfg.w_dim, "img_resolution": cfg.img_resolution,
                          "img_channels": 3,
                          "mapping_kwargs": {"num_layers": cfg.mapping_layers, "lr_multiplier": cfg.mapping_lr}}
    kw.update({k: getattr(cfg, k) for k in _SYNTH_ARGS})
    kw["num_fp16_res"] = 0
    return kw


def infer_stylegan3_config(sd: Mapping[str, torch.Tensor], path: str | Path | None = None) -> StyleGAN3Config:
    """Config from a state dict's shapes: T or R (1x1 convs + 2-D filters), with NVlabs' defaults for the
    schedule constants and the channel_base / channel_max that reproduce every layer name."""
    fc = sorted(int(m.group(1)) for k in sd if (m := _FC_RE.match(k)))
    if not fc or fc != list(range(len(fc))):
        raise CheckpointError(path, f"mapping layers fc{fc}", "mapping.fc0 .. mapping.fc{n-1} (a StyleGAN3 Generator)")
    if "mapping.embed.weight" in sd:
        raise CheckpointError(path, "conditional generator (mapping.embed.*)", "an unconditional StyleGAN3 (c_dim = 0)")
    layers = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3))) for k in sd if (m := _LAYER_RE.match(k)))
    n = len(layers) - 1
    if n < 3 or [i for i, _, _ in layers] != list(range(n + 1)) or layers[-1][2] != 3:
        raise CheckpointError(path, f"synthesis layers {[f'L{i}_{s}_{c}' for i, s, c in layers]}",
                              "synthesis.L0_* .. L{n}_{res}_3 (a StyleGAN3 SynthesisNetwork)")
    res = layers[-1][1]
    z_dim = tuple(sd["mapping.fc0.weight"].shape)[1]
    w_dim = tuple(sd[f"mapping.fc{fc[-1]}.weight"].shape)[0]
    name0 = f"synthesis.L0_{layers[0][1]}_{layers[0][2]}"
    kernel = int(sd[f"{name0}.weight"].shape[-1])
    radial = any(k.endswith("down_filter") and sd[k].ndim == 2 for k in sd)
    cmax = max(c for _, _, c in layers)
    names = {f"L{i}_{s}_{c}" for i, s, c in layers}
    # channels = rint(min(channel_base / (2 f_c), channel_max)); at the critical layers f_c = res / 2, so a layer
    # below the maximum there has channel_base ~ channels * res. NVlabs' T / R bases are tried first.
    for base in [32768, 65536] + sorted({c * res for _, _, c in layers[:-1]}):
        try:
            cfg = StyleGAN3Config(z_dim=z_dim, w_dim=w_dim, img_resolution=res, channel_base=base, channel_max=cmax,
                                  num_layers=n, conv_kernel=kernel, use_radial_filters=radial, mapping_layers=len(fc))
        except ValueError:
            continue
        if {s.name for s in cfg.layer_specs()[1]} == names:
            return cfg
    raise CheckpointError(path, f"synthesis layers {sorted(names)} match no StyleGAN3 schedule with NVlabs' default "
                          f"cutoffs", "the network pickle (it carries the Generator arguments) instead of a state dict")


def _check_filters(g: StyleGAN3, sd: Mapping[str, torch.Tensor], path: str | Path | None) -> None:
    """The stored low-pass filters must be those the config designs (else the config is not the file's)."""
    own = g.state_dict()
    for k, t in sd.items():
        if k.endswith(("up_filter", "down_filter")) and k in own:
            if tuple(t.shape) != tuple(own[k].shape) or not torch.allclose(t.float(), own[k], rtol=0, atol=1e-6):
                raise CheckpointError(path, f"stored filter {k!r} differs from the one its configuration designs",
                                      "a StyleGAN3 whose cutoffs / stopbands follow the Generator arguments "
                                      "(for a state dict: NVlabs' defaults; pass the network pickle otherwise)")


def generator_from_stylegan3_state_dict(sd: Mapping[str, torch.Tensor], cfg: StyleGAN3Config | None = None,
                                        path: str | Path | None = None) -> StyleGAN3:
    """NVlabs StyleGAN3 `G.state_dict()` -> StyleGAN3 (eval, float32, CPU), strict: every key and shape checked."""
    sd = {k: v for k, v in sd.items() if k != "_metadata"}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise CheckpointError(path, f"{k!r} is a {type(v).__name__}", "tensors only in a StyleGAN3 state dict")
    if cfg is None:
        cfg = infer_stylegan3_config(sd, path)
    g = StyleGAN3(cfg)
    own = g.state_dict()
    missing, extra = [k for k in own if k not in sd], [k for k in sd if k not in own]
    if missing or extra:
        raise CheckpointError(path, f"key mismatch: missing {missing[:5]}, unexpected {extra[:5]}",
                              "exactly the keys of the StyleGAN3 its arguments describe")
    bad = [(k, list(sd[k].shape), list(v.shape)) for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(path, f"{bad[0][0]!r} has shape {bad[0][1]}", f"{bad[0][2]} ({len(bad)} mismatched)")
    _check_filters(g, sd, path)
    g.load_state_dict({k: v.detach().to(torch.float32) for k, v in sd.items()}, strict=True)
    return g.eval().requires_grad_(False)


def _check_classes(rec: PersistentRecord, path: str | Path, where: str = "G_ema") -> None:
    if rec.class_name not in SG3_CLASSES:
        raise CheckpointError(path, f"module {where!r} is a {rec.class_name}",
                              f"only StyleGAN3 modules ({', '.join(SG3_CLASSES)})")
    for name, sub in (rec.state.get("_modules") or {}).items():
        if isinstance(sub, PersistentRecord):
            _check_classes(sub, path, f"{where}.{name}")


def pickle_is_stylegan3(data: dict) -> bool:
    rec = data.get("G_ema")
    syn = (rec.state.get("_modules") or {}).get("synthesis") if isinstance(rec, PersistentRecord) else None
    return isinstance(syn, PersistentRecord) and syn.class_name == "SynthesisNetwork" and \
        isinstance((syn.state.get("_modules") or {}).get("input"), PersistentRecord)


def load_stylegan3_pickle(path: str | Path, key: str = "G_ema") -> StyleGAN3:
    """NVlabs StyleGAN3 network pickle -> StyleGAN3 from `G_ema` (never `G`, the raw training weights)."""
    data = read_network_pickle(path, what="StyleGAN3")
    rec = pickled_module(data, key, "Generator", "a StyleGAN3 Generator", path)
    _check_classes(rec, path)
    if not pickle_is_stylegan3(data):
        raise CheckpointError(path, "G_ema has no synthesis.input (Fourier features)", "a StyleGAN3 network pickle")
    sd = flatten_record(rec, path)
    kw = rec.state.get("_init_kwargs")
    cfg = config_from_init_kwargs(kw, path) if isinstance(kw, dict) and kw else None
    g = generator_from_stylegan3_state_dict(sd, cfg, path)
    g.source_format = "nvlabs-pickle"
    return g


def save_stylegan3(g: StyleGAN3, path: str | Path) -> Path:
    """{"format", "G_ema": NVlabs state dict (float32), "init_kwargs"}; torch.load(weights_only=True) reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in g.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "G_ema": state, "init_kwargs": init_kwargs(g.cfg)}, tmp)
    tmp.replace(path)
    return path


def is_stylegan3_file(path: str | Path) -> bool:
    """True when the file holds a StyleGAN3 (any format above); False for anything else, unreadable included."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if not zipfile.is_zipfile(path):
            return pickle_is_stylegan3(read_network_pickle(path, what="StyleGAN3"))
        obj = read_torch_file(path)
    except CheckpointError:
        return False
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return True
    return is_stylegan3_state_dict(obj.get("G_ema") if isinstance(obj, dict) and "G_ema" in obj else obj)


def load_stylegan3(path: str | Path) -> StyleGAN3:
    """Any StyleGAN3 checkpoint (network pickle, state dict, save_stylegan3 file) -> StyleGAN3; CheckpointError
    names the file and the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found", "an existing StyleGAN3 checkpoint (.pkl or .pt)")
    if not zipfile.is_zipfile(path):
        return load_stylegan3_pickle(path)
    obj = read_torch_file(path)
    cfg = None
    fmt = "stylegan3-state-dict"
    if isinstance(obj, dict) and "G_ema" in obj:
        if isinstance(obj.get("init_kwargs"), dict):
            cfg = config_from_init_kwargs(obj["init_kwargs"], path)
        fmt = FORMAT if obj.get("format") == FORMAT else fmt
        obj = obj["G_ema"]
    if not is_stylegan3_state_dict(obj):
        shown = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(path, f"no StyleGAN3 generator found ({shown})",
                              "a StyleGAN3 state dict (synthesis.input.freqs), {'G_ema': ...} or a save_stylegan3 file")
    g = generator_from_stylegan3_state_dict(obj, cfg, path)
    g.source_format = fmt
    return g
