"""The resource sanity bound: refuse batch sizes no machine holds (a bound, not a memory estimate; the one
place to replace with a real estimate, see trainables/cost for the model of a step). Torch-free, so a sweep
is checked against it while it is loaded.
"""
from __future__ import annotations

from trainables.config import AdaptConfig

# A batch whose images ALONE (fp32, 3 channels, at the side the step works at, every render of the step)
# exceed this cannot be held by any single device or ordinary host: it is a typo, refused at validation.
# 1 TiB is ~7x an H200's 141 GB, so every batch a real device runs passes; the activations of the networks
# come on top, so this refuses only nonsense (e.g. train.batch_size: 100000000).
MEMORY_CEILING_BYTES = 1 << 40
from trainables.guidance.nada_settings import NADA_CLIP_SIDE  # noqa: F401 - re-exported (preflight, tests)
from trainables.registry import GUIDANCE


def batch_floor_bytes(batch: int, side: int, renders: int = 1) -> int:
    """Lower bound on a batch's memory: batch x renders x 3 x side^2 x 4 bytes (its fp32 images only)."""
    return int(batch) * int(renders) * 3 * int(side) ** 2 * 4


def batch_problem(field: str, batch: int, side: int, renders: int = 1, where: str = "") -> str | None:
    """A refusal naming `field` and the fix when `batch_floor_bytes` exceeds MEMORY_CEILING_BYTES, else None."""
    need = batch_floor_bytes(batch, side, renders)
    if need <= MEMORY_CEILING_BYTES:
        return None
    limit = MEMORY_CEILING_BYTES // batch_floor_bytes(1, side, renders)
    return (f"{field}: {batch} is more than any device holds: its {renders} x {side}x{side} fp32 image(s) per "
            f"item{where} alone need {need / 2**40:.1f} TiB (bound {MEMORY_CEILING_BYTES / 2**40:g} TiB, "
            f"trainables/resources.py MEMORY_CEILING_BYTES); use a batch of at most {limit} (real runs use 1-16)")


def train_side(cfg: AdaptConfig) -> int | None:
    """The side the training step's critic works at, as its method declares (`critic_side`: Fusion's
    guidance.image_size, NADA's CLIP input); None when a method of one's own does not say."""
    side = getattr(GUIDANCE.declaration(cfg.method), "critic_side", None)   # optional for one's own methods
    return side(cfg) if side is not None else None


def resource_problems(cfg: AdaptConfig) -> list[str]:
    """Batch sizes no device holds (each step renders the frozen and the trained generator: 2 renders)."""
    side = train_side(cfg)
    if side is None:
        return []
    where = f" (at the critic's {side} px)"
    found = [batch_problem("train.batch_size", cfg.train.batch_size, side, 2, where)]
    if cfg.layers.k > 0:
        found.append(batch_problem("layers.batch_size", cfg.layers.batch_size or cfg.train.batch_size, side, 2,
                                   where))
    return [p for p in found if p]
