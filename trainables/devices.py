"""Devices and precisions by name: the one `resolve_device` and the one `DTYPES` table of the project."""
from __future__ import annotations

import torch

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
