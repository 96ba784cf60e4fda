"""Check every model a config needs before anything is loaded: fail fast, all problems at once.

Used by `python -m trainables adapt` and by the sweep launcher before any trial starts. Resolution never
downloads (`allow_download=False`): a missing model is reported with where we looked and the exact command
that would fetch it (trainables.frozen.refs).

`resource_problems` (trainables/resources.py, torch-free, re-exported here) refuses batch sizes no machine holds.
"""
from __future__ import annotations

from pathlib import Path

from trainables.config import AdaptConfig
from trainables.errors import ModelNotFoundError
from trainables.frozen.layouts import is_sdxl_folder, resolve_model_ref
from trainables.frozen.lora_check import lora_problems
from trainables.frozen.refs import resolve_diffusers_ref, resolve_text_encoder_ref
from trainables.registry import GUIDANCE
from trainables.resources import (MEMORY_CEILING_BYTES, NADA_CLIP_SIDE, batch_floor_bytes, batch_problem,  # noqa: F401
                        resource_problems, train_side)


class MissingModelsError(ModelNotFoundError):
    """One or more models of a config are not on this machine; the message lists each with its fix."""


def resolve_open_clip_ref(name: str, pretrained: str | None) -> str:
    """Check, without building the model, that an open_clip (name, pretrained) pair is loadable here.

    Returns the registered model name; raises `ModelNotFoundError` (weights) or ValueError (unknown name/tag).
    """
    from trainables.frozen.clip_models import check_open_clip  # late: open_clip brings torch (~4 s); validate need not
    return check_open_clip(name, pretrained)


def check_lpips_ref(net: str = "vgg") -> None:
    """Raise `ModelNotFoundError` when LPIPS backbone weights for `net` are not in the torch hub cache."""
    from trainables.guidance.lpips_reg import check_lpips_weights  # late: torch (~4 s), only when LPIPS is on
    check_lpips_weights(net)


def _generator_problem(path: str) -> str | None:
    if Path(path).is_file():
        return None
    shown = path if Path(path).is_absolute() else f"{path} (i.e. {Path(path).resolve()})"
    hint = ""
    name = Path(path).name
    if name.endswith("_rosinality.pt"):   # the AFHQ paper sweeps' file: the authors ran a converted NVlabs pickle
        pkl = Path(path).with_name(name.removesuffix("_rosinality.pt") + ".pkl")
        hint = (f". It is a conversion of NVIDIA's pickle without the activation clamp, as the authors ran it: "
                f"python -m trainables.generators convert --checkpoint {pkl} --to rosinality --conv-clamp none "
                f"--out {path} (or set generator.checkpoint to {pkl.name} to keep the clamp; docs/paper-runs.md)")
    return (f"generator.checkpoint: file not found: {shown}. Put the checkpoint there (rosinality .pt, NVlabs "
            f".pkl or state dict; docs/generators.md), or point the path at it (paths expand ${{MODELS_DIR}})"
            + hint)


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

    refs = getattr(GUIDANCE.declaration(cfg.method), "model_refs", None)   # optional for one's own methods
    for field, kind, ref in (refs(cfg) if refs is not None else []):
        attempt(field, _RESOLVERS[kind], ref)
    return problems


def check_lora_ref(path: str, model: str, text_encoder: str | None) -> None:
    """Raise ValueError naming every reason the LoRA file cannot be loaded onto this critic (headers only)."""
    try:
        root = resolve_diffusers_ref(model, allow_download=False)
        te_dir = root / "text_encoder" if text_encoder is None else resolve_text_encoder_ref(text_encoder,
                                                                                             allow_download=False)
    except ModelNotFoundError:     # guidance.model / text_encoder report that themselves: check the file alone
        problems = lora_problems(path, None, None)[:1] if not Path(path).is_file() else []
    else:
        problems = lora_problems(path, root / "unet", te_dir)
        if is_sdxl_folder(root):
            problems.insert(0, f"{model} is an SDXL model: LoRA adapters are supported on SD 1.x/2.x critics "
                               f"(SDXL adapter loading is not tested yet); remove guidance.lora")
    if problems:
        raise ValueError("; ".join(problems))


# how each reference type a method declares (its `model_refs`) is checked here, never downloading
_RESOLVERS = {
    "diffusers": lambda ref: resolve_model_ref(ref, allow_download=False),    # its layout's subfolders (SDXL)
    "text_encoder": lambda ref: resolve_text_encoder_ref(ref, allow_download=False),
    "lpips": lambda net: check_lpips_ref(net),
    "open_clip": lambda ref: resolve_open_clip_ref(*ref),
    "lora": lambda ref: check_lora_ref(*ref),
}


def check_models(cfg: AdaptConfig, source: str = "config") -> None:
    problems = model_problems(cfg)
    if problems:
        raise MissingModelsError(f"{source}: {len(problems)} model(s) not available on this machine:\n"
                                 + "\n".join(f"- {p}" for p in problems))
