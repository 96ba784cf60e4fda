"""A traced step's cost, as a value: what `estimate` returns and what the cost cache stores. Torch-free."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trainables.cost.gpus import gpu


@dataclass
class CostReport:
    config_name: str
    step_flops: int                                    # one adaptation step
    by_component: dict[str, int]                       # "unet.forward", "vae.backward", "generator.forward", ...
    peak_bytes: int                                    # live tensor bytes at the step's peak (weights included)
    peak_at: str                                       # the component running at the peak ("vae.backward")
    weight_bytes: int                                  # parameters and buffers of every model
    precision: str                                     # the critics' precision
    iterations: int
    step_seconds_by_gpu: dict[str, float]              # roofline, each op at its own bound, 100% of peak
    eval_flops: int = 0                                # the evaluation stage (all samples)
    eval_seconds_by_gpu: dict[str, float] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)

    def step_seconds(self, gpu_name: str) -> float:
        return self.step_seconds_by_gpu[gpu(gpu_name).name]

    def run_seconds(self, gpu_name: str) -> float:
        name = gpu(gpu_name).name
        return self.iterations * self.step_seconds_by_gpu[name] + self.eval_seconds_by_gpu.get(name, 0.0)

    def mfu(self, gpu_name: str) -> float:
        """The model FLOPs utilisation the roofline time implies (vs the dense peak of the critics' precision)."""
        g = gpu(gpu_name)
        peak = g.bf16_tflops if self.precision != "fp32" else g.fp32_tflops
        return self.step_flops / (self.step_seconds(gpu_name) * peak * 1e12)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "CostReport":
        return cls(**data)
