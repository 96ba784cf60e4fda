"""open_clip model loading (NADA's critic, the CLIP score) with offline-aware, actionable errors.

`load_open_clip(name, pretrained, quick_gelu=None)`:
    name        open_clip model name ('ViT-B-32'), a JSON model config file, or a directory holding
                `open_clip_config.json` (HF-hub layout: {"model_cfg": ..., "preprocess_cfg": ...}) or
                `<stem>.json`; custom configs are registered with open_clip under their stem.
    pretrained  open_clip tag ('openai'), a local weights file (.pt/.pth/.bin/.safetensors), or
                None / '' / 'none' (random init; a directory's own weights file when present).
    quick_gelu  None = the activation the weights were trained with (`resolve_quick_gelu`); True/False
                forces it (an error when it contradicts open_clip's metadata for a known tag).

Activation rule (`resolve_quick_gelu`): open_clip 3.x builds 'ViT-B-32' / 'ViT-B-16' with nn.GELU even for
pretrained='openai' and only warns, although OpenAI's weights were trained with QuickGELU (x*sigmoid(1.702x)).
Here the build follows the weights: QuickGELU when the model config says so OR open_clip's pretrained cfg
for the tag says `quick_gelu=True` (open_clip only ever annotates True, so a missing flag is no evidence of
GELU). A weights file in the HF cache of a known tag's hub repo counts as that tag. An unrecognised weights
file keeps the config's activation, with a `QuickGeluMismatchWarning` when the same architecture has
QuickGELU-trained tags and the build is GELU (the file may hold those weights; the fix is named).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import huggingface_hub.constants as hf_constants
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache

from trainables.frozen import model_cache
from trainables.errors import ModelNotFoundError

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_OPENCLIP_DIR_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "model.pt", "weights.pt",
)


class ClipWeightsNotFoundError(ModelNotFoundError):
    """open_clip weights for a (model, pretrained) pair are neither local nor downloadable here."""


class QuickGeluMismatchError(ValueError):
    """An explicit activation choice contradicts what open_clip's metadata says the weights were trained with."""


class QuickGeluMismatchWarning(UserWarning):
    """A weights file of unknown origin may need the other activation (QuickGELU vs GELU)."""


log = logging.getLogger(__name__)


@dataclass
class LoadedClip:
    model: torch.nn.Module               # frozen, eval, requires_grad False
    tokenizer: Any                       # open_clip tokenizer: list[str] -> LongTensor [N, ctx]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_size: int                      # square input side
    name: str                            # open_clip model name as registered
    pretrained: str                      # tag or weights path ('' = random init)
    interpolation: str = "bicubic"       # resize mode used by preprocess_differentiable
    resize_mode: str = "shortest"        # open_clip eval transform: shortest | longest | squash
    quick_gelu: bool = False             # the activation the model was built with (QuickGELU vs nn.GELU)
    activation_reason: str = ""          # why (`resolve_quick_gelu`), for logs and error messages

    def eval_transform(self) -> Callable[[Any], torch.Tensor]:
        """open_clip's evaluation preprocessing for PIL images (what `create_model_and_transforms` returns
        as `preprocess`): resize (bicubic, antialiased on PIL), centre crop, to tensor, normalise."""
        import open_clip  # late: ~4 s; trainables.guidance need not pay it

        return open_clip.image_transform(self.image_size, is_train=False, mean=self.image_mean,
                                         std=self.image_std, resize_mode=self.resize_mode,
                                         interpolation=self.interpolation)

    def encode_image(self, images_m11: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> unnormalised image embeddings [B, D] (differentiable)."""
        return self.model.encode_image(preprocess_differentiable(images_m11, self))

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list of N strings -> unnormalised text embeddings [N, D]."""
        dev = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(texts).to(dev))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _register_config(name: str) -> str:
    """Register a JSON config / config directory with open_clip; return the model name to use."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    path = Path(name)
    if not (path.suffix == ".json" or path.is_dir()):
        return name
    if path.is_dir():
        cfg_file = path / "open_clip_config.json"
        if not cfg_file.is_file():
            jsons = sorted(path.glob("*.json"))
            if len(jsons) != 1:
                raise FileNotFoundError(f"open_clip model directory {path} has no open_clip_config.json "
                                        f"(and not exactly one *.json config: {[j.name for j in jsons]})")
            cfg_file = jsons[0]
        stem = path.name if cfg_file.name == "open_clip_config.json" else cfg_file.stem
    else:
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config {path} does not exist")
        cfg_file, stem = path, path.stem
    cfg = json.loads(cfg_file.read_text())
    model_cfg = cfg.get("model_cfg", cfg)
    if not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"{cfg_file} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    if open_clip.get_model_config(stem) == model_cfg:
        return stem                                   # already registered with this exact config
    if model_cfg is cfg:
        open_clip.add_model_config(cfg_file)
    else:  # HF-hub layout: register the nested model_cfg under the directory's name
        tmp = Path(tempfile.mkdtemp(prefix="openclip_cfg_")) / f"{stem}.json"
        tmp.write_text(json.dumps(model_cfg))
        open_clip.add_model_config(tmp)
    return stem


def _dir_weights(name: str) -> str | None:
    path = Path(name)
    if not path.is_dir():
        return None
    for fname in _OPENCLIP_DIR_WEIGHTS:
        if (path / fname).is_file():
            return str(path / fname)
    return None


def _missing_weights_error(model_name: str, pretrained: str, cause: BaseException | None) -> ClipWeightsNotFoundError:
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    cfg = open_clip.pretrained.get_pretrained_cfg(model_name, pretrained)
    hub = (cfg or {}).get("hf_hub", "")
    repo, fname = os.path.split(hub) if hub else ("", "")
    fetch = [f"python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{pretrained}')\""]
    if repo:
        fetch.insert(0, f"hf download {repo}" + (f" {fname}" if fname else ""))
    off = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded; " if _offline() else ""
    return ClipWeightsNotFoundError(
        f"open_clip weights for model '{model_name}' with pretrained='{pretrained}' are not available locally. "
        f"{off}looked in the Hugging Face cache ({_hf_cache_dir()}) and open_clip's cache. "
        f"Fetch them on a machine with network access with: {' or '.join(fetch)} "
        f"(then copy the HF cache here), or pass a local weights file as `pretrained`."
        + (f" Cause: {type(cause).__name__}: {cause}" if cause is not None else "")
    )


def _hf_cache_dir() -> str:
    return str(hf_constants.HF_HUB_CACHE)   # read at call time (tests and users may repoint it)


def _tag_cached(model_name: str, pretrained: str) -> bool | None:
    """True/False when the tag's HF-hub file is (not) in the cache; None when it cannot be told."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    cfg = open_clip.pretrained.get_pretrained_cfg(model_name, pretrained)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        return None
    repo, fname = os.path.split(hub)
    names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if fname.endswith(".bin"):
        names.insert(0, fname[: -len(".bin")] + ".safetensors")
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


@functools.lru_cache(maxsize=1)
def _hub_repo_tags() -> dict[str, list[tuple[str, str, bool]]]:
    """HF-hub repo id -> [(model, tag, tag quick_gelu)] over open_clip's pretrained registry."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    out: dict[str, list[tuple[str, str, bool]]] = {}
    for model, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(model, tag)
        hub = (cfg.get("hf_hub") or "").strip("/")
        if hub.count("/") >= 1:
            repo = "/".join(hub.split("/")[:2])
            out.setdefault(repo, []).append((model, tag, bool(cfg.get("quick_gelu", False))))
    return out


def _arch_key(model_cfg: dict) -> str:
    """The architecture without the activation choice (to find built-ins a custom config copies)."""
    return json.dumps({k: v for k, v in model_cfg.items() if k != "quick_gelu"}, sort_keys=True, default=str)


@functools.lru_cache(maxsize=1)
def _quickgelu_tags_by_arch() -> dict[str, list[str]]:
    """architecture key -> ['model:tag', ...] of open_clip's tags trained with QuickGELU."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    out: dict[str, list[str]] = {}
    for model, tag in open_clip.list_pretrained():
        cfg = open_clip.get_model_config(model)
        if cfg and open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False):
            out.setdefault(_arch_key(cfg), []).append(f"{model}:{tag}")
    return out


def _hub_tag_of_file(path: str) -> tuple[str, list[tuple[str, str, bool]]] | None:
    """(repo, its open_clip tags) when `path` lies in an HF-cache snapshot of a known tag's hub repo."""
    p = Path(path).expanduser()
    for part in p.absolute().parts + p.resolve().parts:   # snapshot files are symlinks into blobs/
        if part.startswith("models--"):
            repo = part[len("models--"):].replace("--", "/", 1)
            if repo in _hub_repo_tags():
                return repo, _hub_repo_tags()[repo]
    return None


def resolve_quick_gelu(model_name: str, pretrained: str | None, quick_gelu: bool | None = None) -> tuple[bool, str]:
    """(build with QuickGELU?, reason) for a registered open_clip model and a tag / weights file / ''.

    Rule (see the module docstring): known tag -> config flag OR the tag's `quick_gelu`; weights file in a
    known tag's HF-cache repo -> the same with that repo's tags; other file or random init -> the config's
    flag (or `quick_gelu` when given), warning for a GELU build of an architecture with QuickGELU tags."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model '{model_name}' (register its config first)")
    cfg_qg = bool(cfg.get("quick_gelu", False))
    tag = (pretrained or "").strip()
    known: list[tuple[str, str, bool]] = []
    source = ""
    if tag and open_clip.pretrained.is_pretrained_cfg(model_name, tag):
        tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
        known = [(model_name, tag, bool(tag_cfg.get("quick_gelu", False)))]
        source = f"open_clip's pretrained cfg for '{model_name}:{tag}'"
    elif tag:
        hit = _hub_tag_of_file(tag)
        if hit is not None:
            repo, known = hit
            source = f"the weights file lies in the HF cache of '{repo}' (open_clip tags " \
                     f"{', '.join(f'{m}:{t}' for m, t, _ in known)})"
    if known:
        # weights trained with QuickGELU when open_clip says so for the tag, or the config itself says so
        tag_qg = any(q for _, _, q in known)
        needed = cfg_qg or tag_qg
        reason = f"{'QuickGELU' if needed else 'nn.GELU'}: {source} " \
                 f"(quick_gelu={tag_qg}), model config quick_gelu={cfg_qg}"
        if quick_gelu is not None and quick_gelu != needed:
            want, other = ("QuickGELU", "nn.GELU") if needed else ("nn.GELU", "QuickGELU")
            raise QuickGeluMismatchError(
                f"quick_gelu={quick_gelu} contradicts the weights of '{model_name}' / '{tag}': {source} says they "
                f"were trained with {want}, so a {other} build gives silently wrong embeddings. Fix: drop the "
                f"quick_gelu override (the loader then builds {want})"
                + (f", or use the model name '{model_name}-quickgelu'" if needed and not model_name.endswith("-quickgelu") else "")
                + ".")
        return needed, reason
    if quick_gelu is not None:
        return quick_gelu, f"{'QuickGELU' if quick_gelu else 'nn.GELU'}: explicit quick_gelu={quick_gelu}"
    reason = f"{'QuickGELU' if cfg_qg else 'nn.GELU'}: model config '{model_name}' quick_gelu={cfg_qg}"
    if tag and not cfg_qg:
        siblings = _quickgelu_tags_by_arch().get(_arch_key(cfg), [])
        if siblings:
            warnings.warn(
                f"open_clip model '{model_name}' is built with nn.GELU for the weights file '{tag}', but this "
                f"architecture's pretrained weights {', '.join(siblings[:6])}{' ...' if len(siblings) > 6 else ''} "
                f"were trained with QuickGELU. If the file holds one of those (e.g. OpenAI's CLIP), a GELU build "
                f"gives silently wrong embeddings: pass the tag instead of the file (pretrained='{siblings[0].split(':')[1]}'), "
                f"or use the model name '{model_name}-quickgelu' (or quick_gelu=True). If the file was trained with "
                f"GELU, confirm it with quick_gelu=False (load_open_clip argument; evaluation config "
                f"`clip.models[].quick_gelu: false`).",
                QuickGeluMismatchWarning, stacklevel=3)
    return cfg_qg, reason


@dataclass
class _Resolved:
    model_name: str      # registered open_clip model name
    tag: str             # weights tag or file or '' (random init)
    is_file: bool
    quick_gelu: bool     # the activation to build
    reason: str          # why (resolve_quick_gelu)


def _resolve(name: str, pretrained: str | None, quick_gelu: bool | None = None) -> _Resolved:
    """Model name, weights and activation; raises when not loadable here."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    model_name = _register_config(name)
    tag = (pretrained or "").strip()
    if tag.lower() == "none":
        tag = ""
    if not tag:
        tag = _dir_weights(name) or ""
    is_file = tag.endswith(_WEIGHT_SUFFIXES) or os.sep in tag
    if is_file and not Path(tag).is_file():
        raise ClipWeightsNotFoundError(f"open_clip weights file '{tag}' for model '{model_name}' does not exist")
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model '{name}': not a built-in name "
                         f"(e.g. ViT-B-32), a JSON config file, or a directory with open_clip_config.json")
    if tag and not is_file:
        if tag not in open_clip.list_pretrained_tags_by_model(model_name):
            raise ValueError(f"open_clip has no pretrained tag '{tag}' for model '{model_name}' "
                             f"(known: {open_clip.list_pretrained_tags_by_model(model_name)})")
        if _offline() and _tag_cached(model_name, tag) is False:
            raise _missing_weights_error(model_name, tag, None)
    qg, reason = resolve_quick_gelu(model_name, tag, quick_gelu)
    return _Resolved(model_name, tag, is_file, qg, reason)


def check_open_clip(name: str, pretrained: str | None, quick_gelu: bool | None = None) -> str:
    """Cheap availability check (no model is built); returns the registered model name."""
    return _resolve(name, pretrained, quick_gelu).model_name


def built_quick_gelu(model: torch.nn.Module) -> bool | None:
    """True/False when the model's transformer MLPs use QuickGELU / nn.GELU; None when it has neither."""
    from open_clip.transformer import QuickGELU  # late: ~4 s; trainables.guidance need not pay it

    kinds = {type(m) for m in model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}
    return None if not kinds else QuickGELU in kinds


class _ActivationBuildError(RuntimeError):
    pass


def _create(model_name: str, weights: str, r: _Resolved, device: str | torch.device = "cpu") -> torch.nn.Module:
    """open_clip.create_model with the resolved activation; weights '' = random init."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    cfg_qg = bool(open_clip.get_model_config(model_name).get("quick_gelu", False))
    # force_quick_gelu sets the config flag before open_clip's own tag check (so it does not warn);
    # turning QuickGELU off for a QuickGELU config needs the constructor override
    extra = {"quick_gelu": False} if (cfg_qg and not r.quick_gelu) else {}
    model = open_clip.create_model(model_name, pretrained=weights or None, device=device, pretrained_text=False,
                                   require_pretrained=bool(weights), force_quick_gelu=r.quick_gelu, **extra)
    built = built_quick_gelu(model)
    if built is not None and built != r.quick_gelu:   # e.g. timm towers ignore the flag
        raise _ActivationBuildError(
            f"open_clip built '{model_name}' with {'QuickGELU' if built else 'nn.GELU'} although {r.reason}; "
            f"this model cannot be built with the activation its weights need")
    return model


def build_open_clip_architecture(name: str, pretrained: str | None, quick_gelu: bool | None = None,
                                 device: str | torch.device = "cpu") -> tuple[torch.nn.Module, str]:
    """The model `load_open_clip(name, pretrained)` would build, with random weights and nothing loaded or
    downloaded (to inspect the architecture, e.g. the activation); returns (model, activation reason).
    device='meta' builds it without allocating or initialising parameters (milliseconds for ViT-B-32)."""
    model_name = _register_config(name)
    tag = "" if (pretrained or "").strip().lower() in ("", "none") else pretrained.strip()
    qg, reason = resolve_quick_gelu(model_name, tag, quick_gelu)
    with torch.device(device):   # parameters are created on `device` (meta: no memory, no init cost)
        model = _create(model_name, "", _Resolved(model_name, tag, False, qg, reason), device)
    return model, reason


def load_open_clip(name: str, pretrained: str | None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, quick_gelu: bool | None = None) -> LoadedClip:
    """Build an open_clip model, frozen and in eval mode; see the module docstring for the arguments."""
    import open_clip  # late: ~4 s; trainables.guidance need not pay it

    r = _resolve(name, pretrained, quick_gelu)
    model_name, tag, is_file = r.model_name, r.tag, r.is_file
    try:
        model = _create(model_name, tag, r, device)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        if is_file or isinstance(exc, _ActivationBuildError):
            raise
        raise _missing_weights_error(model_name, tag, exc) from exc
    log.info("open_clip %s / %s: %s", model_name, tag or "random init", r.reason)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    pcfg = open_clip.get_model_preprocess_cfg(model)
    size = pcfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        image_mean=tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD)),
        image_size=int(size),
        name=model_name,
        pretrained=tag,
        interpolation=pcfg.get("interpolation", "bicubic"),
        resize_mode=pcfg.get("resize_mode", "shortest"),
        quick_gelu=r.quick_gelu,
        activation_reason=r.reason,
    )


# NADA's preprocessing: Normalize(-1, 2) ([-1,1] -> [0,1]), CLIP Resize (shorter side), CenterCrop,
# Normalize(mean, std) -- on tensors, so gradients reach the generator.
def preprocess_differentiable(images: torch.Tensor, loaded: LoadedClip, antialias: bool = False) -> torch.Tensor:
    x = (images + 1.0) / 2.0                                        # [B,3,H,W] in [0,1]
    s = loaded.image_size
    h, w = x.shape[-2:]
    if min(h, w) != s:   # shorter side -> s, longer side truncated as torchvision's Resize(int) does
        nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        mode = "bicubic" if loaded.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=(nh, nw), mode=mode, align_corners=False, antialias=antialias)
        h, w = nh, nw
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))  # centre crop (torchvision's rounding)
    x = x[..., top : top + s, left : left + s]
    mean = torch.tensor(loaded.image_mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(loaded.image_std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    dtype = next(loaded.model.parameters()).dtype
    return ((x - mean) / std).to(dtype)


def cached_open_clip(name: str, pretrained: str | None, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, quick_gelu: bool | None = None) -> LoadedClip:
    """`load_open_clip` through the per-worker frozen-model cache (trainables/frozen/model_cache.py: on inside sweep
    trials only, a plain load elsewhere). One key for every caller, so NADA's critic and evaluation's CLIP score
    share one model when they name the same (model, weights, device, dtype, activation)."""
    forced = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
    return model_cache.cached(
        "open_clip", lambda: load_open_clip(name, pretrained, device=device, dtype=dtype, quick_gelu=quick_gelu),
        refs=(name, pretrained), device=torch.device(device), dtype=dtype, **forced)
