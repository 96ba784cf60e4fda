"""Resumable training state: trainable weights, optimiser, step and every RNG, written atomically."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "train_state.pt"


def capture_rng(rng: torch.Generator) -> dict[str, Any]:
    state = {
        "loop": rng.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(rng: torch.Generator, state: dict[str, Any]) -> None:
    rng.set_state(state["loop"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(ckpt_dir: Path, *, step: int, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     rng: torch.Generator, extra: dict[str, Any] | None = None) -> Path:
    """Write `ckpt_dir/train_state.pt` via a temporary directory and a rename, so a crash never leaves
    a half-written checkpoint behind."""
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "step": step,
            "generator": generator.state_dict(),
            "optimizer": optimizer.state_dict(),
            "requires_grad": [n for n, p in generator.named_parameters() if p.requires_grad],
            "rng": capture_rng(rng),
            "extra": extra or {},
        },
        tmp / STATE_FILE,
    )
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    os.replace(tmp, ckpt_dir)
    return ckpt_dir


def load_train_state(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no training state here; resume_from must be a checkpoint directory written by the loop "
            f"(output_dir/checkpoints/step_NNNNNN)"
        )
    # weights_only=False: the RNG states hold numpy/python objects; the file is one this loop wrote.
    return torch.load(path, map_location="cpu", weights_only=False)


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    steps = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return steps[-1] if steps else None
