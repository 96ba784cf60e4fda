"""Check every model a config needs before anything is loaded: fail fast, all problems at once.

Used by `python -m trainables adapt` and by the sweep launcher before any trial starts. Resolution never
downloads (`allow_download=False`): a missing model is reported with where we looked and the exact command
that would fetch it (trainables.refs).

`resource_problems` refuses batch sizes no machine holds (a sanity bound, not a memory estimate; the one
place to replace with a real estimate): see `batch_floor_bytes`.
"""
from __future__ import annotations

from pathlib import Path

from .config import AdaptConfig
from .errors import ModelNotFoundError
from .guidance.clip_models import check_open_clip
from .guidance.lpips_reg import check_lpips_weights
from .refs import resolve_diffusers_ref, resolve_text_encoder_ref


class MissingModelsError(ModelNotFoundError):
    """One or more models of a config are not on this machine; the message lists each with its fix."""


def resolve_open_clip_ref(name: str, pretrained: str | None) -> str:
    """Check, without building the model, that an open_clip (name, pretrained) pair is loadable here.

    Returns the registered model name; raises `ModelNotFoundError` (weights) or ValueError (unknown name/tag).
    """
    return check_open_clip(name, pretrained)


def check_lpips_ref(net: str = "vgg") -> None:
    """Raise `ModelNotFoundError` when LPIPS backbone weights for `net` are not in the torch hub cache."""
    check_lpips_weights(net)


def _generator_problem(path: str) -> str | None:
    if Path(path).is_file():
        return None
    shown = path if Path(path).is_absolute() else f"{path} (i.e. {Path(path).resolve()})"
    return (f"generator.checkpoint: file not found: {shown}. Put the checkpoint there (rosinality .pt, NVlabs "
            f".pkl or state dict; docs/generators.md), or point the path at it (paths expand ${{MODELS_DIR}})")


def model_problems(cfg: AdaptConfig) -> list[str]:
    """Human-readable problems, one per missing model; empty when everything resolves locally."""
    problems: list[str] = []
    if (p := _generator_problem(cfg.generator.checkpoint)):
        problems.append(p)

    def attempt(field: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except (ModelNotFoundError, ValueError, RuntimeError) as exc:
            problems.append(f"{field}: {exc}")

    if cfg.method == "fusion":
        attempt("guidance.model", resolve_diffusers_ref, cfg.guidance.model, allow_download=False)
        if cfg.guidance.text_encoder:
            attempt("guidance.text_encoder", resolve_text_encoder_ref, cfg.guidance.text_encoder, allow_download=False)
        if cfg.reg.lpips.weight > 0:
            attempt("reg.lpips", check_lpips_ref, cfg.reg.lpips.net)
    else:
        for i, ref in enumerate(cfg.nada.clip_models):
            attempt(f"nada.clip_models.{i}", resolve_open_clip_ref, ref.name, ref.pretrained)
    return problems


# ---- resource sanity bound ---------------------------------------------------------------------------
# A batch whose images ALONE (fp32, 3 channels, at the side the step works at, every render of the step)
# exceed this cannot be held by any single device or ordinary host: it is a typo, refused at validation.
# 1 TiB is ~7x an H200's 141 GB, so every batch a real device runs passes; the activations of the networks
# come on top, so this refuses only nonsense (e.g. train.batch_size: 100000000).
MEMORY_CEILING_BYTES = 1 << 40
NADA_CLIP_SIDE = 224   # NADA's images go through CLIP at 224 px when nada.image_size is None


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
            f"trainables/preflight.py MEMORY_CEILING_BYTES); use a batch of at most {limit} (real runs use 1-16)")


def train_side(cfg: AdaptConfig) -> int:
    """The side the training step's critic works at: Fusion's guidance.image_size, NADA's CLIP input."""
    if cfg.method == "fusion":
        return cfg.guidance.image_size
    return cfg.nada.image_size or NADA_CLIP_SIDE


def resource_problems(cfg: AdaptConfig) -> list[str]:
    """Batch sizes no device holds (each step renders the frozen and the trained generator: 2 renders)."""
    side = train_side(cfg)
    where = f" (at the critic's {side} px)"
    found = [batch_problem("train.batch_size", cfg.train.batch_size, side, 2, where)]
    if cfg.layers.k > 0:
        found.append(batch_problem("layers.batch_size", cfg.layers.batch_size or cfg.train.batch_size, side, 2,
                                   where))
    return [p for p in found if p]


def check_models(cfg: AdaptConfig, source: str = "config") -> None:
    problems = model_problems(cfg)
    if problems:
        raise MissingModelsError(f"{source}: {len(problems)} model(s) not available on this machine:\n"
                                 + "\n".join(f"- {p}" for p in problems))
