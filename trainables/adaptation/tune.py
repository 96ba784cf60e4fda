"""Ray Tune glue for the adaptation loop: report metrics, checkpoint, resume. A thin shell around `adapt`.

Inside a Tune function trainable:

    restored = restore_checkpoint(local_dir)              # (loop checkpoint dir or None, saved state)
    report = TuneReportCallback(state=lambda: {"mlflow_run_id": tracker.run_id})
    adapt(cfg, callbacks=[report, ...], resume_from=restored.resume_from)

Only `ray.tune.report` / `ray.tune.get_checkpoint` / `ray.tune.Checkpoint` are used: `ray.train.report`
inside a Tune function fails the trial (docs/../shared/environment.md).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trainables.adaptation.callbacks import AdaptResult, Callback

log = logging.getLogger(__name__)

STATE_FILE = "sweep_trial.json"   # written into every Tune checkpoint beside the loop's train_state.pt


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a directory with hard links where the filesystem allows (checkpoints can be large)."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)


@dataclass
class Restored:
    resume_from: Path | None               # the loop checkpoint directory to pass to adapt(resume_from=...)
    state: dict[str, Any] = field(default_factory=dict)  # what TuneReportCallback stored (mlflow_run_id, step)


def restore_checkpoint(local_dir: str | Path) -> Restored:
    """Materialise `ray.tune.get_checkpoint()` (if any) under `local_dir` and read its state file."""
    from ray import tune  # late: sweeps/launcher sets Ray's env before Ray loads, after importing us

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return Restored(None, {})
    local_dir = Path(local_dir)
    with ckpt.as_directory() as d:
        d = Path(d)
        state = json.loads((d / STATE_FILE).read_text()) if (d / STATE_FILE).is_file() else {}
        target = local_dir / f"step_{int(state.get('step', 0)):06d}"
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(d, target)
    return Restored(target, state)


class TuneReportCallback(Callback):
    """Reports the loop's step metrics to Tune (with `step`), at most every `min_interval_s` seconds, and
    at every loop checkpoint together with a Tune checkpoint of that directory plus `state()`.

    The last step's metrics are always reported (with the checkpoint, or at on_end), so a scheduler such
    as ASHA (time_attr='step') sees every checkpointed step.
    """

    def __init__(self, state: Callable[[], dict[str, Any]] | None = None, min_interval_s: float = 0.5,
                 staging_dir: str | Path | None = None, final_metrics: Callable[[AdaptResult], dict] | None = None):
        self.state = state or (lambda: {})
        self.min_interval_s = min_interval_s
        self.staging_dir = Path(staging_dir) if staging_dir else None
        self.final_metrics = final_metrics
        self._pending: tuple[int, dict[str, float]] | None = None
        self._last = 0.0
        self.reports = 0

    def _report(self, step: int, metrics: dict[str, float], checkpoint_dir: Path | None = None,
                extra: dict[str, Any] | None = None) -> None:
        from ray import tune  # late: sweeps/launcher sets Ray's env before Ray loads, after importing us

        payload = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        payload["step"] = int(step)
        payload.update(extra or {})
        if checkpoint_dir is None:
            tune.report(payload)
        else:
            staging_root = self.staging_dir or checkpoint_dir.parent
            staging = staging_root / f".tune_{checkpoint_dir.name}"
            if staging.exists():
                shutil.rmtree(staging)
            _link_tree(checkpoint_dir, staging)
            (staging / STATE_FILE).write_text(json.dumps({"step": int(step), **self.state()}))
            try:
                tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(staging)))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        self._last = time.monotonic()
        self.reports += 1

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._pending = (step, dict(metrics))
        if time.monotonic() - self._last >= self.min_interval_s:
            self._report(step, metrics)
            self._pending = None

    def on_checkpoint(self, step: int, ckpt_dir: Path) -> None:
        metrics = self._pending[1] if self._pending and self._pending[0] == step else {}
        self._report(step, metrics, checkpoint_dir=Path(ckpt_dir))
        self._pending = None

    def flush(self, extra: dict[str, Any] | None = None) -> None:
        """Report what is pending (and `extra`, e.g. evaluation metrics)."""
        if self._pending is not None or extra:
            step, metrics = self._pending or (0, {})
            self._report(step, metrics, extra=extra)
            self._pending = None

    def on_end(self, result: AdaptResult) -> None:
        if self._pending is None:
            self._pending = (result.steps, dict(result.metrics))
        else:
            self._pending = (result.steps, {**result.metrics, **self._pending[1]})
        # the final report is left pending for the trial, which may add evaluation metrics before flushing


class TrackingCallback(Callback):
    """Loop -> MLflow: step metrics, sample grids, and the adapted generator at the end.

    Exactly once across kills: a run that continues (the loop resumed from a checkpoint, or `continues_run`:
    a retried trial reopened an MLflow run that already has points) replays the steps between its checkpoint
    and the moment it died. At the first step it is given, the callback drains the tracker's spool, asks
    MLflow for the highest step recorded for that step's metrics (one step's metrics travel in one batch, so
    their highest steps agree) and drops every step up to it, and the sample grids MLflow already holds for
    those steps. Resume is bitwise, so the dropped points are exact duplicates.
    """

    def __init__(self, tracker: Any, log_generator_max_mb: float = 256.0, continues_run: bool = False,
                 resume_timeout_s: float = 120.0):
        self.tracker = tracker
        self.log_generator_max_mb = log_generator_max_mb
        self.continues_run = continues_run
        self.resume_timeout_s = resume_timeout_s   # how long a continuing run waits for its spool to drain
        self.delivered_step: int | None = None     # steps <= this are in MLflow already (known after 1st step)
        self.dropped_steps = 0
        self._logged_samples: set[str] = set()

    def on_start(self, step: int, config: Any) -> None:
        if step > 0:
            self.continues_run = True

    def _find_delivered_step(self, keys: list[str]) -> int:
        """max over `keys` of the highest step MLflow holds, after the spool is drained (0: none)."""
        if not self.continues_run:
            return 0
        drained = self.tracker.flush(self.resume_timeout_s)
        try:
            steps = [self.tracker.last_logged_step(k) for k in keys]
            run_id = self.tracker.run_id
            listing = self.tracker.client().list_artifacts(run_id, "samples") if run_id else []
        except Exception as exc:
            log.warning("MLflow cannot say which steps run %s already holds (%s: %s); replayed steps are logged "
                        "again and may appear twice", self.tracker.run_id, type(exc).__name__, exc)
            return 0
        if not drained:
            log.warning("MLflow run %s: the spool did not drain in %.0fs; steps still spooled from the previous "
                        "attempt may appear twice", self.tracker.run_id, self.resume_timeout_s)
        self._logged_samples = {Path(a.path).name for a in listing}
        return max((s for s in steps if s is not None), default=0)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.delivered_step is None:
            self.delivered_step = self._find_delivered_step(list(metrics))
        if step <= self.delivered_step:   # a replayed step MLflow already holds
            self.dropped_steps += 1
            return
        self.tracker.log_metrics(metrics, step=step)

    def on_samples(self, step: int, grid_path: Path) -> None:
        replayed = self.delivered_step is not None and step <= self.delivered_step
        if replayed and Path(grid_path).name in self._logged_samples:
            return
        self.tracker.log_artifact(grid_path, "samples")

    def on_checkpoint(self, step: int, ckpt_dir: Path) -> None:
        self.tracker.set_tags({"last_checkpoint_step": step})

    def on_end(self, result: AdaptResult) -> None:
        path = Path(result.generator_path)
        self.tracker.set_tags({"artifact.generator_path": str(path.resolve()), "steps": result.steps})
        if path.is_file() and path.stat().st_size <= self.log_generator_max_mb * 2**20:
            self.tracker.log_artifact(path, "generator")
        config = Path(result.output_dir) / "config.yaml"
        if config.is_file():
            self.tracker.log_artifact(config, "config")
