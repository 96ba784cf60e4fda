"""Shared helpers of the pocket build: paths, reproducibility, the build record."""
from __future__ import annotations

import fcntl
import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"                 # committed stand-in models
JUDGE_DIR = MODELS / "judge"
SD_DIR = MODELS / "sd"                   # diffusers Stable Diffusion layout
CLIP_DIR = MODELS / "clip"               # open_clip JSON config + weights
CLIP_NAME = "pocket-clip"                # open_clip model name (= the JSON file's stem)
CLIP_CONFIG = CLIP_DIR / f"{CLIP_NAME}.json"
CLIP_WEIGHTS = CLIP_DIR / "open_clip_model.safetensors"
STYLEGAN_PATH = MODELS / "stylegan2" / "pocket-circles-32.pt"
BUILD_RECORD = MODELS / "build.json"     # steps, wall times and measured numbers of the last build
CACHE = Path(os.environ.get("POCKET_CACHE", "/tmp/pocket-cache"))   # latent pools, reference sets
# torch intra-op threads per build process; part of what makes a build reproducible. 1 when the three chains
# run side by side (on shared cores 2 threads spun ~3x slower); POCKET_THREADS=2 for one chain alone on idle
# cores (measured 1.8x faster per VAE step).
THREADS = int(os.environ.get("POCKET_THREADS", "1"))


def seed_everything(seed: int, threads: int = THREADS) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def record(stage: str, rows: list | None = None, fresh_rows: bool = False, **info) -> None:
    """Merge one stage's numbers into models/build.json (what docs/pocket.md quotes); `rows` are appended to
    the stage's list of rows (started anew with fresh_rows), inside the lock, so parallel probes keep all."""
    MODELS.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:        # stages run in parallel processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(BUILD_RECORD.read_text()) if BUILD_RECORD.exists() else {}
        entry = data.setdefault(stage, {})
        entry.update(info)
        if rows is not None:
            entry["rows"] = ([] if fresh_rows else entry.get("rows", [])) + rows
        BUILD_RECORD.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def timer():
    t = {"start": time.time()}
    yield t
    t["seconds"] = round(time.time() - t["start"], 1)


def log(stage: str, msg: str) -> None:
    print(f"[pocket {stage} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched, clip_params=None) -> None:
    """One training step of every pocket trainer: backward, optional grad-norm clip at 1, step, LR schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    opt.step()
    sched.step()
