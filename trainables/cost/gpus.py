"""Named GPUs for roofline estimates: dense peak throughput (no sparsity) and memory, from the vendors' data sheets.

fp32 is the CUDA-core FP32 peak (PyTorch runs fp32 matmuls without TF32 unless told to); bf16 the dense
tensor-core peak. These are ceilings: `trainables.cost` reports time at 100% of them per op and states the
MFU that implies.
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


GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("H100", bf16_tflops=989.0, fp32_tflops=66.9, bandwidth_tbs=3.35, memory_gb=80.0),    # H100 SXM5
    GPU("H200", bf16_tflops=989.0, fp32_tflops=66.9, bandwidth_tbs=4.8, memory_gb=141.0),    # H200 SXM
    GPU("A100", bf16_tflops=312.0, fp32_tflops=19.5, bandwidth_tbs=2.039, memory_gb=80.0),   # A100 80GB SXM
    GPU("L4", bf16_tflops=121.0, fp32_tflops=30.3, bandwidth_tbs=0.3, memory_gb=24.0),
)}


def gpu(name: str) -> GPU:
    try:
        return GPUS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}: one of {', '.join(GPUS)}") from None
