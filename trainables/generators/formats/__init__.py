"""Checkpoint formats: detection by content, safe reading, conversion to the internal (rosinality) layout.

| format | recognised by | read with |
|---|---|---|
| rosinality `.pt` `{"g_ema", "latent_avg"}` | torch zip/legacy magic, key `g_ema` | `torch.load(weights_only=True)` |
| rosinality bare state dict | torch file, keys `style.1.weight`, `conv1.conv.weight` | same |
| NVlabs state dict (`G.state_dict()`) | torch file, keys `mapping.*`, `synthesis.*` | same, then key conversion |
| NVlabs network pickle (`.pkl`, `G_ema`) | a pickle stream that is not a torch file | restricted unpickler (`nvlabs.py`) |
| NVlabs export `{"G_ema": state dict, "init_kwargs"}` | torch file, key `G_ema` | same, then key conversion (`nvlabs_export.py`) |

Writers: `save_rosinality` (rosinality `.pt`) and `save_nvlabs_state_dict` (NVlabs `G_ema` state dict + Generator
arguments, `nvlabs_export.py`).
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from trainables.generators.stylegan2 import StyleGAN2
from trainables.generators.formats import nvlabs, nvlabs_export, rosinality
from trainables.generators.formats.errors import CheckpointError
from trainables.generators.formats.nvlabs_export import save_nvlabs_state_dict
from trainables.generators.formats.rosinality import save_rosinality

__all__ = ["CheckpointError", "detect_format", "load_generator", "read_torch_file", "save_nvlabs_state_dict",
           "save_rosinality"]

_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickled object of a legacy (non-zip) torch.save file


def _sniff(path: Path) -> str:
    """'torch-zip', 'torch-legacy' or 'pickle' from the first bytes; CheckpointError otherwise."""
    if not path.exists():
        raise CheckpointError(path, "file not found",
                              "an existing checkpoint file; check the path, or download / convert the checkpoint first")
    if not path.is_file():
        raise CheckpointError(path, "is not a regular file", "a checkpoint file")
    with path.open("rb") as f:
        head = f.read(32)
    if not head:
        raise CheckpointError(path, "the file is empty", "a torch (.pt) or pickle (.pkl) checkpoint")
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    if head[0] == 0x80:  # pickle PROTO opcode
        if head[2:3] == b"\x8a":  # LONG1: a legacy torch.save starts with its magic number
            n = head[3]
            if int.from_bytes(head[4:4 + n], "little", signed=True) == _TORCH_LEGACY_MAGIC:
                return "torch-legacy"
        return "pickle"
    raise CheckpointError(path, f"unrecognised file content (first bytes {head[:8]!r})",
                          "a torch zip file (rosinality .pt / state dict) or a pickle (NVlabs .pkl)")


def read_torch_file(path: str | Path) -> Any:
    """torch.load(weights_only=True) with every failure turned into a CheckpointError naming the file."""
    path = Path(path)
    _sniff(path)
    try:
        # argparse.Namespace: rosinality's own training snapshots store their `args` (plain data) beside g_ema.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"refused by the weights-only loader: {first}",
                              "only tensors and plain containers (re-save the generator with save_rosinality)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"truncated or corrupt torch file ({first})", "a complete torch.save file") from None


def detect_format(path: str | Path) -> str:
    """One of 'rosinality', 'rosinality-state-dict', 'nvlabs-state-dict', 'nvlabs-pickle'."""
    path = Path(path)
    kind = _sniff(path)
    if kind == "pickle":
        return "nvlabs-pickle"
    return _classify(read_torch_file(path), path)


def _classify(obj: Any, path: Path) -> str:
    if isinstance(obj, dict):
        if "g_ema" in obj:
            return "rosinality"
        keys = [k for k in obj if isinstance(k, str)]
        if "conv1.conv.weight" in keys or any(k.startswith("style.") for k in keys):
            return "rosinality-state-dict"
        if any(k.startswith("synthesis.") for k in keys) and any(k.startswith("mapping.") for k in keys):
            return "nvlabs-state-dict"
        if "G_ema" in obj:
            return "nvlabs-pickle-dict"
        shown = sorted(map(str, obj))[:6]
        raise CheckpointError(path, f"no generator found among top-level keys {shown}",
                              "'g_ema' (rosinality), rosinality state-dict keys, or NVlabs 'mapping.*'/'synthesis.*' keys")
    raise CheckpointError(path, f"top-level object is a {type(obj).__name__}", "a dict (checkpoint or state dict)")


def load_generator(path: str | Path) -> StyleGAN2:
    """Load any supported StyleGAN2 checkpoint into a StyleGAN2 (eval mode, float32, CPU).

    The format is decided by content, not by extension. Every failure (missing, empty, truncated or corrupt
    file, unknown key, wrong shape, a pickle asking for a forbidden global) raises CheckpointError.
    """
    path = Path(path)
    kind = _sniff(path)
    if kind == "pickle":
        g = nvlabs.load_network_pickle(path)
        g.source_format = "nvlabs-pickle"
        return g
    obj = read_torch_file(path)
    fmt = _classify(obj, path)
    if fmt == "rosinality":
        g = rosinality.from_checkpoint_dict(obj, path)
    elif fmt == "rosinality-state-dict":
        g = rosinality.generator_from_state_dict(obj, None, path)
    elif fmt == "nvlabs-state-dict":
        g = nvlabs.generator_from_nvlabs_state_dict(obj, path)
    else:  # a dict holding an NVlabs-style G_ema state dict (+ init_kwargs when save_nvlabs_state_dict wrote it)
        g = nvlabs_export.generator_from_g_ema_dict(obj, path)
        fmt = "nvlabs-state-dict"
    g.source_format = fmt
    return g
