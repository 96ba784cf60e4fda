"""Ground-truth reference sets as image folders (for FID against real target data, as in the paper).

A prompt's reference set is the source distribution with exactly the prompted attributes set: the same
seed gives the same source samples for every prompt, so reference sets are paired across prompts.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import world as W
from .common import CACHE
from .prompts import resolve, spec_slug

REF_SEED = 123_456            # the reference sets' seed (disjoint from every training seed)
REF_COUNT = 2000              # the paper evaluates 2000 images


def slug(prompt: str | None) -> str:
    if prompt is None:
        return "source"
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:80]


def save_folder(x01: torch.Tensor, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    arr = (x01.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        Image.fromarray(np.ascontiguousarray(a)).save(out / f"{i:05d}.png")
    return out


def reference_dir(prompt: str | None, n: int = REF_COUNT, seed: int = REF_SEED, root: Path | None = None) -> Path:
    """Folder of n ground-truth PNGs of a prompt's target domain (None = source); written on first use.

    Any prompt pocket.prompts.resolve reads; a catalogue prompt's folder is named by its text, any other by its
    parsed spec (the images depend on nothing else, and slugs of long texts are cut at 80 characters)."""
    p = None if prompt is None else resolve(prompt)
    name = slug(None) if p is None else slug(p.text) if p in W.CATALOGUE else "attrs_" + spec_slug(p.spec)
    out = Path(root or CACHE / "refs") / f"{name}_n{n}_s{seed}"
    if not (out / ".complete").exists():
        # one writer (a file lock), into a temporary folder renamed into place: concurrent trials never read a
        # PNG another process is still writing (a partial file failed a metric once)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / ".complete").exists():
                tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                save_folder(W.reference_images(p, n, seed), tmp)
                (tmp / ".complete").write_text(p.text if p else "source")
                shutil.rmtree(out, ignore_errors=True)     # a partial folder an interrupted writer left
                tmp.rename(out)
    return out


def write_all(n: int = REF_COUNT, seed: int = REF_SEED, root: Path | None = None) -> dict[str, Path]:
    out = {"source": reference_dir(None, n, seed, root)}
    for p in W.CATALOGUE:
        out[p.text] = reference_dir(p.text, n, seed, root)
    return out
