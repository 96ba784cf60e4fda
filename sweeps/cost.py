"""What a sweep costs before it runs, from the cost model (trainables.cost): per trial and in total.

    summary = sweep_cost(sweep)            # traces each distinct trial configuration once
    print(summary.text())                  # FLOPs per step, peak memory, roofline hours on the sweep's GPU
    fraction = gpu_fraction(summary, gpu)  # `resources.gpu: auto`: the share of one GPU a trial needs

Trials on a CPU (`train.device: cpu`, the pocket world) are estimated for this project's CPU thread; every
other trial for the sweep's GPU type. Packing keeps PACKING_MARGIN over the traced peak and reserves
CONTEXT_GB per trial for the CUDA context and the allocator's slack.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from trainables.config import AdaptConfig
from trainables.cost import gpu
from trainables.cost.model import CostReport, estimate

from .errors import SweepError

PACKING_MARGIN = 1.2     # traced peak x this (allocator fragmentation, cuDNN workspaces)
CONTEXT_GB = 1.0         # per trial: CUDA context, kernels, caching-allocator slack

# fields that change neither a step's work nor its memory (they are not traced twice)
_COST_NEUTRAL = ("name", "output_dir", "prompt", "source_prompt", "seed", "train.iterations", "train.sample_every",
                 "train.sample_count", "train.sample_seed", "train.sample_truncation", "train.checkpoint_every",
                 "train.threads", "optim", "guidance.cfg_scale", "guidance.t_min", "guidance.t_max",
                 "guidance.negative_prompt", "layers.lr", "train.truncation", "layers.truncation")


def _cost_key(cfg: AdaptConfig) -> str:
    data = cfg.model_dump()
    for dotted in _COST_NEUTRAL:
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    for reg in ("directional", "reconstruction", "lpips"):      # only whether a regularizer is on matters
        data["reg"][reg]["weight"] = data["reg"][reg]["weight"] > 0
    return json.dumps(data, sort_keys=True, default=str)


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


def sweep_cost(trials: list[AdaptConfig], gpu_type: str = "H100") -> SweepCost:
    """Trace each distinct configuration once (a few seconds each) and attach the report to every trial."""
    cache: dict[str, CostReport] = {}
    out = SweepCost(gpu_type=gpu(gpu_type).name)
    for cfg in trials:
        key = _cost_key(cfg)
        if key not in cache:
            cache[key] = estimate(cfg, gpus=(_device_of(cfg, out.gpu_type),))
        out.per_trial.append((cfg, cache[key]))
    return out


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
