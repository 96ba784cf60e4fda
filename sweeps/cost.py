"""What a sweep costs before it runs, from the cost model (trainables.cost): per trial and in total.

    summary = sweep_cost(sweep)            # traces each distinct trial configuration once
    print(summary.text())                  # FLOPs per step, peak memory, roofline hours on the sweep's GPU
    fraction = gpu_fraction(summary, gpu)  # `resources.gpu: auto`: the share of one GPU a trial needs

Trials on a CPU (`train.device: cpu`, the pocket world) are estimated for this project's CPU thread; every
other trial for the sweep's GPU type. Packing keeps PACKING_MARGIN over the traced peak and reserves
CONTEXT_GB per trial for the CUDA context and the allocator's slack.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from multiprocessing import get_context

from trainables.config import AdaptConfig
from trainables.cost import cache, gpu
from trainables.cost.report import CostReport

from .errors import SweepError

PACKING_MARGIN = 1.2     # traced peak x this (allocator fragmentation, cuDNN workspaces)
CONTEXT_GB = 1.0         # per trial: CUDA context, kernels, caching-allocator slack

def _device_of(cfg: AdaptConfig, gpu_type: str) -> str:
    return "CPU" if cfg.train.device == "cpu" else gpu_type


@dataclass
class SweepCost:
    gpu_type: str
    per_trial: list[tuple[AdaptConfig, CostReport]] = field(default_factory=list)

    def hours(self) -> dict[str, float]:
        """Roofline hours of the whole sweep per device kind ('H100' GPU-hours, 'CPU' thread-hours)."""
        out: dict[str, float] = {}
        for cfg, report in self.per_trial:
            device = _device_of(cfg, self.gpu_type)
            out[device] = out.get(device, 0.0) + report.run_seconds(device) / 3600
        return out

    def text(self) -> str:
        if not self.per_trial:
            return "cost: no trials"
        flops = [r.step_flops for _, r in self.per_trial]
        peaks = [r.peak_bytes for _, r in self.per_trial]
        hours = ", ".join(f"{h:.3g} {'GPU' if d != 'CPU' else 'CPU-thread'}-hours on {d}" for d, h in self.hours().items())
        first = self.per_trial[0][1]
        lines = [f"cost per step: {min(flops) / 1e12:.3g}-{max(flops) / 1e12:.3g} TFLOP; peak memory "
                 f"{min(peaks) / 1e9:.3g}-{max(peaks) / 1e9:.3g} GB (traced, docs/benchmarks.md)",
                 f"cost of the sweep (roofline at 100% of peak per op, a lower bound): {hours}"]
        if first.assumptions:
            lines.append("cost assumes: " + "; ".join(dict.fromkeys(a for _, r in self.per_trial for a in r.assumptions)))
        return "\n".join(lines)


def sweep_cost(trials: list[AdaptConfig], gpu_type: str = "H100", jobs: int | None = None) -> SweepCost:
    """The cost of every trial: each distinct configuration traced once per machine (trainables/cost/cache.py,
    on disk), the missing ones in up to `jobs` processes at a time (default: the machine's cores)."""
    out = SweepCost(gpu_type=gpu(gpu_type).name)
    keys = [cache.cost_key(cfg, (_device_of(cfg, out.gpu_type),)) for cfg in trials]
    reports: dict[str, CostReport | None] = {key: cache.load(key) for key in keys}
    missing = {key: (cfg, (_device_of(cfg, out.gpu_type),)) for key, cfg in zip(keys, trials) if reports[key] is None}
    for key, report in _trace(missing, jobs).items():
        reports[key] = report
        cache.store(key, report)
    out.per_trial = [(cfg, reports[key]) for cfg, key in zip(trials, keys)]
    return out


WHOLE_ENV = "SGF_COST_WHOLE"   # =1: trace two whole steps per configuration (the composed trace's reference)


def _estimate(cfg: AdaptConfig, gpus: tuple[str, ...], selection=None) -> CostReport:
    from trainables.cost.model import estimate  # late: torch, diffusers, open_clip (~6 s); only on a cache miss
    return estimate(cfg, gpus=gpus, compose=os.environ.get(WHOLE_ENV) != "1", selection=selection)


def _selection(cfg: AdaptConfig):
    from trainables.cost.model import trace_selection  # late: as _estimate; in the second process
    return trace_selection(cfg)


def _trace_one(cfg: AdaptConfig, gpus: tuple[str, ...], jobs: int) -> CostReport:
    """One configuration: traced here; with a layer-selection pass and a second core, that pass is traced in a
    second process meanwhile (trainables.cost.model.trace_selection: both pay the imports at once, and the pass
    is a third of a selection step's trace) and counted where it runs (`estimate(selection=...)`)."""
    if jobs < 2 or cfg.layers.k == 0 or os.environ.get(WHOLE_ENV) == "1":
        return _estimate(cfg, gpus)
    with get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(_selection, (cfg,))
        return _estimate(cfg, gpus, selection=lambda: pending.get())


def _trace(missing: dict[str, tuple[AdaptConfig, tuple[str, ...]]], jobs: int | None) -> dict[str, CostReport]:
    """Trace each configuration: a single one in this process, several in fresh processes, one per core (each
    pays the ~6 s of imports once, in parallel; a trace is CPU-bound Python, so processes, not threads)."""
    cores = jobs or os.cpu_count() or 1
    jobs = max(1, min(cores, len(missing)))
    if jobs < 2:
        return {key: _trace_one(cfg, gpus, cores) for key, (cfg, gpus) in missing.items()}
    # a Pool, not a ProcessPoolExecutor: leaving the block terminates the workers once every result is in (an
    # executor waits for them to exit, and a worker that traced takes ~4 s to tear its interpreter down)
    # the longest traces first (a layer-selection pass adds about a third), so that none is left for the end
    order = sorted(missing.items(), key=lambda item: item[1][0].layers.k > 0, reverse=True)
    with get_context("spawn").Pool(jobs) as pool:
        pending = {key: pool.apply_async(_estimate, (cfg, gpus)) for key, (cfg, gpus) in order}
        return {key: pending[key].get() for key in missing}


def gpu_fraction(cost: SweepCost, gpu_type: str) -> float:
    """The share of one `gpu_type` each trial gets under `resources.gpu: auto`: 1/n for the largest n such that
    n trials' (peak x margin + context) fit its memory; 1.0 for a trial that needs all of it. Raises with the
    knobs that would make it fit when even one trial does not."""
    device = gpu(gpu_type)
    need = max(r.peak_bytes for _, r in cost.per_trial) * PACKING_MARGIN + CONTEXT_GB * 1e9
    per_gpu = math.floor(device.memory_gb * 1e9 / need)
    if per_gpu < 1:
        raise ValueError(
            f"a trial needs about {need / 1e9:.1f} GB (traced peak x {PACKING_MARGIN} + {CONTEXT_GB} GB) but a "
            f"{device.name} has {device.memory_gb:g} GB: lower train.batch_size, use guidance.precision: bf16 with "
            f"guidance.engine: fast, keep train.recompute_generator: true, lower guidance.image_size, or choose "
            f"a larger resources.gpu_type")
    return 1.0 / per_gpu


def resolve_auto_gpu(sweep) -> float | None:
    """`resources.gpu: auto` -> the fraction for this sweep's trials (the sweep's resources are updated in
    place); None when the sweep gives a number. A sweep of CPU trials gets 0. Raises a SweepError naming
    the file and line when a trial cannot fit its `gpu_type`."""
    
    res = sweep.spec.resources
    if res.gpu != "auto":
        return None
    configs = [t.config for t in sweep.trials]
    if all(c.train.device == "cpu" for c in configs):
        fraction = 0.0
    else:
        try:
            fraction = gpu_fraction(sweep_cost([c for c in configs if c.train.device != "cpu"], res.gpu_type),
                                    res.gpu_type)
        except ValueError as exc:
            raise SweepError(f"{sweep.marks.where(('resources', 'gpu'))}: resources.gpu: auto: {exc}") from None
    sweep.spec.resources = res.model_copy(update={"gpu": fraction})
    return fraction
