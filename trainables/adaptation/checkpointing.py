"""Resumable training state: trainable weights, optimiser, step and every RNG, written atomically.

A checkpoint also carries the config it was trained with (`config_record`): a hash of the fields that
decide the result and the full YAML dump. Resuming under a config whose hash differs is refused with the
differing fields listed (`ConfigChangedError`), unless the resume is forced (`ForcedResume(path)`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel

from trainables.config import flatten

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"

# Fields that place or pace a run without changing what it computes: where it writes (name, output_dir),
# where and how fast it runs (train.device, train.threads; the same arithmetic, last bits aside) and how
# often it records (train.sample_every, train.checkpoint_every: grids and checkpoints draw from their own
# RNGs, never from the training streams). Every other field is part of the result's identity.
RESULT_NEUTRAL_FIELDS = ("name", "output_dir", "train.device", "train.threads", "train.sample_every",
                         "train.checkpoint_every")


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


class ConfigChangedError(ValueError):
    """Resuming a checkpoint under a config that would change the result (the message lists the fields)."""


class ForcedResume(type(Path())):
    """A checkpoint path whose config check is waived: `adapt(cfg, resume_from=ForcedResume(path))` continues
    even if `cfg` differs from the checkpoint's config (`python -m trainables adapt --resume force`)."""


def result_fields(config: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The dotted fields that decide a run's result: the flattened config minus RESULT_NEUTRAL_FIELDS."""
    return {k: v for k, v in flatten(config).items() if k not in RESULT_NEUTRAL_FIELDS}


def config_hash(config: BaseModel | dict[str, Any]) -> str:
    """sha256 of the result fields as canonical JSON (sorted keys)."""
    text = json.dumps(result_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_record(config: BaseModel) -> dict[str, str]:
    """What a checkpoint stores about its config: the hash of the result fields and the full YAML dump."""
    return {"sha256": config_hash(config), "yaml": yaml.safe_dump(config.model_dump(), sort_keys=False)}


class _Absent:
    """A field one of the two configs does not have (the schema changed between them)."""

    def __repr__(self) -> str:
        return "<absent>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Absent)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`dotted.path: old -> new` for every result field that differs (`<absent>` for a missing field)."""
    a, b = result_fields(old), result_fields(new)
    missing = _Absent()
    return [f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}" for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing)]


def check_resume_config(state: dict[str, Any], config: BaseModel, where: Path, force: bool = False) -> None:
    """Refuse to resume `state` (read from `where`) under a `config` that changes the result."""
    record = state.get("config")
    if record is None:
        log.warning("%s: this checkpoint predates config records; resuming without checking the config", where)
        return
    if record.get("sha256") == config_hash(config):
        return
    # JSON types on both sides: a tuple field (guidance.sdxl.*) reads back from the YAML as a list
    changes = config_changes(yaml.safe_load(record["yaml"]) or {}, config.model_dump(mode="json"))
    if force:
        log.warning("%s: resuming under a changed config (forced): %s", where, "; ".join(changes))
        return
    lines = "\n".join(f"  - {c}" for c in changes) or "  - (no field differs; the record's hash does not match)"
    raise ConfigChangedError(
        f"{where}: this checkpoint was trained with another config; resuming would mix two runs. "
        f"Changed fields (checkpoint -> now):\n{lines}\n"
        f"Restore those values, start a fresh run in another output_dir, or continue anyway with "
        f"`--resume force` (adapt(resume_from=ForcedResume(path)))."
    )


def save_train_state(ckpt_dir: Path, *, step: int, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     rng: torch.Generator, extra: dict[str, Any] | None = None,
                     config: BaseModel | None = None) -> Path:
    """Write `ckpt_dir/train_state.pt` via a temporary directory and a rename, so a crash never leaves
    a half-written checkpoint behind. `config` is recorded for the resume check (config_record)."""
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
            "config": config_record(config) if config is not None else None,
        },
        tmp / STATE_FILE,
    )
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    os.replace(tmp, ckpt_dir)
    return ckpt_dir


def load_train_state(ckpt_dir: str | Path, config: BaseModel | None = None) -> dict[str, Any]:
    """Read a checkpoint; with `config`, refuse it if it was trained under a config that changes the result
    (check_resume_config), unless `ckpt_dir` is a ForcedResume."""
    path = Path(ckpt_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no training state here; resume_from must be a checkpoint directory written by the loop "
            f"(output_dir/checkpoints/step_NNNNNN)"
        )
    # weights_only=False: the RNG states hold numpy/python objects; the file is one this loop wrote.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if config is not None:
        check_resume_config(state, config, Path(ckpt_dir), force=isinstance(ckpt_dir, ForcedResume))
    return state


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    steps = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return steps[-1] if steps else None
