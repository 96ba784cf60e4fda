"""What a run costs before it runs: one adaptation step traced under fake tensors (no GPU, no weights).

    from trainables.cost.model import estimate
    report = estimate(cfg)        # FLOPs per component, peak tensor bytes, roofline seconds per named GPU

`python -m trainables.cost --config FILE [--set k=v ...]` prints it; docs/benchmarks.md has the tables.
The package itself only exports the GPU table (torch-free, for config validation); the model is
`trainables.cost.model`.
"""
from trainables.cost.gpus import CPU, GPU, GPUS, gpu

__all__ = ["CPU", "GPU", "GPUS", "gpu"]
