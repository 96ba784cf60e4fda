"""Loop callbacks: how step metrics, grids and checkpoints leave the training loop.

The sweep layer connects these to Ray Tune and MLflow; without Ray the loop writes metrics.jsonl.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


@dataclass
class AdaptResult:
    generator_path: Path          # adapted generator, rosinality format
    final_grid_path: Path | None  # frozen (top) vs adapted (bottom) on the fixed grid latents
    output_dir: Path
    steps: int                    # iterations completed in total (including before a resume)
    metrics: dict[str, float] = field(default_factory=dict)  # last step's metrics
    phases: dict[str, float] = field(default_factory=dict)   # wall seconds: {"load": ..., "adapt": ...}


class Callback:
    """Override what you need; every hook is optional."""

    def on_start(self, step: int, config: Any) -> None: ...
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_samples(self, step: int, grid_path: Path) -> None: ...
    def on_checkpoint(self, step: int, ckpt_dir: Path) -> None: ...
    def on_end(self, result: AdaptResult) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)

    def _call(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(*args)

    def on_start(self, step, config):
        self._call("on_start", step, config)

    def on_step(self, step, metrics):
        self._call("on_step", step, metrics)

    def on_samples(self, step, grid_path):
        self._call("on_samples", step, grid_path)

    def on_checkpoint(self, step, ckpt_dir):
        self._call("on_checkpoint", step, ckpt_dir)

    def on_end(self, result):
        self._call("on_end", result)


class JsonlMetrics(Callback):
    """Appends one JSON line per step to `path` (the Ray-free record of a run)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_step(self, step, metrics):
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
