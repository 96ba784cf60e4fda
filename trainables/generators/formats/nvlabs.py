"""NVlabs stylegan2-ada-pytorch checkpoints: network pickles (`G_ema`) and `G.state_dict()` files.

Network pickles are read by `RestrictedUnpickler`, which resolves only the handful of globals such a file
legitimately references and never executes the embedded `module_src`: every persistent object becomes a
`PersistentRecord` holding plain data (its class name and `nn.Module.__dict__`), and the tensors are
collected by walking `_parameters` / `_buffers` through `_modules`. The NVlabs state dict is then converted
to the internal (rosinality) layout by one table, `nvlabs_key_map` (keys, in NVlabs order) with `layout_change`
(shapes); `nvlabs_export.py` uses the same table backwards (`TO_NVLABS`) to write NVlabs state dicts:

| NVlabs | rosinality | layout change |
|---|---|---|
| `mapping.fc{i}.weight/bias` | `style.{i+1}.weight/bias` | none (same equalized-lr storage) |
| `mapping.w_avg` | `latent_avg` | none |
| `synthesis.b4.const` [C,4,4] | `input.input` [1,C,4,4] | batch dim |
| `synthesis.b4.conv1.*` | `conv1.*` | see the layer rows |
| `synthesis.b{r}.conv0/conv1.*` (r = 2^(k+3)) | `convs.{2k}/{2k+1}.*` | see the layer rows |
| `synthesis.b4.torgb.*`, `synthesis.b{r}.torgb.*` | `to_rgb1.*`, `to_rgbs.{k}.*` | see the layer rows |
| layer `.weight` [O,I,k,k] | `.conv.weight` [1,O,I,k,k] | batch dim (the 1/sqrt(fan_in) gain cancels in demodulation) |
| layer `.affine.weight/bias` | `.conv.modulation.weight/bias` | none |
| layer `.noise_strength` [] | `.noise.weight` [1] | reshape |
| layer `.bias` [O] | `.activate.bias` [O] (conv) / `.bias` [1,3,1,1] (torgb) | reshape |
| layer `.noise_const` [r,r] | `noises.noise_{j}` [1,1,r,r] | reshape; j = 0 for b4, 2k+1 / 2k+2 for conv0 / conv1 |
| `*.resample_filter` [4,4] | (fixed by the config) | checked equal to the [1,3,3,1] FIR filter (rebuilt on export) |
"""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.generators.ops import make_fir_kernel
from trainables.generators.stylegan2 import StyleGAN2, StyleGAN2Config, default_channels
from trainables.generators.formats.errors import CheckpointError
from trainables.generators.formats.rosinality import generator_from_state_dict

_BLOCK_RE = re.compile(r"^synthesis\.b(\d+)\.")
_FC_RE = re.compile(r"^mapping\.fc(\d+)\.weight$")
_NUMERIC_KINDS = "biufc"  # numpy dtype kinds a network pickle may carry (bool, int, uint, float, complex)


# ------------------------------------------------------------------------------------------------------------
# Restricted unpickling


@dataclass
class PersistentRecord:
    """What `torch_utils.persistence._reconstruct_persistent_obj(meta)` would have built, as plain data."""

    class_name: str
    version: Any
    state: dict = field(repr=False)


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a plain dict subclass (no attribute magic, nothing imported)."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("malformed persistent-object record (expected {'type': 'class', 'state': {...}})")
    # meta['module_src'] is deliberately ignored: it is source code and is never executed.
    return PersistentRecord(class_name=str(meta.get("class_name")), version=meta.get("version"), state=meta["state"])


def _load_storage_from_bytes(data: bytes) -> Any:
    # torch.storage._load_from_bytes would call torch.load(data) with full unpickling; weights_only refuses code.
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if backward_hooks:
        raise pickle.UnpicklingError("tensor with backward hooks (callables) refused")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    if backward_hooks:
        raise pickle.UnpicklingError("parameter with backward hooks (callables) refused")
    if not torch.is_tensor(data):
        raise pickle.UnpicklingError("parameter data is not a tensor")
    return data.detach()


def _numpy_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dt = np.dtype(obj) if isinstance(obj, str) else None
    if dt is None or dt.kind not in _NUMERIC_KINDS:
        raise pickle.UnpicklingError(f"numpy dtype {obj!r} refused (only numeric dtypes)")
    return dt


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy scalar refused (only numeric scalars from raw bytes)")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("numpy array subclass refused")
    return np.ndarray.__new__(np.ndarray, shape, np.uint8)  # filled by ndarray.__setstate__ (numeric dtypes only)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for NVlabs network pickles: any global outside `_ALLOWED_GLOBALS` raises CheckpointError."""

    def __init__(self, file: Any, path: str | Path | None = None):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
            raise CheckpointError(self.path, f"pickle asks for the forbidden global {module}.{name}",
                                  f"only the globals of a stylegan2-ada-pytorch network pickle: {allowed}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(self.path, f"pickle uses a persistent id {pid!r}", "no persistent ids")


def read_network_pickle(path: str | Path, unpickler: type[pickle.Unpickler] | None = None,
                        what: str = "stylegan2-ada-pytorch") -> dict:
    """Unpickle a network pickle safely: a dict whose modules are PersistentRecords.

    `unpickler`: a RestrictedUnpickler subclass that allows a few more inert classes (EG3D's)."""
    path = Path(path)
    unpickler = unpickler or RestrictedUnpickler
    try:
        with path.open("rb") as f:
            data = unpickler(f, path).load()
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(path, "file not found", f"an existing {what} network pickle") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, MemoryError, OverflowError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(path, f"truncated or corrupt pickle ({type(e).__name__}: {first})",
                              f"a complete {what} network pickle") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"pickle holds a {type(data).__name__}", "a dict with 'G_ema' (network pickle)")
    return data


def _persistent_state(obj: Any) -> dict | None:
    return obj.state if isinstance(obj, PersistentRecord) else None


def flatten_record(rec: Any, path: str | Path | None = None, prefix: str = "",
                   state_of: Callable[[Any], dict | None] = _persistent_state,
                   allowed: str = "persistent NVlabs modules only") -> "OrderedDict[str, torch.Tensor]":
    """state_dict of a pickled module tree: `_parameters` and persistent `_buffers` through `_modules`.

    `state_of(obj)` gives a module record's `__dict__` (None for anything that is not an allowed module)."""
    state = state_of(rec)
    if state is None:
        raise CheckpointError(path, f"module {prefix.rstrip('.') or '<root>'!r} is a {type(rec).__name__}", allowed)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, t in (state.get("_parameters") or {}).items():
        if t is not None:
            out[prefix + name] = t
    for name, t in (state.get("_buffers") or {}).items():
        if t is not None and name not in skip:
            out[prefix + name] = t
    for name, sub in (state.get("_modules") or {}).items():
        if sub is not None:
            out.update(flatten_record(sub, path, prefix + name + ".", state_of, allowed))
    return out


def _find_record(rec: PersistentRecord, dotted: str) -> PersistentRecord | None:
    for part in dotted.split("."):
        sub = (rec.state.get("_modules") or {}).get(part)
        if not isinstance(sub, PersistentRecord):
            return None
        rec = sub
    return rec


# ------------------------------------------------------------------------------------------------------------
# NVlabs layout -> rosinality layout


def infer_nvlabs_config(sd: Mapping[str, torch.Tensor], path: str | Path | None = None, lr_mlp: float = 0.01,
                        conv_clamp: float | None = None) -> StyleGAN2Config:
    def need(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointError(path, f"missing NVlabs key {key!r}", "a stylegan2-ada-pytorch Generator state dict")
        return tuple(sd[key].shape)

    if any(k.startswith("mapping.embed.") for k in sd):
        raise CheckpointError(path, "conditional generator (mapping.embed.*, c_dim > 0)", "an unconditional generator (c_dim = 0)")
    fc = sorted(int(m.group(1)) for k in sd if (m := _FC_RE.match(k)))
    if not fc or fc != list(range(len(fc))):
        raise CheckpointError(path, f"mapping layers fc{fc}", "mapping.fc0 .. mapping.fc{n-1}")
    style_dim = need("mapping.fc0.weight")[1]
    for i in fc:
        if need(f"mapping.fc{i}.weight") != (style_dim, style_dim):
            raise CheckpointError(path, f"mapping.fc{i}.weight has shape {list(sd[f'mapping.fc{i}.weight'].shape)}",
                                  f"[{style_dim}, {style_dim}] (z_dim = w_dim = layer width)")
    resolutions = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    size = resolutions[-1] if resolutions else 0
    expected_res = [2**i for i in range(2, size.bit_length())] if size >= 4 else []
    if resolutions != expected_res:
        raise CheckpointError(path, f"synthesis blocks at resolutions {resolutions}", "b4, b8, ..., b{size}")
    if need("synthesis.b4.torgb.weight")[0] != 3:
        raise CheckpointError(path, f"img_channels = {sd['synthesis.b4.torgb.weight'].shape[0]}", "3 (RGB)")
    channels = {4: need("synthesis.b4.const")[0]}
    for res in resolutions[1:]:
        channels[res] = need(f"synthesis.b{res}.conv0.weight")[0]
    multiplier = next((m for m in (2, 1, 4, 8) if default_channels(size, m) == channels), 2)
    return StyleGAN2Config(size=size, style_dim=style_dim, n_mlp=len(fc), channel_multiplier=multiplier,
                           channels=channels, lr_mlp=lr_mlp, conv_clamp=conv_clamp)


def nvlabs_key_map(cfg: StyleGAN2Config) -> dict[str, str | None]:
    """NVlabs state-dict key -> rosinality key, in NVlabs' `G.state_dict()` order (synthesis, then mapping).

    The one table both directions use (import here, export in `nvlabs_export.py`). `resample_filter` buffers
    map to None: they are fixed by the config (checked on import, rebuilt on export)."""
    m: dict[str, str | None] = {}

    def layer(nv: str, ros: str, noise_idx: int) -> None:  # SynthesisLayer: params, buffers, then affine
        m[f"{nv}.weight"] = f"{ros}.conv.weight"
        m[f"{nv}.noise_strength"] = f"{ros}.noise.weight"
        m[f"{nv}.bias"] = f"{ros}.activate.bias"
        m[f"{nv}.resample_filter"] = None
        m[f"{nv}.noise_const"] = f"noises.noise_{noise_idx}"
        m[f"{nv}.affine.weight"] = f"{ros}.conv.modulation.weight"
        m[f"{nv}.affine.bias"] = f"{ros}.conv.modulation.bias"

    def torgb(nv: str, ros: str) -> None:  # ToRGBLayer: no filter, no noise
        m[f"{nv}.weight"] = f"{ros}.conv.weight"
        m[f"{nv}.bias"] = f"{ros}.bias"
        m[f"{nv}.affine.weight"] = f"{ros}.conv.modulation.weight"
        m[f"{nv}.affine.bias"] = f"{ros}.conv.modulation.bias"

    m["synthesis.b4.const"] = "input.input"
    m["synthesis.b4.resample_filter"] = None
    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for k in range(cfg.log_size - 2):
        res = 2 ** (k + 3)
        m[f"synthesis.b{res}.resample_filter"] = None
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * k}", 2 * k + 1)
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
    m["mapping.w_avg"] = "latent_avg"
    for i in range(cfg.n_mlp):
        m[f"mapping.fc{i}.weight"] = f"style.{i + 1}.weight"
        m[f"mapping.fc{i}.bias"] = f"style.{i + 1}.bias"
    return m


def layout_change(ros: str) -> str:
    """How a tensor's shape differs between the layouts, by its rosinality key (the table's last column)."""
    if ros == "input.input" or ros.endswith("conv.weight"):
        return "batch"  # [C,4,4] <-> [1,C,4,4];  [O,I,k,k] <-> [1,O,I,k,k]
    if ros.endswith("noise.weight"):
        return "scalar"  # noise_strength [] <-> [1]
    if ros.startswith("noises."):
        return "noise"  # noise_const [r,r] <-> [1,1,r,r]
    if ros.startswith("to_rgb") and ros.endswith(".bias") and ".conv." not in ros:
        return "rgb_bias"  # [3] <-> [1,3,1,1]
    return "same"


# Values are unchanged in both directions (the same equalized-lr storage; see the module docstring): only shapes move.
TO_ROSINALITY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "batch": lambda t: t.unsqueeze(0),
    "scalar": lambda t: t.reshape(1),
    "noise": lambda t: t.reshape(1, 1, *t.shape),
    "rgb_bias": lambda t: t.reshape(1, -1, 1, 1),
    "same": lambda t: t,
}
TO_NVLABS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "batch": lambda t: t.squeeze(0),
    "scalar": lambda t: t.reshape(()),
    "noise": lambda t: t.reshape(t.shape[-2:]),
    "rgb_bias": lambda t: t.reshape(-1),
    "same": lambda t: t,
}


def nvlabs_to_rosinality(sd: Mapping[str, torch.Tensor], cfg: StyleGAN2Config,
                         path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Convert an NVlabs Generator state dict to (rosinality g_ema state dict without FIR kernels, w_avg)."""
    key_map = nvlabs_key_map(cfg)
    fir = make_fir_kernel(cfg.blur_kernel)  # NVlabs setup_filter: the same separable kernel with unit sum
    unknown = [k for k in sd if k not in key_map and not k.endswith("resample_filter")]
    if unknown:
        raise CheckpointError(path, f"unknown NVlabs key(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}",
                              "a stylegan2-ada-pytorch Generator with architecture='skip'")
    missing = [k for k, ros in key_map.items() if k not in sd and ros not in (None, "latent_avg")]
    if missing:
        raise CheckpointError(path, f"missing NVlabs key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}",
                              "every layer of a StyleGAN2 generator with noise inputs")
    out: dict[str, torch.Tensor] = {}
    w_avg = None
    for k, t in sd.items():
        t = t.detach().to(dtype=torch.float32)
        ros = key_map.get(k)
        if ros is None:  # a resample_filter
            if t.is_meta:  # layout-only conversion (shape checks on the meta device)
                continue
            if tuple(t.shape) != tuple(fir.shape) or not torch.allclose(t, fir, rtol=1e-6, atol=1e-7):
                raise CheckpointError(path, f"{k!r} is not the [1, 3, 3, 1] FIR filter", "the standard StyleGAN2 filter")
            continue
        if ros == "latent_avg":
            w_avg = t
        else:
            out[ros] = TO_ROSINALITY[layout_change(ros)](t)
    return out, w_avg  # FIR kernels of the rosinality layout come from the config (checked equal above)


def _with_fir_kernels(state: dict[str, torch.Tensor], cfg: StyleGAN2Config) -> dict[str, torch.Tensor]:
    up = make_fir_kernel(cfg.blur_kernel, gain=4)
    n_blocks = cfg.log_size - 2
    for k in range(n_blocks):
        state[f"convs.{2 * k}.conv.blur.kernel"] = up.clone()
        state[f"to_rgbs.{k}.upsample.kernel"] = up.clone()
    return state


def generator_from_nvlabs_state_dict(sd: Mapping[str, torch.Tensor], path: str | Path | None = None,
                                     lr_mlp: float = 0.01, conv_clamp: float | None = None) -> StyleGAN2:
    """An NVlabs `G.state_dict()` (or flattened G_ema) -> StyleGAN2 in the rosinality layout."""
    sd = {k: v for k, v in sd.items() if k != "_metadata"}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise CheckpointError(path, f"{k!r} is a {type(v).__name__}", "tensors only in an NVlabs state dict")
    cfg = infer_nvlabs_config(sd, path, lr_mlp=lr_mlp, conv_clamp=conv_clamp)
    state, w_avg = nvlabs_to_rosinality(sd, cfg, path)
    return generator_from_state_dict(_with_fir_kernels(state, cfg), w_avg, path, cfg, source="converted NVlabs")


def pickled_module(data: dict, key: str, class_name: str, expected: str, path: str | Path) -> PersistentRecord:
    """The persistent module `data[key]` of an unpickled network pickle, checked to be a `class_name`."""
    rec = data.get(key)
    if not isinstance(rec, PersistentRecord):
        raise CheckpointError(path, f"no persistent {key!r} module in the pickle (keys {sorted(map(str, data))})",
                              f"a network pickle with {key!r}")
    if rec.class_name != class_name:
        raise CheckpointError(path, f"{key!r} is a {rec.class_name}", expected)
    return rec


def load_network_pickle(path: str | Path, key: str = "G_ema") -> StyleGAN2:
    """NVlabs network pickle -> StyleGAN2 built from its `G_ema` (never `G`, the raw training weights)."""
    rec = pickled_module(read_network_pickle(path), key, "Generator", "a stylegan2-ada-pytorch Generator", path)
    c_dim = rec.state.get("c_dim", 0)
    if c_dim:
        raise CheckpointError(path, f"conditional generator (c_dim = {c_dim})", "c_dim = 0")
    fc0 = _find_record(rec, "mapping.fc0")
    lr_mlp = float(fc0.state.get("bias_gain", 0.01)) if fc0 is not None else 0.01
    layer = _find_record(rec, "synthesis.b4.conv1")
    clamp = layer.state.get("conv_clamp") if layer is not None else None
    g = generator_from_nvlabs_state_dict(flatten_record(rec, path), path, lr_mlp=lr_mlp,
                                         conv_clamp=None if clamp is None else float(clamp))
    return g
