"""Model references: a local directory/file or a Hugging Face hub id, resolved late and offline-aware.

    resolve_diffusers_ref("CompVis/stable-diffusion-v1-4", subfolders=("unet", "vae"))  -> Path (snapshot)
    resolve_diffusers_ref("/models/pocket_sd", subfolders=("unet", "vae"))              -> Path (as given)
    resolve_file_ref("ckpt.pt")                                                         -> Path

A hub id may carry a revision: "org/name@rev". With HF_HUB_OFFLINE=1 only the local HF cache is consulted
(no network, no retries); otherwise the cache first, then a download restricted to the needed subfolders.
Every failure is a `ModelNotFoundError` (trainables/errors.py) naming the reference, where it looked, and the
command that would fetch it. This module is a leaf: it imports no other part of trainables but `errors`
(the open_clip and LPIPS checks live with their loaders in trainables/guidance and are gathered by
trainables/preflight.py).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import huggingface_hub.constants as hf_constants
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache

from trainables.errors import ModelNotFoundError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt")
_IGNORE = ["*.fp16.*", "*non_ema*", "*.ema.*", "*.onnx*", "*.msgpack", "*.h5"]   # variants we never load


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    return Path(hf_constants.HF_HUB_CACHE)   # read at call time (tests and users may repoint it)


def is_hub_id(ref: str) -> bool:
    """'org/name' (optionally '@revision') that is not an existing local path."""
    return bool(_HUB_ID.match(ref)) and not Path(ref).expanduser().exists() and not ref.startswith((".", "/", "~"))


def split_revision(ref: str) -> tuple[str, str | None]:
    repo, _, rev = ref.partition("@")
    return repo, (rev or None)


def download_command(ref: str, subfolders: tuple[str, ...] = ()) -> str:
    repo, rev = split_revision(ref)
    pats = [f"'{sf}/*'" for sf in subfolders if sf]
    inc = (" --include " + " ".join(pats)) if pats else ""
    extra = f" --revision {rev}" if rev else ""
    return f"hf download {repo}{extra}{inc}  (older clients: huggingface-cli download {repo}{extra}{inc})"


def _missing(ref: str, subfolders: tuple[str, ...], why: str) -> ModelNotFoundError:
    local = Path(ref).expanduser().resolve()
    lines = [f"model reference '{ref}' could not be resolved: {why}.", f"  looked at local path: {local}"]
    if _HUB_ID.match(ref):
        lines.append(f"  looked in the Hugging Face cache: {hf_cache_dir()}"
                     + (" (HF_HUB_OFFLINE=1: no download attempted)" if hf_offline() else ""))
        lines.append(f"  to fetch it: {download_command(ref, subfolders)}")
        lines.append("  then copy the cache (or the downloaded folder) to this machine, or point the config at a "
                     "local directory")
    else:
        lines.append("  pass an existing local directory/file or a hub id 'org/name'")
    return ModelNotFoundError("\n".join(lines))


def _check_layout(root: Path, ref: str, subfolders: tuple[str, ...]) -> Path:
    missing = [sf for sf in subfolders if sf and not (root / sf).is_dir()]
    if missing:
        raise _missing(ref, subfolders, f"{root} lacks subfolder(s) {missing}")
    return root


def resolve_diffusers_ref(ref: str, subfolders: tuple[str, ...] = ("unet", "vae", "scheduler"),
                          allow_download: bool | None = None) -> Path:
    """Local directory holding `subfolders` for a diffusers-layout reference (dir or hub id).

    `subfolders=("",)` means the repository root (e.g. a standalone text encoder). `allow_download`
    defaults to `not HF_HUB_OFFLINE`.
    """
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        return _check_layout(path, ref, subfolders)
    if not is_hub_id(ref):
        raise _missing(ref, subfolders, "no such local directory")
    repo, rev = split_revision(ref)
    patterns: list[str] = ["model_index.json"]
    for sf in subfolders:
        pre = f"{sf}/" if sf else ""
        patterns += [f"{pre}*.json", f"{pre}*.txt", f"{pre}*.safetensors", f"{pre}*.model"]
    try:
        snap = Path(snapshot_download(repo, revision=rev, local_files_only=True, allow_patterns=patterns))
        _check_layout(snap, ref, subfolders)
        if all(_has_weights(snap / sf) for sf in subfolders if sf not in ("scheduler", "tokenizer")):
            return snap
    except ModelNotFoundError:
        pass
    except Exception:
        pass
    if allow_download is None:
        allow_download = not hf_offline()
    if not allow_download:
        raise _missing(ref, subfolders, "not in the local Hugging Face cache")
    try:
        snap = Path(snapshot_download(repo, revision=rev, allow_patterns=patterns, ignore_patterns=_IGNORE))
        for sf in subfolders:  # repositories that only publish .bin weights
            if sf not in ("scheduler", "tokenizer") and not _has_weights(snap / sf):
                pre = f"{sf}/" if sf else ""
                snap = Path(snapshot_download(repo, revision=rev, allow_patterns=[f"{pre}*.bin"],
                                              ignore_patterns=_IGNORE))
    except Exception as exc:  # network / auth / missing repo
        raise _missing(ref, subfolders, f"download failed ({type(exc).__name__}: {exc})") from exc
    return _check_layout(snap, ref, subfolders)


def _has_weights(folder: Path) -> bool:
    return any(any(folder.glob(g)) for g in _WEIGHT_GLOBS)


def resolve_file_ref(ref: str, filename: str | None = None, allow_download: bool | None = None) -> Path:
    """A local file, or `filename` inside hub repo `ref` ('org/name[@rev]'), from the cache or downloaded."""
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if not is_hub_id(ref) or not filename:
        raise _missing(ref, (), "no such local file" if not filename else "not a hub id")
    repo, rev = split_revision(ref)
    cached = try_to_load_from_cache(repo, filename, revision=rev)
    if isinstance(cached, str):
        return Path(cached)
    if allow_download is None:
        allow_download = not hf_offline()
    if not allow_download:
        raise _missing(ref, (), f"file '{filename}' is not in the local Hugging Face cache")
    try:
        return Path(hf_hub_download(repo, filename, revision=rev))
    except Exception as exc:
        raise _missing(ref, (), f"download of '{filename}' failed ({type(exc).__name__}: {exc})") from exc


def resolve_text_encoder_ref(ref: str, allow_download: bool | None = None) -> Path:
    """A standalone CLIP text encoder + tokenizer reference (e.g. openai/clip-vit-large-patch14)."""
    return resolve_diffusers_ref(ref, subfolders=("",), allow_download=allow_download)

