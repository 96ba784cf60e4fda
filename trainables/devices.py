"""Devices, precisions and CPU threads by name: the one `resolve_device`, `DTYPES` table and `set_cpu_threads`."""
from __future__ import annotations

import os

import torch
from threadpoolctl import threadpool_limits

# BLAS/OpenMP libraries read these when they load: a library loaded after `set_cpu_threads` (scipy's own
# OpenBLAS, loaded by evaluation's FID) takes its pool size from them
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# config precision name -> torch dtype (guidance.precision, nada.precision, evaluation clip.precision)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device = "auto", field: str = "device") -> torch.device:
    """'auto' -> cuda when available, else cpu; an explicit cuda device without CUDA is an error naming `field`."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{field}={spec!r} but CUDA is not available here; use {field}=cpu or auto")
    return device


def set_cpu_threads(n: int) -> None:
    """Size every CPU thread pool of this process to `n` (train.threads): torch's intra-op pool, the BLAS/OpenMP
    pools already loaded (numpy's) and, through THREAD_ENV, those loaded later (scipy's). A pool sized to the
    machine while other trials share its cores costs evaluation's FID sqrtm 0.2-0.45 s instead of 0.01 s."""
    torch.set_num_threads(n)
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    threadpool_limits(limits=n)
