"""Named GPUs for roofline estimates: dense peak throughput (no sparsity) and memory, from the vendors' data sheets.

fp32 is the CUDA-core FP32 peak (PyTorch runs fp32 matmuls without TF32 unless told to); bf16 the dense
tensor-core peak. These are ceilings: `trainables.cost` reports time at 100% of them per op, plus a fixed
cost per op (kernel launch on a GPU, dispatch on a CPU), and states the MFU that implies. "CPU" is this
project's 2-core CI machine running a trial on one thread, calibrated on the pocket demo (docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float      # dense BF16 tensor-core peak
    fp32_tflops: float      # FP32 (CUDA cores) peak
    bandwidth_tbs: float    # HBM / GDDR bandwidth, TB/s
    memory_gb: float        # device memory, GB (1e9 bytes)
    op_overhead_us: float = 4.0   # fixed time per op: kernel launch (GPU) or eager dispatch (CPU)
    is_gpu: bool = True


GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("H100", bf16_tflops=989.0, fp32_tflops=66.9, bandwidth_tbs=3.35, memory_gb=80.0),    # H100 SXM5
    GPU("H200", bf16_tflops=989.0, fp32_tflops=66.9, bandwidth_tbs=4.8, memory_gb=141.0),    # H200 SXM
    GPU("A100", bf16_tflops=312.0, fp32_tflops=19.5, bandwidth_tbs=2.039, memory_gb=80.0),   # A100 80GB SXM
    GPU("L4", bf16_tflops=121.0, fp32_tflops=30.3, bandwidth_tbs=0.3, memory_gb=24.0),
)}
# one CPU thread as the pocket trials use it (AVX2 FMA at ~3 GHz: ~96 GFLOP/s peak, ~40% sustained on small convs)
CPU = GPU("CPU", bf16_tflops=0.04, fp32_tflops=0.04, bandwidth_tbs=0.01, memory_gb=24.0, op_overhead_us=10.0,
          is_gpu=False)


def gpu(name: str) -> GPU:
    if name.upper() == "CPU":
        return CPU
    try:
        return GPUS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}: one of {', '.join(GPUS)} (or CPU)") from None
