"""Traced costs on disk, keyed by everything a trace depends on, so that `sweeps validate` traces a configuration
once per machine, not once per call. Torch-free: a warm validate never imports the cost model.

What the key holds (`cost_key`):
- the configuration with the fields that change neither a step's work nor its memory removed (COST_NEUTRAL;
  a regularizer counts only as on or off), and the GPU types asked for;
- the references' identity on this machine: for every path in the config its size and modification time (a
  directory: those of the JSON configs in it), for a hub id the cached snapshot's revision (or 'absent': the
  cost model then assumes SD 1.x, and a later download must not be served that assumption);
- the versions of torch, diffusers, transformers, open_clip and torchvision, and a digest of the project's
  `trainables/` sources and trainables/cost/architectures/ (the cost model, the step, the networks, the bundled
  configs: any change retraces).
A corrupt or unreadable entry is a miss. The folder is `$SGF_COST_CACHE`, default ~/.cache/sgf-cost.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from trainables.config import AdaptConfig
from trainables.cost.report import CostReport

CACHE_ENV = "SGF_COST_CACHE"
DEFAULT_DIR = "~/.cache/sgf-cost"
FORMAT = 1
LIBRARIES = ("torch", "diffusers", "transformers", "open_clip_torch", "torchvision")
TRAINABLES = Path(__file__).resolve().parents[1]

# fields that change neither a step's work nor its memory (configurations differing only here trace once)
COST_NEUTRAL = ("name", "output_dir", "prompt", "source_prompt", "seed", "train.iterations", "train.sample_every",
                "train.sample_count", "train.sample_seed", "train.sample_truncation", "train.checkpoint_every",
                "train.threads", "optim", "guidance.cfg_scale", "guidance.t_min", "guidance.t_max",
                "guidance.negative_prompt", "layers.lr", "train.truncation", "layers.truncation")


def cost_config(cfg: AdaptConfig) -> dict[str, Any]:
    """The configuration as far as its traced cost goes (COST_NEUTRAL removed, regularizers as on/off)."""
    data = cfg.model_dump()
    for dotted in COST_NEUTRAL:
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    for reg in ("directional", "reconstruction", "lpips"):
        data["reg"][reg]["weight"] = data["reg"][reg]["weight"] > 0
    return data


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _hub_revision(ref: str) -> str | None:
    """The cached snapshot revision of a hub id ('org/name[@rev]'), 'absent' when not cached; None if no hub id."""
    name = ref.split("@")[0]
    if name.count("/") != 1 or name.startswith(("/", ".", "~")) or Path(name).exists():
        return None
    from huggingface_hub import constants  # late: only for hub ids; the package is light but not needed otherwise
    refs = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs"
    return "".join(sorted(p.read_text().strip() for p in refs.glob("*"))) if refs.is_dir() else "absent"


def references_stamp(cfg: AdaptConfig) -> list:
    """The identity on this machine of every file, folder and hub id the configuration names."""
    stamps = []
    for value in sorted(set(_strings(cost_config(cfg)))):
        path = Path(value).expanduser()
        try:
            if path.is_file():
                stamps.append(_stat(path))
            elif path.is_dir():
                configs = [*path.glob("*.json"), *path.glob("*/*.json")]     # a diffusers folder's configs
                stamps.append([str(path), *sorted(_stat(p) for p in configs if p.is_file())])
            elif (rev := _hub_revision(value)) is not None:
                stamps.append([value, rev])
        except OSError:
            stamps.append([value, "unreadable"])
    return stamps


@functools.lru_cache(maxsize=1)
def environment_stamp() -> dict[str, str]:
    """Library versions and a digest of the trainables/ sources (computed once per process)."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    digest = hashlib.sha256()
    # the sources, and the bundled architecture configs the cost model builds unreachable models from
    for path in sorted([*TRAINABLES.rglob("*.py"), *(TRAINABLES / "cost" / "architectures").rglob("*.json")]):
        digest.update(str(path.relative_to(TRAINABLES)).encode() + b"\0" + path.read_bytes())
    return {**versions, "trainables": digest.hexdigest()}


def cost_key(cfg: AdaptConfig, gpus: tuple[str, ...]) -> str:
    payload = {"format": FORMAT, "config": cost_config(cfg), "gpus": list(gpus),
               "references": references_stamp(cfg), "environment": environment_stamp()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_DIR).expanduser()


def load(key: str) -> CostReport | None:
    path = cache_dir() / f"{key}.json"
    try:
        return CostReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None        # absent, unreadable or of another format: traced again


def store(key: str, report: CostReport) -> None:
    """Write atomically (a concurrent validate reads a whole entry or none); a read-only cache is skipped."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as fh:
            json.dump(report.to_json(), fh)
        os.replace(fh.name, folder / f"{key}.json")
    except OSError:
        pass
