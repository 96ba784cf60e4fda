"""What a run costs before it runs: one adaptation step traced under fake tensors (no GPU, no weights).

    from trainables.cost import estimate
    report = estimate(cfg)        # FLOPs per component, peak tensor bytes, roofline seconds per named GPU

`python -m trainables.cost --config FILE [--set k=v ...]` prints it; docs/benchmarks.md has the tables.
"""
from .gpus import GPU, GPUS, gpu
from .model import CostReport, estimate

__all__ = ["GPU", "GPUS", "CostReport", "estimate", "gpu"]
